"""Anthropic's Messages API, and its translation to and from OpenAI's chat completions.

Pure functions and one small state machine (the stream translator); no I/O. Reference: Anthropic's
public Messages API (`POST /v1/messages`, `anthropic-version: 2023-06-01`) and its streaming events.

Usage normalisation (docs/providers.md): Anthropic's `input_tokens` exclude cache reads and cache
writes, which it reports as `cache_read_input_tokens` and `cache_creation_input_tokens`; thinking
tokens are part of `output_tokens` and not reported apart. So input = input_tokens, cached input =
cache reads, cache write = cache creation, output = output_tokens, reasoning = 0. Server-side web
searches (the `web_search_*` tool) are counted in `usage.server_tool_use.web_search_requests` (in the
final `message_delta` of a stream) and billed per search: they become the `web_search` unit. For an OpenAI
client the usage is shown in OpenAI's shape: prompt_tokens = input + cache reads + cache writes,
prompt_tokens_details.cached_tokens = cache reads.
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from contracts.pricing import WEB_SEARCH, Usage
from contracts.providers import ANTHROPIC_VERSION
from proxy.errors import ProxyError

MESSAGES_PATH = "/v1/messages"
DEFAULT_MAX_TOKENS = 4096  # Anthropic requires max_tokens; OpenAI clients often leave it out
THINKING_BUDGETS = {"minimal": 1024, "low": 2048, "medium": 8192, "high": 24576}

FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}

# OpenAI chat parameters and what happens to them here. Anything not listed is refused with a 400
# naming it: a parameter is never dropped silently.
_TRANSLATED = {
    "model",
    "messages",
    "max_tokens",
    "max_completion_tokens",
    "temperature",
    "top_p",
    "stop",
    "stream",
    "stream_options",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "response_format",
    "reasoning_effort",
    "user",
    "n",
}
_IGNORED = {"store", "metadata", "service_tier"}  # OpenAI-side bookkeeping with no effect on the answer


def messages_url(base_url: str) -> str:
    return base_url.rstrip("/") + MESSAGES_PATH


def auth_headers(secret: str) -> dict[str, str]:
    return {"x-api-key": secret, "anthropic-version": ANTHROPIC_VERSION}


def _unsupported(param: str, detail: str = "") -> ProxyError:
    return ProxyError.invalid_request(
        f"`{param}` is not supported for Anthropic models through /v1/chat/completions{detail}.",
        param=param,
        code="unsupported_parameter",
    )


# --- request: OpenAI chat -> Anthropic messages ----------------------------------------------------------------


def _text_of(content: Any, *, param: str) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str):
                parts.append(part["text"])
            else:
                raise ProxyError.invalid_request(f"`{param}` may only hold text parts.", param=param)
        return "\n".join(parts)
    raise ProxyError.invalid_request(f"`{param}` must be a string or an array of parts.", param=param)


def _image_block(part: dict[str, Any], *, param: str) -> dict[str, Any]:
    image = part.get("image_url")
    url = image.get("url") if isinstance(image, dict) else image
    if not isinstance(url, str) or not url:
        raise ProxyError.invalid_request(f"`{param}.image_url.url` is required.", param=param)
    if url.startswith("data:"):
        header, sep, data = url[5:].partition(",")
        media_type, _, encoding = header.partition(";")
        if not sep or encoding != "base64" or not media_type.startswith("image/"):
            raise ProxyError.invalid_request(
                f"`{param}`: a data URL must look like data:image/png;base64,….", param=param
            )
        return {"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}}
    if url.startswith(("https://", "http://")):
        return {"type": "image", "source": {"type": "url", "url": url}}
    raise ProxyError.invalid_request(f"`{param}`: an image must be an http(s) URL or a data URL.", param=param)


def _user_blocks(content: Any, *, param: str) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if not isinstance(content, list):
        raise ProxyError.invalid_request(f"`{param}` must be a string or an array of parts.", param=param)
    blocks: list[dict[str, Any]] = []
    for i, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and isinstance(part.get("text"), str):
            blocks.append({"type": "text", "text": part["text"]})
        elif kind == "image_url":
            blocks.append(_image_block(part, param=f"{param}[{i}]"))
        else:
            raise _unsupported(f"{param}[{i}]", f" (content part type {kind!r})")
    return blocks


def _tool_use_blocks(tool_calls: Any, *, param: str) -> list[dict[str, Any]]:
    if not isinstance(tool_calls, list):
        raise ProxyError.invalid_request(f"`{param}` must be an array.", param=param)
    blocks = []
    for i, call in enumerate(tool_calls):
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str) or not call.get("id"):
            raise ProxyError.invalid_request(f"`{param}[{i}]` needs an id and a function name.", param=param)
        arguments = function.get("arguments") or "{}"
        try:
            parsed = orjson.loads(arguments) if isinstance(arguments, str) else arguments
        except orjson.JSONDecodeError:
            raise ProxyError.invalid_request(
                f"`{param}[{i}].function.arguments` is not valid JSON.", param=param
            ) from None
        if not isinstance(parsed, dict):
            raise ProxyError.invalid_request(f"`{param}[{i}].function.arguments` must be a JSON object.", param=param)
        blocks.append({"type": "tool_use", "id": str(call["id"]), "name": function["name"], "input": parsed})
    return blocks


def _append(messages: list[dict[str, Any]], role: str, blocks: list[dict[str, Any]]) -> None:
    """Anthropic wants user and assistant turns to alternate: consecutive turns of one role merge."""
    if not blocks:
        return
    if messages and messages[-1]["role"] == role:
        messages[-1]["content"].extend(blocks)
    else:
        messages.append({"role": role, "content": list(blocks)})


def _messages(openai_messages: list[Any]) -> tuple[str, list[dict[str, Any]]]:
    system_parts: list[str] = []
    out: list[dict[str, Any]] = []
    for i, message in enumerate(openai_messages):
        role = message.get("role")
        param = f"messages[{i}]"
        if role in ("system", "developer"):
            system_parts.append(_text_of(message.get("content"), param=f"{param}.content"))
        elif role == "user":
            _append(out, "user", _user_blocks(message.get("content"), param=f"{param}.content"))
        elif role == "assistant":
            blocks: list[dict[str, Any]] = []
            text = _text_of(message.get("content"), param=f"{param}.content")
            if text:
                blocks.append({"type": "text", "text": text})
            if message.get("tool_calls"):
                blocks.extend(_tool_use_blocks(message["tool_calls"], param=f"{param}.tool_calls"))
            _append(out, "assistant", blocks)
        elif role == "tool":
            if not message.get("tool_call_id"):
                raise ProxyError.invalid_request(f"`{param}.tool_call_id` is required.", param=param)
            result = {
                "type": "tool_result",
                "tool_use_id": str(message["tool_call_id"]),
                "content": _text_of(message.get("content"), param=f"{param}.content"),
            }
            _append(out, "user", [result])  # parallel tool results land in one user turn
        else:
            raise ProxyError.invalid_request(f"`{param}.role` {role!r} is not a chat role.", param=param)
    if not out:
        raise ProxyError.invalid_request("`messages` needs at least one user message.", param="messages")
    return "\n\n".join(p for p in system_parts if p), out


def _tools(tools: Any) -> list[dict[str, Any]]:
    if not isinstance(tools, list):
        raise ProxyError.invalid_request("`tools` must be an array.", param="tools")
    out = []
    for i, tool in enumerate(tools):
        function = tool.get("function") if isinstance(tool, dict) and tool.get("type") == "function" else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise _unsupported(f"tools[{i}]", " (only function tools are)")
        spec: dict[str, Any] = {
            "name": function["name"],
            "input_schema": function.get("parameters") or {"type": "object", "properties": {}},
        }
        if function.get("description"):
            spec["description"] = function["description"]
        out.append(spec)
    return out


def _tool_choice(choice: Any, parallel: Any) -> dict[str, Any] | None:
    result: dict[str, Any] | None
    if choice is None:
        result = None
    elif choice == "auto":
        result = {"type": "auto"}
    elif choice == "required":
        result = {"type": "any"}
    elif choice == "none":
        result = {"type": "none"}
    elif isinstance(choice, dict) and isinstance((choice.get("function") or {}).get("name"), str):
        result = {"type": "tool", "name": choice["function"]["name"]}
    else:
        raise ProxyError.invalid_request("`tool_choice` is not a valid tool choice.", param="tool_choice")
    if parallel is False:
        result = result or {"type": "auto"}
        if result["type"] != "none":
            result["disable_parallel_tool_use"] = True
    return result


def chat_to_messages(body: dict[str, Any], *, upstream_model: str) -> dict[str, Any]:
    """The Anthropic Messages request for an OpenAI chat completions request (400 for what cannot be
    expressed)."""
    for name, value in body.items():
        if name in _TRANSLATED or name in _IGNORED or value is None:
            continue
        raise _unsupported(name)
    if (body.get("n") or 1) != 1:
        raise _unsupported("n", " (Anthropic returns one choice per request)")
    response_format = body.get("response_format")
    if response_format is not None and not (
        isinstance(response_format, dict) and response_format.get("type") == "text"
    ):
        raise _unsupported("response_format", " (JSON mode; ask for JSON in the prompt or use a tool)")

    system, messages = _messages(body["messages"])
    out: dict[str, Any] = {"model": upstream_model, "messages": messages}
    if system:
        out["system"] = system
    max_tokens = body.get("max_completion_tokens") or body.get("max_tokens") or DEFAULT_MAX_TOKENS
    effort = body.get("reasoning_effort")
    if effort is not None:
        if not isinstance(effort, str) or effort not in THINKING_BUDGETS:
            raise ProxyError.invalid_request(
                f"`reasoning_effort` must be one of {', '.join(THINKING_BUDGETS)}.", param="reasoning_effort"
            )
        budget = THINKING_BUDGETS[effort]
        out["thinking"] = {"type": "enabled", "budget_tokens": budget}
        max_tokens = max_tokens + budget  # the budget counts against max_tokens; keep the answer's room
    out["max_tokens"] = max_tokens
    temperature = body.get("temperature")
    if temperature is not None:
        if not isinstance(temperature, int | float) or not 0 <= temperature <= 1:
            raise ProxyError.invalid_request(
                "`temperature` must be between 0 and 1 for Anthropic models.", param="temperature"
            )
        out["temperature"] = temperature
    if body.get("top_p") is not None:
        out["top_p"] = body["top_p"]
    stop = body.get("stop")
    if stop is not None:
        stops = [stop] if isinstance(stop, str) else stop
        if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
            raise ProxyError.invalid_request("`stop` must be a string or an array of strings.", param="stop")
        out["stop_sequences"] = stops
    if body.get("tools"):
        out["tools"] = _tools(body["tools"])
    choice = _tool_choice(body.get("tool_choice"), body.get("parallel_tool_calls"))
    if choice is not None:
        out["tool_choice"] = choice
    if isinstance(body.get("user"), str) and body["user"]:
        out["metadata"] = {"user_id": body["user"]}
    if body.get("stream"):
        out["stream"] = True
    return out


# --- usage ---------------------------------------------------------------------------------------------------


def _n(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def web_searches(usage: dict[str, Any]) -> int:
    """Server-side web searches in an Anthropic `usage`: `server_tool_use.web_search_requests` (0 if absent)."""
    tools = usage.get("server_tool_use")
    return _n(tools.get("web_search_requests")) if isinstance(tools, dict) else 0


def usage_from_anthropic(usage: dict[str, Any] | None) -> Usage | None:
    if not isinstance(usage, dict):
        return None
    searches = web_searches(usage)
    return Usage(
        input=_n(usage.get("input_tokens")),
        cached_input=_n(usage.get("cache_read_input_tokens")),
        cache_write=_n(usage.get("cache_creation_input_tokens")),
        output=_n(usage.get("output_tokens")),
        units=((WEB_SEARCH, searches),) if searches else (),
    )


def openai_usage(usage: Usage) -> dict[str, Any]:
    prompt = usage.input + usage.cached_input + usage.cache_write
    completion = usage.output + usage.reasoning
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": usage.cached_input},
        "completion_tokens_details": {"reasoning_tokens": usage.reasoning},
    }


# --- response: Anthropic message -> OpenAI chat completion ------------------------------------------------------


def message_to_chat(message: dict[str, Any]) -> tuple[dict[str, Any], Usage | None]:
    texts: list[str] = []
    tool_calls: list[dict[str, Any]] = []
    for block in message.get("content") or []:
        if not isinstance(block, dict):
            continue
        if block.get("type") == "text":
            texts.append(str(block.get("text") or ""))
        elif block.get("type") == "tool_use":
            tool_calls.append(
                {
                    "id": block.get("id"),
                    "type": "function",
                    "function": {
                        "name": block.get("name"),
                        "arguments": orjson.dumps(block.get("input") or {}).decode(),
                    },
                }
            )
    usage = usage_from_anthropic(message.get("usage"))
    chat_message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts else None}
    if tool_calls:
        chat_message["tool_calls"] = tool_calls
    chat: dict[str, Any] = {
        "id": f"chatcmpl-{message.get('id', '')}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": message.get("model"),
        "choices": [
            {
                "index": 0,
                "message": chat_message,
                "logprobs": None,
                "finish_reason": FINISH_REASONS.get(str(message.get("stop_reason")), "stop"),
            }
        ],
    }
    if usage is not None:
        chat["usage"] = openai_usage(usage)
    return chat, usage


# --- stream: Anthropic events -> OpenAI chunks ----------------------------------------------------------------


class StreamTranslator:
    """Feed Anthropic stream events (type, data) in order; get the OpenAI chunks to send for each.

    Chunks: the role first, then content deltas and tool-call deltas (id and name first, then the
    argument fragments, indexed by tool call), then one chunk with the finish_reason, then (if the
    client asked) a usage chunk with no choices."""

    def __init__(self, *, include_usage: bool) -> None:
        self.include_usage = include_usage
        self.id = "chatcmpl-"
        self.model = ""
        self.created = int(time.time())
        self.input: dict[str, Any] = {}
        self.output_tokens = 0
        self.server_tool_use: Any = None  # usage.server_tool_use as last reported (web searches)
        self.finish_reason: str | None = None
        self._tool_index: dict[int, int] = {}
        self.text_parts: list[str] = []  # what was streamed, for counting tokens locally
        self.usage_seen = False
        self.done = False

    def _chunk(self, delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
        }

    @property
    def usage(self) -> Usage | None:
        if not self.usage_seen:
            return None
        return usage_from_anthropic(
            {**self.input, "output_tokens": self.output_tokens, "server_tool_use": self.server_tool_use}
        )

    def feed(self, kind: str, data: dict[str, Any]) -> list[dict[str, Any]]:
        if kind == "message_start":
            message = data.get("message") or {}
            self.id = f"chatcmpl-{message.get('id', '')}"
            self.model = str(message.get("model") or "")
            usage = message.get("usage") or {}
            self.input = {
                k: usage.get(k) for k in ("input_tokens", "cache_read_input_tokens", "cache_creation_input_tokens")
            }
            self.output_tokens = _n(usage.get("output_tokens"))
            self.server_tool_use = usage.get("server_tool_use")
            self.usage_seen = bool(usage)
            return [self._chunk({"role": "assistant", "content": ""})]
        if kind == "content_block_start":
            block = data.get("content_block") or {}
            if block.get("type") == "tool_use":
                index = len(self._tool_index)
                self._tool_index[int(data.get("index", 0))] = index
                self.text_parts.append(str(block.get("name") or ""))
                call = {"index": index, "id": block.get("id"), "type": "function"}
                call["function"] = {"name": block.get("name"), "arguments": ""}
                return [self._chunk({"tool_calls": [call]})]
            if block.get("type") == "text" and block.get("text"):
                self.text_parts.append(block["text"])
                return [self._chunk({"content": block["text"]})]
            return []
        if kind == "content_block_delta":
            delta = data.get("delta") or {}
            if delta.get("type") == "text_delta":
                self.text_parts.append(str(delta.get("text") or ""))
                return [self._chunk({"content": delta.get("text") or ""})]
            if delta.get("type") == "input_json_delta":
                tool_index = self._tool_index.get(int(data.get("index", 0)))
                if tool_index is None:
                    return []
                fragment = str(delta.get("partial_json") or "")
                self.text_parts.append(fragment)
                return [self._chunk({"tool_calls": [{"index": tool_index, "function": {"arguments": fragment}}]})]
            return []  # thinking and signature deltas have no OpenAI chat counterpart
        if kind == "message_delta":
            stop = (data.get("delta") or {}).get("stop_reason")
            if stop:
                self.finish_reason = FINISH_REASONS.get(str(stop), "stop")
            usage = data.get("usage") or {}
            if "output_tokens" in usage:
                self.output_tokens = _n(usage.get("output_tokens"))  # cumulative
                self.usage_seen = True
            for name in ("input_tokens", "cache_read_input_tokens", "cache_creation_input_tokens"):
                if usage.get(name) is not None:
                    self.input[name] = usage[name]
            if usage.get("server_tool_use") is not None:
                self.server_tool_use = usage["server_tool_use"]  # cumulative, like output_tokens
            return []
        if kind == "message_stop":
            self.done = True
            chunks = [self._chunk({}, self.finish_reason or "stop")]
            usage = self.usage
            if self.include_usage and usage is not None:
                chunks.append(
                    {
                        "id": self.id,
                        "object": "chat.completion.chunk",
                        "created": self.created,
                        "model": self.model,
                        "choices": [],
                        "usage": openai_usage(usage),
                    }
                )
            return chunks
        if kind == "error":
            error = data.get("error") or {}
            return [{"error": {"message": str(error.get("message") or "upstream error"), "type": error.get("type")}}]
        return []  # ping, and event types added later


def parse_sse(buffer: bytes) -> tuple[list[tuple[str, dict[str, Any]]], bytes]:
    """Complete SSE events in `buffer` as (event type, JSON data), and the unfinished rest."""
    events: list[tuple[str, dict[str, Any]]] = []
    buffer = buffer.replace(b"\r\n", b"\n")
    while True:
        cut = buffer.find(b"\n\n")
        if cut == -1:
            return events, buffer
        raw, buffer = buffer[:cut], buffer[cut + 2 :]
        kind, data_lines = "", []
        for line in raw.split(b"\n"):
            if line.startswith(b"event:"):
                kind = line[6:].strip().decode()
            elif line.startswith(b"data:"):
                data_lines.append(line[5:].strip())
        if not data_lines:
            continue
        try:
            data = orjson.loads(b"\n".join(data_lines))
        except orjson.JSONDecodeError:
            continue
        if isinstance(data, dict):
            events.append((kind or str(data.get("type") or ""), data))
