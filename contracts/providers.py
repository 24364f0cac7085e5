"""What Turnpike knows about each provider type: its wire-format family and default base URL.

Default base URLs follow each provider SDK's own convention: OpenAI-format providers include the
version path (`https://api.openai.com/v1`); Anthropic and Google do not. Azure OpenAI and
self-hosted OpenAI-compatible servers have no default: the credential must carry a base URL.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Family = Literal["openai", "anthropic", "google", "azure"]

ANTHROPIC_VERSION = "2023-06-01"
AZURE_API_VERSION = "2024-10-21"


class UnknownProvider(KeyError):
    def __str__(self) -> str:
        return f"unknown provider type {self.args[0]!r}"


@dataclass(frozen=True, slots=True)
class ProviderSpec:
    type: str
    label: str
    family: Family
    default_base_url: str | None
    requires_base_url: bool = False


PROVIDERS: dict[str, ProviderSpec] = {
    spec.type: spec
    for spec in (
        ProviderSpec("openai", "OpenAI", "openai", "https://api.openai.com/v1"),
        ProviderSpec("anthropic", "Anthropic", "anthropic", "https://api.anthropic.com"),
        ProviderSpec("google", "Google Gemini", "google", "https://generativelanguage.googleapis.com"),
        ProviderSpec("groq", "Groq", "openai", "https://api.groq.com/openai/v1"),
        ProviderSpec("deepinfra", "DeepInfra", "openai", "https://api.deepinfra.com/v1/openai"),
        ProviderSpec("together", "Together AI", "openai", "https://api.together.xyz/v1"),
        ProviderSpec("mistral", "Mistral", "openai", "https://api.mistral.ai/v1"),
        ProviderSpec("xai", "xAI", "openai", "https://api.x.ai/v1"),
        ProviderSpec("fireworks", "Fireworks AI", "openai", "https://api.fireworks.ai/inference/v1"),
        ProviderSpec("openrouter", "OpenRouter", "openai", "https://openrouter.ai/api/v1"),
        ProviderSpec("azure_openai", "Azure OpenAI", "azure", None, requires_base_url=True),
        ProviderSpec("openai_compatible", "OpenAI-compatible", "openai", None, requires_base_url=True),
    )
}


def get_spec(provider_type: str) -> ProviderSpec:
    try:
        return PROVIDERS[provider_type]
    except KeyError:
        raise UnknownProvider(provider_type) from None


def auth_headers(spec: ProviderSpec, secret: str) -> dict[str, str]:
    if spec.family == "anthropic":
        return {"x-api-key": secret, "anthropic-version": ANTHROPIC_VERSION}
    if spec.family == "google":
        return {"x-goog-api-key": secret}
    if spec.family == "azure":
        return {"api-key": secret}
    return {"authorization": f"Bearer {secret}"}


def models_request(spec: ProviderSpec, base_url: str | None, secret: str) -> tuple[str, str, dict[str, str]]:
    """(method, url, headers) of the call that lists models: the cheapest call that proves a key works."""
    base = (base_url or spec.default_base_url or "").rstrip("/")
    if not base:
        raise ValueError(f"{spec.label} needs a base URL")
    headers = auth_headers(spec, secret)
    if spec.family == "anthropic":
        return "GET", f"{base}/v1/models", headers
    if spec.family == "google":
        return "GET", f"{base}/v1beta/models", headers
    if spec.family == "azure":
        return "GET", f"{base}/openai/models?api-version={AZURE_API_VERSION}", headers
    return "GET", f"{base}/models", headers
