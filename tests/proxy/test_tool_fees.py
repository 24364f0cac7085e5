"""Server-side web searches are charged, end to end, through the real proxy with the official SDKs: a request
that searched costs its tokens plus the catalog's per-search fee, exactly, and the searches show in the
response's `usage.cost`, the usage event, `GET /v1/generation`, the stored event and the statement.

The fake provider searches the way the real APIs report it: Anthropic's web search tool (`max_uses` searches,
counted in `usage.server_tool_use.web_search_requests`), OpenAI's Responses `web_search` tool (one
`web_search_call` output item per search, `max_tool_calls` of them) and OpenAI's Chat Completions search
models (one search per completion). Expected amounts are computed here from the shipped catalog file,
independently of contracts.pricing."""

from __future__ import annotations

import json
import time
import tomllib
import uuid
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import orjson
import pytest

from billing.ingest import run_ingest
from billing.models import Plan
from billing.models import UsageEvent as StoredEvent
from billing.statements import build_statement
from contracts import balance
from contracts.events import USAGE_STREAM
from contracts.events import UsageEvent as Event
from tenants.services import workspace_billing_update

pytestmark = pytest.mark.django_db(transaction=True)

CATALOG = Path(__file__).resolve().parents[2] / "billing" / "data" / "price_catalog.toml"
RATE = Decimal("0.25")  # the plan's BYOK fee rate: the charge is a quarter of the provider cost
NANO = Decimal(10) ** -9
ASK = [{"role": "user", "content": "What happened in tech news today?"}]
ANTHROPIC_SEARCH = {"type": "web_search_20250305", "name": "web_search"}


# --- expected amounts, from the catalog file ------------------------------------------------------------------


def catalog_entry(provider: str, model: str) -> dict[str, Any]:
    with CATALOG.open("rb") as f:
        models = tomllib.load(f)["models"]
    return next(m for m in models if (m["provider"], m["model"]) == (provider, model))


def expected_cost_nanos(
    provider: str, model: str, *, input: int, output: int, cached: int = 0, reasoning: int = 0, searches: int
) -> int:
    """Tokens at the catalog's per-1M prices (cached input at its own price, reasoning at output's) plus
    searches at its `fees.web_search`, in exact decimals, rounded half-up once to a nano-USD. The prompts
    here are far below any long-context tier."""
    entry = catalog_entry(provider, model)
    per_token = (
        input * Decimal(entry["input"])
        + cached * Decimal(entry.get("cached_input", entry["input"]))
        + output * Decimal(entry["output"])
        + reasoning * Decimal(entry.get("reasoning", entry["output"]))
    ) / 1_000_000
    fee = Decimal(entry["fees"]["web_search"])
    assert fee > 0
    total = per_token + searches * fee + Decimal(entry.get("request_fee", "0"))
    return int((total * 10**9).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def charge_of(cost: int) -> int:
    return int((cost * RATE).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def search_fee(provider: str, model: str) -> Decimal:
    return Decimal(catalog_entry(provider, model)["fees"]["web_search"])


# --- helpers --------------------------------------------------------------------------------------------------


def stream_events(r) -> list[Event]:
    return [Event.from_fields({k.decode(): v.decode() for k, v in f.items()}) for _, f in r.xrange(USAGE_STREAM)]


def exact(text: str) -> dict:
    return json.loads(text, parse_float=Decimal, parse_int=Decimal)


def generation(proxy, tenant, request_id: str) -> dict:
    with httpx.Client(timeout=10) as http:
        response = http.get(
            f"{proxy.base_url}/generation",
            params={"id": request_id},
            headers={"authorization": f"Bearer {tenant.plaintext}"},
        )
    assert response.status_code == 200, response.text
    return exact(response.text)["data"]


@pytest.fixture
def fee_tenant(make_tenant, fake_provider_url):
    """A tenant whose BYOK requests are charged RATE x the provider cost (so they need a balance)."""

    def make(provider: str = "openai"):
        base_url = fake_provider_url if provider == "anthropic" else None
        tenant = make_tenant(provider=provider, base_url=base_url)
        plan, _ = Plan.objects.get_or_create(code="tool-fees", defaults={"name": "Fee 25%", "byok_fee_rate": RATE})
        tenant.workspace.plan = plan
        workspace_billing_update(workspace=tenant.workspace, fields=["plan"])
        return tenant

    return make


# --- Anthropic: usage.server_tool_use.web_search_requests ------------------------------------------------------


def test_anthropic_web_searches_are_charged_per_search(fee_tenant, start_proxy, r):
    tenant = fee_tenant("anthropic")
    proxy = start_proxy()
    with anthropic.Anthropic(base_url=proxy.url, api_key=tenant.plaintext, max_retries=0, timeout=20) as sdk:
        raw = sdk.messages.with_raw_response.create(
            model="claude-sonnet-4-6", max_tokens=300, messages=ASK, tools=[{**ANTHROPIC_SEARCH, "max_uses": 2}]
        )
        plain = sdk.messages.create(model="claude-sonnet-4-6", max_tokens=300, messages=ASK)
    message = raw.parse()
    proxy.drain()
    searched, unsearched = stream_events(r)

    # the answer as Anthropic gives it: the searches, their results, the cited answer; the count in usage
    kinds = [block.type for block in message.content]
    assert kinds == ["server_tool_use", "web_search_tool_result"] * 2 + ["text"]
    assert message.usage.server_tool_use is not None and message.usage.server_tool_use.web_search_requests == 2

    # charged: its tokens + 2 searches at the catalog's fee, exactly
    cost = expected_cost_nanos(
        "anthropic",
        "claude-sonnet-4-6",
        input=message.usage.input_tokens,
        output=message.usage.output_tokens,
        searches=2,
    )
    assert searched.units == {"web_search": 2}
    assert searched.cost_nanos == cost and searched.charge_nanos == charge_of(cost)
    assert Decimal(raw.headers["x-turnpike-cost-usd"]) == cost * NANO
    usage = exact(raw.http_response.text)["usage"]
    assert usage["cost"] == charge_of(cost) * NANO
    assert usage["cost_details"] == {"upstream_inference_cost": cost * NANO}
    assert usage["server_tool_use"]["web_search_requests"] == 2  # the provider's bytes kept

    # the same question without the tool: no search, no fee
    assert unsearched.units == {}
    assert unsearched.cost_nanos == expected_cost_nanos(
        "anthropic", "claude-sonnet-4-6", input=plain.usage.input_tokens, output=plain.usage.output_tokens, searches=0
    )

    data = generation(proxy, tenant, searched.request_id)
    assert data["units"] == {"web_search": 2}
    assert data["cost_per_unit_type"] == {"web_search": 2 * search_fee("anthropic", "claude-sonnet-4-6")}
    assert data["cost_nanos"] == cost and data["charge_nanos"] == charge_of(cost)
    assert sum(data["cost_per_token_type"].values()) + sum(data["cost_per_unit_type"].values()) == cost * NANO


def test_anthropic_streamed_web_search_is_charged(fee_tenant, start_proxy, r):
    tenant = fee_tenant("anthropic")
    proxy = start_proxy()
    with anthropic.Anthropic(base_url=proxy.url, api_key=tenant.plaintext, max_retries=0, timeout=20) as sdk:
        events = list(
            sdk.messages.create(
                model="claude-sonnet-4-6", max_tokens=300, messages=ASK, tools=[ANTHROPIC_SEARCH], stream=True
            )
        )
    proxy.drain()
    (event,) = stream_events(r)
    start = next(e for e in events if e.type == "message_start")
    (delta,) = [e for e in events if e.type == "message_delta"]
    blocks = [e.content_block.type for e in events if e.type == "content_block_start"]
    assert blocks == ["server_tool_use", "web_search_tool_result", "text"]
    assert delta.usage.server_tool_use is not None and delta.usage.server_tool_use.web_search_requests == 1

    assert event.stream and not event.estimated and event.units == {"web_search": 1}
    cost = expected_cost_nanos(
        "anthropic",
        "claude-sonnet-4-6",
        input=start.message.usage.input_tokens,
        output=delta.usage.output_tokens,
        searches=1,
    )
    assert event.cost_nanos == cost and event.charge_nanos == charge_of(cost)
    # the closing message_delta tells the charge, search included
    assert delta.usage.model_extra["cost"] == float(charge_of(cost) * NANO)
    data = generation(proxy, tenant, event.request_id)
    assert data["units"] == {"web_search": 1} and data["streamed"] is True
    assert data["cost_per_unit_type"] == {"web_search": search_fee("anthropic", "claude-sonnet-4-6")}


# --- OpenAI Responses: web_search_call output items -------------------------------------------------------------


def test_responses_web_search_calls_are_charged_per_call(fee_tenant, start_proxy, r):
    tenant = fee_tenant()
    proxy = start_proxy()
    with openai.OpenAI(base_url=proxy.base_url, api_key=tenant.plaintext, max_retries=0, timeout=20) as sdk:
        raw = sdk.responses.with_raw_response.create(
            model="gpt-4.1", input="What happened in tech news today?", tools=[{"type": "web_search"}], max_tool_calls=3
        )
    response = raw.parse()
    proxy.drain()
    (event,) = stream_events(r)
    calls = [item for item in response.output if item.type == "web_search_call"]
    assert len(calls) == 3 and response.output[-1].type == "message"
    assert response.output[-1].content[0].annotations[0].type == "url_citation"

    cost = expected_cost_nanos(
        "openai", "gpt-4.1", input=response.usage.input_tokens, output=response.usage.output_tokens, searches=3
    )
    assert event.units == {"web_search": 3}
    assert event.cost_nanos == cost and event.charge_nanos == charge_of(cost)
    usage = exact(raw.http_response.text)["usage"]
    assert usage["cost"] == charge_of(cost) * NANO
    assert usage["cost_details"] == {"upstream_inference_cost": cost * NANO}
    data = generation(proxy, tenant, event.request_id)
    assert data["units"] == {"web_search": 3}
    assert data["cost_per_unit_type"] == {"web_search": 3 * search_fee("openai", "gpt-4.1")}


def test_responses_streamed_web_search_is_charged(fee_tenant, start_proxy, r):
    tenant = fee_tenant()
    proxy = start_proxy()
    with openai.OpenAI(base_url=proxy.base_url, api_key=tenant.plaintext, max_retries=0, timeout=20) as sdk:
        events = list(
            sdk.responses.create(
                model="gpt-5-mini", input="What happened today?", tools=[{"type": "web_search"}], stream=True
            )
        )
    proxy.drain()
    (event,) = stream_events(r)
    assert [e.type for e in events if e.type.startswith("response.web_search_call.")] == [
        "response.web_search_call.in_progress",
        "response.web_search_call.searching",
        "response.web_search_call.completed",
    ]
    completed = events[-1]
    assert completed.type == "response.completed"
    usage = completed.response.usage
    cost = expected_cost_nanos(
        "openai",
        "gpt-5-mini",
        input=usage.input_tokens,
        output=usage.output_tokens - usage.output_tokens_details.reasoning_tokens,
        reasoning=usage.output_tokens_details.reasoning_tokens,
        searches=1,
    )
    assert event.stream and event.units == {"web_search": 1}
    assert event.cost_nanos == cost and event.charge_nanos == charge_of(cost)
    assert usage.model_extra["cost"] == float(charge_of(cost) * NANO)


# --- OpenAI Chat Completions search models: one search per completion -------------------------------------------


def test_a_chat_completion_by_a_search_model_is_one_search(fee_tenant, start_proxy, r):
    tenant = fee_tenant()
    proxy = start_proxy()
    with openai.OpenAI(base_url=proxy.base_url, api_key=tenant.plaintext, max_retries=0, timeout=20) as sdk:
        raw = sdk.chat.completions.with_raw_response.create(model="gpt-4o-search-preview", messages=ASK)
        chunks = list(
            sdk.chat.completions.create(
                model="gpt-4o-mini-search-preview",
                messages=ASK,
                stream=True,
                stream_options={"include_usage": True},
            )
        )
        ordinary = sdk.chat.completions.create(model="gpt-4o-mini", messages=ASK)
    completion = raw.parse()
    proxy.drain()
    searched, streamed, plain = stream_events(r)

    cost = expected_cost_nanos(
        "openai",
        "gpt-4o-search-preview",
        input=completion.usage.prompt_tokens,
        output=completion.usage.completion_tokens,
        searches=1,
    )
    assert searched.units == {"web_search": 1} and searched.cost_nanos == cost
    assert exact(raw.http_response.text)["usage"]["cost"] == charge_of(cost) * NANO

    final = chunks[-1].usage
    streamed_cost = expected_cost_nanos(
        "openai",
        "gpt-4o-mini-search-preview",
        input=final.prompt_tokens,
        output=final.completion_tokens,
        searches=1,
    )
    assert streamed.units == {"web_search": 1} and streamed.cost_nanos == streamed_cost
    assert final.model_extra["cost"] == float(charge_of(streamed_cost) * NANO)

    assert plain.units == {} and ordinary.usage.model_extra["cost"] == float(plain.charge_nanos * NANO)


# --- stored, itemised, and old events -------------------------------------------------------------------------


def old_event_fields(tenant, request_id: str, *, flat: bool) -> dict[str, str]:
    """An event as a proxy of the previous release wrote it: no `units` field at all."""
    now_ms = int(time.time() * 1000)
    event = Event(
        request_id=request_id,
        workspace_id=tenant.workspace.pk,
        key_id=tenant.key.pk,
        provider="anthropic",
        credential_id=None,
        credential_kind="byok",
        model_requested="claude-sonnet-4-6",
        model_served="claude-sonnet-4-6",
        status=200,
        input_tokens=10,
        output_tokens=5,
        cost_nanos=105_000,
        charge_nanos=26_250,
        started_at_ms=now_ms,
        finished_at_ms=now_ms + 10,
    )
    if flat:
        fields = event.to_flat_fields()
        del fields["units"]
        return fields
    fields = event.to_fields()
    values = orjson.loads(fields["e"])
    del values["units"]
    return {**fields, "e": orjson.dumps(values).decode()}


def test_units_are_stored_itemised_and_old_events_without_them_still_ingest(fee_tenant, start_proxy, r):
    tenant = fee_tenant("anthropic")
    proxy = start_proxy()
    with anthropic.Anthropic(base_url=proxy.url, api_key=tenant.plaintext, max_retries=0, timeout=20) as sdk:
        sdk.messages.create(
            model="claude-sonnet-4-6", max_tokens=300, messages=ASK, tools=[{**ANTHROPIC_SEARCH, "max_uses": 3}]
        )
    proxy.drain()
    (searched,) = stream_events(r)
    # two events of a proxy of the previous release, emitted as it did (v2 JSON and v1 flat, no units)
    old_ids = [f"req_{uuid.uuid4().hex}", f"req_{uuid.uuid4().hex}"]
    for request_id, flat in zip(old_ids, (False, True), strict=True):
        fields = old_event_fields(tenant, request_id, flat=flat)
        keys = [balance.bal_key(tenant.workspace.pk), *balance.inflight_keys(tenant.workspace.pk), USAGE_STREAM]
        args: list[Any] = [request_id, 26_250]
        for name, value in fields.items():
            args.extend((name, value))
        r.eval(balance.SETTLE_AND_EMIT, len(keys), *keys, *args)

    result = run_ingest(claim_idle_ms=60_000)
    assert result.inserted == 3 and result.dead == 0
    assert StoredEvent.objects.get(request_id=searched.request_id).units == {"web_search": 3}
    assert [StoredEvent.objects.get(request_id=i).units for i in old_ids] == [{}, {}]

    # after the Redis record expired, /v1/generation answers from Postgres with the same units
    r.delete(balance.generation_key(tenant.workspace.pk, searched.request_id))
    data = generation(proxy, tenant, searched.request_id)
    assert data["units"] == {"web_search": 3}
    assert data["cost_per_unit_type"] == {"web_search": 3 * search_fee("anthropic", "claude-sonnet-4-6")}

    # the statement has a line for the searches, and its lines still sum to its usage total
    now = datetime.now(tz=UTC)
    statement = build_statement(
        workspace_id=tenant.workspace.pk, period_start=now - timedelta(hours=1), period_end=now + timedelta(minutes=1)
    )
    (line,) = [line for line in statement.lines if line.token_type == "fee:web_search"]
    assert line.model == "claude-sonnet-4-6" and line.quantity == 3 and line.unit == "searches"
    assert line.nanos == charge_of(3 * search_fee("anthropic", "claude-sonnet-4-6") * 10**9)
    assert sum(line.nanos for line in statement.lines) == -statement.kind("usage").nanos
    assert sum(line.cents for line in statement.lines) == statement.usage_charged_cents
