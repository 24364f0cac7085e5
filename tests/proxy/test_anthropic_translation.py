"""Golden tests of the OpenAI chat <-> Anthropic Messages translation (proxy/providers/anthropic.py),
with request, response and stream fixtures written from the two public API references."""

from __future__ import annotations

from decimal import Decimal

import pytest

from contracts.pricing import Price, Usage, cost_nanos
from proxy.errors import ProxyError
from proxy.providers.anthropic import (
    StreamTranslator,
    chat_to_messages,
    message_to_chat,
    parse_sse,
    usage_from_anthropic,
)


def test_request_translation_covers_system_images_tools_results_and_parameters():
    body = {
        "model": "anthropic/claude-sonnet-4-5",
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "developer", "content": [{"type": "text", "text": "Answer in French."}]},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is in these?"},
                    {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
                    {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,/9j/4AAQ"}},
                ],
            },
            {
                "role": "assistant",
                "content": "Let me check two things.",
                "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": '{"q": "cat"}'}},
                    {"id": "call_2", "type": "function", "function": {"name": "lookup", "arguments": '{"q": "dog"}'}},
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "a cat"},
            {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": "a dog"}]},
        ],
        "tools": [
            {
                "type": "function",
                "function": {"name": "lookup", "description": "Look up", "parameters": {"type": "object"}},
            }
        ],
        "tool_choice": {"type": "function", "function": {"name": "lookup"}},
        "parallel_tool_calls": False,
        "max_completion_tokens": 300,
        "temperature": 0.2,
        "top_p": 0.9,
        "stop": "END",
        "user": "u-1",
        "stream": True,
    }
    assert chat_to_messages(body, upstream_model="claude-sonnet-4-5") == {
        "model": "claude-sonnet-4-5",
        "system": "You are terse.\n\nAnswer in French.",
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is in these?"},
                    {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.png"}},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": "/9j/4AAQ"}},
                ],
            },
            {
                "role": "assistant",
                "content": [
                    {"type": "text", "text": "Let me check two things."},
                    {"type": "tool_use", "id": "call_1", "name": "lookup", "input": {"q": "cat"}},
                    {"type": "tool_use", "id": "call_2", "name": "lookup", "input": {"q": "dog"}},
                ],
            },
            {
                "role": "user",  # parallel tool results in one user turn
                "content": [
                    {"type": "tool_result", "tool_use_id": "call_1", "content": "a cat"},
                    {"type": "tool_result", "tool_use_id": "call_2", "content": "a dog"},
                ],
            },
        ],
        "max_tokens": 300,
        "temperature": 0.2,
        "top_p": 0.9,
        "stop_sequences": ["END"],
        "tools": [{"name": "lookup", "description": "Look up", "input_schema": {"type": "object"}}],
        "tool_choice": {"type": "tool", "name": "lookup", "disable_parallel_tool_use": True},
        "metadata": {"user_id": "u-1"},
        "stream": True,
    }


def test_reasoning_effort_becomes_a_thinking_budget_on_top_of_max_tokens():
    out = chat_to_messages(
        {"model": "m", "messages": [{"role": "user", "content": "hi"}], "reasoning_effort": "low", "max_tokens": 100},
        upstream_model="m",
    )
    assert out["thinking"] == {"type": "enabled", "budget_tokens": 2048}
    assert out["max_tokens"] == 2148


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"n": 3}, "n"),
        ({"response_format": {"type": "json_schema", "json_schema": {}}}, "response_format"),
        ({"temperature": 2}, "temperature"),
        ({"logit_bias": {"1": 2}}, "logit_bias"),
        ({"reasoning_effort": "extreme"}, "reasoning_effort"),
        ({"messages": [{"role": "user", "content": [{"type": "input_audio"}]}]}, "messages[0].content[0]"),
        ({"tools": [{"type": "web_search"}]}, "tools[0]"),
    ],
)
def test_what_anthropic_cannot_express_is_a_400_naming_the_parameter(extra, param):
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], **extra}
    with pytest.raises(ProxyError) as caught:
        chat_to_messages(body, upstream_model="m")
    assert caught.value.status == 400 and caught.value.param == param


def test_response_translation_text_tool_use_finish_and_usage():
    message = {
        "id": "msg_01",
        "type": "message",
        "role": "assistant",
        "model": "claude-sonnet-4-5-20250929",
        "content": [
            {"type": "thinking", "thinking": "hmm", "signature": "sig"},
            {"type": "text", "text": "Checking."},
            {"type": "tool_use", "id": "toolu_01", "name": "lookup", "input": {"q": "cat"}},
        ],
        "stop_reason": "tool_use",
        "stop_sequence": None,
        "usage": {
            "input_tokens": 100,
            "cache_creation_input_tokens": 20,
            "cache_read_input_tokens": 300,
            "output_tokens": 50,
        },
    }
    chat, usage = message_to_chat(message)
    assert usage == Usage(input=100, cached_input=300, cache_write=20, output=50)
    choice = chat["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] == "Checking."
    assert choice["message"]["tool_calls"] == [
        {"id": "toolu_01", "type": "function", "function": {"name": "lookup", "arguments": '{"q":"cat"}'}}
    ]
    assert chat["usage"]["prompt_tokens"] == 420 and chat["usage"]["prompt_tokens_details"]["cached_tokens"] == 300
    assert chat["usage"]["completion_tokens"] == 50


# The event sequence of a streamed answer with text then a tool call, as Anthropic documents it.
STREAM = b"""event: message_start
data: {"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","model":"claude-sonnet-4-5","content":[],"stop_reason":null,"usage":{"input_tokens":25,"cache_read_input_tokens":10,"cache_creation_input_tokens":0,"output_tokens":1}}}

event: content_block_start
data: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}

event: ping
data: {"type":"ping"}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Let me"}}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":" check."}}

event: content_block_stop
data: {"type":"content_block_stop","index":0}

event: content_block_start
data: {"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"toolu_9","name":"lookup","input":{}}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{\\"q\\": "}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"\\"cat\\"}"}}

event: content_block_stop
data: {"type":"content_block_stop","index":1}

event: message_delta
data: {"type":"message_delta","delta":{"stop_reason":"tool_use","stop_sequence":null},"usage":{"output_tokens":42}}

event: message_stop
data: {"type":"message_stop"}

"""  # noqa: E501


@pytest.mark.parametrize("split", [1, 7, 64, len(STREAM)])
def test_stream_translation_in_order_whatever_the_network_chunking(split):
    translator = StreamTranslator(include_usage=True)
    buffer, chunks = b"", []
    for i in range(0, len(STREAM), split):
        events, buffer = parse_sse(buffer + STREAM[i : i + split])
        for kind, data in events:
            chunks.extend(translator.feed(kind, data))
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    assert deltas == [
        {"role": "assistant", "content": ""},
        {"content": "Let me"},
        {"content": " check."},
        {
            "tool_calls": [
                {"index": 0, "id": "toolu_9", "type": "function", "function": {"name": "lookup", "arguments": ""}}
            ]
        },
        {"tool_calls": [{"index": 0, "function": {"arguments": '{"q": '}}]},
        {"tool_calls": [{"index": 0, "function": {"arguments": '"cat"}'}}]},
        {},
    ]
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1] == "tool_calls"
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"]["prompt_tokens"] == 35 and chunks[-1]["usage"]["completion_tokens"] == 42
    assert translator.usage == Usage(input=25, cached_input=10, output=42)
    assert {c["id"] for c in chunks} == {"chatcmpl-msg_1"}


def test_anthropic_usage_is_priced_per_token_type_to_the_nano_dollar():
    # claude-sonnet-4-5 list prices: $3 input, $0.30 cache read, $3.75 cache write, $15 output per 1M
    price = Price(input=Decimal("3"), cached_input=Decimal("0.30"), cache_write=Decimal("3.75"), output=Decimal("15"))
    usage = usage_from_anthropic(
        {
            "input_tokens": 1234,
            "cache_read_input_tokens": 56789,
            "cache_creation_input_tokens": 4321,
            "output_tokens": 987,
        }
    )
    # (1234*3 + 56789*0.30 + 4321*3.75 + 987*15) USD per 1M tokens = 51747.45 / 1e6 USD = 51,747,450 nano-USD
    assert cost_nanos(price, usage) == 51_747_450
