"""Reading server-side web searches out of provider responses, without sockets: Anthropic's
`usage.server_tool_use.web_search_requests` (body, stream taps, translated stream), OpenAI Responses'
`web_search_call` output items (body and stream, also cut short), OpenAI's Chat Completions search models,
and the usage event's `units` field (encoded, decoded, sanitized, absent in old events)."""

from __future__ import annotations

from decimal import Decimal
from types import SimpleNamespace

import orjson
import pytest

from contracts.events import MAX_TOKENS, MAX_UNIT_TYPES
from contracts.events import UsageEvent as Event
from contracts.pricing import Price, Usage, cost_breakdown_usd, cost_nanos
from proxy.chat import ChatCompletions
from proxy.gateway import DEFAULT_WEB_SEARCH_ESTIMATE, estimate
from proxy.messages import Messages
from proxy.providers import anthropic, anthropic_compat, openai_format
from proxy.responses import Responses
from proxy.routing import Route
from proxy.sse import AnthropicUsageTap, ResponsesUsageTap
from proxy.streams import OpenAIChunks

SEARCH_FEE = Price(input=Decimal(3), output=Decimal(15), fees=(("web_search", Decimal("0.01")),))


def sse(kind: str, data: dict) -> bytes:
    return f"event: {kind}\ndata: ".encode() + orjson.dumps({"type": kind, **data}) + b"\n\n"


# --- Anthropic -----------------------------------------------------------------------------------------------


def test_anthropic_usage_carries_its_web_searches():
    usage = anthropic.usage_from_anthropic(
        {
            "input_tokens": 2037,
            "cache_read_input_tokens": 0,
            "cache_creation_input_tokens": 0,
            "output_tokens": 795,
            "server_tool_use": {"web_search_requests": 2, "web_fetch_requests": 0},
        }
    )
    assert usage == Usage(input=2037, output=795, units=(("web_search", 2),))
    assert cost_nanos(SEARCH_FEE, usage) == 2037 * 3_000 + 795 * 15_000 + 20_000_000


@pytest.mark.parametrize(
    "server_tool_use",
    [None, {}, {"web_search_requests": 0}, {"web_search_requests": -3}, {"web_search_requests": True}, "2"],
)
def test_anthropic_usage_without_a_real_count_has_no_searches(server_tool_use):
    usage = anthropic.usage_from_anthropic({"input_tokens": 5, "output_tokens": 1, "server_tool_use": server_tool_use})
    assert usage is not None and usage.units == ()


def stream(searches: int) -> list[bytes]:
    """An Anthropic stream as the API sends it with the web search tool: the count only at the end."""
    usage = {"input_tokens": 12, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0, "output_tokens": 1}
    frames = [sse("message_start", {"message": {"id": "msg_1", "model": "claude-x", "usage": usage}})]
    block = {"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search", "input": {}}
    frames.append(sse("content_block_start", {"index": 0, "content_block": block}))
    delta = {"type": "input_json_delta", "partial_json": '{"query": "news"}'}
    frames.append(sse("content_block_delta", {"index": 0, "delta": delta}))
    frames.append(sse("content_block_stop", {"index": 0}))
    final = {"input_tokens": 900, "output_tokens": 40}
    if searches:
        final["server_tool_use"] = {"web_search_requests": searches, "web_fetch_requests": 0}
    frames.append(sse("message_delta", {"delta": {"stop_reason": "end_turn"}, "usage": final}))
    frames.append(sse("message_stop", {}))
    return frames


def test_anthropic_pass_through_tap_reads_the_count_from_message_delta_and_prices_it():
    priced: list[Usage] = []

    def cost(usage: dict) -> dict:
        reported = anthropic.usage_from_anthropic(usage)
        assert reported is not None
        priced.append(reported)
        return {"cost": 1}

    tap = AnthropicUsageTap(cost=cost)
    out = b"".join(tap.feed(frame) for frame in stream(3)) + tap.flush()
    assert tap.complete
    assert anthropic.usage_from_anthropic(tap.usage) == Usage(input=900, output=40, units=(("web_search", 3),))
    assert priced == [Usage(input=900, output=40, units=(("web_search", 3),))]  # the cost told includes them
    assert b'"web_search_requests":3' in out  # the provider's count passes on


def test_anthropic_stream_translated_for_an_openai_client_keeps_the_count():
    translator = anthropic.StreamTranslator(include_usage=True)
    events, rest = anthropic.parse_sse(b"".join(stream(2)))
    assert rest == b""
    for kind, data in events:
        translator.feed(kind, data)
    assert translator.done and translator.usage == Usage(input=900, output=40, units=(("web_search", 2),))
    plain = anthropic.StreamTranslator(include_usage=True)
    for kind, data in anthropic.parse_sse(b"".join(stream(0)))[0]:
        plain.feed(kind, data)
    assert plain.usage == Usage(input=900, output=40)


def test_a_cut_short_stream_keeps_the_searches_reported_before_it_stopped():
    partial = Usage(input=900, output=2, units=(("web_search", 1),))
    assert estimate(Usage(input=50, output=30), partial) == Usage(input=900, output=30, units=(("web_search", 1),))


def test_an_anthropic_client_of_a_search_model_sees_the_search_in_anthropic_terms():
    usage = Usage(input=10, output=4, units=(("web_search", 1),))
    assert anthropic_compat.anthropic_usage(usage)["server_tool_use"] == {"web_search_requests": 1}
    assert "server_tool_use" not in anthropic_compat.anthropic_usage(Usage(input=10, output=4))


# --- OpenAI Responses ----------------------------------------------------------------------------------------

SEARCH_CALL = {"type": "web_search_call", "id": "ws_1", "status": "completed", "action": {"type": "search"}}
MESSAGE = {"type": "message", "id": "msg_1", "role": "assistant", "content": [{"type": "output_text", "text": "Hi"}]}
RESPONSES_USAGE = {
    "input_tokens": 100,
    "input_tokens_details": {"cached_tokens": 20},
    "output_tokens": 50,
    "output_tokens_details": {"reasoning_tokens": 10},
    "total_tokens": 150,
}


def test_each_web_search_call_item_is_one_search():
    output = [SEARCH_CALL, {**SEARCH_CALL, "id": "ws_2"}, MESSAGE, "junk", {"type": "function_call"}]
    assert openai_format.web_search_calls(output) == 2
    assert openai_format.web_search_calls(None) == 0 and openai_format.web_search_calls({"a": 1}) == 0
    usage = openai_format.usage_from_responses(RESPONSES_USAGE, web_searches=2)
    assert usage == Usage(input=80, cached_input=20, output=40, reasoning=10, units=(("web_search", 2),))
    assert openai_format.usage_from_responses(RESPONSES_USAGE) == Usage(
        input=80, cached_input=20, output=40, reasoning=10
    )


def responses_stream(*, complete: bool) -> list[bytes]:
    frames = [sse("response.created", {"response": {"id": "resp_1", "model": "gpt-x", "output": []}})]
    for n in range(2):
        item = {**SEARCH_CALL, "id": f"ws_{n}"}
        frames.append(sse("response.output_item.added", {"output_index": n, "item": {**item, "status": "in_progress"}}))
        frames.append(sse("response.web_search_call.completed", {"output_index": n, "item_id": item["id"]}))
        frames.append(sse("response.output_item.done", {"output_index": n, "item": item}))
    frames.append(sse("response.output_text.delta", {"output_index": 2, "delta": "Hi"}))
    if complete:
        response = {"id": "resp_1", "model": "gpt-x", "output": [SEARCH_CALL, SEARCH_CALL, MESSAGE]}
        frames.append(sse("response.completed", {"response": {**response, "usage": RESPONSES_USAGE}}))
    return frames


def test_responses_stream_tap_counts_the_search_calls_before_pricing_the_terminal_event():
    told: list[int] = []
    tap = ResponsesUsageTap(cost=lambda usage: told.append(tap.web_searches) or {"cost": 1})
    for frame in responses_stream(complete=True):
        tap.feed(frame)
    assert tap.complete and tap.web_searches == 2 and told == [2]


def test_responses_stream_cut_short_still_counts_the_searches_made():
    tap = ResponsesUsageTap()
    for frame in responses_stream(complete=False):
        tap.feed(frame)
    assert not tap.complete and tap.web_searches == 2 and tap.streamed_text() == "Hi"


# --- OpenAI Chat Completions search models -------------------------------------------------------------------

CHAT_USAGE = {"prompt_tokens": 30, "completion_tokens": 12, "total_tokens": 42}


@pytest.mark.parametrize(
    ("model", "searches"),
    [
        ("gpt-4o-search-preview", 1),
        ("gpt-4o-mini-search-preview-2025-03-11", 1),
        ("gpt-5-search-api", 1),
        ("gpt-5-search-api-2025-10-14", 1),
        ("gpt-4o-mini", 0),
        ("research-preview-model", 0),
        ("", 0),
    ],
)
def test_a_search_model_completion_is_one_search(model, searches):
    usage = openai_format.usage_from_openai(CHAT_USAGE, model=model)
    assert usage is not None and usage.unit_count("web_search") == searches
    assert (usage.input, usage.output) == (30, 12)


def test_the_openai_chunk_source_prices_a_search_model_stream_as_one_search():
    source = OpenAIChunks("gpt-4o-search-preview")
    chunk = {"id": "c", "model": "gpt-4o-search-preview-2025-03-11", "choices": [], "usage": CHAT_USAGE}
    source.feed(b"data: " + orjson.dumps(chunk) + b"\n\ndata: [DONE]\n\n")
    assert source.final_usage == Usage(input=30, output=12, units=(("web_search", 1),))


# --- pricing and the usage event --------------------------------------------------------------------------------


def test_units_are_canonical_and_priced_per_fee_name():
    usage = Usage(units=(("web_search", 1), ("image_output", 0), ("web_search", 2)))
    assert usage.units == (("web_search", 3),) and usage.unit_count("web_search") == 3
    assert usage == Usage(units=(("web_search", 3),))
    breakdown = cost_breakdown_usd(SEARCH_FEE, usage)
    assert breakdown["fee:web_search"] == Decimal("0.03")
    # a unit the price has no fee for costs nothing
    assert "fee:maps_grounding" not in cost_breakdown_usd(SEARCH_FEE, Usage(units=(("maps_grounding", 4),)))


def event(**overrides) -> Event:
    values = {
        "request_id": "req_1",
        "workspace_id": 1,
        "key_id": 2,
        "provider": "anthropic",
        "credential_id": None,
        "credential_kind": "byok",
        "model_requested": "m",
        "model_served": "m",
        "status": 200,
    }
    return Event(**{**values, **overrides})


def test_the_usage_event_carries_units_in_every_encoding():
    sent = event(units={"web_search": 2})
    assert Event.from_fields(sent.to_fields()).units == {"web_search": 2}
    assert Event.from_fields(sent.to_flat_fields()).units == {"web_search": 2}
    assert orjson.loads(sent.to_fields()["e"])["units"] == {"web_search": 2}


def test_an_event_of_an_earlier_proxy_without_units_decodes_with_none():
    fields = event().to_fields()
    values = orjson.loads(fields["e"])
    del values["units"]
    decoded = Event.from_fields({**fields, "e": orjson.dumps(values).decode()})
    assert decoded.units == {} and not decoded.clamped
    flat = event().to_flat_fields()
    del flat["units"]
    assert Event.from_fields(flat).units == {}


def test_unit_counts_are_clamped_like_tokens_and_bad_names_dropped():
    bad = event(units={"web_search": -3, "image_output": 10**20, "maps_grounding": "7", "Bad Name": 1, "x\x00": 2})
    assert bad.sanitize() == ["units"] and bad.clamped
    assert bad.units == {"image_output": MAX_TOKENS, "maps_grounding": 7, "web_search": 0}
    many = event(units={f"unit_{n:02d}": 1 for n in range(MAX_UNIT_TYPES + 5)})
    many.sanitize()
    assert len(many.units) == MAX_UNIT_TYPES
    fine = event(units={"web_search": 2})
    assert fine.sanitize() == [] and not fine.clamped


@pytest.mark.parametrize(
    "units", [[["web_search", 1]], "web_search", 3, {"web_search": [1]}, {"web_search": float("nan")}]
)
def test_units_of_the_wrong_kind_are_refused(units):
    with pytest.raises(ValueError, match="units"):
        event(units=units).sanitize()


def test_null_units_decode_as_none():
    fields = event().to_fields()
    values = orjson.loads(fields["e"])
    values["units"] = None
    assert Event.from_fields({**fields, "e": orjson.dumps(values).decode()}).units == {}


# --- the reservation counts the searches a request may make ------------------------------------------------------


def reservation(endpoint: type, body: dict, *, model: str = "m", price: Price = SEARCH_FEE) -> int:
    runtime = SimpleNamespace(catalog=SimpleNamespace(max_output_tokens=lambda provider, model: None))
    route = Route(credential=None, provider="x", model=model, price=price, base_url="")  # type: ignore[arg-type]
    return endpoint(runtime).reservation(route, {"max_tokens": 100, **body}, 300, Decimal(1))


def test_the_reservation_includes_the_searches_a_request_may_make():
    search = 10_000_000  # $0.01 in nano-USD
    plain = reservation(Messages, {"tools": [{"name": "get_weather", "input_schema": {"type": "object"}}]})
    tool = {"type": "web_search_20250305", "name": "web_search"}
    assert reservation(Messages, {"tools": [{**tool, "max_uses": 3}]}) == plain + 3 * search
    assert reservation(Messages, {"tools": [tool]}) == plain + DEFAULT_WEB_SEARCH_ESTIMATE * search
    assert reservation(Responses, {"tools": [{"type": "web_search"}], "max_tool_calls": 2}) == plain + 2 * search
    assert reservation(Responses, {"tools": [{"type": "web_search_preview"}]}) == plain + 5 * search
    assert reservation(ChatCompletions, {}, model="gpt-4o-search-preview") == plain + search
    assert reservation(ChatCompletions, {}, model="gpt-4o-mini") == plain
    no_fee = Price(input=Decimal(3), output=Decimal(15))
    assert reservation(Messages, {"tools": [{**tool, "max_uses": 3}]}, price=no_fee) == plain


def test_a_gemini_request_offering_google_search_reserves_its_grounding_fee():
    search = 10_000_000
    plain = reservation(ChatCompletions, {}, model="gemini-2.5-flash")
    grounded = {"tools": [{"type": "google_search"}]}
    assert plain_google(grounded, "gemini-2.5-flash") == plain_google({}, "gemini-2.5-flash") + search  # per prompt
    assert plain_google(grounded, "gemini-3-pro") == plain_google({}, "gemini-3-pro") + 5 * search  # per query
    assert reservation(ChatCompletions, grounded, model="gemini-2.5-flash") == plain  # not a Google route


def plain_google(body: dict, model: str) -> int:
    runtime = SimpleNamespace(catalog=SimpleNamespace(max_output_tokens=lambda provider, model: None))
    route = Route(credential=None, provider="google", model=model, price=SEARCH_FEE, base_url="")  # type: ignore[arg-type]
    return ChatCompletions(runtime).reservation(route, {"max_tokens": 100, **body}, 300, Decimal(1))
