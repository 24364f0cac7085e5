"""Who needs a balance (BRIEF, money model): only requests that can cost the workspace money. A free-plan
BYOK team is served with no credit at all (or an overdrawn balance), without a reservation in Redis;
a BYOK fee or a platform-managed key still needs a positive balance, and the 402 then says how much is
available, what the request may cost, and where to add credit (a link to the workspace's billing page)."""

from __future__ import annotations

import json
import time
from decimal import Decimal

import anthropic
import httpx
import openai
import pytest
from django.db import transaction
from django.urls import reverse

from billing.models import LedgerEntry, Plan
from billing.services import ledger_post
from contracts import balance
from contracts.cachekeys import workspace_doc_key
from contracts.events import USAGE_STREAM
from contracts.events import UsageEvent as Event
from contracts.money import usd_text
from tenants.models import PlatformCredential
from tenants.services import platform_credential_save, workspace_billing_update

pytestmark = pytest.mark.django_db(transaction=True)

HI = [{"role": "user", "content": "hi"}]
MODEL = "openai/gpt-4o-mini"


def stream_events(r) -> list[Event]:
    return [Event.from_fields({k.decode(): v.decode() for k, v in f.items()}) for _, f in r.xrange(USAGE_STREAM)]


def fee_plan(tenant, rate: str = "0.1") -> None:
    """Put the workspace on a plan whose BYOK requests cost money."""
    plan, _ = Plan.objects.get_or_create(
        code=f"byok-fee-{rate}", defaults={"name": f"BYOK fee {rate}", "byok_fee_rate": Decimal(rate)}
    )
    tenant.workspace.plan = plan
    workspace_billing_update(workspace=tenant.workspace, fields=["plan"])


def no_reservation_state(r, workspace_id: int) -> bool:
    """Nothing was reserved: the balance hash, the reservation set and map do not even exist."""
    return not r.exists(balance.bal_key(workspace_id), *balance.inflight_keys(workspace_id))


def test_a_free_plan_byok_workspace_with_no_credit_is_served_without_a_reservation(make_tenant, start_proxy, r):
    tenant = make_tenant(credit_usd=None)
    proxy = start_proxy()
    with openai.OpenAI(base_url=proxy.base_url, api_key=tenant.plaintext, max_retries=0) as sdk:
        completion = sdk.chat.completions.create(model=MODEL, messages=HI)
        assert completion.choices[0].message.content
        chunks = list(
            sdk.chat.completions.create(model=MODEL, messages=HI, stream=True, stream_options={"include_usage": True})
        )
        assert chunks[-1].usage is not None and chunks[-1].usage.model_extra["cost"] == 0
    proxy.drain()
    events = stream_events(r)
    assert [(e.status, e.charge_nanos) for e in events] == [(200, 0), (200, 0)]
    assert all(e.cost_nanos and e.cost_nanos > 0 for e in events)  # priced: the provider did cost something
    # no reservation and no settlement touched the balance: no Redis round trip before forwarding
    assert no_reservation_state(r, tenant.workspace.pk)


def test_an_overdrawn_free_plan_workspace_is_still_served(make_tenant, start_proxy, r, fake_provider_url):
    tenant = make_tenant(credit_usd=None)
    with transaction.atomic():
        ledger_post(
            workspace_id=tenant.workspace.pk,
            kind=LedgerEntry.Kind.ADJUSTMENT,
            amount_nanos=-5_000_000_000,
            idempotency_key=f"overdrawn-{tenant.workspace.pk}",
        )
    proxy = start_proxy()
    with anthropic.Anthropic(base_url=proxy.url, api_key=tenant.plaintext, max_retries=0) as sdk:
        message = sdk.messages.create(model=MODEL, max_tokens=20, messages=HI)  # translated to OpenAI
    assert message.content[0].text
    proxy.drain()
    (event,) = stream_events(r)
    assert event.status == 200 and event.charge_nanos == 0
    assert int(r.hget(balance.bal_key(tenant.workspace.pk), "pending") or 0) == 0
    assert int(r.hget(balance.bal_key(tenant.workspace.pk), "inflight") or 0) == 0


def test_a_byok_fee_needs_a_balance_and_the_402_links_to_the_billing_page(make_tenant, start_proxy, r):
    tenant = make_tenant(credit_usd=None)
    fee_plan(tenant)
    proxy = start_proxy(dashboard_url="https://app.turnpike.test")
    billing = f"https://app.turnpike.test/w/{tenant.workspace.slug}/billing/"
    with (
        openai.OpenAI(base_url=proxy.base_url, api_key=tenant.plaintext, max_retries=0) as sdk,
        pytest.raises(openai.APIStatusError) as caught,
    ):
        sdk.chat.completions.create(model=MODEL, messages=HI, max_tokens=100)
    error = caught.value
    assert error.status_code == 402 and error.code == "insufficient_balance"
    assert error.body["type"] == "insufficient_balance"
    assert f"Add credit at {billing}" in error.message
    assert "available: $0.00" in error.message and "may cost up to $0.0000" in error.message

    with (
        anthropic.Anthropic(base_url=proxy.url, api_key=tenant.plaintext, max_retries=0) as claude,
        pytest.raises(anthropic.APIStatusError) as caught_anthropic,
    ):
        claude.messages.create(model=MODEL, max_tokens=100, messages=HI)
    assert caught_anthropic.value.status_code == 402
    body = caught_anthropic.value.body
    assert body["type"] == "error" and body["error"]["type"] == "billing_error"
    assert billing in body["error"]["message"]

    # the link is the dashboard's billing page of this workspace
    assert billing.endswith(reverse("dashboard:billing", kwargs={"slug": tenant.workspace.slug}))

    proxy.drain()
    refused = stream_events(r)
    assert [(e.status, e.charge_nanos) for e in refused] == [(402, 0), (402, 0)]
    ws = tenant.workspace.pk
    assert int(r.hget(balance.bal_key(ws), "inflight") or 0) == 0 and r.zcard(balance.inflight_keys(ws)[0]) == 0


def test_with_credit_a_fee_request_reserves_and_settles_its_charge(make_tenant, start_proxy, r):
    tenant = make_tenant(credit_usd="1")
    fee_plan(tenant, "0.5")
    proxy = start_proxy()
    with httpx.Client(timeout=10) as http:
        response = http.post(
            f"{proxy.base_url}/chat/completions",
            headers={"authorization": f"Bearer {tenant.plaintext}"},
            json={"model": MODEL, "messages": HI, "max_tokens": 30},
        )
    assert response.status_code == 200
    proxy.drain()
    (event,) = stream_events(r)
    assert event.charge_nanos > 0
    key = balance.bal_key(tenant.workspace.pk)
    assert int(r.hget(key, "ledger")) == 1_000_000_000  # filled by the reservation
    assert int(r.hget(key, "pending")) == event.charge_nanos and int(r.hget(key, "inflight")) == 0


def test_an_unpriced_byok_model_on_a_fee_plan_needs_no_balance(make_tenant, start_proxy, r):
    tenant = make_tenant(credit_usd=None)
    fee_plan(tenant)
    proxy = start_proxy()
    with openai.OpenAI(base_url=proxy.base_url, api_key=tenant.plaintext, max_retries=0) as sdk:
        raw = sdk.chat.completions.with_raw_response.create(model="openai/a-model-not-in-the-catalog", messages=HI)
    assert raw.headers["x-turnpike-cost-usd"] == "unpriced"
    usage = json.loads(raw.text)["usage"]
    assert usage["cost"] == 0 and usage["cost_details"] == {"upstream_inference_cost": None}
    proxy.drain()
    (event,) = stream_events(r)
    assert event.status == 200 and not event.priced and event.charge_nanos == 0
    assert no_reservation_state(r, tenant.workspace.pk)


def test_a_managed_key_still_needs_a_balance(make_tenant, start_proxy, fake_provider_url, r):
    tenant = make_tenant(credit_usd=None)
    platform_credential_save(
        credential=PlatformCredential(provider="groq", label="Turnpike Groq", base_url=f"{fake_provider_url}/v1"),
        secret="fake-platform-groq-zero",
    )
    tenant.workspace.managed_access = True
    workspace_billing_update(workspace=tenant.workspace, fields=["managed_access"])
    proxy = start_proxy()
    with openai.OpenAI(base_url=proxy.base_url, api_key=tenant.plaintext, max_retries=0) as sdk:
        with pytest.raises(openai.APIStatusError) as caught:
            sdk.chat.completions.create(model="groq/llama-3.1-8b-instant", messages=HI)
        assert caught.value.status_code == 402
        assert f"/w/{tenant.workspace.slug}/billing/" in caught.value.message
        # the workspace's own OpenAI key on the free plan goes on
        assert sdk.chat.completions.create(model=MODEL, messages=HI).choices


def test_the_402_names_what_is_available_and_what_the_request_may_cost(make_tenant, start_proxy):
    tenant = make_tenant(credit_usd="0.000001")
    fee_plan(tenant, "1")
    proxy = start_proxy()
    with (
        openai.OpenAI(base_url=proxy.base_url, api_key=tenant.plaintext, max_retries=0) as sdk,
        pytest.raises(openai.APIStatusError) as caught,
    ):
        sdk.chat.completions.create(model=MODEL, messages=HI, max_tokens=1000)
    message = caught.value.message
    assert f"available balance of {usd_text(1_000)}" in message and "may cost up to $0.0006" in message
    assert message.endswith(f"add credit at http://127.0.0.1:8000/w/{tenant.workspace.slug}/billing/")


def test_a_workspace_document_of_an_earlier_release_is_read_again_from_postgres(make_tenant, start_proxy, r):
    """A proxy of the previous release cached workspace documents without a version or slug: the new proxy
    reads Postgres instead (and does not overwrite the document), so the 402 link has the slug."""
    tenant = make_tenant(credit_usd=None)
    fee_plan(tenant)
    name = workspace_doc_key(tenant.workspace.pk)
    r.delete(name)  # the plan change's tombstone: let the proxy fill the document
    first = start_proxy()
    with httpx.Client(timeout=10) as http:
        http.post(
            f"{first.base_url}/chat/completions",
            headers={"authorization": f"Bearer {tenant.plaintext}"},
            json={"model": MODEL, "messages": HI},
        )
    doc = json.loads(r.get(name))
    assert doc["v"] == 2 and doc["workspace_slug"] == tenant.workspace.slug
    old = {k: v for k, v in doc.items() if k not in ("v", "workspace_slug")}
    r.set(name, json.dumps(old), ex=300)

    second = start_proxy()  # an empty in-process cache: it finds the old document in Redis
    with httpx.Client(timeout=10) as http:
        response = http.post(
            f"{second.base_url}/chat/completions",
            headers={"authorization": f"Bearer {tenant.plaintext}"},
            json={"model": MODEL, "messages": HI},
        )
    assert response.status_code == 402
    assert f"/w/{tenant.workspace.slug}/billing/" in response.json()["error"]["message"]
    assert json.loads(r.get(name)) == old  # left to expire, never overwritten


def test_settling_a_request_that_reserved_nothing_touches_no_balance(r):
    """The script as the proxy calls it for a zero-charge request: no reservation to release, charge 0."""
    ws = 987_654_320
    keys = [balance.bal_key(ws), *balance.inflight_keys(ws)]
    gen = balance.generation_key(ws, "req_x")
    r.delete(*keys, gen, "tp:test:gen-stream")
    entry = r.eval(
        balance.settle_and_emit_script(120), 5, *keys, "tp:test:gen-stream", gen, "req_x", "0", "v", "2", "e", "{}"
    )
    assert entry and not r.exists(*keys)
    assert r.get(gen) == b"{}" and 0 < r.ttl(gen) <= 120
    # an open reservation is released whatever the charge, and the charge alone is pending
    r.hset(keys[0], mapping={"ledger": 100, "version": 1, "inflight": 40})
    r.zadd(keys[1], {"req_y": int(time.time() * 1000) + 60_000})
    r.hset(keys[2], "req_y", 40)
    r.eval(balance.SETTLE_AND_EMIT, 4, *keys, "tp:test:gen-stream", "req_y", "7", "v", "2")
    assert r.hmget(keys[0], "inflight", "pending") == [b"0", b"7"]
    r.delete(*keys, gen, "tp:test:gen-stream")
