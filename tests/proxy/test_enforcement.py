"""What the proxy enforces while serving from its caches: revoked keys and changed credentials take
effect within a second (pub/sub invalidation, not TTL expiry: the auth TTL here is 10 s), the prepaid
balance is checked on every request that can cost money (a client that walks away mid-stream:
tests/proxy/test_disconnect.py; requests that cannot cost money: tests/proxy/test_zero_charge.py)."""

from __future__ import annotations

import time
from decimal import Decimal

import openai
import pytest

from billing.models import Plan
from billing.services import ledger_grant_post
from contracts.events import USAGE_STREAM, UsageEvent
from tenants.services import gateway_key_revoke, provider_credential_remove, workspace_billing_update

pytestmark = pytest.mark.django_db(transaction=True)

HI = [{"role": "user", "content": "hi"}]
MODEL = "openai/gpt-4o-mini"


def with_byok_fee(tenant):
    """The workspace's own key, on a plan that charges a fee for it: its requests can cost money."""
    plan, _ = Plan.objects.get_or_create(code="byok-fee", defaults={"name": "Fee", "byok_fee_rate": Decimal("0.1")})
    tenant.workspace.plan = plan
    workspace_billing_update(workspace=tenant.workspace, fields=["plan"])
    return tenant


def events(r) -> list[UsageEvent]:
    return [UsageEvent.from_fields({k.decode(): v.decode() for k, v in f.items()}) for _, f in r.xrange(USAGE_STREAM)]


def test_a_revoked_key_is_refused_within_a_second(client, tenant):
    assert client.chat.completions.create(model=MODEL, messages=HI).choices  # the key is now cached warm

    gateway_key_revoke(key=tenant.key, acting_user=tenant.owner)
    time.sleep(1.0)

    with pytest.raises(openai.AuthenticationError):
        client.chat.completions.create(model=MODEL, messages=HI)
    with pytest.raises(openai.AuthenticationError):
        client.models.list()


def test_a_removed_credential_stops_being_used_within_a_second(client, tenant):
    assert client.chat.completions.create(model=MODEL, messages=HI).choices

    provider_credential_remove(credential=tenant.credential, acting_user=tenant.owner)
    time.sleep(1.0)

    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model=MODEL, messages=HI)


def test_an_unfunded_workspace_gets_402_and_a_funded_one_does_not(make_tenant, start_proxy):
    broke = with_byok_fee(make_tenant(credit_usd=None))
    funded = with_byok_fee(make_tenant(credit_usd="5"))
    proxy = start_proxy()

    with openai.OpenAI(base_url=proxy.base_url, api_key=broke.plaintext, max_retries=0) as sdk:
        with pytest.raises(openai.APIStatusError) as caught:
            sdk.chat.completions.create(model=MODEL, messages=HI)
        assert caught.value.status_code == 402
        assert caught.value.code == "insufficient_balance"
        with pytest.raises(openai.APIStatusError):  # streaming is refused before any byte is sent
            sdk.chat.completions.create(model=MODEL, messages=HI, stream=True)

    with openai.OpenAI(base_url=proxy.base_url, api_key=funded.plaintext, max_retries=0) as sdk:
        assert sdk.chat.completions.create(model=MODEL, messages=HI).choices


def test_a_top_up_lets_a_refused_workspace_through(make_tenant, start_proxy):
    tenant = with_byok_fee(make_tenant(credit_usd=None))
    proxy = start_proxy()
    with openai.OpenAI(base_url=proxy.base_url, api_key=tenant.plaintext, max_retries=0) as sdk:
        with pytest.raises(openai.APIStatusError):
            sdk.chat.completions.create(model=MODEL, messages=HI)
        ledger_grant_post(workspace=tenant.workspace, amount_usd="1", idempotency_key="late-top-up")
        time.sleep(0.2)
        assert sdk.chat.completions.create(model=MODEL, messages=HI).choices
