"""The balance gate as a hostile client meets it: absurd output caps are refused before anything is
reserved, no request can reserve more than the workspace has, 200 concurrent requests cannot spend more
than the balance, unpriced models are never served on the platform's keys, and the Lua scripts refuse
(without writing) any amount that is not an integer."""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal

import httpx
import openai
import pytest
import redis
from django.db import transaction
from django.db.models import Sum

from billing.ingest import run_ingest
from billing.models import LedgerEntry, Plan, UsageEvent, WorkspaceBalance
from billing.services import ledger_post
from contracts import balance
from contracts.events import USAGE_STREAM
from contracts.events import UsageEvent as Event
from contracts.money import usd_text
from contracts.pricing import Usage, cost_nanos
from tenants.models import PlatformCredential
from tenants.services import platform_credential_save, workspace_billing_update
from tests.servers import run_async

pytestmark = pytest.mark.django_db(transaction=True)

HI = [{"role": "user", "content": "hi"}]
MODEL = "openai/gpt-4o-mini"


def metered(tenant) -> None:
    """Charge BYOK requests at provider cost, so the balance matters."""
    plan, _ = Plan.objects.get_or_create(code="metered", defaults={"name": "Metered", "byok_fee_rate": Decimal(1)})
    tenant.workspace.plan = plan
    workspace_billing_update(workspace=tenant.workspace, fields=["plan"])


def stream_events(r) -> list[Event]:
    return [Event.from_fields({k.decode(): v.decode() for k, v in f.items()}) for _, f in r.xrange(USAGE_STREAM)]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("max_tokens", 10**17),
        ("max_tokens", 1e17),
        ("max_completion_tokens", 1_000_001),
        ("n", 1_000_000),
        ("max_tokens", -1),
        ("n", True),
    ],
)
def test_absurd_output_caps_are_400s_naming_the_field(proxy, tenant, r, field, value):
    with httpx.Client(timeout=10) as http:
        response = http.post(
            f"{proxy.base_url}/chat/completions",
            headers={"authorization": f"Bearer {tenant.plaintext}"},
            json={"model": MODEL, "messages": HI, field: value},
        )
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == field and f"`{field}`" in error["message"]
    proxy.drain()
    ws = tenant.workspace.pk
    assert int(r.hget(balance.bal_key(ws), "inflight") or 0) == 0  # nothing was reserved
    assert r.zcard(balance.inflight_keys(ws)[0]) == 0


def test_the_anthropic_endpoint_refuses_an_absurd_max_tokens_in_its_own_envelope(proxy, tenant):
    # (the anthropic SDK itself refuses such a request before sending it; a raw client does not)
    with httpx.Client(timeout=10) as http:
        response = http.post(
            f"{proxy.url}/v1/messages",
            headers={"x-api-key": tenant.plaintext, "anthropic-version": "2023-06-01"},
            json={"model": MODEL, "max_tokens": 10**17, "messages": HI},
        )
    assert response.status_code == 400
    body = response.json()
    assert body["type"] == "error" and body["error"]["type"] == "invalid_request_error"
    assert "`max_tokens` must be at most" in body["error"]["message"]


def test_a_request_cannot_reserve_more_than_the_workspace_has(make_tenant, start_proxy, r):
    tenant = make_tenant(credit_usd="0.001")
    metered(tenant)
    proxy = start_proxy()
    with openai.OpenAI(base_url=proxy.base_url, api_key=tenant.plaintext, max_retries=0) as sdk:
        # within the documented bound, but the model cannot produce more than the catalog's 16,384 tokens:
        # that is what is reserved, and it is more than the $0.001 there is
        with pytest.raises(openai.APIStatusError) as caught:
            sdk.chat.completions.create(model=MODEL, messages=HI, max_tokens=1_000_000)
        assert caught.value.status_code == 402 and caught.value.code == "insufficient_balance"
        price = proxy.app.rt.catalog.price("openai", "gpt-4o-mini")
        at_most = cost_nanos(price, Usage(output=16_384))
        assert f"more than your workspace's available balance of {usd_text(1_000_000)}" in caught.value.message
        assert usd_text(at_most)[:6] in caught.value.message  # "$0.009…": the model's limit, not a million

        # a request that fits is served, and the balance is enforced as before
        assert sdk.chat.completions.create(model=MODEL, messages=HI, max_tokens=50).choices
    proxy.drain()
    ws = tenant.workspace.pk
    assert int(r.hget(balance.bal_key(ws), "inflight")) == 0
    assert int(r.hget(balance.bal_key(ws), "pending")) > 0


def test_200_concurrent_requests_cannot_spend_more_than_the_balance(make_tenant, start_proxy, r):
    tenant = make_tenant(credit_usd="1")
    metered(tenant)
    proxy = start_proxy()
    headers = {"authorization": f"Bearer {tenant.plaintext}"}
    body = {"model": MODEL, "messages": HI, "max_tokens": 40}
    with httpx.Client(timeout=10) as http:  # what one such request really costs
        one = http.post(f"{proxy.base_url}/chat/completions", headers=headers, json=body)
    assert one.status_code == 200
    per_request = int(Decimal(one.headers["x-turnpike-cost-usd"]) * 1_000_000_000)
    proxy.drain()
    run_ingest()
    # leave exactly enough for 20 of them (the ledger is the truth; Redis follows it on commit)
    ws = tenant.workspace.pk
    left = WorkspaceBalance.objects.get(workspace_id=ws).balance_nanos
    with transaction.atomic():
        ledger_post(
            workspace_id=ws,
            kind=LedgerEntry.Kind.ADJUSTMENT,
            amount_nanos=20 * per_request - left,
            idempotency_key=f"leave-20-{ws}",
        )
    start = WorkspaceBalance.objects.get(workspace_id=ws).balance_nanos
    assert start == 20 * per_request

    async def fire() -> list[int]:
        limits = httpx.Limits(max_connections=200)
        async with httpx.AsyncClient(timeout=30, limits=limits) as http:
            responses = await asyncio.gather(
                *(http.post(f"{proxy.base_url}/chat/completions", headers=headers, json=body) for _ in range(200))
            )
        return [response.status_code for response in responses]

    statuses = run_async(fire())
    proxy.drain()
    assert set(statuses) <= {200, 402}
    served = statuses.count(200)
    assert 1 <= served <= 20  # each reservation is an upper bound of its cost: never more than 20 fit
    run_ingest()
    charges = (
        UsageEvent.objects.filter(workspace_id=ws, status=200).exclude(request_id__in=[one.headers["x-request-id"]])
    ).aggregate(s=Sum("charge_nanos"))["s"]
    assert charges == served * per_request
    assert charges <= start  # no overshoot: what was in flight was reserved against the balance
    assert WorkspaceBalance.objects.get(workspace_id=ws).balance_nanos >= 0
    assert int(r.hget(balance.bal_key(ws), "inflight")) == 0
    assert int(r.hget(balance.bal_key(ws), "pending")) == 0


def test_unpriced_models_are_never_served_on_a_managed_key(tenant, fake_provider_url, proxy, client, r):
    platform_credential_save(
        credential=PlatformCredential(provider="groq", label="Turnpike Groq", base_url=f"{fake_provider_url}/v1"),
        secret="fake-platform-groq-0001",
    )
    tenant.workspace.managed_access = True
    workspace_billing_update(workspace=tenant.workspace, fields=["managed_access"])
    time.sleep(1.0)

    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="groq/a-model-not-in-the-catalog", messages=HI)
    assert caught.value.code == "model_not_priced"
    assert "not in Turnpike's price catalog" in caught.value.message

    # with the workspace's own key the provider decides, and the request is flagged unpriced, never $0
    assert client.chat.completions.create(model="openai/a-model-not-in-the-catalog", messages=HI).choices
    proxy.drain()
    refused, served = stream_events(r)[-2:]
    assert refused.status == 404 and refused.charge_nanos == 0 and refused.credential_kind == "managed"
    assert served.status == 200 and not served.priced and served.cost_nanos is None


@pytest.mark.parametrize("bad", ["1e+17", "-5", "1.5", "", "12a", str(10**18)])
def test_the_scripts_refuse_non_integer_amounts_without_writing(r, bad):
    ws = 987_654_321
    keys = [balance.bal_key(ws), *balance.inflight_keys(ws)]
    r.delete(*keys, "tp:test:nowhere")
    assert r.eval(balance.FILL, 1, keys[0], 5_000, 1) == 1
    before = r.hgetall(keys[0])
    now = int(time.time() * 1000)
    assert r.eval(balance.RESERVE, 3, *keys, "req", bad, now, 60_000) == [-2, 0]
    with pytest.raises(redis.ResponseError, match="charge must be a non-negative integer"):
        r.eval(balance.SETTLE_AND_EMIT, 4, *keys, "tp:test:nowhere", "req", bad, "v", "2")
    if bad != "-5":  # a negative ledger is a real balance (an overdrawn workspace)
        assert r.eval(balance.FILL, 1, keys[0], bad, 2) == -2
        assert r.eval(balance.FILL, 1, keys[0], 7_000, bad) == -2
    assert r.hgetall(keys[0]) == before and not r.exists(keys[1], keys[2], "tp:test:nowhere")
    r.delete(*keys)
