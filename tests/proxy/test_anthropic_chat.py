"""The `openai` SDK calling Claude through /v1/chat/completions: Turnpike translates to Anthropic's
Messages API and back, streaming included, over real sockets against the fake Anthropic."""

from __future__ import annotations

import json
from decimal import ROUND_HALF_UP, Decimal

import openai
import pytest

from contracts.events import USAGE_STREAM, UsageEvent

pytestmark = pytest.mark.django_db(transaction=True)

MODEL = "anthropic/claude-sonnet-4-5"
HI = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hello"}]
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather for a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        },
    }
]


def events(r) -> list[UsageEvent]:
    return [UsageEvent.from_fields({k.decode(): v.decode() for k, v in f.items()}) for _, f in r.xrange(USAGE_STREAM)]


@pytest.fixture
def claude(make_tenant, start_proxy, fake_provider_url):
    tenant = make_tenant(provider="anthropic", base_url=fake_provider_url)
    proxy = start_proxy()
    with openai.OpenAI(base_url=proxy.base_url, api_key=tenant.plaintext, max_retries=0, timeout=20) as sdk:
        yield sdk, proxy


def test_non_streaming_answer_in_openai_shape(claude, r):
    sdk, proxy = claude
    raw = sdk.chat.completions.with_raw_response.create(model=MODEL, messages=HI)
    completion = raw.parse()
    assert completion.object == "chat.completion"
    assert completion.choices[0].message.content and completion.choices[0].finish_reason == "stop"
    assert completion.usage.prompt_tokens > 0 and completion.usage.completion_tokens > 0
    proxy.drain()
    (event,) = events(r)
    assert event.provider == "anthropic" and event.priced and event.cost_nanos > 0
    assert raw.headers["x-turnpike-cost-usd"] == format(Decimal(event.cost_nanos) / 10**9, "f")


def test_streaming_emits_role_content_finish_and_usage(claude, r):
    sdk, proxy = claude
    chunks = list(
        sdk.chat.completions.create(model=MODEL, messages=HI, stream=True, stream_options={"include_usage": True})
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert len(text.split()) >= 5
    finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finish == ["stop"]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == len(text.split())
    proxy.drain()
    (event,) = events(r)
    assert event.stream and not event.estimated and event.output_tokens == len(text.split())


@pytest.mark.parametrize("stream", [False, True])
def test_tool_calls_translate_both_ways(claude, stream):
    sdk, _ = claude
    ask = [{"role": "user", "content": "Weather in Paris?"}]
    if stream:
        name, arguments, call_id, finish = "", "", None, None
        for chunk in sdk.chat.completions.create(model=MODEL, messages=ask, tools=TOOLS, stream=True):
            choice = chunk.choices[0]
            finish = choice.finish_reason or finish
            for delta in choice.delta.tool_calls or []:
                call_id = call_id or delta.id
                name += delta.function.name or ""
                arguments += delta.function.arguments or ""
    else:
        completion = sdk.chat.completions.create(model=MODEL, messages=ask, tools=TOOLS)
        (call,) = completion.choices[0].message.tool_calls
        call_id, name, arguments = call.id, call.function.name, call.function.arguments
        finish = completion.choices[0].finish_reason
    assert finish == "tool_calls" and name == "get_weather" and call_id.startswith("toolu_")
    assert isinstance(json.loads(arguments)["city"], str)

    followup = sdk.chat.completions.create(
        model=MODEL,
        messages=[
            *ask,
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [{"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}],
            },
            {"role": "tool", "tool_call_id": call_id, "content": '{"temp_c": 18}'},
        ],
        tools=TOOLS,
    )
    assert followup.choices[0].message.content and followup.choices[0].finish_reason == "stop"


def test_cache_reads_and_writes_are_priced_per_token_type_to_the_nano_dollar(claude, r):
    sdk, proxy = claude
    completion = sdk.chat.completions.create(model=f"{MODEL}@cached=3000;cache_write=500", messages=HI)
    proxy.drain()
    (event,) = events(r)
    assert (event.cached_input_tokens, event.cache_write_tokens) == (3000, 500)
    # OpenAI's shape for the client: prompt tokens include cache reads and writes
    assert completion.usage.prompt_tokens == event.input_tokens + 3000 + 500
    assert completion.usage.prompt_tokens_details.cached_tokens == 3000
    assert not event.priced  # the suffixed model name is not in the catalog: unpriced, never $0


def test_unsupported_parameters_are_a_clear_400_not_a_silent_drop(claude):
    sdk, _ = claude
    for kwargs, param in [
        ({"response_format": {"type": "json_object"}}, "response_format"),
        ({"n": 2}, "n"),
        ({"temperature": 1.5}, "temperature"),
        ({"logprobs": True}, "logprobs"),
    ]:
        with pytest.raises(openai.BadRequestError) as caught:
            sdk.chat.completions.create(model=MODEL, messages=HI, **kwargs)
        assert caught.value.param == param, kwargs


def test_anthropic_errors_map_to_the_openai_classes(claude):
    sdk, _ = claude
    with pytest.raises(openai.RateLimitError):
        sdk.chat.completions.create(model=f"{MODEL}@status=429", messages=HI)
    with pytest.raises(openai.InternalServerError) as caught:
        sdk.chat.completions.create(model=f"{MODEL}@status=529", messages=HI)  # Anthropic's "overloaded"
    assert caught.value.status_code == 503


def test_charge_uses_the_catalog_price_of_each_token_type(claude, r):
    sdk, proxy = claude
    completion = sdk.chat.completions.create(model=MODEL, messages=HI)
    proxy.drain()
    (event,) = events(r)
    price = proxy.app.rt.catalog.price("anthropic", "claude-sonnet-4-5")
    expected = (
        Decimal(event.input_tokens) * price.input + Decimal(event.output_tokens) * price.output
    ) * 1000  # USD per 1M tokens -> nano-USD per token
    assert event.cost_nanos == int(expected.to_integral_value(ROUND_HALF_UP))
    assert completion.usage.completion_tokens == event.output_tokens
