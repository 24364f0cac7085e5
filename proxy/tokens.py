"""Counting tokens locally, for the rare request whose provider never reported usage (the client
went away mid-stream). Uses bpe-openai, which ships OpenAI's o200k/cl100k ranks inside the package;
tiktoken would download them at run time, which a locked-down deployment cannot do. Events counted
here are flagged `estimated`."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import bpe_openai

# Per-message framing overhead in OpenAI chat formatting (role and separators), for estimates.
TOKENS_PER_MESSAGE = 3


@lru_cache(maxsize=2)
def _encoding(name: str) -> Any:
    return bpe_openai.get_encoding(name)


def encoding_name_for(model: str) -> str:
    lowered = model.lower()
    if lowered.startswith(("gpt-3.5", "gpt-4-", "text-embedding")) or lowered == "gpt-4":
        return "cl100k_base"
    return "o200k_base"


def count_text(text: str, *, model: str = "") -> int:
    if not text:
        return 0
    return len(_encoding(encoding_name_for(model)).encode(text))


def count_messages(messages: Any, *, model: str = "") -> int:
    """Approximate prompt tokens of chat messages (text parts, tool-call arguments, names)."""
    if not isinstance(messages, list):
        return 0
    total = 3  # every reply is primed with the assistant header
    for message in messages:
        if not isinstance(message, dict):
            continue
        total += TOKENS_PER_MESSAGE
        content = message.get("content")
        if isinstance(content, str):
            total += count_text(content, model=model)
        elif isinstance(content, list):
            for part in content:
                if isinstance(part, dict) and isinstance(part.get("text"), str):
                    total += count_text(part["text"], model=model)
        for call in message.get("tool_calls") or []:
            function = call.get("function") if isinstance(call, dict) else None
            if isinstance(function, dict):
                total += count_text(str(function.get("name", "")), model=model)
                total += count_text(str(function.get("arguments", "")), model=model)
    return total
