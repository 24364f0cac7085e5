"""django-allauth hooks, and the one rule for who the client of a web request is.

`client_ip` is used for everything keyed on the client's address: allauth's login, signup and reset
rate limits (through `AccountAdapter.get_client_ip`), the Django admin login limit (which runs
through the same adapter) and the IP recorded in audit rows (dashboard and admin).

Behind N trusted reverse proxies (`ALLAUTH_TRUSTED_PROXY_COUNT`, env `TURNPIKE_TRUSTED_PROXY_COUNT`)
each proxy appends the address it received the request from to X-Forwarded-For, so the client is
the N-th entry from the right; entries further left were written by the client and can be forged.
With N = 0, or when the header is shorter than N or that entry is not an address (the request did
not come through the proxies), the client is REMOTE_ADDR.
"""

from __future__ import annotations

import ipaddress

from allauth.account.adapter import DefaultAccountAdapter
from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest


def _address(value: str) -> str | None:
    """A normalised IP address from `1.2.3.4`, `1.2.3.4:5678`, `::1` or `[::1]:5678`; None otherwise."""
    value = value.strip()
    if value.startswith("["):
        value = value[1:].partition("]")[0]
    elif value.count(":") == 1:
        value = value.partition(":")[0]
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        return None


def client_ip(request: HttpRequest) -> str | None:
    """The address of the client that sent `request` (see the module docstring)."""
    trusted = settings.ALLAUTH_TRUSTED_PROXY_COUNT
    if trusted > 0:
        hops = [hop for hop in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",") if hop.strip()]
        if len(hops) >= trusted:
            forwarded = _address(hops[-trusted])
            if forwarded is not None:
                return forwarded
    return _address(request.META.get("REMOTE_ADDR", ""))


class AccountAdapter(DefaultAccountAdapter):
    def get_login_redirect_url(self, request: HttpRequest) -> str:
        return "/"

    def get_client_ip(self, request: HttpRequest) -> str:
        """What allauth's rate limits are keyed on: the same client as the audit log records."""
        ip = client_ip(request)
        if ip is None:
            raise PermissionDenied("Unable to determine the client's IP address.")
        return ip
