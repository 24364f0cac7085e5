"""Checking a pasted provider key before it is saved.

`check_credential` makes one live call to the provider's models endpoint and turns the outcome into a
sentence a user can act on; the secret never appears in it. The SSRF guard on base URLs lives in
`contracts.netguard` (the proxy applies it again when it connects).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import httpx

from contracts.providers import get_spec, models_request

DEFAULT_TIMEOUT = 10.0
_MAX_PROVIDER_MESSAGE = 300


@dataclass(frozen=True, slots=True)
class CredentialCheckResult:
    ok: bool
    message: str
    status_code: int | None = None
    models: list[str] = field(default_factory=list)


def _provider_message(response: httpx.Response) -> str:
    """The provider's own error message, from any of the envelopes providers use."""
    try:
        data: Any = response.json()
    except ValueError:
        return response.text.strip()[:_MAX_PROVIDER_MESSAGE]
    if isinstance(data, dict):
        error = data.get("error")
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return error["message"][:_MAX_PROVIDER_MESSAGE]
        if isinstance(error, str):
            return error[:_MAX_PROVIDER_MESSAGE]
        if isinstance(data.get("message"), str):
            return data["message"][:_MAX_PROVIDER_MESSAGE]
    return ""


def _model_ids(data: Any) -> list[str]:
    if not isinstance(data, dict):
        return []
    items = data.get("data") if isinstance(data.get("data"), list) else data.get("models")
    if not isinstance(items, list):
        return []
    ids = []
    for item in items:
        if isinstance(item, dict):
            name = item.get("id") or item.get("name")
            if isinstance(name, str):
                ids.append(name.removeprefix("models/"))
    return ids


def _scrub(text: str, secret: str) -> str:
    return text.replace(secret, "[redacted]") if secret else text


def check_credential(
    *,
    provider_type: str,
    base_url: str | None,
    secret: str,
    timeout: float = DEFAULT_TIMEOUT,
    transport: httpx.BaseTransport | None = None,
) -> CredentialCheckResult:
    spec = get_spec(provider_type)
    method, url, headers = models_request(spec, base_url, secret)
    shown_url = url.split("?")[0]
    try:
        with httpx.Client(timeout=timeout, transport=transport, follow_redirects=False) as client:
            response = client.request(method, url, headers=headers)
    except httpx.TimeoutException:
        return CredentialCheckResult(False, f"{spec.label} did not answer within {timeout:g} s at {shown_url}.")
    except httpx.HTTPError as exc:
        reason = _scrub(str(exc) or type(exc).__name__, secret)
        return CredentialCheckResult(False, f"Could not reach {shown_url}: {reason}.")
    status = response.status_code
    if status == 200:
        try:
            models = _model_ids(response.json())
        except ValueError:
            models = []
        return CredentialCheckResult(True, f"{spec.label} accepted the key.", status, models)
    detail = _scrub(_provider_message(response), secret)
    suffix = f": {detail}" if detail else "."
    if status in (401, 403) or (status == 400 and spec.family == "google" and "API key" in detail):
        return CredentialCheckResult(False, f"The provider rejected this key (HTTP {status}){suffix}", status)
    if status == 404:
        return CredentialCheckResult(
            False, f"{shown_url} answered HTTP 404; check the base URL for {spec.label}{suffix}", status
        )
    return CredentialCheckResult(False, f"Unexpected HTTP {status} from the provider{suffix}", status)
