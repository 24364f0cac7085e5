"""The SSRF guard: a provider base URL may not point inside our network.

`validate_base_url` is applied wherever a base URL is written (dashboard, admin, commands, API) and
`is_internal` again by the proxy for every address it connects to, so a host whose DNS changes after
the check (DNS rebinding) is still refused. Loopback and private addresses are allowed only when the
deployment says so (dev and tests: the fake provider runs on loopback).
"""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit, urlunsplit


def is_internal(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or address.sixtofour  # ::ffff:127.0.0.1, 2002:7f00:1::
        if embedded is not None:
            address = embedded
    return (
        address.is_private
        or address.is_loopback
        or address.is_link_local
        or address.is_reserved
        or address.is_multicast
        or address.is_unspecified
        or not address.is_global
    )


def validate_base_url(url: str, *, allow_private: bool, require_https: bool) -> str:
    """The normalised URL (no trailing slash), or ValueError saying what is wrong with it."""
    url = (url or "").strip()
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("The base URL must be an http(s) URL with a host, e.g. https://api.openai.com/v1.")
    if require_https and parts.scheme != "https":
        raise ValueError("The base URL must use https.")
    if parts.username or parts.password:
        raise ValueError("The base URL must not contain a user name or password; paste the key separately.")
    if parts.query or parts.fragment:
        raise ValueError("The base URL must not have a query string or fragment.")
    try:
        port = parts.port
    except ValueError as exc:
        raise ValueError("The base URL has an invalid port.") from exc
    if not allow_private:
        host = parts.hostname
        try:
            infos = socket.getaddrinfo(host, port or (443 if parts.scheme == "https" else 80), type=socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError) as exc:
            raise ValueError(f"The host {host!r} does not resolve.") from exc
        for info in infos:
            address = ipaddress.ip_address(str(info[4][0]).split("%")[0])
            if is_internal(address):
                raise ValueError(
                    f"The host {host!r} resolves to an internal address ({address}); only public provider "
                    "endpoints are allowed."
                )
    path = parts.path.rstrip("/")
    return urlunsplit((parts.scheme, parts.netloc, path, "", ""))
