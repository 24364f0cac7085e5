"""The sign-in and sign-up pages (allauth) say which invitation they lead to.

`templates/allauth/elements/h1__entrance.html` (allauth's page title on every entrance page) calls
`{% invitation_from_next as invite %}`: when the page's `next` is the acceptance page of a pending
invitation, `invite` says who invited whom to what, and carries a sign-up link that keeps `next` and
fills in the invited address. Anything else (no `next`, another URL, an unknown, used or expired token)
gives None: the page looks as usual and says nothing about why.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from django import template
from django.urls import reverse

from tenants.roles import Role
from tenants.services import invitation_for_next

register = template.Library()


def _next_of(context: template.Context) -> str:
    value = context.get("redirect_field_value")
    if value:
        return str(value)
    request = context.get("request")
    if request is None:
        return ""
    return str(request.POST.get("next") or request.GET.get("next") or "")


@register.simple_tag(takes_context=True)
def invitation_from_next(context: template.Context) -> dict[str, Any] | None:
    next_url = _next_of(context)
    invitation = invitation_for_next(next_url)
    if invitation is None:
        return None
    form = context.get("form")
    if form is not None and not form.is_bound:
        # an unbound sign-up or sign-in form starts with the address the invitation was sent to
        for name in ("email", "login"):
            if name in form.fields:
                form.initial.setdefault(name, invitation.email)
    return {
        "inviter": invitation.invited_by.email if invitation.invited_by else "Someone",
        "workspace": invitation.workspace.name,
        "role": Role(invitation.role).label,
        "email": invitation.email,
        "signup_url": f"{reverse('account_signup')}?{urlencode({'next': next_url, 'email': invitation.email})}",
        "login_url": f"{reverse('account_login')}?{urlencode({'next': next_url})}",
    }
