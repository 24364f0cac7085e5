"""GET /v1/generation?id=req_… over real HTTP: a request's status, models, tokens, cost per token type,
provider cost, charge and timings, for its own workspace only. It answers right after the response (from
the record the settle script keeps in Redis, before any ingest) and later from Postgres."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from decimal import Decimal

import httpx
import openai
import pytest

from billing.ingest import run_ingest
from billing.models import Plan, WorkspaceModelPrice
from billing.models import UsageEvent as StoredEvent
from contracts import balance
from contracts.events import USAGE_STREAM
from contracts.events import UsageEvent as Event
from contracts.pricing import Price, Usage, cost_breakdown_usd
from tenants.services import workspace_billing_update

pytestmark = pytest.mark.django_db(transaction=True)

HI = [{"role": "user", "content": "Say hello"}]
NANO = Decimal(10) ** -9


def stream_events(r) -> list[Event]:
    return [Event.from_fields({k.decode(): v.decode() for k, v in f.items()}) for _, f in r.xrange(USAGE_STREAM)]


def exact(text: str) -> dict:
    return json.loads(text, parse_float=Decimal)


def generation(http: httpx.Client, proxy, key: str, request_id: str | None, **headers: str) -> httpx.Response:
    params = {} if request_id is None else {"id": request_id}
    auth = {"authorization": f"Bearer {key}"} if key else {}
    return http.get(f"{proxy.base_url}/generation", params=params, headers={**auth, **headers})


@pytest.fixture
def fee_tenant(make_tenant):
    def make(**kwargs):
        tenant = make_tenant(**kwargs)
        plan, _ = Plan.objects.get_or_create(
            code="generation-fee", defaults={"name": "Fee 10%", "byok_fee_rate": Decimal("0.1")}
        )
        tenant.workspace.plan = plan
        workspace_billing_update(workspace=tenant.workspace, fields=["plan"])
        return tenant

    return make


def test_a_request_is_described_right_after_its_response_and_after_ingest(fee_tenant, start_proxy, r):
    tenant = fee_tenant()
    # the fake provider reports 2 cached tokens for this name; the workspace has its own price for it
    model = "gpt-4o-mini@cached=2"
    price = Price(input=Decimal("0.15"), cached_input=Decimal("0.075"), output=Decimal("0.6"))
    WorkspaceModelPrice.objects.create(
        workspace=tenant.workspace,
        provider="openai",
        model=model,
        input_usd_per_mtok=price.input,
        cached_input_usd_per_mtok=price.cached_input,
        output_usd_per_mtok=price.output,
    )
    proxy = start_proxy()
    with openai.OpenAI(base_url=proxy.base_url, api_key=tenant.plaintext, max_retries=0) as sdk:
        raw = sdk.chat.completions.with_raw_response.create(model=f"openai/{model}", messages=HI)
    request_id = raw.headers["x-request-id"]
    with httpx.Client(timeout=10) as http:
        # at once: no drain, no ingest (the Redis record, or this worker's emission under way)
        first = generation(http, proxy, tenant.plaintext, request_id)
        assert first.status_code == 200, first.text
        assert first.headers["x-request-id"] != request_id
        proxy.drain()
        (event,) = stream_events(r)
        ttl = r.ttl(balance.generation_key(tenant.workspace.pk, request_id))
        assert 3500 < ttl <= 3600
        assert not StoredEvent.objects.filter(request_id=request_id).exists()

        data = exact(first.text)["data"]
        assert data["id"] == request_id and data["status"] == 200 and data["error_code"] is None
        assert (data["model"], data["provider"]) == (f"openai/{model}", "openai")
        assert data["model_served"] == event.model_served
        assert data["credential"] == "byok" and data["priced"] is True
        assert data["streamed"] is False and data["estimated"] is False
        assert data["tokens"] == {
            "input": event.input_tokens,
            "cached_input": 2,
            "cache_write": 0,
            "output": event.output_tokens,
            "reasoning": 0,
        }
        assert data["total_cost"] == event.cost_nanos * NANO and data["cost_nanos"] == event.cost_nanos
        assert data["charge"] == event.charge_nanos * NANO and data["charge_nanos"] == event.charge_nanos > 0
        cost_of_response = exact(raw.text)["usage"]
        assert cost_of_response["cost"] == data["charge"]  # what the response said it cost
        breakdown = cost_breakdown_usd(
            price, Usage(input=event.input_tokens, cached_input=2, output=event.output_tokens)
        )
        assert data["cost_per_token_type"] == {name: amount for name, amount in breakdown.items()}
        assert data["cost_per_token_type"]["cached_input"] == 2 * price.cached_input / 1_000_000
        assert data["latency_ms"] == event.latency_ms and data["ttfb_ms"] == event.ttfb_ms
        created = datetime.fromisoformat(data["created_at"])
        assert created.tzinfo == UTC and round(created.timestamp() * 1000) == event.started_at_ms

        # after ingest, with the Redis record gone: the same answer, from Postgres
        run_ingest()
        assert StoredEvent.objects.filter(request_id=request_id).exists()
        r.delete(balance.generation_key(tenant.workspace.pk, request_id))
        later = generation(http, proxy, tenant.plaintext, request_id)
        assert later.status_code == 200
        assert exact(later.text)["data"] == data


def test_only_the_workspace_that_made_the_request_sees_it(make_tenant, start_proxy, r):
    mine, theirs = make_tenant(), make_tenant()
    proxy = start_proxy()
    with httpx.Client(timeout=10) as http:
        made = http.post(
            f"{proxy.base_url}/chat/completions",
            headers={"authorization": f"Bearer {mine.plaintext}"},
            json={"model": "openai/gpt-4o-mini", "messages": HI, "stream": True},
        )
        request_id = made.headers["x-request-id"]
        proxy.drain()
        own = generation(http, proxy, "", request_id, **{"x-api-key": mine.plaintext})  # Anthropic-style key
        assert own.status_code == 200 and own.json()["data"]["streamed"] is True
        assert own.json()["data"]["charge"] == 0  # the free plan

        other = generation(http, proxy, theirs.plaintext, request_id)
        assert other.status_code == 404
        error = other.json()["error"]
        assert error["code"] == "not_found" and error["param"] == "id" and request_id in error["message"]
        run_ingest()
        assert generation(http, proxy, theirs.plaintext, request_id).status_code == 404  # nor from Postgres

        unknown = generation(http, proxy, mine.plaintext, f"req_{uuid.uuid4().hex}")
        assert unknown.status_code == 404 and unknown.json()["error"]["type"] == "invalid_request_error"


@pytest.mark.parametrize(
    ("request_id", "message"),
    [
        (None, "`id` is required"),
        ("", "`id` is required"),
        ("gen-123", "`id` must be a Turnpike request id"),
        ("req_" + "0" * 31 + "\x00", "`id` must be a Turnpike request id"),
        ("req_" + "a" * 10_000, "`id` must be a Turnpike request id"),
    ],
)
def test_a_missing_or_malformed_id_is_a_400_naming_the_parameter(proxy, tenant, request_id, message):
    with httpx.Client(timeout=10) as http:
        response = generation(http, proxy, tenant.plaintext, request_id)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == "id" and message in error["message"]


def test_the_sdk_can_read_it_and_a_missing_key_is_a_401(proxy, tenant, client):
    raw = client.chat.completions.with_raw_response.create(model="openai/gpt-4o-mini", messages=HI)
    request_id = raw.headers["x-request-id"]
    found = client.get("/generation", cast_to=object, options={"params": {"id": request_id}})
    assert found["data"]["id"] == request_id and found["data"]["status"] == 200
    with httpx.Client(timeout=10) as http:
        response = generation(http, proxy, "", request_id)
    assert response.status_code == 401 and response.json()["error"]["code"] == "invalid_api_key"


def test_a_refused_request_is_described_with_its_status_and_no_charge(make_tenant, start_proxy):
    tenant = make_tenant(credit_usd=None)
    plan, _ = Plan.objects.get_or_create(code="generation-full", defaults={"name": "Full", "byok_fee_rate": 1})
    tenant.workspace.plan = plan
    workspace_billing_update(workspace=tenant.workspace, fields=["plan"])
    proxy = start_proxy()
    with httpx.Client(timeout=10) as http:
        refused = http.post(
            f"{proxy.base_url}/chat/completions",
            headers={"authorization": f"Bearer {tenant.plaintext}"},
            json={"model": "openai/gpt-4o-mini", "messages": HI},
        )
        assert refused.status_code == 402
        data = generation(http, proxy, tenant.plaintext, refused.headers["x-request-id"]).json()["data"]
    assert (data["status"], data["error_code"], data["charge"], data["total_cost"]) == (
        402,
        "insufficient_balance",
        0,
        None,
    )
    assert data["tokens"]["input"] == 0


def test_with_no_redis_record_the_answer_waits_for_ingest(make_tenant, start_proxy, r):
    tenant = make_tenant()
    proxy = start_proxy(generation_ttl=0)
    with httpx.Client(timeout=10) as http:
        made = http.post(
            f"{proxy.base_url}/chat/completions",
            headers={"authorization": f"Bearer {tenant.plaintext}"},
            json={"model": "openai/gpt-4o-mini", "messages": HI},
        )
        request_id = made.headers["x-request-id"]
        proxy.drain()
        assert not r.exists(balance.generation_key(tenant.workspace.pk, request_id))
        assert generation(http, proxy, tenant.plaintext, request_id).status_code == 404
        run_ingest()
        answer = generation(http, proxy, tenant.plaintext, request_id)
    assert answer.status_code == 200 and answer.json()["data"]["id"] == request_id
