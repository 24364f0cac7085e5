"""Azure OpenAI: OpenAI's wire format behind deployment URLs, an `api-key` header and an api-version.

The credential's base URL is the resource endpoint, `https://<resource>.openai.azure.com` (or a
custom domain). The model a client names is the *deployment* name (`azure_openai/my-gpt4o`):

    {base}/openai/deployments/{deployment}/chat/completions?api-version=2024-10-21

A base URL that already ends in `/openai/v1` selects Azure's v1 API instead, where the deployment
goes in the body's `model` like OpenAI itself: `{base}/chat/completions`.

Pricing: deployment names are the customer's own, so a deployment is priced by the workspace's
price override for `azure_openai/<deployment>` if there is one, else by OpenAI's list price of the
model Azure reports having served (the response's `model`), else the request is unpriced.
"""

from __future__ import annotations

from urllib.parse import quote

from contracts.providers import AZURE_API_VERSION


def _is_v1(base_url: str) -> bool:
    return base_url.rstrip("/").endswith("/openai/v1")


def url(base_url: str, deployment: str, operation: str) -> str:
    """`operation` is the OpenAI path after the version: `chat/completions`, `embeddings`, `responses`."""
    base = base_url.rstrip("/")
    if _is_v1(base):
        return f"{base}/{operation}"
    return f"{base}/openai/deployments/{quote(deployment, safe='')}/{operation}?api-version={AZURE_API_VERSION}"


def auth_headers(secret: str) -> dict[str, str]:
    return {"api-key": secret}
