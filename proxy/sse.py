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
    __slots__ = ("_buffer", "_keep_usage_chunk", "forwarded", "saw_done", "usage")

    def __init__(self, *, keep_usage_chunk: bool) -> None:
        self._buffer = b""
        self._keep_usage_chunk = keep_usage_chunk
        self.usage: dict[str, Any] | None = None
        self.forwarded: list[bytes] = []  # complete events sent to the client, for local counting
        self.saw_done = False

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
