"""The `openai` SDK calling Gemini through /v1/chat/completions and /v1/embeddings: Turnpike translates
to Gemini's generateContent / streamGenerateContent / batchEmbedContents and back, over real sockets
against the fake Gemini."""

from __future__ import annotations

import json

import openai
import pytest

from billing.models import ModelPrice
from contracts.events import USAGE_STREAM, UsageEvent
from contracts.pricing import Usage, cost_nanos

pytestmark = pytest.mark.django_db(transaction=True)

MODEL = "google/gemini-2.5-flash"
HI = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hello"}]
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather for a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
                "additionalProperties": False,
            },
        },
    }
]


def events(r) -> list[UsageEvent]:
    return [UsageEvent.from_fields({k.decode(): v.decode() for k, v in f.items()}) for _, f in r.xrange(USAGE_STREAM)]


@pytest.fixture
def gemini(make_tenant, start_proxy, fake_provider_url):
    tenant = make_tenant(provider="google", base_url=fake_provider_url)
    proxy = start_proxy()
    with openai.OpenAI(base_url=proxy.base_url, api_key=tenant.plaintext, max_retries=0, timeout=20) as sdk:
        yield sdk, proxy


def test_non_streaming_answer_priced_with_cached_and_thinking_tokens(gemini, r):
    sdk, proxy = gemini
    raw = sdk.chat.completions.with_raw_response.create(
        model="gemini-2.5-flash", messages=HI, extra_headers={}, extra_body={}
    )
    completion = raw.parse()
    assert completion.object == "chat.completion" and completion.choices[0].message.content
    assert completion.choices[0].finish_reason == "stop" and completion.model == "gemini-2.5-flash"
    proxy.drain()
    (event,) = events(r)
    price = ModelPrice.objects.get(provider="google", model="gemini-2.5-flash").to_price()
    usage = Usage(input=completion.usage.prompt_tokens, output=completion.usage.completion_tokens)
    assert event.provider == "google" and event.priced and event.cost_nanos == cost_nanos(price, usage)


def test_cached_and_thought_tokens_reach_the_event_as_their_own_types(gemini, r):
    sdk, proxy = gemini
    completion = sdk.chat.completions.create(model=f"{MODEL}@cached=3;reasoning=5", messages=HI)
    usage = completion.usage
    assert usage.prompt_tokens_details.cached_tokens == 3 and usage.completion_tokens_details.reasoning_tokens == 5
    proxy.drain()
    (event,) = events(r)
    assert (event.cached_input_tokens, event.reasoning_tokens) == (3, 5)
    assert event.input_tokens == usage.prompt_tokens - 3 and event.output_tokens == usage.completion_tokens - 5


def test_streaming_role_content_finish_and_usage(gemini, r):
    sdk, proxy = gemini
    chunks = list(
        sdk.chat.completions.create(model=MODEL, messages=HI, stream=True, stream_options={"include_usage": True})
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert len(text.split()) >= 5
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == len(text.split())
    proxy.drain()
    (event,) = events(r)
    assert event.stream and not event.estimated and event.output_tokens == len(text.split())


def test_streaming_without_include_usage_sends_no_usage_chunk(gemini):
    sdk, _ = gemini
    chunks = list(sdk.chat.completions.create(model=MODEL, messages=HI, stream=True))
    assert all(c.usage is None for c in chunks) and all(c.choices for c in chunks)


@pytest.mark.parametrize("stream", [False, True])
def test_tool_calls_and_tool_results_round_trip(gemini, stream):
    sdk, _ = gemini
    ask = [{"role": "user", "content": "Weather in Paris?"}]
    if stream:
        calls: dict[int, dict] = {}
        finish = None
        for chunk in sdk.chat.completions.create(model=MODEL, messages=ask, tools=TOOLS, stream=True):
            choice = chunk.choices[0]
            finish = choice.finish_reason or finish
            for delta in choice.delta.tool_calls or []:
                call = calls.setdefault(delta.index, {"id": None, "name": "", "arguments": ""})
                call["id"] = delta.id or call["id"]
                call["name"] += delta.function.name or ""
                call["arguments"] += delta.function.arguments or ""
        (call,) = calls.values()
        call_id, name, arguments = call["id"], call["name"], call["arguments"]
    else:
        completion = sdk.chat.completions.create(model=MODEL, messages=ask, tools=TOOLS, tool_choice="required")
        finish = completion.choices[0].finish_reason
        (tool_call,) = completion.choices[0].message.tool_calls
        call_id, name, arguments = tool_call.id, tool_call.function.name, tool_call.function.arguments
    assert finish == "tool_calls" and name == "get_weather" and json.loads(arguments) == {"city": "example"}
    assert call_id and call_id.startswith("call_")
    follow_up = sdk.chat.completions.create(
        model=MODEL,
        tools=TOOLS,
        messages=[
            *ask,
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [{"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}],
            },
            {"role": "tool", "tool_call_id": call_id, "content": json.dumps({"temp_c": 21})},
        ],
    )
    assert follow_up.choices[0].message.content and follow_up.choices[0].finish_reason == "stop"


def test_n_candidates_become_n_choices(gemini):
    sdk, _ = gemini
    completion = sdk.chat.completions.create(model=MODEL, messages=HI, n=2)
    assert [c.index for c in completion.choices] == [0, 1]
    assert completion.choices[0].message.content != completion.choices[1].message.content


def test_an_unsupported_parameter_is_a_400_naming_it(gemini):
    sdk, _ = gemini
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.chat.completions.create(model=MODEL, messages=HI, logprobs=True)
    assert caught.value.body["param"] == "logprobs" and caught.value.body["code"] == "unsupported_parameter"


def test_a_tool_result_for_an_unknown_call_is_a_400(gemini):
    sdk, _ = gemini
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "hi"}, {"role": "tool", "tool_call_id": "x", "content": "1"}],
        )
    assert "tool_call_id" in caught.value.body["param"]


def test_gemini_rate_limit_is_a_429_with_retry_after(gemini):
    sdk, _ = gemini
    with pytest.raises(openai.RateLimitError) as caught:
        sdk.chat.completions.create(model=f"{MODEL}@status=429", messages=HI)
    assert caught.value.response.headers["retry-after"] == "1"


def test_embeddings_translated_to_batch_embed_contents(gemini, r):
    sdk, proxy = gemini
    result = sdk.embeddings.create(model="google/gemini-embedding-001", input=["a fox", "a dog"], dimensions=4)
    assert [d.index for d in result.data] == [0, 1] and len(result.data[0].embedding) == 4
    assert result.data[0].embedding != result.data[1].embedding
    proxy.drain()
    (event,) = events(r)
    assert event.provider == "google" and event.estimated and event.priced
    assert event.input_tokens == result.usage.prompt_tokens > 0
