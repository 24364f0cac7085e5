"""Golden tests of Anthropic Messages -> OpenAI chat, and OpenAI answers/streams -> Anthropic messages and
events (proxy/providers/anthropic_compat.py), written from the two public API references. The stream
output is also fed through the `anthropic` SDK's own accumulator, the code a client runs."""

from __future__ import annotations

import pytest
from anthropic.lib.streaming._messages import accumulate_event

from contracts.pricing import Usage
from proxy.errors import ProxyError
from proxy.providers.anthropic_compat import (
    ChunkTranslator,
    anthropic_usage,
    chat_to_message,
    messages_to_chat,
    sse_event,
    validate_messages_body,
)


def test_request_translation_covers_system_images_tools_results_thinking_and_parameters():
    body = {
        "model": "openai/gpt-4o",
        "max_tokens": 500,
        "system": [
            {"type": "text", "text": "You are terse.", "cache_control": {"type": "ephemeral"}},
            {"type": "text", "text": "Answer in French."},
        ],
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is this?"},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBOR"}},
                    {"type": "image", "source": {"type": "url", "url": "https://example.com/a.jpg"}},
                ],
            },
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": "hmm", "signature": "sig"},
                    {"type": "text", "text": "Let me look."},
                    {"type": "tool_use", "id": "toolu_1", "name": "lookup", "input": {"q": "a"}},
                    {"type": "tool_use", "id": "toolu_2", "name": "lookup", "input": {"q": "b"}},
                ],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_1", "content": "found a"},
                    {
                        "type": "tool_result",
                        "tool_use_id": "toolu_2",
                        "content": [{"type": "text", "text": "not found"}],
                        "is_error": True,
                    },
                    {"type": "text", "text": "And now?"},
                ],
            },
        ],
        "tools": [
            {
                "name": "lookup",
                "description": "Look up",
                "input_schema": {"type": "object", "properties": {"q": {"type": "string"}}},
            }
        ],
        "tool_choice": {"type": "any", "disable_parallel_tool_use": True},
        "thinking": {"type": "enabled", "budget_tokens": 8000},
        "temperature": 0.5,
        "top_p": 0.8,
        "stop_sequences": ["END"],
        "metadata": {"user_id": "u-1"},
        "stream": True,
    }
    assert messages_to_chat(body) == {
        "model": "openai/gpt-4o",
        "messages": [
            {"role": "system", "content": "You are terse.\n\nAnswer in French."},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is this?"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBOR"}},
                    {"type": "image_url", "image_url": {"url": "https://example.com/a.jpg"}},
                ],
            },
            {
                "role": "assistant",
                "content": "Let me look.",
                "tool_calls": [
                    {"id": "toolu_1", "type": "function", "function": {"name": "lookup", "arguments": '{"q":"a"}'}},
                    {"id": "toolu_2", "type": "function", "function": {"name": "lookup", "arguments": '{"q":"b"}'}},
                ],
            },
            {"role": "tool", "tool_call_id": "toolu_1", "content": "found a"},
            {"role": "tool", "tool_call_id": "toolu_2", "content": "Error: not found"},
            {"role": "user", "content": "And now?"},
        ],
        "max_completion_tokens": 500,
        "temperature": 0.5,
        "top_p": 0.8,
        "stop": ["END"],
        "tools": [
            {
                "type": "function",
                "function": {
                    "name": "lookup",
                    "description": "Look up",
                    "parameters": {"type": "object", "properties": {"q": {"type": "string"}}},
                },
            }
        ],
        "tool_choice": "required",
        "parallel_tool_calls": False,
        "reasoning_effort": "medium",
        "user": "u-1",
        "stream": True,
        "stream_options": {"include_usage": True},
    }


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ({"type": "auto"}, "auto"),
        ({"type": "none"}, "none"),
        ({"type": "tool", "name": "lookup"}, {"type": "function", "function": {"name": "lookup"}}),
    ],
)
def test_tool_choice(choice, expected):
    body = {
        "model": "m",
        "max_tokens": 5,
        "messages": [{"role": "user", "content": "hi"}],
        "tools": [{"name": "lookup", "input_schema": {"type": "object"}}],
        "tool_choice": choice,
    }
    assert messages_to_chat(body)["tool_choice"] == expected


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"top_k": 5}, "top_k"),
        ({"container": "c"}, "container"),
        ({"mcp_servers": []}, "mcp_servers"),
        ({"tools": [{"type": "web_search_20250305", "name": "web_search"}]}, "tools.0"),
        ({"messages": [{"role": "user", "content": [{"type": "document", "source": {}}]}]}, "messages.0.content.0"),
    ],
)
def test_what_cannot_be_carried_is_a_400_naming_it(extra, param):
    body = {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}], **extra}
    with pytest.raises(ProxyError) as caught:
        messages_to_chat(body)
    assert caught.value.status == 400 and caught.value.param == param


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}, "model"),
        ({"model": "m", "messages": [{"role": "user", "content": "hi"}]}, "max_tokens"),
        ({"model": "m", "max_tokens": 0, "messages": [{"role": "user", "content": "hi"}]}, "max_tokens"),
        ({"model": "m", "max_tokens": 5, "messages": []}, "messages"),
        ({"model": "m", "max_tokens": 5, "messages": [{"role": "system", "content": "x"}]}, "messages.0.role"),
        ({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": 3}]}, "messages.0"),
        ({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}], "stream": "yes"}, "stream"),
    ],
)
def test_validation_names_the_field(body, param):
    with pytest.raises(ProxyError) as caught:
        validate_messages_body(body)
    assert caught.value.status == 400 and caught.value.param == param


def test_response_translation_text_and_parallel_tool_calls():
    chat = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "model": "gpt-4o",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": "Two lookups.",
                    "tool_calls": [
                        {"id": "call_a", "type": "function", "function": {"name": "lookup", "arguments": '{"q":"a"}'}},
                        {"id": "call_b", "type": "function", "function": {"name": "lookup", "arguments": "not json"}},
                    ],
                },
                "finish_reason": "tool_calls",
            }
        ],
    }
    usage = Usage(input=10, cached_input=4, output=7, reasoning=3)
    assert chat_to_message(chat, usage, model="openai/gpt-4o") == {
        "id": "msg_chatcmpl-1",
        "type": "message",
        "role": "assistant",
        "model": "openai/gpt-4o",
        "content": [
            {"type": "text", "text": "Two lookups."},
            {"type": "tool_use", "id": "call_a", "name": "lookup", "input": {"q": "a"}},
            {"type": "tool_use", "id": "call_b", "name": "lookup", "input": {"_raw": "not json"}},
        ],
        "stop_reason": "tool_use",
        "stop_sequence": None,
        "usage": {
            "input_tokens": 10,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 4,
            "output_tokens": 10,
        },
    }


@pytest.mark.parametrize(
    ("finish", "stop"),
    [("stop", "end_turn"), ("length", "max_tokens"), ("tool_calls", "tool_use"), ("content_filter", "refusal")],
)
def test_stop_reasons(finish, stop):
    chat = {"choices": [{"message": {"role": "assistant", "content": ""}, "finish_reason": finish}]}
    message = chat_to_message(chat, None, model="m")
    assert message["stop_reason"] == stop and message["content"] == []  # empty answer is still a valid message


def _chunk(delta=None, finish=None, usage=None):
    chunk = {"id": "c", "object": "chat.completion.chunk", "model": "gpt-4o", "choices": []}
    if delta is not None or finish is not None:
        chunk["choices"] = [{"index": 0, "delta": delta or {}, "finish_reason": finish}]
    if usage is not None:
        chunk["usage"] = usage
    return chunk


OPENAI_STREAM = [
    _chunk({"role": "assistant", "content": ""}),
    _chunk({"content": "Two "}),
    _chunk({"content": "lookups."}),
    _chunk(
        {
            "tool_calls": [
                {"index": 0, "id": "call_a", "type": "function", "function": {"name": "lookup", "arguments": ""}}
            ]
        }
    ),
    _chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"q":'}}]}),
    _chunk({"tool_calls": [{"index": 0, "function": {"arguments": '"a"}'}}]}),
    _chunk(
        {
            "tool_calls": [
                {
                    "index": 1,
                    "id": "call_b",
                    "type": "function",
                    "function": {"name": "lookup", "arguments": '{"q":"b"}'},
                }
            ]
        }
    ),
    _chunk({}, "tool_calls"),
    _chunk(usage={"prompt_tokens": 20, "completion_tokens": 9, "prompt_tokens_details": {"cached_tokens": 5}}),
]


def test_stream_translation_emits_anthropics_event_sequence():
    translator = ChunkTranslator("openai/gpt-4o", "msg_1")
    events = [e for chunk in OPENAI_STREAM for e in translator.feed(chunk)] + translator.finish(translator.usage)
    kinds = [kind for kind, _ in events]
    assert kinds == [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert [data.get("index") for kind, data in events if kind.startswith("content_block")] == [
        0,
        0,
        0,
        0,
        1,
        1,
        1,
        2,
        2,
        2,
    ]
    assert events[2][1]["delta"] == {"type": "text_delta", "text": "Two "}  # text streams as it arrives
    assert events[5][1]["content_block"] == {"type": "tool_use", "id": "call_a", "name": "lookup", "input": {}}
    assert events[6][1]["delta"] == {"type": "input_json_delta", "partial_json": '{"q":"a"}'}
    assert events[-2][1] == {
        "type": "message_delta",
        "delta": {"stop_reason": "tool_use", "stop_sequence": None},
        "usage": {
            "input_tokens": 15,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 5,
            "output_tokens": 9,
        },
    }
    assert sse_event(*events[-1]) == b'event: message_stop\ndata: {"type":"message_stop"}\n\n'


def test_the_anthropic_sdk_accumulates_the_stream_into_the_right_message():
    translator = ChunkTranslator("openai/gpt-4o", "msg_1")
    events = [e for chunk in OPENAI_STREAM for e in translator.feed(chunk)] + translator.finish(translator.usage)
    snapshot = None
    json_bufs: dict[int, bytes] = {}
    for _, data in events:
        snapshot = accumulate_event(event=data, current_snapshot=snapshot, json_bufs=json_bufs)  # type: ignore[arg-type]
    assert snapshot is not None
    assert snapshot.content[0].type == "text" and snapshot.content[0].text == "Two lookups."
    assert [(b.id, b.input) for b in snapshot.content[1:]] == [("call_a", {"q": "a"}), ("call_b", {"q": "b"})]
    assert snapshot.stop_reason == "tool_use"
    assert (snapshot.usage.input_tokens, snapshot.usage.cache_read_input_tokens, snapshot.usage.output_tokens) == (
        15,
        5,
        9,
    )


def test_interleaved_fragments_of_parallel_calls_are_not_lost():
    translator = ChunkTranslator("m", "msg_1")
    events = []
    for chunk in [
        _chunk({"tool_calls": [{"index": 0, "id": "a", "function": {"name": "f", "arguments": '{"x"'}}]}),
        _chunk({"tool_calls": [{"index": 1, "id": "b", "function": {"name": "g", "arguments": '{"y"'}}]}),
        _chunk({"tool_calls": [{"index": 0, "function": {"arguments": ":1}"}}]}),
        _chunk({"content": "and text"}),
        _chunk({"tool_calls": [{"index": 1, "function": {"arguments": ":2}"}}]}),
        _chunk({}, "tool_calls"),
    ]:
        events += translator.feed(chunk)
    events += translator.finish(None)
    snapshot = None
    json_bufs: dict[int, bytes] = {}
    for _, data in events:
        snapshot = accumulate_event(event=data, current_snapshot=snapshot, json_bufs=json_bufs)  # type: ignore[arg-type]
    assert snapshot is not None
    assert snapshot.content[0].text == "and text"
    assert [(b.id, b.name, b.input) for b in snapshot.content[1:]] == [("a", "f", {"x": 1}), ("b", "g", {"y": 2})]


def test_an_empty_upstream_stream_still_yields_a_valid_message():
    events = ChunkTranslator("m", "msg_1").finish(None)
    assert [kind for kind, _ in events] == ["message_start", "message_delta", "message_stop"]


def test_usage_shape():
    assert anthropic_usage(Usage(input=1, cached_input=2, cache_write=3, output=4, reasoning=5)) == {
        "input_tokens": 1,
        "cache_creation_input_tokens": 3,
        "cache_read_input_tokens": 2,
        "output_tokens": 9,
    }
