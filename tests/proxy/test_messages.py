"""The `anthropic` SDK pointed at Turnpike's /v1/messages over real sockets: native pass-through to
Anthropic, and translated to an OpenAI model and a Gemini model, streaming and not, tools included;
errors in Anthropic's envelope so the SDK raises its own exception classes."""

from __future__ import annotations

import json
from decimal import Decimal

import anthropic
import pytest

from billing.models import Plan
from contracts.events import USAGE_STREAM, UsageEvent
from tenants.services import workspace_billing_update

pytestmark = pytest.mark.django_db(transaction=True)

TOOLS = [
    {
        "name": "get_weather",
        "description": "Weather for a city",
        "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    }
]
HELLO = [{"role": "user", "content": "Say hello"}]


def events(r) -> list[UsageEvent]:
    return [UsageEvent.from_fields({k.decode(): v.decode() for k, v in f.items()}) for _, f in r.xrange(USAGE_STREAM)]


@pytest.fixture
def claude_sdk(make_tenant, start_proxy, fake_provider_url):
    """An anthropic SDK client for a tenant whose credential is `provider` (default Anthropic)."""
    opened: list[anthropic.Anthropic] = []

    def make(provider: str = "anthropic", base_url: str | None = None, credit_usd: str | None = "10"):
        if base_url is None:
            base_url = fake_provider_url if provider in ("anthropic", "google") else f"{fake_provider_url}/v1"
        tenant = make_tenant(provider=provider, base_url=base_url, credit_usd=credit_usd)
        proxy = start_proxy()
        sdk = anthropic.Anthropic(base_url=proxy.url, api_key=tenant.plaintext, max_retries=0, timeout=20)
        opened.append(sdk)
        return sdk, proxy

    yield make
    for sdk in opened:
        sdk.close()


# --- native: Anthropic models ----------------------------------------------------------------------------------


def test_native_message_passes_through_with_usage_and_cost(claude_sdk, r):
    sdk, proxy = claude_sdk()
    raw = sdk.messages.with_raw_response.create(
        model="claude-haiku-4-5", max_tokens=100, system="Be brief.", messages=HELLO
    )
    message = raw.parse()
    assert message.type == "message" and message.content[0].type == "text" and message.content[0].text
    assert message.stop_reason == "end_turn" and message.usage.input_tokens > 0
    proxy.drain()
    (event,) = events(r)
    assert event.provider == "anthropic" and event.priced and not event.stream
    assert event.input_tokens == message.usage.input_tokens and event.output_tokens == message.usage.output_tokens
    assert raw.headers["x-turnpike-cost-usd"] == format(Decimal(event.cost_nanos) / 10**9, "f")


def test_native_stream_with_cache_tokens_is_accounted(claude_sdk, r):
    sdk, proxy = claude_sdk()
    with sdk.messages.stream(model="anthropic/claude-haiku-4-5@cached=7", max_tokens=100, messages=HELLO) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text and final.content[0].text == text
    proxy.drain()
    (event,) = events(r)
    assert event.stream and not event.estimated
    assert event.output_tokens == final.usage.output_tokens
    assert event.cached_input_tokens == (final.usage.cache_read_input_tokens or 0)
    assert event.input_tokens == final.usage.input_tokens


def test_native_tool_use(claude_sdk):
    sdk, _ = claude_sdk()
    message = sdk.messages.create(
        model="claude-haiku-4-5", max_tokens=200, tools=TOOLS, messages=[{"role": "user", "content": "Paris?"}]
    )
    (block,) = [b for b in message.content if b.type == "tool_use"]
    assert block.name == "get_weather" and "city" in block.input and message.stop_reason == "tool_use"


def test_count_tokens_for_an_anthropic_model(claude_sdk, r):
    sdk, proxy = claude_sdk()
    counted = sdk.messages.count_tokens(model="claude-haiku-4-5", messages=HELLO)
    assert counted.input_tokens > 0
    proxy.drain()
    assert events(r) == []  # free at Anthropic: nothing billed


def test_errors_come_in_anthropics_envelope(claude_sdk, make_tenant, start_proxy):
    sdk, proxy = claude_sdk()
    with pytest.raises(anthropic.BadRequestError) as caught:
        sdk.messages.create(model="claude-haiku-4-5", max_tokens=0, messages=HELLO)
    assert caught.value.body["type"] == "error"
    assert caught.value.body["error"]["type"] == "invalid_request_error"
    assert "max_tokens" in caught.value.body["error"]["message"]
    with pytest.raises(anthropic.BadRequestError) as caught:
        sdk.messages.create(model="claude-haiku-4-5", max_tokens=10, messages=[{"role": "robot", "content": "hi"}])
    assert "role" in caught.value.body["error"]["message"]
    bad = anthropic.Anthropic(base_url=proxy.url, api_key="tpk_live_nope", max_retries=0)
    with pytest.raises(anthropic.AuthenticationError) as caught_auth:
        bad.messages.create(model="claude-haiku-4-5", max_tokens=10, messages=HELLO)
    assert caught_auth.value.body["error"]["type"] == "authentication_error"
    with pytest.raises(anthropic.NotFoundError):
        sdk.messages.create(model="no-such-model-anywhere", max_tokens=10, messages=HELLO)


def test_zero_balance_is_refused_in_anthropics_envelope(make_tenant, start_proxy, fake_provider_url):
    # the free plan's BYOK requests cost nothing and need no balance (tests/proxy/test_zero_charge.py); a fee does
    tenant = make_tenant(provider="anthropic", base_url=fake_provider_url, credit_usd=None)
    tenant.workspace.plan = Plan.objects.create(code="messages-fee", name="BYOK fee", byok_fee_rate=Decimal("0.1"))
    workspace_billing_update(workspace=tenant.workspace, fields=["plan"])
    proxy = start_proxy()
    with (
        anthropic.Anthropic(base_url=proxy.url, api_key=tenant.plaintext, max_retries=0) as sdk,
        pytest.raises(anthropic.APIStatusError) as caught,
    ):
        sdk.messages.create(model="claude-haiku-4-5", max_tokens=10, messages=HELLO)
    assert caught.value.status_code == 402 and caught.value.body["error"]["type"] == "billing_error"
    assert f"/w/{tenant.workspace.slug}/billing/" in caught.value.body["error"]["message"]


def test_upstream_rate_limit_is_anthropics_rate_limit_error(claude_sdk):
    sdk, _ = claude_sdk()
    with pytest.raises(anthropic.RateLimitError) as caught:
        sdk.messages.create(model="anthropic/claude-haiku-4-5@status=429", max_tokens=10, messages=HELLO)
    assert caught.value.response.headers.get("retry-after") == "1"


# --- translated: an OpenAI model behind the Anthropic API ------------------------------------------------------


def test_openai_model_answers_as_an_anthropic_message(claude_sdk, r):
    sdk, proxy = claude_sdk(provider="openai")
    message = sdk.messages.create(model="openai/gpt-4o-mini", max_tokens=100, system="Be brief.", messages=HELLO)
    assert message.type == "message" and message.role == "assistant"
    assert message.content[0].type == "text" and message.content[0].text
    assert message.stop_reason == "end_turn" and message.usage.output_tokens > 0
    proxy.drain()
    (event,) = events(r)
    assert event.provider == "openai" and event.priced
    assert event.input_tokens == message.usage.input_tokens and event.output_tokens == message.usage.output_tokens


def test_openai_model_streams_anthropic_events(claude_sdk, r):
    sdk, proxy = claude_sdk(provider="openai")
    with sdk.messages.stream(model="openai/gpt-4o-mini", max_tokens=100, messages=HELLO) as stream:
        kinds = []
        text = ""
        for event in stream:
            kinds.append(event.type)
            if event.type == "text":
                text += event.text
        final = stream.get_final_message()
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop"
    assert final.content[0].text == text and final.stop_reason == "end_turn"
    proxy.drain()
    (event,) = events(r)
    assert event.stream and not event.estimated and event.output_tokens == final.usage.output_tokens
    assert final.usage.input_tokens == event.input_tokens


@pytest.mark.parametrize("stream", [False, True])
def test_openai_model_tool_use_round_trip(claude_sdk, stream):
    sdk, _ = claude_sdk(provider="openai")
    ask = [{"role": "user", "content": "Weather in Paris?"}]
    if stream:
        with sdk.messages.stream(model="openai/gpt-4o-mini", max_tokens=200, tools=TOOLS, messages=ask) as s:
            message = s.get_final_message()
    else:
        message = sdk.messages.create(model="openai/gpt-4o-mini", max_tokens=200, tools=TOOLS, messages=ask)
    (block,) = [b for b in message.content if b.type == "tool_use"]
    assert block.name == "get_weather" and block.input == {"city": "example"} and message.stop_reason == "tool_use"
    # the tool result goes back as Anthropic's tool_result block; the OpenAI model answers in text
    follow_up = sdk.messages.create(
        model="openai/gpt-4o-mini",
        max_tokens=200,
        tools=TOOLS,
        messages=[
            *ask,
            {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in message.content]},
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": block.id, "content": json.dumps({"temp": 21})}],
            },
        ],
    )
    assert follow_up.content[0].type == "text" and follow_up.stop_reason == "end_turn"


def test_count_tokens_for_an_openai_model_is_estimated_locally(claude_sdk, r):
    sdk, proxy = claude_sdk(provider="openai")
    short = sdk.messages.with_raw_response.count_tokens(model="openai/gpt-4o-mini", messages=HELLO)
    longer = sdk.messages.count_tokens(
        model="openai/gpt-4o-mini", messages=[{"role": "user", "content": "Say hello " * 50}], tools=TOOLS
    )
    assert short.headers["x-turnpike-estimated"] == "true"
    assert 0 < short.parse().input_tokens < longer.input_tokens
    proxy.drain()
    assert events(r) == []


def test_unsupported_field_for_an_openai_model_is_a_clear_400(claude_sdk):
    sdk, _ = claude_sdk(provider="openai")
    with pytest.raises(anthropic.BadRequestError) as caught:
        sdk.messages.create(model="openai/gpt-4o-mini", max_tokens=10, messages=HELLO, extra_body={"top_k": 5})
    assert "top_k" in caught.value.body["error"]["message"]


# --- translated: a Gemini model behind the Anthropic API -------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
def test_gemini_model_through_the_anthropic_api(claude_sdk, r, stream):
    sdk, proxy = claude_sdk(provider="google")
    if stream:
        with sdk.messages.stream(model="google/gemini-2.5-flash", max_tokens=100, messages=HELLO) as s:
            text = "".join(s.text_stream)
            message = s.get_final_message()
        assert text == message.content[0].text
    else:
        message = sdk.messages.create(model="google/gemini-2.5-flash", max_tokens=100, messages=HELLO)
    assert message.content[0].type == "text" and message.content[0].text and message.stop_reason == "end_turn"
    proxy.drain()
    (event,) = events(r)
    assert event.provider == "google" and event.priced and not event.estimated
    assert event.output_tokens + event.reasoning_tokens == message.usage.output_tokens
