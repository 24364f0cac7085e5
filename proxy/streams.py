"""Streams translated between API families, with OpenAI chat chunks as the pivot.

A *source* reads one provider family's stream bytes and yields OpenAI `chat.completion.chunk` dicts
(always including the final usage-only chunk, so the cost is known); a *sink* renders chunks in the
format the client asked for. `TranslatingTap(source, sink)` joins them for `ModelEndpoint.relay_stream`.

    OpenAI-format upstream  → OpenAIChunks    ┐            ┌ OpenAISink     → /v1/chat/completions
    Anthropic upstream      → AnthropicChunks ├─ chunks ──┤
    Gemini upstream         → GeminiChunks    ┘            └ AnthropicSink  → /v1/messages

(OpenAI upstream to an OpenAI client, and Anthropic upstream to an Anthropic client, skip all this:
the provider's bytes pass through untouched, inspected for usage on the way — proxy.sse.)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import orjson

from contracts.pricing import Usage
from proxy.providers import anthropic, anthropic_compat, gemini, openai_format


class ChunkSource(Protocol):
    @property
    def model(self) -> str: ...

    def feed(self, data: bytes) -> list[dict[str, Any]]: ...

    def finish(self) -> list[dict[str, Any]]: ...

    @property
    def final_usage(self) -> Usage | None:
        """The provider's usage, if the stream ran to its end and reported it."""
        ...

    @property
    def partial_usage(self) -> Usage | None:
        """What the provider reported so far (e.g. input and cached tokens at the start), if anything."""
        ...

    def streamed_text(self) -> str: ...


def split_events(buffer: bytes) -> tuple[list[bytes], bytes]:
    """Complete SSE events' `data:` payloads in `buffer`, and the unfinished rest."""
    buffer = buffer.replace(b"\r\n", b"\n")
    payloads: list[bytes] = []
    while True:
        cut = buffer.find(b"\n\n")
        if cut == -1:
            return payloads, buffer
        raw, buffer = buffer[:cut], buffer[cut + 2 :]
        lines = [line[5:].strip() for line in raw.split(b"\n") if line.startswith(b"data:")]
        if lines:
            payloads.append(b"\n".join(lines))


class OpenAIChunks:
    """An OpenAI-format provider's chat stream, parsed."""

    def __init__(self, model: str = "") -> None:
        self._buffer = b""
        self.upstream_model = model  # the model asked for (the provider's own name for it comes in the chunks)
        self.model = ""
        self.usage: Usage | None = None
        self.done = False
        self._text: list[str] = []

    def feed(self, data: bytes) -> list[dict[str, Any]]:
        payloads, self._buffer = split_events(self._buffer + data)
        chunks: list[dict[str, Any]] = []
        for payload in payloads:
            if payload == b"[DONE]":
                self.done = True
                continue
            try:
                chunk = orjson.loads(payload)
            except orjson.JSONDecodeError:
                continue
            if not isinstance(chunk, dict):
                continue
            if isinstance(chunk.get("error"), dict):
                chunks.append(chunk)
                continue
            self.model = str(chunk.get("model") or self.model)
            if isinstance(chunk.get("usage"), dict):
                self.usage = openai_format.usage_from_openai(chunk["usage"], model=self.model or self.upstream_model)
            for choice in chunk.get("choices") or []:
                delta = choice.get("delta") if isinstance(choice, dict) else None
                if not isinstance(delta, dict):
                    continue
                if isinstance(delta.get("content"), str):
                    self._text.append(delta["content"])
                for call in delta.get("tool_calls") or []:
                    function = call.get("function") if isinstance(call, dict) else None
                    if isinstance(function, dict):
                        self._text.append(str(function.get("name") or "") + str(function.get("arguments") or ""))
            chunks.append(chunk)
        return chunks

    def finish(self) -> list[dict[str, Any]]:
        return self.feed(b"\n\n") if self._buffer.strip() else []

    @property
    def final_usage(self) -> Usage | None:
        return self.usage

    @property
    def partial_usage(self) -> Usage | None:
        return self.usage

    def streamed_text(self) -> str:
        return "".join(self._text)


class AnthropicChunks:
    """Anthropic Messages stream events → OpenAI chunks (proxy.providers.anthropic)."""

    def __init__(self) -> None:
        self._buffer = b""
        self.translator = anthropic.StreamTranslator(include_usage=True)

    @property
    def model(self) -> str:
        return self.translator.model

    def feed(self, data: bytes) -> list[dict[str, Any]]:
        events, self._buffer = anthropic.parse_sse(self._buffer + data)
        return [chunk for kind, payload in events for chunk in self.translator.feed(kind, payload)]

    def finish(self) -> list[dict[str, Any]]:
        return []

    @property
    def final_usage(self) -> Usage | None:
        return self.translator.usage if self.translator.done else None

    @property
    def partial_usage(self) -> Usage | None:
        return self.translator.usage

    def streamed_text(self) -> str:
        return "".join(self.translator.text_parts)


class GeminiChunks:
    """Gemini streamGenerateContent (alt=sse) chunks → OpenAI chunks (proxy.providers.gemini)."""

    def __init__(self, model: str) -> None:
        self._buffer = b""
        self.translator = gemini.StreamTranslator(include_usage=True, model=model)

    @property
    def model(self) -> str:
        return self.translator.model

    def feed(self, data: bytes) -> list[dict[str, Any]]:
        events, self._buffer = gemini.parse_sse(self._buffer + data)
        return [chunk for event in events for chunk in self.translator.feed(event)]

    def finish(self) -> list[dict[str, Any]]:
        return self.translator.finish()

    @property
    def final_usage(self) -> Usage | None:
        return self.translator.usage if self.translator.done else None

    @property
    def partial_usage(self) -> Usage | None:
        return self.translator.usage

    def streamed_text(self) -> str:
        return "".join(self.translator.text_parts)


class OpenAISink:
    """Chunks as OpenAI SSE; the usage-only chunk only if the client asked for it, with the cost in its
    `usage` (`cost()`: the members from proxy.costs, None while the provider's final usage is unknown)."""

    def __init__(self, *, include_usage: bool, cost: Callable[[], dict[str, Any] | None] | None = None) -> None:
        self.include_usage = include_usage
        self._cost = cost

    def feed(self, chunks: list[dict[str, Any]]) -> bytes:
        out: list[bytes] = []
        for chunk in chunks:
            if openai_format.is_usage_only_chunk(chunk):
                if not self.include_usage:
                    continue
                members = self._cost() if self._cost is not None else None
                if members is not None:
                    chunk = {**chunk, "usage": {**chunk["usage"], **members}}
            out.append(b"data: " + orjson.dumps(chunk) + b"\n\n")
        return b"".join(out)

    def finish(self, source: ChunkSource) -> bytes:
        return b"data: [DONE]\n\n"


class AnthropicSink:
    """Chunks as Anthropic Messages stream events (proxy.providers.anthropic_compat); the closing
    `message_delta` carries the cost in its `usage` when the provider's final usage is known (`cost(usage)`:
    the members from proxy.costs)."""

    def __init__(self, *, model: str, message_id: str, cost: Callable[[Usage], dict[str, Any]] | None = None) -> None:
        self.translator = anthropic_compat.ChunkTranslator(model, message_id)
        self._cost = cost

    def feed(self, chunks: list[dict[str, Any]]) -> bytes:
        return b"".join(
            anthropic_compat.sse_event(kind, data) for chunk in chunks for kind, data in self.translator.feed(chunk)
        )

    def finish(self, source: ChunkSource) -> bytes:
        final = source.final_usage
        events = self.translator.finish(final)
        if final is not None and self._cost is not None:
            members = self._cost(final)
            for kind, data in events:
                if kind == "message_delta":
                    data["usage"] = {**data["usage"], **members}
        return b"".join(anthropic_compat.sse_event(kind, data) for kind, data in events)


class Sink(Protocol):
    def feed(self, chunks: list[dict[str, Any]]) -> bytes: ...

    def finish(self, source: ChunkSource) -> bytes: ...


class TranslatingTap:
    """Upstream bytes in one family → client bytes in another, for ModelEndpoint.relay_stream."""

    __slots__ = ("sink", "source")

    def __init__(self, source: ChunkSource, sink: Sink) -> None:
        self.source = source
        self.sink = sink

    def feed(self, data: bytes) -> bytes:
        return self.sink.feed(self.source.feed(data))

    def flush(self) -> bytes:
        return self.sink.feed(self.source.finish()) + self.sink.finish(self.source)


def source_for(family: str, *, model: str) -> ChunkSource:
    """The chunk source that reads `family`'s chat stream (see proxy.providers.targets.chat_call)."""
    if family in ("openai", "azure"):
        return OpenAIChunks(model)
    if family == "anthropic":
        return AnthropicChunks()
    if family == "google":
        return GeminiChunks(model)
    raise ValueError(f"no stream source for family {family!r}")
