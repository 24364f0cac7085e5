"""The OpenAI wire format: OpenAI and every provider that speaks it (Groq, DeepInfra, Together,
Mistral, xAI, Fireworks, OpenRouter, self-hosted OpenAI-compatible servers).

Pure functions: building the upstream request and reading usage out of responses and stream chunks.
Usage normalisation (docs/providers.md): OpenAI's `prompt_tokens` include `cached_tokens`, and
`completion_tokens` include `reasoning_tokens`; Turnpike's token types are disjoint, so
input = prompt - cached and output = completion - reasoning.

Web searches (the `web_search` unit, billed per search by the catalog's `fees`):
- Responses API: one per `web_search_call` item in the response's `output` (OpenAI bills each web search
  tool call), counted by `web_search_calls`;
- Chat Completions: OpenAI's search models (`gpt-4o-search-preview`, `gpt-4o-mini-search-preview`,
  `gpt-5-search-api`, dated versions) search the web for every request and report no count, so a
  completion by one of them is one search (`usage_from_openai(..., model=...)`, SEARCH_MODEL).
"""

from __future__ import annotations

import re
from typing import Any

from contracts.pricing import WEB_SEARCH, Usage

CHAT_PATH = "/chat/completions"
# OpenAI's search models for Chat Completions: every completion runs one web search.
SEARCH_MODEL = re.compile(r"-search-(?:preview|api)(?:-\d{4}-\d{2}-\d{2})?$")
_ONE_SEARCH = ((WEB_SEARCH, 1),)


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


def is_search_model(model: str) -> bool:
    """Whether `model` (as requested or as the provider names it) is one of OpenAI's Chat Completions search
    models, which search the web once for every completion."""
    return SEARCH_MODEL.search(model) is not None


def usage_from_openai(usage: dict[str, Any] | None, *, model: str = "") -> Usage | None:
    """Normalise an OpenAI `usage` object into disjoint token counts (None when absent); a completion by a
    search model (`model`, see `is_search_model`) also carries its one web search."""
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
    return Usage(
        input=prompt - cached,
        cached_input=cached,
        output=completion - reasoning,
        reasoning=reasoning,
        units=_ONE_SEARCH if model and is_search_model(model) else (),
    )


def is_usage_only_chunk(chunk: dict[str, Any]) -> bool:
    """The final chunk a provider sends for include_usage: usage set, no choices."""
    return bool(chunk.get("usage")) and not chunk.get("choices")


def web_search_calls(output: Any) -> int:
    """The `web_search_call` items in a Responses API `output` array (each one web search OpenAI bills)."""
    if not isinstance(output, list):
        return 0
    return sum(1 for item in output if isinstance(item, dict) and item.get("type") == "web_search_call")


def usage_from_responses(usage: dict[str, Any] | None, *, web_searches: int = 0) -> Usage | None:
    """Normalise a Responses API `usage` (input_tokens incl. cached, output_tokens incl. reasoning), with the
    response's web search calls (`web_search_calls` of its `output`)."""
    if not isinstance(usage, dict):
        return None
    prompt = _int(usage.get("input_tokens"))
    completion = _int(usage.get("output_tokens"))
    input_details = usage.get("input_tokens_details") or {}
    output_details = usage.get("output_tokens_details") or {}
    cached = min(_int(input_details.get("cached_tokens")) if isinstance(input_details, dict) else 0, prompt)
    reasoning = min(_int(output_details.get("reasoning_tokens")) if isinstance(output_details, dict) else 0, completion)
    return Usage(
        input=prompt - cached,
        cached_input=cached,
        output=completion - reasoning,
        reasoning=reasoning,
        units=((WEB_SEARCH, web_searches),) if web_searches > 0 else (),
    )


def usage_from_embeddings(usage: dict[str, Any] | None) -> Usage | None:
    """Embeddings report `prompt_tokens` (= total_tokens); all of it is input."""
    if not isinstance(usage, dict):
        return None
    return Usage(input=_int(usage.get("prompt_tokens")) or _int(usage.get("total_tokens")))
