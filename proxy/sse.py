"""Server-sent events passing through: forwarded as they arrive, inspected on the way.

`UsageTap` splits the upstream byte stream into events without delaying any complete event, reads
the `usage` object when a chunk carries one, and drops the usage-only chunk when the client did not
ask for it (Turnpike always asks the provider, so that cost is known)."""

from __future__ import annotations

from typing import Any

import orjson

from proxy.providers.openai_format import is_usage_only_chunk

_SEPARATORS = (b"\n\n", b"\r\n\r\n")


class UsageTap:
    __slots__ = ("_buffer", "_keep_usage_chunk", "forwarded", "model", "saw_done", "usage")

    def __init__(self, *, keep_usage_chunk: bool) -> None:
        self._buffer = b""
        self._keep_usage_chunk = keep_usage_chunk
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
            if self._inspect(event):
                out.append(event)
        chunk = b"".join(out)
        if chunk:
            self.forwarded.append(chunk)
        return chunk

    def flush(self) -> bytes:
        """Whatever is left when the upstream closes (an unterminated last event)."""
        rest, self._buffer = self._buffer, b""
        if rest and self._inspect(rest):
            self.forwarded.append(rest)
            return rest
        return b""

    def _inspect(self, event: bytes) -> bool:
        """Read usage out of the event; False if the event must not be forwarded."""
        if b"[DONE]" in event:
            self.saw_done = True
            return True
        if b'"usage"' not in event or b'"usage":null' in event:
            return True
        payload = _data_of(event)
        if payload is None:
            return True
        try:
            chunk = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return True
        if isinstance(chunk, dict) and isinstance(chunk.get("usage"), dict):
            self.usage = chunk["usage"]
            self.model = str(chunk.get("model") or self.model)
            if not self._keep_usage_chunk and is_usage_only_chunk(chunk):
                return False
        return True

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
    usage and the served model on the way. Subclasses say what each event means for accounting."""

    __slots__ = ("_buffer", "complete", "model", "text_parts", "usage")

    interesting: tuple[bytes, ...] = ()

    def __init__(self) -> None:
        self._buffer = b""
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
        for event in complete.split(b"\n\n"):
            if event and any(marker in event for marker in self.interesting):
                payload = _data_of(event)
                if payload is None:
                    continue
                try:
                    parsed = orjson.loads(payload)
                except orjson.JSONDecodeError:
                    continue
                if isinstance(parsed, dict):
                    self.inspect(parsed)
        return complete

    def flush(self) -> bytes:
        rest, self._buffer = self._buffer, b""
        return rest

    def inspect(self, event: dict[str, Any]) -> None:
        raise NotImplementedError

    def streamed_text(self) -> str:
        return "".join(self.text_parts)


class AnthropicUsageTap(EventUsageTap):
    """Anthropic's stream: usage starts in message_start and is completed by message_delta."""

    __slots__ = ()
    interesting = (b"message_start", b"message_delta", b"message_stop", b"_delta")

    def inspect(self, event: dict[str, Any]) -> None:
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
        elif kind == "message_stop":
            self.complete = True
        elif kind == "content_block_delta":
            delta = event.get("delta") or {}
            for name in ("text", "partial_json", "thinking"):
                if isinstance(delta.get(name), str):
                    self.text_parts.append(delta[name])


class ResponsesUsageTap(EventUsageTap):
    """OpenAI Responses stream: the terminal event (completed / incomplete / failed) carries usage."""

    __slots__ = ()
    interesting = (b"response.completed", b"response.incomplete", b"response.failed", b".delta")

    def inspect(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        if kind in ("response.completed", "response.incomplete", "response.failed"):
            response = event.get("response") or {}
            self.model = str(response.get("model") or self.model)
            if isinstance(response.get("usage"), dict):
                self.usage = response["usage"]
            self.complete = True
        elif isinstance(kind, str) and kind.endswith(".delta") and isinstance(event.get("delta"), str):
            self.text_parts.append(event["delta"])
