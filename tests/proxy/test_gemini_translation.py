"""Golden tests of the OpenAI chat <-> Gemini translation (proxy/providers/gemini.py), with request,
response and stream fixtures written from the public Gemini API reference."""

from __future__ import annotations

import base64
import struct

import pytest

from contracts.pricing import Usage
from proxy.errors import ProxyError
from proxy.providers.gemini import (
    StreamTranslator,
    chat_to_gemini,
    embeddings_to_gemini,
    gemini_to_embeddings,
    generate_url,
    parse_sse,
    response_to_chat,
    to_schema,
    usage_from_gemini,
)


def test_urls_follow_the_sdk_convention():
    base = "https://generativelanguage.googleapis.com"
    assert generate_url(base, "models/gemini-2.5-flash", stream=False) == (
        f"{base}/v1beta/models/gemini-2.5-flash:generateContent"
    )
    assert generate_url(base + "/", "gemini-2.5-pro", stream=True) == (
        f"{base}/v1beta/models/gemini-2.5-pro:streamGenerateContent?alt=sse"
    )


def test_request_translation_covers_system_turns_images_tools_results_and_parameters():
    body = {
        "model": "google/gemini-2.5-flash",
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "developer", "content": [{"type": "text", "text": "Answer in French."}]},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is in these?"},
                    {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
                    {"type": "image_url", "image_url": {"url": "data:image/webp;base64,UklGRg=="}},
                ],
            },
            {
                "role": "assistant",
                "content": "Checking two things.",
                "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": '{"q": "cat"}'}},
                    {"id": "call_2", "type": "function", "function": {"name": "count", "arguments": "{}"}},
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": '{"animal": "cat"}'},
            {"role": "tool", "tool_call_id": "call_2", "content": "2"},
            {"role": "user", "content": "Thanks."},
        ],
        "tools": [
            {
                "type": "function",
                "function": {
                    "name": "lookup",
                    "description": "Look something up",
                    "parameters": {
                        "$schema": "http://json-schema.org/draft-07/schema#",
                        "type": "object",
                        "properties": {"q": {"type": "string"}, "limit": {"type": ["integer", "null"]}},
                        "required": ["q"],
                        "additionalProperties": False,
                    },
                    "strict": True,
                },
            },
            {"type": "function", "function": {"name": "count"}},
        ],
        "tool_choice": {"type": "function", "function": {"name": "lookup"}},
        "temperature": 0.2,
        "top_p": 0.9,
        "max_completion_tokens": 300,
        "stop": "END",
        "n": 2,
        "seed": 7,
        "reasoning_effort": "low",
        "response_format": {"type": "json_object"},
        "user": "u-1",
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    assert chat_to_gemini(body, upstream_model="gemini-2.5-flash") == {
        "systemInstruction": {"parts": [{"text": "You are terse.\n\nAnswer in French."}]},
        "contents": [
            {
                "role": "user",
                "parts": [
                    {"text": "What is in these?"},
                    {"fileData": {"mimeType": "image/png", "fileUri": "https://example.com/cat.png"}},
                    {"inlineData": {"mimeType": "image/webp", "data": "UklGRg=="}},
                ],
            },
            {
                "role": "model",
                "parts": [
                    {"text": "Checking two things."},
                    {"functionCall": {"name": "lookup", "args": {"q": "cat"}}},
                    {"functionCall": {"name": "count", "args": {}}},
                ],
            },
            {
                "role": "user",
                "parts": [
                    {"functionResponse": {"name": "lookup", "response": {"animal": "cat"}}},
                    {"functionResponse": {"name": "count", "response": {"result": 2}}},
                    {"text": "Thanks."},
                ],
            },
        ],
        "tools": [
            {
                "functionDeclarations": [
                    {
                        "name": "lookup",
                        "description": "Look something up",
                        "parameters": {
                            "type": "OBJECT",
                            "properties": {"q": {"type": "STRING"}, "limit": {"type": "INTEGER", "nullable": True}},
                            "required": ["q"],
                        },
                    },
                    {"name": "count"},
                ]
            }
        ],
        "toolConfig": {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["lookup"]}},
        "generationConfig": {
            "temperature": 0.2,
            "topP": 0.9,
            "maxOutputTokens": 300,
            "candidateCount": 2,
            "seed": 7,
            "stopSequences": ["END"],
            "responseMimeType": "application/json",
            "thinkingConfig": {"thinkingBudget": 1024},
        },
    }


@pytest.mark.parametrize(
    ("choice", "config"),
    [
        ("auto", {"mode": "AUTO"}),
        ("none", {"mode": "NONE"}),
        ("required", {"mode": "ANY"}),
    ],
)
def test_tool_choice_modes(choice, config):
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "tool_choice": choice}
    assert chat_to_gemini(body, upstream_model="m")["toolConfig"] == {"functionCallingConfig": config}


def test_json_schema_response_format_becomes_a_response_schema():
    body = {
        "model": "m",
        "messages": [{"role": "user", "content": "hi"}],
        "response_format": {
            "type": "json_schema",
            "json_schema": {
                "name": "answer",
                "strict": True,
                "schema": {
                    "type": "object",
                    "properties": {"items": {"type": "array", "items": {"type": "string", "enum": ["a", "b"]}}},
                    "required": ["items"],
                    "additionalProperties": False,
                },
            },
        },
    }
    config = chat_to_gemini(body, upstream_model="m")["generationConfig"]
    assert config == {
        "responseMimeType": "application/json",
        "responseSchema": {
            "type": "OBJECT",
            "properties": {"items": {"type": "ARRAY", "items": {"type": "STRING", "enum": ["a", "b"]}}},
            "required": ["items"],
        },
    }


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"logprobs": True}, "logprobs"),
        ({"logit_bias": {"1": 2}}, "logit_bias"),
        ({"audio": {"voice": "x"}}, "audio"),
        ({"prediction": {"type": "content", "content": "x"}}, "prediction"),
        ({"reasoning_effort": "extreme"}, "reasoning_effort"),
        ({"response_format": {"type": "xml"}}, "response_format"),
        ({"tools": [{"type": "web_search"}]}, "tools[0]"),
        ({"temperature": "hot"}, "temperature"),
        ({"parallel_tool_calls": False}, "parallel_tool_calls"),
    ],
)
def test_what_cannot_be_carried_is_a_400_naming_it(extra, param):
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], **extra}
    with pytest.raises(ProxyError) as caught:
        chat_to_gemini(body, upstream_model="m")
    assert caught.value.status == 400 and caught.value.param == param


def test_malformed_tool_history_is_a_400_not_a_crash():
    bad_arguments = [
        {"role": "user", "content": "hi"},
        {
            "role": "assistant",
            "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "{"}}],
        },
    ]
    with pytest.raises(ProxyError) as caught:
        chat_to_gemini({"model": "m", "messages": bad_arguments}, upstream_model="m")
    assert caught.value.status == 400 and "arguments" in caught.value.message
    unknown_call = [{"role": "user", "content": "hi"}, {"role": "tool", "tool_call_id": "nope", "content": "1"}]
    with pytest.raises(ProxyError) as caught:
        chat_to_gemini({"model": "m", "messages": unknown_call}, upstream_model="m")
    assert caught.value.param == "messages[1].tool_call_id"


def test_schema_with_several_types_is_refused():
    with pytest.raises(ProxyError):
        to_schema({"type": ["string", "integer"]}, param="tools[0].function.parameters")


def test_response_translation_text_tool_calls_thoughts_and_usage():
    response = {
        "candidates": [
            {
                "content": {
                    "role": "model",
                    "parts": [
                        {"text": "Let me think.", "thought": True},
                        {"text": "Calling."},
                        {"functionCall": {"name": "lookup", "args": {"q": "cat"}}},
                        {"functionCall": {"id": "fc-2", "name": "count", "args": {}}},
                    ],
                },
                "finishReason": "STOP",
                "index": 0,
            }
        ],
        "usageMetadata": {
            "promptTokenCount": 120,
            "cachedContentTokenCount": 100,
            "candidatesTokenCount": 30,
            "thoughtsTokenCount": 50,
            "totalTokenCount": 200,
        },
        "modelVersion": "gemini-2.5-flash",
        "responseId": "abc",
    }
    chat, usage = response_to_chat(response, model="gemini-2.5-flash")
    assert usage == Usage(input=20, cached_input=100, output=30, reasoning=50)
    (choice,) = chat["choices"]
    assert choice["finish_reason"] == "tool_calls" and choice["message"]["content"] == "Calling."
    first, second = choice["message"]["tool_calls"]
    assert first["id"].startswith("call_") and first["function"] == {"name": "lookup", "arguments": '{"q":"cat"}'}
    assert second["id"] == "fc-2"
    assert chat["usage"] == {
        "prompt_tokens": 120,
        "completion_tokens": 80,
        "total_tokens": 200,
        "prompt_tokens_details": {"cached_tokens": 100},
        "completion_tokens_details": {"reasoning_tokens": 50},
    }
    assert chat["id"] == "chatcmpl-abc" and chat["model"] == "gemini-2.5-flash"


@pytest.mark.parametrize(
    ("reason", "finish"),
    [("STOP", "stop"), ("MAX_TOKENS", "length"), ("SAFETY", "content_filter"), ("RECITATION", "content_filter")],
)
def test_finish_reasons(reason, finish):
    response = {"candidates": [{"content": {"role": "model", "parts": [{"text": "x"}]}, "finishReason": reason}]}
    assert response_to_chat(response, model="m")[0]["choices"][0]["finish_reason"] == finish


def test_a_blocked_prompt_is_a_content_filter_finish():
    chat, usage = response_to_chat(
        {"promptFeedback": {"blockReason": "SAFETY"}, "usageMetadata": {"promptTokenCount": 9}}, model="m"
    )
    assert chat["choices"][0]["finish_reason"] == "content_filter" and chat["choices"][0]["message"]["content"] is None
    assert usage == Usage(input=9)


def test_usage_counts_tool_use_prompt_tokens_as_input():
    usage = usage_from_gemini({"promptTokenCount": 10, "toolUsePromptTokenCount": 5, "candidatesTokenCount": 2})
    assert usage == Usage(input=15, output=2)


def test_stream_translation_text_parallel_calls_finish_and_usage():
    raw = (
        b'data: {"candidates":[{"content":{"role":"model","parts":[{"text":"Hel"}]},"index":0}],'
        b'"usageMetadata":{"promptTokenCount":8,"candidatesTokenCount":1,"totalTokenCount":9},'
        b'"modelVersion":"gemini-2.5-flash","responseId":"r1"}\r\n\r\n'
        b'data: {"candidates":[{"content":{"role":"model","parts":[{"text":"lo"},'
        b'{"functionCall":{"name":"a","args":{"x":1}}},{"functionCall":{"name":"b","args":{}}}]},'
        b'"finishReason":"STOP","index":0}],'
        b'"usageMetadata":{"promptTokenCount":8,"candidatesTokenCount":6,"thoughtsTokenCount":3,"totalTokenCount":17},'
        b'"modelVersion":"gemini-2.5-flash","responseId":"r1"}\r\n\r\n'
    )
    first, rest = parse_sse(raw[:150])
    assert first == [] and rest == raw[:150]
    events, rest = parse_sse(raw)
    assert rest == b"" and len(events) == 2
    translator = StreamTranslator(include_usage=True, model="gemini-2.5-flash")
    chunks = [c for e in events for c in translator.feed(e)] + translator.finish()
    deltas = [
        (c["choices"][0]["delta"], c["choices"][0]["finish_reason"]) if c["choices"] else c["usage"] for c in chunks
    ]
    call_a, call_b = deltas[3][0]["tool_calls"][0], deltas[4][0]["tool_calls"][0]
    assert deltas == [
        ({"role": "assistant", "content": ""}, None),
        ({"content": "Hel"}, None),
        ({"content": "lo"}, None),
        (
            {
                "tool_calls": [
                    {
                        "index": 0,
                        "id": call_a["id"],
                        "type": "function",
                        "function": {"name": "a", "arguments": '{"x":1}'},
                    }
                ]
            },
            None,
        ),
        (
            {
                "tool_calls": [
                    {"index": 1, "id": call_b["id"], "type": "function", "function": {"name": "b", "arguments": "{}"}}
                ]
            },
            None,
        ),
        ({}, "tool_calls"),
        {
            "prompt_tokens": 8,
            "completion_tokens": 9,
            "total_tokens": 17,
            "prompt_tokens_details": {"cached_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 3},
        },
    ]
    assert call_a["id"] != call_b["id"]
    assert all(c["id"] == "chatcmpl-r1" for c in chunks[1:])
    assert translator.done and translator.usage == Usage(input=8, output=6, reasoning=3)


def test_stream_cut_before_a_finish_reason_is_not_done():
    translator = StreamTranslator(include_usage=False, model="m")
    translator.feed({"candidates": [{"content": {"role": "model", "parts": [{"text": "partial"}]}}]})
    assert not translator.done and translator.text_parts == ["partial"]
    assert [c["choices"][0]["finish_reason"] for c in translator.finish()] == ["stop"]


def test_embeddings_both_ways_with_base64():
    request = embeddings_to_gemini(
        {"model": "gemini-embedding-001", "input": ["a", "b"], "dimensions": 2, "encoding_format": "base64"},
        upstream_model="gemini-embedding-001",
    )
    assert request == {
        "requests": [
            {"model": "models/gemini-embedding-001", "outputDimensionality": 2, "content": {"parts": [{"text": "a"}]}},
            {"model": "models/gemini-embedding-001", "outputDimensionality": 2, "content": {"parts": [{"text": "b"}]}},
        ]
    }
    result = gemini_to_embeddings(
        {"embeddings": [{"values": [0.5, -1.0]}]},
        model="gemini-embedding-001",
        usage=Usage(input=3),
        encoding_format="base64",
    )
    assert struct.unpack("<2f", base64.b64decode(result["data"][0]["embedding"])) == (0.5, -1.0)
    assert result["usage"] == {"prompt_tokens": 3, "total_tokens": 3}
    with pytest.raises(ProxyError) as caught:
        embeddings_to_gemini({"model": "m", "input": [[1, 2]]}, upstream_model="m")
    assert caught.value.param == "input"
