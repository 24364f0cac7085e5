"""The Anthropic Messages API as a client-facing surface for models that do not speak it: an Anthropic
request becomes an OpenAI chat request, and the OpenAI answer (or stream) becomes an Anthropic message
(or Anthropic stream events). OpenAI chat is the pivot (proxy.providers.targets), so the same code
serves OpenAI-format providers, Azure and Gemini. Pure functions and one state machine, no I/O.

Decisions (docs/providers.md):
- `cache_control` markers are dropped: they only instruct Anthropic's prompt cache; OpenAI and Gemini
  cache automatically. They change cost, never the answer.
- Earlier `thinking` / `redacted_thinking` blocks in assistant turns are dropped: they carry
  Anthropic-only signatures no other provider can verify, and Anthropic itself ignores them when
  thinking is off.
- A `tool_result` with `is_error: true` is sent as the tool message's content prefixed `Error: `,
  since OpenAI's tool messages have no error flag.
- `max_tokens` becomes `max_completion_tokens` (OpenAI's reasoning models refuse `max_tokens`).
- `thinking.budget_tokens` becomes `reasoning_effort`: < 4096 low, < 16384 medium, else high.
- Fields with no counterpart (`top_k`, documents, server tools, `container`, `mcp_servers`) are a
  400 naming them.
"""

from __future__ import annotations

from typing import Any

import orjson

from contracts.pricing import WEB_SEARCH, Usage
from proxy.errors import ProxyError
from proxy.providers.openai_format import usage_from_openai

STOP_REASONS = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}

_TRANSLATED = {
    "model",
    "messages",
    "system",
    "max_tokens",
    "temperature",
    "top_p",
    "stop_sequences",
    "stream",
    "tools",
    "tool_choice",
    "thinking",
    "metadata",
}
_IGNORED = {"service_tier"}  # Anthropic capacity tier: no meaning elsewhere, no effect on the answer


def _bad(message: str, param: str) -> ProxyError:
    return ProxyError.invalid_request(message, param=param)


def _unsupported(param: str, detail: str = "") -> ProxyError:
    return ProxyError.invalid_request(
        f"`{param}` is not supported through /v1/messages for this model{detail}.",
        param=param,
        code="unsupported_parameter",
    )


# --- validation --------------------------------------------------------------------------------------------


def validate_messages_body(body: dict[str, Any]) -> None:
    model = body.get("model")
    if not isinstance(model, str) or not model.strip():
        raise _bad("model: Field required (a string).", "model")
    max_tokens = body.get("max_tokens")
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
        raise _bad("max_tokens: Field required (a positive integer).", "max_tokens")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _bad("messages: Field required (a non-empty array).", "messages")
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ("user", "assistant"):
            raise _bad(f"messages.{index}.role: must be 'user' or 'assistant'.", f"messages.{index}.role")
        content = message.get("content")
        if not isinstance(content, str | list):
            raise _bad(f"messages.{index}.content: must be a string or an array of blocks.", f"messages.{index}")
        if isinstance(content, list) and not all(
            isinstance(b, dict) and isinstance(b.get("type"), str) for b in content
        ):
            raise _bad(f"messages.{index}.content: every block must be an object with a `type`.", f"messages.{index}")
    if "stream" in body and not isinstance(body["stream"], bool):
        raise _bad("stream: must be a boolean.", "stream")
    system = body.get("system")
    if system is not None and not isinstance(system, str | list):
        raise _bad("system: must be a string or an array of text blocks.", "system")
    for name in ("temperature", "top_p"):
        value = body.get(name)
        if value is not None and (not isinstance(value, int | float) or isinstance(value, bool)):
            raise _bad(f"{name}: must be a number.", name)
    stops = body.get("stop_sequences")
    if stops is not None and (not isinstance(stops, list) or not all(isinstance(s, str) for s in stops)):
        raise _bad("stop_sequences: must be an array of strings.", "stop_sequences")
    tools = body.get("tools")
    if tools is not None and not isinstance(tools, list):
        raise _bad("tools: must be an array.", "tools")


# --- request: Anthropic -> OpenAI chat -------------------------------------------------------------------------


def _text_blocks(value: Any, *, param: str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        parts = []
        for block in value:
            if not isinstance(block, dict) or block.get("type") != "text" or not isinstance(block.get("text"), str):
                raise _unsupported(param, " (only text blocks can be carried here)")
            parts.append(block["text"])
        return "\n\n".join(parts)
    raise _bad(f"{param}: must be a string or an array of text blocks.", param)


def _image_part(block: dict[str, Any], *, param: str) -> dict[str, Any]:
    source = block.get("source")
    if not isinstance(source, dict):
        raise _bad(f"{param}.source: required.", param)
    if source.get("type") == "base64":
        media, data = source.get("media_type"), source.get("data")
        if not isinstance(media, str) or not isinstance(data, str):
            raise _bad(f"{param}.source: `media_type` and `data` are required.", param)
        return {"type": "image_url", "image_url": {"url": f"data:{media};base64,{data}"}}
    if source.get("type") == "url" and isinstance(source.get("url"), str):
        return {"type": "image_url", "image_url": {"url": source["url"]}}
    raise _unsupported(f"{param}.source", f" (source type {source.get('type')!r})")


def _tool_result_content(block: dict[str, Any], *, param: str) -> str:
    content = block.get("content")
    if content is None:
        text = ""
    elif isinstance(content, str):
        text = content
    elif isinstance(content, list):
        parts = []
        for item in content:
            if isinstance(item, dict) and item.get("type") == "text":
                parts.append(str(item.get("text") or ""))
            else:
                raise _unsupported(f"{param}.content", " (only text tool results can be carried)")
        text = "\n".join(parts)
    else:
        raise _bad(f"{param}.content: must be a string or an array of blocks.", param)
    return f"Error: {text}" if block.get("is_error") else text


def _user_messages(content: Any, *, index: int) -> list[dict[str, Any]]:
    """One Anthropic user turn: tool results first (as tool messages), then the rest as one user message."""
    if isinstance(content, str):
        return [{"role": "user", "content": content}]
    out: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    for position, block in enumerate(content):
        param = f"messages.{index}.content.{position}"
        kind = block["type"]
        if kind == "tool_result":
            if not isinstance(block.get("tool_use_id"), str):
                raise _bad(f"{param}.tool_use_id: required.", param)
            result = _tool_result_content(block, param=param)
            out.append({"role": "tool", "tool_call_id": block["tool_use_id"], "content": result})
        elif kind == "text":
            parts.append({"type": "text", "text": str(block.get("text") or "")})
        elif kind == "image":
            parts.append(_image_part(block, param=param))
        else:
            raise _unsupported(param, f" (block type {kind!r})")
    if parts:
        if all(p["type"] == "text" for p in parts):
            out.append({"role": "user", "content": "\n\n".join(p["text"] for p in parts)})
        else:
            out.append({"role": "user", "content": parts})
    return out


def _assistant_message(content: Any, *, index: int) -> dict[str, Any]:
    if isinstance(content, str):
        return {"role": "assistant", "content": content}
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for position, block in enumerate(content):
        param = f"messages.{index}.content.{position}"
        kind = block["type"]
        if kind == "text":
            texts.append(str(block.get("text") or ""))
        elif kind == "tool_use":
            if not isinstance(block.get("id"), str) or not isinstance(block.get("name"), str):
                raise _bad(f"{param}: tool_use needs `id` and `name`.", param)
            arguments = orjson.dumps(block.get("input") if block.get("input") is not None else {}).decode()
            calls.append(
                {"id": block["id"], "type": "function", "function": {"name": block["name"], "arguments": arguments}}
            )
        elif kind in ("thinking", "redacted_thinking"):
            continue  # Anthropic-only, signed; see the module docstring
        else:
            raise _unsupported(param, f" (block type {kind!r})")
    message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts else None}
    if calls:
        message["tool_calls"] = calls
    return message


def _tools(tools: list[Any]) -> list[dict[str, Any]]:
    out = []
    for index, tool in enumerate(tools):
        if not isinstance(tool, dict) or not isinstance(tool.get("name"), str):
            raise _bad(f"tools.{index}: a tool needs a `name`.", f"tools.{index}")
        if tool.get("type") not in (None, "custom"):
            raise _unsupported(f"tools.{index}", f" (server tool {tool.get('type')!r})")
        function: dict[str, Any] = {"name": tool["name"]}
        if isinstance(tool.get("description"), str):
            function["description"] = tool["description"]
        function["parameters"] = tool.get("input_schema") or {"type": "object", "properties": {}}
        out.append({"type": "function", "function": function})
    return out


def _tool_choice(choice: Any) -> tuple[Any, bool | None]:
    """(OpenAI tool_choice, parallel_tool_calls) for an Anthropic tool_choice."""
    if choice is None:
        return None, None
    if not isinstance(choice, dict) or choice.get("type") not in ("auto", "any", "tool", "none"):
        raise _bad("tool_choice: must be auto, any, tool or none.", "tool_choice")
    parallel = False if choice.get("disable_parallel_tool_use") else None
    kind = choice["type"]
    if kind == "auto":
        return "auto", parallel
    if kind == "any":
        return "required", parallel
    if kind == "none":
        return "none", None
    if not isinstance(choice.get("name"), str):
        raise _bad("tool_choice.name: required for type tool.", "tool_choice")
    return {"type": "function", "function": {"name": choice["name"]}}, parallel


def _reasoning_effort(thinking: Any) -> str | None:
    if thinking is None:
        return None
    if not isinstance(thinking, dict) or thinking.get("type") not in ("enabled", "disabled"):
        raise _bad("thinking: must be {type: enabled, budget_tokens} or {type: disabled}.", "thinking")
    if thinking["type"] == "disabled":
        return None
    budget = thinking.get("budget_tokens")
    if not isinstance(budget, int) or isinstance(budget, bool) or budget < 1:
        raise _bad("thinking.budget_tokens: a positive integer is required.", "thinking.budget_tokens")
    return "low" if budget < 4096 else "medium" if budget < 16384 else "high"


def messages_to_chat(body: dict[str, Any]) -> dict[str, Any]:
    """An Anthropic Messages request as an OpenAI chat request (the caller resolves `model`)."""
    validate_messages_body(body)
    for name in body:
        if name not in _TRANSLATED and name not in _IGNORED:
            raise _unsupported(name)
    if body.get("top_k") is not None:
        raise _unsupported("top_k")
    messages: list[dict[str, Any]] = []
    if body.get("system") is not None:
        system = _text_blocks(body["system"], param="system")
        if system:
            messages.append({"role": "system", "content": system})
    for index, message in enumerate(body["messages"]):
        if message["role"] == "user":
            messages.extend(_user_messages(message["content"], index=index))
        else:
            messages.append(_assistant_message(message["content"], index=index))
    out: dict[str, Any] = {"model": body["model"], "messages": messages, "max_completion_tokens": body["max_tokens"]}
    for name in ("temperature", "top_p"):
        if body.get(name) is not None:
            out[name] = body[name]
    if body.get("stop_sequences"):
        out["stop"] = list(body["stop_sequences"])
    if body.get("tools"):
        out["tools"] = _tools(body["tools"])
    choice, parallel = _tool_choice(body.get("tool_choice"))
    if choice is not None:
        out["tool_choice"] = choice
    if parallel is not None and body.get("tools"):
        out["parallel_tool_calls"] = parallel
    effort = _reasoning_effort(body.get("thinking"))
    if effort is not None:
        out["reasoning_effort"] = effort
    metadata = body.get("metadata")
    if metadata is not None:
        if not isinstance(metadata, dict):
            raise _bad("metadata: must be an object.", "metadata")
        if isinstance(metadata.get("user_id"), str):
            out["user"] = metadata["user_id"]
    if body.get("stream"):
        out["stream"] = True
        out["stream_options"] = {"include_usage": True}
    return out


# --- response: OpenAI chat -> Anthropic message ----------------------------------------------------------------


def anthropic_usage(usage: Usage) -> dict[str, Any]:
    out: dict[str, Any] = {
        "input_tokens": usage.input,
        "cache_creation_input_tokens": usage.cache_write,
        "cache_read_input_tokens": usage.cached_input,
        "output_tokens": usage.output + usage.reasoning,
    }
    searches = usage.unit_count(WEB_SEARCH)
    if searches:  # an OpenAI search model's web search, as Anthropic reports its own
        out["server_tool_use"] = {"web_search_requests": searches}
    return out


def stop_reason_for(finish_reason: str | None) -> str:
    return STOP_REASONS.get(str(finish_reason), "end_turn")


def _tool_input(arguments: Any) -> dict[str, Any]:
    """Tool arguments as the object Anthropic's `input` must be; anything else is kept under `_raw`."""
    if isinstance(arguments, dict):
        return arguments
    try:
        parsed = orjson.loads(arguments or "{}")
    except (orjson.JSONDecodeError, TypeError):
        return {"_raw": str(arguments)}
    return parsed if isinstance(parsed, dict) else {"_raw": parsed}


def chat_to_message(chat: dict[str, Any], usage: Usage | None, *, model: str) -> dict[str, Any]:
    choices = chat.get("choices") or [{}]
    choice = choices[0] if isinstance(choices[0], dict) else {}
    message = choice.get("message") or {}
    content: list[dict[str, Any]] = []
    if isinstance(message.get("content"), str) and message["content"]:
        content.append({"type": "text", "text": message["content"]})
    for call in message.get("tool_calls") or []:
        function = call.get("function") or {}
        content.append(
            {
                "type": "tool_use",
                "id": str(call.get("id") or ""),
                "name": str(function.get("name") or ""),
                "input": _tool_input(function.get("arguments")),
            }
        )
    return {
        "id": f"msg_{chat.get('id', '')}",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason_for(choice.get("finish_reason")),
        "stop_sequence": None,
        "usage": anthropic_usage(usage or Usage()),
    }


# --- stream: OpenAI chunks -> Anthropic events ---------------------------------------------------------------


def sse_event(kind: str, data: dict[str, Any]) -> bytes:
    return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


class ChunkTranslator:
    """Feed OpenAI chat chunks in order; get the Anthropic stream events for each. `finish(usage)`
    closes the message once the upstream stream has ended (and sends the tool calls: see there)."""

    def __init__(self, model: str, message_id: str) -> None:
        self.model = model
        self.message_id = message_id
        self.usage: Usage | None = None
        self.text_parts: list[str] = []
        self.done = False
        self._started = False
        self._block = -1  # index of the open content block, -1 if none
        self._block_kind = ""  # "text" | "tool"
        self._calls: dict[int, dict[str, Any]] = {}  # OpenAI tool_call index -> id, name, argument fragments
        self._next_block = 0
        self._finish_reason: str | None = None

    def _start(self) -> list[tuple[str, dict[str, Any]]]:
        if self._started:
            return []
        self._started = True
        message: dict[str, Any] = {
            "id": self.message_id,
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 0, "output_tokens": 0},
        }
        return [("message_start", {"type": "message_start", "message": message})]

    def _close(self) -> list[tuple[str, dict[str, Any]]]:
        if self._block < 0:
            return []
        index, self._block, self._block_kind = self._block, -1, ""
        return [("content_block_stop", {"type": "content_block_stop", "index": index})]

    def _open(self, kind: str, block: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
        events = self._close()
        self._block, self._block_kind = self._next_block, kind
        self._next_block += 1
        events.append(
            ("content_block_start", {"type": "content_block_start", "index": self._block, "content_block": block})
        )
        return events

    def feed(self, chunk: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
        events = self._start()
        if isinstance(chunk.get("error"), dict):
            error = chunk["error"]
            events.append(
                (
                    "error",
                    {
                        "type": "error",
                        "error": {"type": "api_error", "message": str(error.get("message") or "upstream error")},
                    },
                )
            )
            return events
        if isinstance(chunk.get("usage"), dict):
            self.usage = usage_from_openai(chunk["usage"])
        for choice in chunk.get("choices") or []:
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            text = delta.get("content")
            if isinstance(text, str) and text:
                if self._block_kind != "text":
                    events += self._open("text", {"type": "text", "text": ""})
                self.text_parts.append(text)
                events.append(
                    (
                        "content_block_delta",
                        {
                            "type": "content_block_delta",
                            "index": self._block,
                            "delta": {"type": "text_delta", "text": text},
                        },
                    )
                )
            for call in delta.get("tool_calls") or []:
                if not isinstance(call, dict):
                    continue
                function = call.get("function") or {}
                entry = self._calls.setdefault(int(call.get("index") or 0), {"id": "", "name": "", "arguments": []})
                entry["id"] = entry["id"] or str(call.get("id") or "")
                if isinstance(function.get("name"), str) and function["name"] and not entry["name"]:
                    entry["name"] = function["name"]
                    self.text_parts.append(function["name"])
                if isinstance(function.get("arguments"), str) and function["arguments"]:
                    entry["arguments"].append(function["arguments"])
                    self.text_parts.append(function["arguments"])
            if choice.get("finish_reason"):
                self._finish_reason = str(choice["finish_reason"])
        return events

    def finish(self, usage: Usage | None) -> list[tuple[str, dict[str, Any]]]:
        """Close the text block, send each tool call whole (in call order), then the stop reason and usage.

        Tool calls are buffered rather than streamed fragment by fragment: an Anthropic content block
        cannot reopen once closed, and an upstream that interleaves fragments of parallel calls (or
        text after a call) would otherwise lose arguments. Text still streams as it arrives."""
        events = self._start() + self._close()
        for position in sorted(self._calls):
            entry = self._calls[position]
            block = {"type": "tool_use", "id": entry["id"] or f"toolu_{position}", "name": entry["name"], "input": {}}
            events += self._open("tool", block)
            arguments = "".join(entry["arguments"])
            if arguments:
                delta = {"type": "input_json_delta", "partial_json": arguments}
                events.append(
                    ("content_block_delta", {"type": "content_block_delta", "index": self._block, "delta": delta})
                )
            events += self._close()
        final = usage or self.usage or Usage()
        events.append(
            (
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": stop_reason_for(self._finish_reason), "stop_sequence": None},
                    "usage": anthropic_usage(final),
                },
            )
        )
        events.append(("message_stop", {"type": "message_stop"}))
        self.done = True
        return events
