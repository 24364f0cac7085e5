"""Platform-managed credentials: a workspace with managed access and no key of its own for a provider is
served with the platform's key and charged provider cost x (1 + the plan's managed markup); the
workspace's own key always wins; operator changes reach the proxy within a second; and Redis never
holds a plaintext provider secret."""

from __future__ import annotations

import time
from decimal import ROUND_HALF_UP, Decimal

import openai
import pytest

from billing.models import Plan
from contracts.events import USAGE_STREAM, UsageEvent
from contracts.pricing import Usage, cost_nanos
from tenants.models import PlatformCredential
from tenants.services import plans_changed, platform_credential_save, workspace_billing_update

pytestmark = pytest.mark.django_db(transaction=True)

HI = [{"role": "user", "content": "hi"}]
MANAGED_SECRET = "fake-platform-managed-groq-key-0001"


def events(r) -> list[UsageEvent]:
    return [UsageEvent.from_fields({k.decode(): v.decode() for k, v in f.items()}) for _, f in r.xrange(USAGE_STREAM)]


@pytest.fixture
def managed_groq(fake_provider_url):
    return platform_credential_save(
        credential=PlatformCredential(provider="groq", label="Turnpike Groq", base_url=f"{fake_provider_url}/v1"),
        secret=MANAGED_SECRET,
    )


@pytest.fixture
def markup_plan(transactional_db):
    return Plan.objects.create(
        code="pro", name="Pro", byok_fee_rate=Decimal("0.05"), managed_markup_rate=Decimal("0.25")
    )


def test_managed_access_serves_with_the_platform_key_and_charges_the_markup(
    tenant, managed_groq, markup_plan, proxy, client, r
):
    tenant.workspace.plan = markup_plan
    workspace_billing_update(workspace=tenant.workspace, fields=["plan"])
    with pytest.raises(openai.NotFoundError):  # no groq key, no managed access yet
        client.chat.completions.create(model="groq/llama-3.1-8b-instant", messages=HI)

    tenant.workspace.managed_access = True
    workspace_billing_update(workspace=tenant.workspace, fields=["managed_access"])
    time.sleep(1.0)

    completion = client.chat.completions.create(model="groq/llama-3.1-8b-instant", messages=HI)
    proxy.drain()
    event = events(r)[-1]
    assert event.credential_kind == "managed" and event.credential_id is None
    price = proxy.app.rt.catalog.price("groq", "llama-3.1-8b-instant")
    cost = cost_nanos(price, Usage(input=completion.usage.prompt_tokens, output=completion.usage.completion_tokens))
    assert event.cost_nanos == cost > 0
    assert event.charge_nanos == int((Decimal(cost) * Decimal("1.25")).to_integral_value(ROUND_HALF_UP))
    assert "groq/llama-3.1-8b-instant" in {m.id for m in client.models.list()}


def test_the_workspaces_own_key_wins_over_a_managed_one(tenant, fake_provider_url, markup_plan, proxy, client, r):
    platform_credential_save(
        credential=PlatformCredential(provider="openai", label="Turnpike OpenAI", base_url=f"{fake_provider_url}/v1"),
        secret="fake-platform-openai-key",
    )
    tenant.workspace.plan, tenant.workspace.managed_access = markup_plan, True
    workspace_billing_update(workspace=tenant.workspace, fields=["plan", "managed_access"])
    time.sleep(1.0)

    client.chat.completions.create(model="openai/gpt-4o-mini", messages=HI)
    proxy.drain()
    event = events(r)[-1]
    assert event.credential_kind == "byok" and event.credential_id == tenant.credential.pk
    assert event.charge_nanos == int((Decimal(event.cost_nanos) * Decimal("0.05")).to_integral_value(ROUND_HALF_UP))


def test_a_plan_change_reaches_the_proxy_within_a_second(tenant, markup_plan, proxy, client, r):
    tenant.workspace.plan = markup_plan
    workspace_billing_update(workspace=tenant.workspace, fields=["plan"])
    time.sleep(1.0)
    client.chat.completions.create(model="openai/gpt-4o-mini", messages=HI)

    markup_plan.byok_fee_rate = Decimal("0.5")
    markup_plan.save()
    plans_changed()
    time.sleep(1.0)
    client.chat.completions.create(model="openai/gpt-4o-mini", messages=HI)

    proxy.drain()
    before, after = events(r)[-2:]
    assert before.charge_nanos == int((Decimal(before.cost_nanos) * Decimal("0.05")).to_integral_value(ROUND_HALF_UP))
    assert after.charge_nanos == int((Decimal(after.cost_nanos) * Decimal("0.5")).to_integral_value(ROUND_HALF_UP))


def test_redis_holds_no_plaintext_provider_secret(tenant, managed_groq, proxy, client, r):
    from tenants.services import provider_credential_secret

    tenant.workspace.managed_access = True
    workspace_billing_update(workspace=tenant.workspace, fields=["managed_access"])
    time.sleep(1.0)
    client.chat.completions.create(model="openai/gpt-4o-mini", messages=HI)
    client.chat.completions.create(model="groq/llama-3.1-8b-instant", messages=HI)

    byok_secret = provider_credential_secret(credential=tenant.credential)
    dump = b"".join(r.dump(name) or b"" for name in r.scan_iter(match="tp:*") if r.type(name) in (b"string", b"hash"))
    assert dump, "the proxy cached nothing in Redis"
    assert byok_secret.encode() not in dump
    assert MANAGED_SECRET.encode() not in dump
