"""Talking to providers: one pooled httpx client per worker, and the mapping of provider failures
to the errors our clients' SDKs expect."""

from __future__ import annotations

import httpx
import orjson

from proxy.config import ProxyConfig
from proxy.errors import ProxyError

_MAX_DETAIL = 500


def make_client(config: ProxyConfig) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        timeout=httpx.Timeout(
            connect=config.connect_timeout,
            read=config.read_timeout,
            write=config.read_timeout,
            pool=config.connect_timeout,
        ),
        limits=httpx.Limits(max_connections=config.max_connections, max_keepalive_connections=config.max_connections),
        follow_redirects=False,
        trust_env=False,
    )


def _detail(body: bytes) -> str:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body.decode("utf-8", "replace").strip()[:_MAX_DETAIL]
    if isinstance(data, dict):
        error = data.get("error")
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return error["message"][:_MAX_DETAIL]
        if isinstance(error, str):
            return error[:_MAX_DETAIL]
        if isinstance(data.get("message"), str):
            return data["message"][:_MAX_DETAIL]
    return ""


def upstream_error(status: int, body: bytes, *, provider: str, retry_after: str | None) -> ProxyError:
    """What to tell the client when the provider answered `status`.

    Client errors (400, 404, 409, 422) are the caller's to fix: passed on with the provider's message.
    A rejected provider credential (401/403) is not the caller's Turnpike key: 502, saying which.
    429 stays 429 with the provider's Retry-After; 5xx become 502/503/504."""
    detail = _detail(body)
    said = f": {detail}" if detail else ""
    if status in (400, 404, 409, 413, 422):
        return ProxyError(
            status if status in (400, 404, 413) else 400,
            f"{provider} rejected the request{said}",
            type="invalid_request_error",
            code="model_not_found" if status == 404 else "upstream_invalid_request",
        )
    if status in (401, 403):
        return ProxyError.bad_gateway(
            f"{provider} rejected this workspace's provider credential (HTTP {status}){said}. "
            "Update the key under Provider credentials.",
            code="provider_auth_error",
        )
    if status == 429:
        return ProxyError.rate_limited(
            f"{provider} is rate limiting this workspace's key{said}", retry_after=retry_after
        )
    if status in (503, 529):
        return ProxyError.unavailable(f"{provider} is unavailable (HTTP {status}){said}", retry_after=retry_after)
    if status == 504:
        return ProxyError.timeout(f"{provider} timed out (HTTP 504){said}")
    return ProxyError.bad_gateway(f"{provider} failed (HTTP {status}){said}")


def transport_error(exc: Exception, *, provider: str, url: str) -> ProxyError:
    shown = url.split("?")[0]
    if isinstance(exc, httpx.TimeoutException | TimeoutError):
        if isinstance(exc, httpx.ConnectTimeout):
            return ProxyError.timeout(f"Could not connect to {provider} at {shown} in time.")
        return ProxyError.timeout(f"{provider} did not answer in time.")
    return ProxyError.bad_gateway(
        f"Could not reach {provider} at {shown}: {type(exc).__name__}.", code="upstream_unreachable"
    )
