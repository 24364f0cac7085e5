"""Talking to providers: one pooled aiohttp session per worker, and the mapping of provider failures
to the errors our clients' SDKs expect.

Why aiohttp and not httpx here: on the hot path httpx/httpcore cost ~2 ms of CPU per request with a
few dozen pooled connections (its pool scans every connection, polling each socket, on every
request); measured side by side against the fake provider, aiohttp sustained ~30x the request rate
on one core (docs/benchmarks.md). The rest of the code base (credential checks) keeps httpx.

`UpstreamClient` is the proxy's whole view of HTTP: open a request, get an `UpstreamResponse` with
the status, headers and a body to read or stream; transport failures raise `TransportError`.

SSRF at connect time: unless `allow_private_provider_urls`, the connector's socket factory refuses
every address `contracts.netguard.is_internal` calls internal, for each new connection, with the
address actually being connected to (DNS answers and IP literals alike: aiohttp does not pass IP
literals through a resolver, so a resolver wrapper would miss `http://127.0.0.1/`). A base URL whose
host re-points to 169.254.169.254 or 127.0.0.1 after it was saved gets a 502 `upstream_address_internal`
at once. Cost: one address check per new connection; reused keep-alive connections and aiohttp's DNS
cache are untouched, and with private addresses allowed (dev, bench) no factory is installed at all.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import logging
import socket
from collections.abc import AsyncIterator, Mapping
from typing import Any

import aiohttp
import orjson

from contracts.netguard import is_internal
from proxy.config import ProxyConfig
from proxy.errors import ProxyError

log = logging.getLogger("turnpike.proxy.upstream")

_MAX_DETAIL = 500


class InternalAddressRefused(OSError):
    """Connecting to an internal address was refused (SSRF guard). Every instance has the same text, so
    that aiohappyeyeballs, which re-raises one error when all attempts fail alike, keeps this type."""

    def __init__(self, address: str) -> None:
        super().__init__(errno.EACCES, "the provider host resolves to an internal address")
        self.address = address


def public_only_socket(addr_info: tuple[Any, ...]) -> socket.socket:
    """aiohttp socket factory: a socket for `addr_info`, unless its address is internal."""
    family, type_, proto, _, sockaddr = addr_info
    host = str(sockaddr[0])
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        raise InternalAddressRefused(host) from None  # not an IP address: nothing we can vouch for
    if is_internal(address):
        log.warning("refused to connect to internal address %s (TURNPIKE_ALLOW_PRIVATE_PROVIDER_URLS is off)", host)
        raise InternalAddressRefused(host)
    return socket.socket(family=family, type=type_, proto=proto)


class TransportError(Exception):
    """The provider could not be reached or did not answer in time (no HTTP status to pass on)."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(detail)
        self.kind = kind  # "connect_timeout" | "timeout" | "unreachable" | "internal_address"
        self.detail = detail


def _transport(exc: BaseException) -> TransportError:
    if isinstance(getattr(exc, "os_error", None), InternalAddressRefused):
        return TransportError("internal_address", "the host resolves to an internal address")
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return TransportError("connect_timeout", type(exc).__name__)
    if isinstance(exc, asyncio.TimeoutError | aiohttp.ServerTimeoutError):
        return TransportError("timeout", type(exc).__name__)
    return TransportError("unreachable", type(exc).__name__)


class UpstreamResponse:
    __slots__ = ("_response", "content", "headers", "status", "url")

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response
        self.status: int = response.status
        self.headers: Mapping[str, str] = response.headers
        self.url = str(response.url)
        self.content = b""

    async def read(self) -> bytes:
        try:
            self.content = await self._response.read()
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise _transport(exc) from exc
        return self.content

    async def iter_raw(self) -> AsyncIterator[bytes]:
        """Body bytes as they arrive (server-sent events are forwarded piece by piece)."""
        try:
            async for data in self._response.content.iter_any():
                yield data
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise _transport(exc) from exc

    def close(self) -> None:
        """Release the connection (back to the pool if the body was read, else closed)."""
        self._response.release()


class UpstreamClient:
    def __init__(self, config: ProxyConfig) -> None:
        self._config = config
        self._session: aiohttp.ClientSession | None = None

    def _ensure(self) -> aiohttp.ClientSession:
        if self._session is None:  # created lazily: a session belongs to the running event loop
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(
                    limit=self._config.max_connections,
                    keepalive_timeout=60,
                    socket_factory=None if self._config.allow_private_provider_urls else public_only_socket,
                ),
                timeout=aiohttp.ClientTimeout(
                    total=None, connect=self._config.connect_timeout, sock_read=self._config.read_timeout
                ),
                auto_decompress=True,
                trust_env=False,
                skip_auto_headers=("User-Agent",),
            )
        return self._session

    async def request(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str],
        content: bytes | None = None,
        timeout: float | None = None,
    ) -> UpstreamResponse:
        """Send the request and return once the response headers are in."""
        options: dict[str, Any] = {}
        if timeout is not None:
            options["timeout"] = aiohttp.ClientTimeout(total=timeout)
        try:
            response = await self._ensure().request(
                method,
                url,
                data=content,
                headers={"accept-encoding": "identity", "user-agent": "turnpike", **headers},
                allow_redirects=False,
                **options,
            )
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise _transport(exc) from exc
        return UpstreamResponse(response)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()


def make_client(config: ProxyConfig) -> UpstreamClient:
    return UpstreamClient(config)


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


def transport_error(exc: TransportError, *, provider: str, url: str) -> ProxyError:
    shown = url.split("?")[0]
    if exc.kind == "connect_timeout":
        return ProxyError.timeout(f"Could not connect to {provider} at {shown} in time.")
    if exc.kind == "timeout":
        return ProxyError.timeout(f"{provider} did not answer in time.")
    if exc.kind == "internal_address":
        return ProxyError.bad_gateway(
            f"Refused to connect to {provider} at {shown}: its host is or resolves to an internal address, and "
            "provider URLs must be public endpoints. Update the base URL under Provider credentials.",
            code="upstream_address_internal",
        )
    return ProxyError.bad_gateway(f"Could not reach {provider} at {shown}: {exc.detail}.", code="upstream_unreachable")
