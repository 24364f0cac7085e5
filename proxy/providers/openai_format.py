"""The OpenAI wire format: OpenAI and every provider that speaks it (Groq, DeepInfra, Together,
Mistral, xAI, Fireworks, OpenRouter, self-hosted OpenAI-compatible servers).

Pure functions: building the upstream request and reading usage out of responses and stream chunks.
Usage normalisation (docs/providers.md): OpenAI's `prompt_tokens` include `cached_tokens`, and
`completion_tokens` include `reasoning_tokens`; Turnpike's token types are disjoint, so
input = prompt - cached and output = completion - reasoning.
"""

from __future__ import annotations

from typing import Any

from contracts.pricing import Usage

CHAT_PATH = "/chat/completions"


def chat_url(base_url: str) -> str:
    return base_url.rstrip("/") + CHAT_PATH


def auth_headers(secret: str) -> dict[str, str]:
    return {"authorization": f"Bearer {secret}"}


def prepare_chat_body(body: dict[str, Any], *, upstream_model: str) -> tuple[dict[str, Any], bool]:
    """The body to send upstream, and whether the client itself asked for the usage chunk.

    Streaming requests always ask the provider for usage (`stream_options.include_usage`), so the
    cost is known; the extra chunk is removed on the way back if the client did not ask for it."""
    out = dict(body)
    out["model"] = upstream_model
    client_wants_usage = True
    if out.get("stream"):
        options = out.get("stream_options")
        options = dict(options) if isinstance(options, dict) else {}
        client_wants_usage = bool(options.get("include_usage"))
        options["include_usage"] = True
        out["stream_options"] = options
    return out, client_wants_usage


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def usage_from_openai(usage: dict[str, Any] | None) -> Usage | None:
    """Normalise an OpenAI `usage` object into disjoint token counts (None when absent)."""
    if not isinstance(usage, dict):
        return None
    prompt = _int(usage.get("prompt_tokens"))
    completion = _int(usage.get("completion_tokens"))
    prompt_details = usage.get("prompt_tokens_details") or {}
    completion_details = usage.get("completion_tokens_details") or {}
    cached = min(_int(prompt_details.get("cached_tokens")) if isinstance(prompt_details, dict) else 0, prompt)
    reasoning = min(
        _int(completion_details.get("reasoning_tokens")) if isinstance(completion_details, dict) else 0, completion
    )
    return Usage(input=prompt - cached, cached_input=cached, output=completion - reasoning, reasoning=reasoning)


def is_usage_only_chunk(chunk: dict[str, Any]) -> bool:
    """The final chunk a provider sends for include_usage: usage set, no choices."""
    return bool(chunk.get("usage")) and not chunk.get("choices")


def usage_from_responses(usage: dict[str, Any] | None) -> Usage | None:
    """Normalise a Responses API `usage` (input_tokens incl. cached, output_tokens incl. reasoning)."""
    if not isinstance(usage, dict):
        return None
    prompt = _int(usage.get("input_tokens"))
    completion = _int(usage.get("output_tokens"))
    input_details = usage.get("input_tokens_details") or {}
    output_details = usage.get("output_tokens_details") or {}
    cached = min(_int(input_details.get("cached_tokens")) if isinstance(input_details, dict) else 0, prompt)
    reasoning = min(_int(output_details.get("reasoning_tokens")) if isinstance(output_details, dict) else 0, completion)
    return Usage(input=prompt - cached, cached_input=cached, output=completion - reasoning, reasoning=reasoning)


def usage_from_embeddings(usage: dict[str, Any] | None) -> Usage | None:
    """Embeddings report `prompt_tokens` (= total_tokens); all of it is input."""
    if not isinstance(usage, dict):
        return None
    return Usage(input=_int(usage.get("prompt_tokens")) or _int(usage.get("total_tokens")))
