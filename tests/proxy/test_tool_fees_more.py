"""Gemini's grounding fees are charged, end to end, through the real proxy with the official `openai` SDK
(`google/<model>` through /v1/chat/completions, translated to generateContent): a grounded answer costs its
tokens plus the catalog's grounding fee, billed the way Google bills it, and the units show in the
response's `usage.cost`, the usage event, `GET /v1/generation` and the statement.

Google's rule (ai.google.dev/gemini-api/docs/pricing): Gemini 2.x bills Grounding with Google Search and with
Google Maps per grounded prompt (one fee however many queries ran); Gemini 3 and later bill Search per
search query (the response's `groundingMetadata.webSearchQueries`) and Maps per query too, which the
response does not count, so Maps grounding on those models is not charged. The fake Gemini grounds only
when the request offers the tool, running one search query per question in the prompt. Expected amounts
are computed here from the shipped catalog file, independently of contracts.pricing."""

from __future__ import annotations

import json
import tomllib
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from billing.ingest import run_ingest
from billing.models import Plan
from billing.models import UsageEvent as StoredEvent
from billing.statements import build_statement
from contracts.events import USAGE_STREAM
from contracts.events import UsageEvent as Event
from tenants.services import workspace_billing_update

pytestmark = pytest.mark.django_db(transaction=True)

CATALOG = Path(__file__).resolve().parents[2] / "billing" / "data" / "price_catalog.toml"
RATE = Decimal("0.25")  # the plan's BYOK fee rate: the charge is a quarter of the provider cost
NANO = Decimal(10) ** -9
TWO_QUESTIONS = [{"role": "user", "content": "Who won the match yesterday? And what is the weather in Rome?"}]
SEARCH = {"type": "google_search"}
MAPS = {"type": "google_maps"}
GEMINI_2 = "gemini-2.5-flash"  # per grounded prompt
GEMINI_3 = "gemini-3.5-flash"  # per search query


def catalog_entry(model: str) -> dict[str, Any]:
    with CATALOG.open("rb") as f:
        models = tomllib.load(f)["models"]
    return next(m for m in models if (m["provider"], m["model"]) == ("google", model))


def fee(model: str, unit: str) -> Decimal:
    amount = Decimal(catalog_entry(model)["fees"][unit])
    assert amount > 0
    return amount


def expected_cost_nanos(model: str, usage: Any, units: dict[str, int]) -> int:
    """The chat usage's tokens at the catalog's per-1M prices (cached at its price, reasoning at output's),
    plus each unit at its fee, exactly, rounded half-up once to a nano-USD (prompts are far below tiers)."""
    entry = catalog_entry(model)
    cached = usage.prompt_tokens_details.cached_tokens or 0
    reasoning = usage.completion_tokens_details.reasoning_tokens or 0
    per_token = (
        (usage.prompt_tokens - cached) * Decimal(entry["input"])
        + cached * Decimal(entry.get("cached_input", entry["input"]))
        + (usage.completion_tokens - reasoning) * Decimal(entry["output"])
        + reasoning * Decimal(entry.get("reasoning", entry["output"]))
    ) / 1_000_000
    total = per_token + sum((count * fee(model, unit) for unit, count in units.items()), Decimal(0))
    return int((total * 10**9).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def charge_of(cost: int | Decimal) -> int:
    return int((Decimal(cost) * RATE).quantize(Decimal(1), rounding=ROUND_HALF_UP))


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
def gemini(make_tenant, start_proxy, fake_provider_url):
    """A Google BYOK tenant charged RATE x the provider cost, the proxy and an `openai` SDK client."""
    tenant = make_tenant(provider="google", base_url=fake_provider_url)
    plan, _ = Plan.objects.get_or_create(code="tool-fees", defaults={"name": "Fee 25%", "byok_fee_rate": RATE})
    tenant.workspace.plan = plan
    workspace_billing_update(workspace=tenant.workspace, fields=["plan"])
    proxy = start_proxy()
    with openai.OpenAI(base_url=proxy.base_url, api_key=tenant.plaintext, max_retries=0, timeout=20) as sdk:
        yield sdk, proxy, tenant


def test_gemini_2_search_grounding_is_one_fee_per_grounded_prompt(gemini, r):
    sdk, proxy, tenant = gemini
    raw = sdk.chat.completions.with_raw_response.create(
        model=f"google/{GEMINI_2}", messages=TWO_QUESTIONS, tools=[SEARCH]
    )
    plain = sdk.chat.completions.create(model=f"google/{GEMINI_2}", messages=TWO_QUESTIONS)
    completion = raw.parse()
    proxy.drain()
    grounded, ungrounded = stream_events(r)

    # two search queries ran, but Gemini 2.5 bills the grounded prompt once
    cost = expected_cost_nanos(GEMINI_2, completion.usage, {"web_search": 1})
    assert completion.choices[0].message.content
    assert grounded.units == {"web_search": 1}
    assert grounded.cost_nanos == cost and grounded.charge_nanos == charge_of(cost)
    assert Decimal(raw.headers["x-turnpike-cost-usd"]) == cost * NANO
    usage = exact(raw.http_response.text)["usage"]
    assert usage["cost"] == charge_of(cost) * NANO
    assert usage["cost_details"] == {"upstream_inference_cost": cost * NANO}

    # without the tool: no grounding, no fee
    assert ungrounded.units == {}
    assert ungrounded.cost_nanos == expected_cost_nanos(GEMINI_2, plain.usage, {})

    data = generation(proxy, tenant, grounded.request_id)
    assert data["units"] == {"web_search": 1}
    assert data["cost_per_unit_type"] == {"web_search": fee(GEMINI_2, "web_search")}
    assert sum(data["cost_per_token_type"].values()) + sum(data["cost_per_unit_type"].values()) == cost * NANO


def test_gemini_3_search_grounding_is_charged_per_search_query_streaming_too(gemini, r):
    sdk, proxy, _ = gemini
    completion = sdk.chat.completions.create(model=f"google/{GEMINI_3}", messages=TWO_QUESTIONS, tools=[SEARCH])
    chunks = list(
        sdk.chat.completions.create(
            model=f"google/{GEMINI_3}",
            messages=TWO_QUESTIONS,
            tools=[SEARCH],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    proxy.drain()
    answered, streamed = stream_events(r)

    # one query per question: two fees
    cost = expected_cost_nanos(GEMINI_3, completion.usage, {"web_search": 2})
    assert answered.units == {"web_search": 2} and answered.cost_nanos == cost
    assert completion.usage.model_extra["cost"] == float(charge_of(cost) * NANO)

    final = chunks[-1].usage
    streamed_cost = expected_cost_nanos(GEMINI_3, final, {"web_search": 2})
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed.stream and not streamed.estimated and streamed.units == {"web_search": 2}
    assert streamed.cost_nanos == streamed_cost and streamed.charge_nanos == charge_of(streamed_cost)
    assert final.model_extra["cost"] == float(charge_of(streamed_cost) * NANO)


def test_maps_grounding_is_charged_per_prompt_on_gemini_2_and_not_counted_on_gemini_3(gemini, r):
    sdk, proxy, tenant = gemini
    both = sdk.chat.completions.create(model=f"google/{GEMINI_2}", messages=TWO_QUESTIONS, tools=[SEARCH, MAPS])
    chunks = list(
        sdk.chat.completions.create(
            model=f"google/{GEMINI_2}",
            messages=TWO_QUESTIONS,
            tools=[MAPS],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    newer = sdk.chat.completions.create(model=f"google/{GEMINI_3}", messages=TWO_QUESTIONS, tools=[MAPS])
    proxy.drain()
    searched_and_mapped, mapped, newer_mapped = stream_events(r)

    units = {"web_search": 1, "maps_grounding": 1}
    cost = expected_cost_nanos(GEMINI_2, both.usage, units)
    assert searched_and_mapped.units == units and searched_and_mapped.cost_nanos == cost
    assert both.usage.model_extra["cost"] == float(charge_of(cost) * NANO)
    data = generation(proxy, tenant, searched_and_mapped.request_id)
    assert data["cost_per_unit_type"] == {
        "maps_grounding": fee(GEMINI_2, "maps_grounding"),
        "web_search": fee(GEMINI_2, "web_search"),
    }

    streamed_cost = expected_cost_nanos(GEMINI_2, chunks[-1].usage, {"maps_grounding": 1})
    assert mapped.stream and mapped.units == {"maps_grounding": 1} and mapped.cost_nanos == streamed_cost

    # Gemini 3 bills Maps per query, which the response does not report: tokens only (stored-only fee)
    assert newer_mapped.units == {}
    assert newer_mapped.cost_nanos == expected_cost_nanos(GEMINI_3, newer.usage, {})

    # stored, and the statement has a line per unit type; its lines still sum to its usage total
    assert run_ingest(claim_idle_ms=60_000).inserted == 3
    assert StoredEvent.objects.get(request_id=searched_and_mapped.request_id).units == units
    now = datetime.now(tz=UTC)
    statement = build_statement(
        workspace_id=tenant.workspace.pk, period_start=now - timedelta(hours=1), period_end=now + timedelta(minutes=1)
    )
    (maps_line,) = [line for line in statement.lines if line.token_type == "fee:maps_grounding"]
    assert maps_line.model == GEMINI_2 and maps_line.quantity == 2
    assert maps_line.nanos == charge_of(2 * fee(GEMINI_2, "maps_grounding") * 10**9)
    (search_line,) = [line for line in statement.lines if line.token_type == "fee:web_search"]
    assert search_line.quantity == 1 and search_line.nanos == charge_of(fee(GEMINI_2, "web_search") * 10**9)
    assert sum(line.nanos for line in statement.lines) == -statement.kind("usage").nanos


def test_a_grounding_tool_with_options_is_refused_clearly(gemini):
    sdk, _, _ = gemini
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.chat.completions.create(
            model=f"google/{GEMINI_2}", messages=TWO_QUESTIONS, tools=[{"type": "google_search", "depth": 3}]
        )
    assert caught.value.body["param"] == "tools[0].depth"
    assert caught.value.body["code"] == "unsupported_parameter"
