"""Reaching any provider family with an OpenAI chat request, and reading its answer back as OpenAI chat.

The pivot every translated path goes through: /v1/chat/completions to Anthropic or Gemini, and
/v1/messages to OpenAI-format providers or Gemini (after `anthropic_compat.messages_to_chat`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from contracts.pricing import Usage
from proxy.providers import anthropic, azure, gemini, openai_format


@dataclass(frozen=True, slots=True)
class UpstreamCall:
    url: str
    headers: dict[str, str]
    body: dict[str, Any]


def chat_call(family: str, *, base_url: str, model: str, secret: str, chat_body: dict[str, Any]) -> UpstreamCall:
    """The upstream request for an OpenAI chat body (streaming ones always ask for usage)."""
    if family == "openai":
        body, _ = openai_format.prepare_chat_body(chat_body, upstream_model=model)
        return UpstreamCall(openai_format.chat_url(base_url), openai_format.auth_headers(secret), body)
    if family == "azure":
        body, _ = openai_format.prepare_chat_body(chat_body, upstream_model=model)
        return UpstreamCall(azure.url(base_url, model, "chat/completions"), azure.auth_headers(secret), body)
    if family == "anthropic":
        body = anthropic.chat_to_messages(chat_body, upstream_model=model)
        return UpstreamCall(anthropic.messages_url(base_url), anthropic.auth_headers(secret), body)
    if family == "google":
        body = gemini.chat_to_gemini(chat_body, upstream_model=model)
        url = gemini.generate_url(base_url, model, stream=bool(chat_body.get("stream")))
        return UpstreamCall(url, gemini.auth_headers(secret), body)
    raise ValueError(f"no chat target for family {family!r}")


def chat_result(family: str, data: dict[str, Any], *, model: str) -> tuple[dict[str, Any], Usage | None]:
    """A provider's non-streaming answer as an OpenAI chat.completion, and its normalised usage."""
    if family in ("openai", "azure"):
        return data, openai_format.usage_from_openai(data.get("usage"), model=str(data.get("model") or model))
    if family == "anthropic":
        return anthropic.message_to_chat(data)
    if family == "google":
        return gemini.response_to_chat(data, model=model)
    raise ValueError(f"no chat target for family {family!r}")
