"""Property tests (hypothesis): request translation between OpenAI chat, Anthropic Messages and Gemini
preserves what the model sees: every message's text in order, every tool call's name and arguments,
every tool result, every tool declaration, and every sampling parameter.

Each format is read back by a small reader written here, independently of the translators, into one
neutral shape; the properties compare those shapes."""

from __future__ import annotations

import itertools
import json
import os
import string
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proxy.providers.anthropic import chat_to_messages
from proxy.providers.anthropic_compat import messages_to_chat
from proxy.providers.gemini import chat_to_gemini

# Local runs explore new examples each time; CI replays a fixed sequence, so a submission's result does not
# depend on the draw (a bug found locally stays in .hypothesis/ and is replayed first).
settings.register_profile(
    "translation",
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    derandomize=bool(os.environ.get("CI")),
)
settings.load_profile("translation")

texts = st.text(alphabet=string.ascii_letters + string.digits + " .,?!'", min_size=1, max_size=40).filter(str.strip)
names = st.text(alphabet=string.ascii_lowercase + "_", min_size=1, max_size=12).filter(lambda s: s[0] != "_")
json_values = st.one_of(st.integers(-1000, 1000), texts, st.booleans())
arguments = st.dictionaries(names, json_values, max_size=3)
unit = st.floats(min_value=0, max_value=1, allow_nan=False).map(lambda f: round(f, 3))


@st.composite
def tool_specs(draw: Any) -> list[dict[str, Any]]:
    tool_names = draw(st.lists(names, min_size=1, max_size=3, unique=True))
    return [
        {
            "name": name,
            "description": draw(texts),
            "parameters": {
                "type": "object",
                "properties": {
                    p: {"type": draw(st.sampled_from(["string", "integer", "boolean"]))}
                    for p in draw(st.lists(names, max_size=3, unique=True))
                },
            },
        }
        for name in tool_names
    ]


@st.composite
def conversations(draw: Any) -> dict[str, Any]:
    """A neutral conversation: system text, then rounds of user text / assistant (text, tool calls) /
    tool results answering every call, in order."""
    tools = draw(tool_specs())
    rounds = []
    call_number = 0
    for _ in range(draw(st.integers(1, 4))):
        user = draw(texts)
        assistant_text = draw(st.one_of(st.none(), texts))
        calls = []
        for _ in range(draw(st.integers(0, 2))):
            call_number += 1
            calls.append(
                {"id": f"call_{call_number}", "name": draw(st.sampled_from(tools))["name"], "args": draw(arguments)}
            )
        if assistant_text is None and not calls:
            assistant_text = draw(texts)
        results = [{"id": c["id"], "name": c["name"], "result": draw(arguments)} for c in calls]
        rounds.append({"user": user, "assistant": assistant_text, "calls": calls, "results": results})
    return {
        "system": draw(st.one_of(st.none(), texts)),
        "rounds": rounds,
        "final_user": draw(texts),
        "tools": tools,
        "temperature": draw(st.one_of(st.none(), unit)),
        "top_p": draw(st.one_of(st.none(), unit)),
        "max_tokens": draw(st.integers(1, 8192)),
        "stop": draw(st.lists(texts, max_size=3)),
    }


def expected(conversation: dict[str, Any]) -> list[tuple[Any, ...]]:
    """What the model must see, in order."""
    seen: list[tuple[Any, ...]] = []
    for round_ in conversation["rounds"]:
        seen.append(("user", round_["user"]))
        if round_["assistant"] is not None:
            seen.append(("assistant", round_["assistant"]))
        seen.extend(("call", c["name"], c["args"]) for c in round_["calls"])
        seen.extend(("result", r["id"], r["result"]) for r in round_["results"])
    seen.append(("user", conversation["final_user"]))
    return seen


# --- the three formats, written from the neutral conversation ------------------------------------------------


def as_openai(conversation: dict[str, Any]) -> dict[str, Any]:
    messages: list[dict[str, Any]] = []
    if conversation["system"] is not None:
        messages.append({"role": "system", "content": conversation["system"]})
    for round_ in conversation["rounds"]:
        messages.append({"role": "user", "content": round_["user"]})
        assistant: dict[str, Any] = {"role": "assistant", "content": round_["assistant"]}
        if round_["calls"]:
            assistant["tool_calls"] = [
                {"id": c["id"], "type": "function", "function": {"name": c["name"], "arguments": json.dumps(c["args"])}}
                for c in round_["calls"]
            ]
        messages.append(assistant)
        messages.extend(
            {"role": "tool", "tool_call_id": r["id"], "content": json.dumps(r["result"])} for r in round_["results"]
        )
    messages.append({"role": "user", "content": conversation["final_user"]})
    body: dict[str, Any] = {
        "model": "m",
        "messages": messages,
        "max_tokens": conversation["max_tokens"],
        "tools": [
            {
                "type": "function",
                "function": {"name": t["name"], "description": t["description"], "parameters": t["parameters"]},
            }
            for t in conversation["tools"]
        ],
    }
    for name in ("temperature", "top_p"):
        if conversation[name] is not None:
            body[name] = conversation[name]
    if conversation["stop"]:
        body["stop"] = conversation["stop"]
    return body


def as_anthropic(conversation: dict[str, Any]) -> dict[str, Any]:
    messages: list[dict[str, Any]] = []
    pending_results: list[dict[str, Any]] = []
    for round_ in conversation["rounds"]:
        messages.append({"role": "user", "content": [*pending_results, {"type": "text", "text": round_["user"]}]})
        blocks: list[dict[str, Any]] = []
        if round_["assistant"] is not None:
            blocks.append({"type": "text", "text": round_["assistant"]})
        blocks.extend(
            {"type": "tool_use", "id": c["id"], "name": c["name"], "input": c["args"]} for c in round_["calls"]
        )
        messages.append({"role": "assistant", "content": blocks})
        pending_results = [
            {"type": "tool_result", "tool_use_id": r["id"], "content": json.dumps(r["result"])}
            for r in round_["results"]
        ]
    messages.append(
        {"role": "user", "content": [*pending_results, {"type": "text", "text": conversation["final_user"]}]}
    )
    body: dict[str, Any] = {
        "model": "m",
        "max_tokens": conversation["max_tokens"],
        "messages": messages,
        "tools": [
            {"name": t["name"], "description": t["description"], "input_schema": t["parameters"]}
            for t in conversation["tools"]
        ],
    }
    if conversation["system"] is not None:
        body["system"] = conversation["system"]
    for name in ("temperature", "top_p"):
        if conversation[name] is not None:
            body[name] = conversation[name]
    if conversation["stop"]:
        body["stop_sequences"] = conversation["stop"]
    return body


# --- readers: each format back to what the model sees ----------------------------------------------------------


def read_openai(body: dict[str, Any]) -> tuple[str | None, list[tuple[Any, ...]]]:
    system, seen = [], []
    for message in body["messages"]:
        role, content = message["role"], message.get("content")
        if role == "system":
            system.append(content)
        elif role == "user":
            seen.append(("user", content if isinstance(content, str) else "\n\n".join(p["text"] for p in content)))
        elif role == "assistant":
            if content:
                seen.append(("assistant", content))
            seen.extend(
                ("call", c["function"]["name"], json.loads(c["function"]["arguments"]))
                for c in message.get("tool_calls") or []
            )
        elif role == "tool":
            seen.append(("result", message["tool_call_id"], json.loads(content)))
    return ("\n\n".join(system) or None), seen


def read_anthropic(body: dict[str, Any]) -> tuple[str | None, list[tuple[Any, ...]]]:
    seen: list[tuple[Any, ...]] = []
    for message in body["messages"]:
        content = message["content"]
        blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content
        for block in blocks:
            if block["type"] == "text":
                seen.append(("user" if message["role"] == "user" else "assistant", block["text"]))
            elif block["type"] == "tool_use":
                seen.append(("call", block["name"], block["input"]))
            elif block["type"] == "tool_result":
                seen.append(("result", block["tool_use_id"], json.loads(block["content"])))
    return body.get("system"), seen


def read_gemini(body: dict[str, Any], call_ids: dict[str, list[str]]) -> tuple[str | None, list[tuple[Any, ...]]]:
    """Gemini names results by function, not by call id: map them back in call order per name."""
    system = body.get("systemInstruction")
    seen: list[tuple[Any, ...]] = []
    queues = {name: list(ids) for name, ids in call_ids.items()}
    for turn in body["contents"]:
        for part in turn["parts"]:
            if "text" in part:
                seen.append(("user" if turn["role"] == "user" else "assistant", part["text"]))
            elif "functionCall" in part:
                seen.append(("call", part["functionCall"]["name"], part["functionCall"]["args"]))
            elif "functionResponse" in part:
                name = part["functionResponse"]["name"]
                seen.append(("result", queues[name].pop(0), part["functionResponse"]["response"]))
    return (system["parts"][0]["text"] if system else None), seen


# --- properties ---------------------------------------------------------------------------------------------


@given(conversations())
def test_openai_to_gemini_preserves_messages_tools_and_parameters(conversation):
    body = chat_to_gemini(as_openai(conversation), upstream_model="gemini-2.5-flash")
    call_ids: dict[str, list[str]] = {}
    for round_ in conversation["rounds"]:
        for call in round_["calls"]:
            call_ids.setdefault(call["name"], []).append(call["id"])
    system, seen = read_gemini(body, call_ids)
    assert system == conversation["system"]
    assert seen == expected(conversation)
    roles = [turn["role"] for turn in body["contents"]]
    assert all(a != b for a, b in itertools.pairwise(roles)), "Gemini turns must alternate"
    declarations = body["tools"][0]["functionDeclarations"]
    assert [(d["name"], d["description"]) for d in declarations] == [
        (t["name"], t["description"]) for t in conversation["tools"]
    ]
    for declaration, tool in zip(declarations, conversation["tools"], strict=True):
        assert declaration["parameters"]["type"] == "OBJECT"
        assert {k: v["type"].lower() for k, v in declaration["parameters"]["properties"].items()} == {
            k: v["type"] for k, v in tool["parameters"]["properties"].items()
        }
    config = body["generationConfig"]
    assert config["maxOutputTokens"] == conversation["max_tokens"]
    assert config.get("temperature") == conversation["temperature"] and config.get("topP") == conversation["top_p"]
    assert config.get("stopSequences", []) == conversation["stop"]


@given(conversations())
def test_anthropic_to_openai_and_back_is_lossless(conversation):
    original = as_anthropic(conversation)
    chat = messages_to_chat(original)
    assert read_openai(chat) == (conversation["system"], expected(conversation))
    back = chat_to_messages(chat, upstream_model="m")
    assert read_anthropic(back) == read_anthropic(original)
    assert back["tools"] == original["tools"]
    for name in ("max_tokens", "temperature", "top_p", "stop_sequences", "system"):
        assert back.get(name) == original.get(name), name


@given(conversations())
def test_openai_to_anthropic_and_back_is_lossless(conversation):
    original = as_openai(conversation)
    anthropic_body = chat_to_messages(original, upstream_model="m")
    assert read_anthropic(anthropic_body) == (conversation["system"], expected(conversation))
    roles = [m["role"] for m in anthropic_body["messages"]]
    assert all(a != b for a, b in itertools.pairwise(roles)), "Anthropic turns must alternate"
    back = messages_to_chat(anthropic_body)
    assert read_openai(back) == read_openai(original)
    assert back["tools"] == original["tools"]
    assert back["max_completion_tokens"] == original["max_tokens"]
    for name in ("temperature", "top_p"):
        assert back.get(name) == original.get(name), name
    assert back.get("stop", []) == original.get("stop", [])


# --- robustness: malformed input is a 400, never a crash ---------------------------------------------------

json_leaf = st.one_of(st.none(), st.booleans(), st.integers(-5, 5), st.floats(allow_nan=False), texts)
json_any = st.recursive(
    json_leaf,
    lambda children: st.one_of(st.lists(children, max_size=3), st.dictionaries(names, children, max_size=3)),
    max_leaves=12,
)
chat_keys = st.sampled_from(
    ["content", "tool_calls", "tool_call_id", "name", "type", "function", "arguments", "image_url", "url", "text"]
)
loose_objects = st.recursive(
    json_leaf,
    lambda children: st.one_of(st.lists(children, max_size=3), st.dictionaries(chat_keys, children, max_size=4)),
    max_leaves=16,
)


@st.composite
def malformed_chat_bodies(draw: Any) -> dict[str, Any]:
    messages = draw(
        st.lists(
            st.builds(
                lambda role, rest: {"role": role, **rest},
                st.sampled_from(["system", "user", "assistant", "tool", "developer", "robot"]),
                st.dictionaries(chat_keys, loose_objects, max_size=3),
            ),
            min_size=1,
            max_size=4,
        )
    )
    body: dict[str, Any] = {"model": "m", "messages": messages}
    for name in ("tools", "tool_choice", "response_format", "stop", "temperature", "reasoning_effort", "n"):
        if draw(st.booleans()):
            body[name] = draw(json_any)
    return body


@given(malformed_chat_bodies())
def test_malformed_chat_requests_are_400s_for_every_translator(body):
    from proxy.chat import validate_chat_body
    from proxy.errors import ProxyError

    for translate in (
        lambda b: chat_to_gemini(b, upstream_model="m"),
        lambda b: chat_to_messages(b, upstream_model="m"),
    ):
        try:
            validate_chat_body(body)
            translate(body)
        except ProxyError as error:
            assert error.status == 400


@given(
    st.dictionaries(
        st.sampled_from(
            [
                "model",
                "max_tokens",
                "messages",
                "system",
                "tools",
                "tool_choice",
                "thinking",
                "stop_sequences",
                "metadata",
            ]
        ),
        json_any,
        max_size=8,
    ),
    st.lists(
        st.builds(
            lambda role, content: {"role": role, "content": content},
            st.sampled_from(["user", "assistant"]),
            st.one_of(
                texts,
                st.lists(
                    st.dictionaries(
                        st.sampled_from(["type", "text", "id", "name", "input", "tool_use_id", "content", "source"]),
                        loose_objects,
                        max_size=4,
                    ).map(lambda d: {"type": "text", **d} if "type" not in d else d),
                    max_size=3,
                ),
            ),
        ),
        min_size=1,
        max_size=3,
    ),
)
def test_malformed_anthropic_requests_are_400s(body, messages):
    from proxy.errors import ProxyError

    candidate = {"model": "m", "max_tokens": 10, **body}
    if not isinstance(candidate.get("messages"), list):
        candidate["messages"] = messages
    try:
        messages_to_chat(candidate)
    except ProxyError as error:
        assert error.status == 400
