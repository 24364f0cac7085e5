"""One gate for every workspace page: logged in, a member of the workspace in the URL, and a role that
allows the page's permission. Another workspace's slug is a 404 (a non-member cannot tell it exists);
a member without the permission gets 403."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.http.response import HttpResponseBase
from django.shortcuts import render

from config.errors import ApplicationError, NotFound, PermissionDenied
from tenants import adapters
from tenants.roles import Perm, role_allows
from tenants.selectors import membership_for_user

LAST_WORKSPACE_SESSION_KEY = "turnpike_workspace"


def client_ip(request: HttpRequest) -> str | None:
    return adapters.client_ip(request)  # one rule (trusted proxies) for audit rows and login limits


def forbidden(request: HttpRequest, reason: str) -> HttpResponse:
    return render(request, "403.html", {"reason": reason}, status=403)


def not_found(request: HttpRequest) -> HttpResponse:
    return render(request, "404.html", status=404)


def workspace_view(perm: str) -> Callable[[Callable[..., HttpResponseBase]], Callable[..., HttpResponseBase]]:
    """Decorate a view `(request, slug, ...)`; it gets `request.workspace` and `request.membership`."""

    def decorator(view: Callable[..., HttpResponseBase]) -> Callable[..., HttpResponseBase]:
        @login_required
        @wraps(view)
        def wrapped(request: HttpRequest, slug: str, *args: Any, **kwargs: Any) -> HttpResponseBase:
            try:
                membership = membership_for_user(user=request.user, workspace_slug=slug)  # type: ignore[arg-type]
            except NotFound:
                return not_found(request)
            if not role_allows(membership.role, perm):
                return forbidden(request, "Your role in this workspace does not allow that.")
            request.membership = membership  # type: ignore[attr-defined]
            request.workspace = membership.workspace  # type: ignore[attr-defined]
            request.session[LAST_WORKSPACE_SESSION_KEY] = slug
            try:
                return view(request, slug, *args, **kwargs)
            except NotFound:
                return not_found(request)
            except PermissionDenied as exc:
                return forbidden(request, exc.message)

        return wrapped

    return decorator


def page_context(request: HttpRequest, nav: str, **extra: Any) -> dict[str, Any]:
    membership = request.membership  # type: ignore[attr-defined]
    role = membership.role
    return {
        "workspace": request.workspace,  # type: ignore[attr-defined]
        "membership": membership,
        "nav": nav,
        "can": {
            "manage_credentials": role_allows(role, Perm.CREDENTIALS_MANAGE),
            "manage_keys": role_allows(role, Perm.KEYS_MANAGE),
            "manage_members": role_allows(role, Perm.MEMBERS_MANAGE),
            "manage_workspace": role_allows(role, Perm.WORKSPACE_MANAGE),
            "audit": role_allows(role, Perm.AUDIT_VIEW),
            "billing": role_allows(role, Perm.BILLING_VIEW),
            "credentials": role_allows(role, Perm.CREDENTIALS_VIEW),
            "keys": role_allows(role, Perm.KEYS_VIEW),
            "usage": role_allows(role, Perm.USAGE_VIEW),
            "bodies": role_allows(role, Perm.BODIES_VIEW),
        },
        **extra,
    }


def apply_error(form: Any, error: ApplicationError) -> None:
    """Show a service's error on the field it names, or on the form."""
    field = error.extra.get("field")
    form.add_error(field if field in form.fields else None, error.message)
