"""Server-sent events passing through: forwarded as they arrive, inspected on the way.

`UsageTap` splits the upstream byte stream into events without delaying any complete event, reads
the `usage` object when a chunk carries one, and drops the usage-only chunk when the client did not
ask for it (Turnpike always asks the provider, so that cost is known). When the client did ask, the chunk
that carries usage is re-serialized with the cost in its `usage` (proxy.costs); every other event passes
as it came. `EventUsageTap` does the same for typed events (Anthropic's `message_delta`, the Responses
API's terminal event)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

from proxy.providers.openai_format import is_usage_only_chunk, web_search_calls

_SEPARATORS = (b"\n\n", b"\r\n\r\n")


# Given a chunk or event's usage (or the chunk itself), the cost members to add to it (proxy.costs), or None.
CostHook = Callable[[dict[str, Any]], dict[str, Any] | None]


class UsageTap:
    __slots__ = ("_buffer", "_cost", "_keep_usage_chunk", "forwarded", "model", "saw_done", "usage")

    def __init__(self, *, keep_usage_chunk: bool, cost: CostHook | None = None) -> None:
        self._buffer = b""
        self._keep_usage_chunk = keep_usage_chunk
        self._cost = cost  # called with a chunk that carries usage, when the client asked for usage
        self.usage: dict[str, Any] | None = None
        self.forwarded: list[bytes] = []  # complete events sent to the client, for local counting
        self.saw_done = False
        self.model = ""  # the model the provider says served the request (from the usage chunk)

    def feed(self, data: bytes) -> bytes:
        """Bytes to forward now: every complete event in `data` (plus what was buffered)."""
        self._buffer += data
        out: list[bytes] = []
        while True:
            cut, sep_len = -1, 0
            for sep in _SEPARATORS:
                index = self._buffer.find(sep)
                if index != -1 and (cut == -1 or index < cut):
                    cut, sep_len = index, len(sep)
            if cut == -1:
                break
            event = self._buffer[: cut + sep_len]
            self._buffer = self._buffer[cut + sep_len :]
            kept = self._inspect(event)
            if kept:
                out.append(kept)
        chunk = b"".join(out)
        if chunk:
            self.forwarded.append(chunk)
        return chunk

    def flush(self) -> bytes:
        """Whatever is left when the upstream closes (an unterminated last event)."""
        rest, self._buffer = self._buffer, b""
        kept = self._inspect(rest) if rest else b""
        if kept:
            self.forwarded.append(kept)
        return kept

    def _inspect(self, event: bytes) -> bytes:
        """Read usage out of the event; returns the event to forward (b"" for none)."""
        if b"[DONE]" in event:
            self.saw_done = True
            return event
        if b'"usage"' not in event or b'"usage":null' in event:
            return event
        payload = _data_of(event)
        if payload is None:
            return event
        try:
            chunk = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return event
        if isinstance(chunk, dict) and isinstance(chunk.get("usage"), dict):
            self.usage = usage = chunk["usage"]
            self.model = str(chunk.get("model") or self.model)
            if not self._keep_usage_chunk:
                return b"" if is_usage_only_chunk(chunk) else event
            members = self._cost(chunk) if self._cost is not None else None
            if members is not None:
                chunk["usage"] = {**usage, **members}
                return b"data: " + orjson.dumps(chunk) + b"\n\n"
        return event

    def streamed_text(self) -> str:
        """Content and tool-call arguments forwarded so far (for counting tokens locally)."""
        parts: list[str] = []
        for block in self.forwarded:
            for line in block.splitlines():
                if not line.startswith(b"data:"):
                    continue
                payload = line[5:].strip()
                if payload == b"[DONE]" or not payload:
                    continue
                try:
                    chunk = orjson.loads(payload)
                except orjson.JSONDecodeError:
                    continue
                for choice in chunk.get("choices") or []:
                    delta = choice.get("delta") or {}
                    if isinstance(delta.get("content"), str):
                        parts.append(delta["content"])
                    for call in delta.get("tool_calls") or []:
                        function = call.get("function") or {}
                        parts.append(str(function.get("name") or ""))
                        parts.append(str(function.get("arguments") or ""))
        return "".join(parts)


def _data_of(event: bytes) -> bytes | None:
    lines = [line[5:].lstrip() for line in event.splitlines() if line.startswith(b"data:")]
    return b"\n".join(lines) if lines else None


class EventUsageTap:
    """Typed SSE events (Anthropic Messages, OpenAI Responses) passing through untouched, read for
    usage and the served model on the way; the event that reports the final usage gets the cost in it
    (`cost`, called with that usage object). Subclasses say what each event means for accounting."""

    __slots__ = ("_buffer", "_cost", "complete", "model", "text_parts", "usage")

    interesting: tuple[bytes, ...] = ()

    def __init__(self, *, cost: CostHook | None = None) -> None:
        self._buffer = b""
        self._cost = cost
        self.usage: dict[str, Any] | None = None
        self.model = ""
        self.complete = False  # the stream's terminal event arrived
        self.text_parts: list[str] = []

    def feed(self, data: bytes) -> bytes:
        self._buffer += data
        normalised = self._buffer.replace(b"\r\n", b"\n")
        cut = normalised.rfind(b"\n\n")
        if cut == -1:
            return b""
        # forward every complete event now; keep the unfinished rest
        complete, self._buffer = normalised[: cut + 2], normalised[cut + 2 :]
        events = complete.split(b"\n\n")
        rewritten = False
        for index, event in enumerate(events):
            if event and any(marker in event for marker in self.interesting):
                payload = _data_of(event)
                if payload is None:
                    continue
                try:
                    parsed = orjson.loads(payload)
                except orjson.JSONDecodeError:
                    continue
                if isinstance(parsed, dict) and self.inspect(parsed):
                    kind = str(parsed.get("type") or "").encode()
                    events[index] = b"event: " + kind + b"\ndata: " + orjson.dumps(parsed)
                    rewritten = True
        return b"\n\n".join(events) if rewritten else complete

    def flush(self) -> bytes:
        rest, self._buffer = self._buffer, b""
        return rest

    def inspect(self, event: dict[str, Any]) -> bool:
        """Account for one parsed event; True if it was changed (the cost added) and must be re-serialized."""
        raise NotImplementedError

    def _with_cost(self, usage: dict[str, Any]) -> dict[str, Any] | None:
        members = self._cost(usage) if self._cost is not None else None
        return None if members is None else {**usage, **members}

    def streamed_text(self) -> str:
        return "".join(self.text_parts)


class AnthropicUsageTap(EventUsageTap):
    """Anthropic's stream: usage starts in message_start and is completed by message_delta."""

    __slots__ = ()
    interesting = (b"message_start", b"message_delta", b"message_stop", b"_delta")

    def inspect(self, event: dict[str, Any]) -> bool:
        kind = event.get("type")
        if kind == "message_start":
            message = event.get("message") or {}
            self.model = str(message.get("model") or self.model)
            if isinstance(message.get("usage"), dict):
                self.usage = dict(message["usage"])
        elif kind == "message_delta":
            usage = event.get("usage")
            if isinstance(usage, dict):
                self.usage = {**(self.usage or {}), **{k: v for k, v in usage.items() if v is not None}}
                # the usage so far (message_start's input counts, this event's output count) is final
                members = self._cost(self.usage) if self._cost is not None else None
                if members is not None:
                    event["usage"] = {**usage, **members}
                    return True
        elif kind == "message_stop":
            self.complete = True
        elif kind == "content_block_delta":
            delta = event.get("delta") or {}
            for name in ("text", "partial_json", "thinking"):
                if isinstance(delta.get(name), str):
                    self.text_parts.append(delta[name])
        return False


class ResponsesUsageTap(EventUsageTap):
    """OpenAI Responses stream: the terminal event (completed / incomplete / failed) carries usage, and the
    response's `output`, whose `web_search_call` items are its web searches (`web_searches`; counted from the
    `response.output_item.done` events as they come, so a stream cut short still has its count so far).
    The cost hook reads `web_searches` (set before it is called)."""

    __slots__ = ("web_searches",)
    interesting = (
        b"response.completed",
        b"response.incomplete",
        b"response.failed",
        b".delta",
        b'"web_search_call"',
    )

    def __init__(self, *, cost: CostHook | None = None) -> None:
        super().__init__(cost=cost)
        self.web_searches = 0

    def inspect(self, event: dict[str, Any]) -> bool:
        kind = event.get("type")
        if kind == "response.output_item.done":
            item = event.get("item")
            if isinstance(item, dict) and item.get("type") == "web_search_call":
                self.web_searches += 1
        elif kind in ("response.completed", "response.incomplete", "response.failed"):
            response = event.get("response") or {}
            self.model = str(response.get("model") or self.model)
            self.complete = True
            if isinstance(response.get("output"), list):
                self.web_searches = web_search_calls(response["output"])
            if isinstance(response.get("usage"), dict):
                self.usage = response["usage"]
                with_cost = self._with_cost(response["usage"])
                if with_cost is not None:
                    response["usage"] = with_cost
                    return True
        elif isinstance(kind, str) and kind.endswith(".delta") and isinstance(event.get("delta"), str):
            self.text_parts.append(event["delta"])
        return False
