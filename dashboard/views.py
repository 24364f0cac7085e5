"""Dashboard views: thin. Validate with a form, call one service or selector, render."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from datetime import UTC, datetime, time, timedelta
from time import monotonic
from typing import Any

import httpx
from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.http.response import HttpResponseBase
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.debug import sensitive_post_parameters
from django.views.decorators.http import require_GET, require_POST

from billing import selectors as billing_selectors
from config.errors import ApplicationError
from contracts.providers import PROVIDERS
from dashboard.access import (
    LAST_WORKSPACE_SESSION_KEY,
    apply_error,
    client_ip,
    forbidden,
    page_context,
    workspace_view,
)
from dashboard.filters import Echo, csv_safe, day_range
from dashboard.forms import (
    ConnectTestForm,
    CredentialForm,
    GatewayKeyForm,
    InviteForm,
    RoleForm,
    RotateCredentialForm,
    WorkspaceForm,
)
from dashboard.templatetags.audit import audit_details
from tenants import selectors, services
from tenants.models import Invitation, Membership
from tenants.roles import Perm, Role

DEMO_MODELS = {
    "openai": "gpt-4o-mini",
    "anthropic": "claude-haiku-4-5",
    "google": "gemini-2.5-flash",
    "groq": "llama-3.3-70b-versatile",
    "mistral": "mistral-small-latest",
    "xai": "grok-3-mini",
}


@require_GET
def healthz(request: HttpRequest) -> HttpResponse:
    return JsonResponse({"status": "ok"})


@require_GET
def home(request: HttpRequest) -> HttpResponse:
    """`/`: visitors get the landing page; a signed-in user goes to their last (or first) workspace."""
    if not request.user.is_authenticated:
        return landing(request)
    workspaces = list(selectors.workspaces_for_user(user=request.user))  # type: ignore[arg-type]
    if not workspaces:
        return redirect("dashboard:workspace_create")
    last = request.session.get(LAST_WORKSPACE_SESSION_KEY)
    chosen = next((ws for ws in workspaces if ws.slug == last), workspaces[0])
    return redirect(_landing(request, chosen.slug), chosen.slug)


def landing(request: HttpRequest) -> HttpResponse:
    """The public front door: what Turnpike is, how to start, which providers it speaks to. No login."""
    providers = [spec.label for spec in PROVIDERS.values() if spec.type != "openai_compatible"]
    return render(request, "dashboard/landing.html", {"providers": providers})


def _landing(request: HttpRequest, slug: str) -> str:
    """Finance members land on Billing; everyone else on the overview."""
    membership = selectors.membership_for_user(user=request.user, workspace_slug=slug)  # type: ignore[arg-type]
    return "dashboard:billing" if membership.role == Role.FINANCE else "dashboard:overview"


@login_required
@require_GET
def switch(request: HttpRequest) -> HttpResponse:
    slug = request.GET.get("to", "")
    if any(ws.slug == slug for ws in selectors.workspaces_for_user(user=request.user)):  # type: ignore[arg-type]
        return redirect(_landing(request, slug), slug)
    return redirect("dashboard:home")


@login_required
def workspace_create(request: HttpRequest) -> HttpResponse:
    form = WorkspaceForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            workspace = services.workspace_create(
                name=form.cleaned_data["name"],
                acting_user=request.user,  # type: ignore[arg-type]
                ip=client_ip(request),  # type: ignore[arg-type]
            )
        except ApplicationError as exc:
            apply_error(form, exc)
        else:
            messages.success(request, f"Workspace {workspace.name} created. Next: add a provider key.")
            return redirect("dashboard:credentials", workspace.slug)
    return render(request, "dashboard/workspace_create.html", {"form": form})


@workspace_view(Perm.WORKSPACE_VIEW)
def overview(request: HttpRequest, slug: str) -> HttpResponse:
    workspace = request.workspace  # type: ignore[attr-defined]
    credentials = list(selectors.provider_credentials_list(workspace=workspace))
    keys = list(selectors.gateway_keys_list(workspace=workspace, include_revoked=False))
    balance_nanos, _ = billing_selectors.workspace_balance(workspace_id=workspace.pk)
    plan = billing_selectors.plan_of(workspace=workspace)
    since = timezone.now() - timedelta(hours=24)
    by_model = billing_selectors.usage_by_model(workspace=workspace, since=since)
    return render(
        request,
        "dashboard/overview.html",
        page_context(
            request,
            "overview",
            credentials=credentials,
            keys=keys,
            balance_nanos=balance_nanos,
            plan=plan,
            needs_credit=billing_selectors.needs_credit(workspace=workspace, plan=plan),
            by_model=by_model,
            totals={
                "requests": sum(m.requests for m in by_model),
                "unpriced": sum(m.unpriced for m in by_model),
                "charge_nanos": sum(m.charge_nanos for m in by_model),
            },
            recent=billing_selectors.usage_events_recent(workspace=workspace, limit=20),
        ),
    )


# --- provider credentials ---------------------------------------------------------------------------------


@workspace_view(Perm.CREDENTIALS_VIEW)
def credentials(request: HttpRequest, slug: str) -> HttpResponse:
    workspace = request.workspace  # type: ignore[attr-defined]
    form = CredentialForm(request.POST or None)
    if request.method == "POST":
        if not page_context(request, "")["can"]["manage_credentials"]:
            return forbidden(request, "Your role cannot add provider credentials.")
        if form.is_valid():
            data = form.cleaned_data
            try:
                credential = services.provider_credential_create(
                    workspace=workspace,
                    provider=data["provider"],
                    label=data["label"],
                    secret=data["secret"],
                    base_url=data["base_url"],
                    acting_user=request.user,  # type: ignore[arg-type]
                    ip=client_ip(request),
                )
            except ApplicationError as exc:
                apply_error(form, exc)
            else:
                messages.success(request, f"{credential.label} saved: the provider accepted the key.")
                return redirect("dashboard:credentials", slug)
    items = selectors.provider_credentials_list(workspace=workspace)
    return render(request, "dashboard/credentials.html", page_context(request, "credentials", form=form, items=items))


@require_POST
@workspace_view(Perm.CREDENTIALS_MANAGE)
def credential_rotate(request: HttpRequest, slug: str, credential_id: str) -> HttpResponse:
    credential = selectors.provider_credential_get(workspace=request.workspace, public_id=credential_id)  # type: ignore[attr-defined]
    form = RotateCredentialForm(request.POST)
    if form.is_valid():
        try:
            services.provider_credential_rotate(
                credential=credential,
                secret=form.cleaned_data["secret"],
                acting_user=request.user,  # type: ignore[arg-type]
                ip=client_ip(request),
            )
        except ApplicationError as exc:
            messages.error(request, f"{credential.label}: {exc.message}")
        else:
            messages.success(request, f"{credential.label}: key replaced.")
    else:
        messages.error(request, "Paste the new key.")
    return redirect("dashboard:credentials", slug)


@require_POST
@workspace_view(Perm.CREDENTIALS_MANAGE)
def credential_remove(request: HttpRequest, slug: str, credential_id: str) -> HttpResponse:
    credential = selectors.provider_credential_get(workspace=request.workspace, public_id=credential_id)  # type: ignore[attr-defined]
    services.provider_credential_remove(credential=credential, acting_user=request.user, ip=client_ip(request))  # type: ignore[arg-type]
    messages.success(request, f"{credential.label} removed.")
    return redirect("dashboard:credentials", slug)


# --- gateway keys -----------------------------------------------------------------------------------------


@workspace_view(Perm.KEYS_VIEW)
def keys(request: HttpRequest, slug: str) -> HttpResponse:
    workspace = request.workspace  # type: ignore[attr-defined]
    form = GatewayKeyForm(request.POST or None)
    created = None
    if request.method == "POST":
        if not page_context(request, "")["can"]["manage_keys"]:
            return forbidden(request, "Your role cannot create gateway keys.")
        if form.is_valid():
            expires_on = form.cleaned_data["expires_on"]
            try:
                key, plaintext = services.gateway_key_create(
                    workspace=workspace,
                    name=form.cleaned_data["name"],
                    expires_at=datetime.combine(expires_on, time.min, tzinfo=UTC) if expires_on else None,
                    allowed_models=form.cleaned_data["allowed_models"],
                    acting_user=request.user,  # type: ignore[arg-type]
                    ip=client_ip(request),
                )
            except ApplicationError as exc:
                apply_error(form, exc)
            else:
                # Rendered in this response, and handed to the Connect page through a one-time session value
                # (popped there, ignored after CONNECT_KEY_TTL): the plaintext is never stored anywhere else.
                created = {"key": key, "plaintext": plaintext}
                request.session[CONNECT_KEY_SESSION_KEY] = {
                    "workspace": workspace.pk,
                    "key": plaintext,
                    "at": timezone.now().timestamp(),
                }
                form = GatewayKeyForm()
    items = selectors.gateway_keys_list(workspace=workspace)
    response = render(
        request, "dashboard/keys.html", page_context(request, "keys", form=form, items=items, created=created)
    )
    if created:
        response["Cache-Control"] = "no-store"
    return response


@require_POST
@workspace_view(Perm.KEYS_MANAGE)
def key_revoke(request: HttpRequest, slug: str, key_id: str) -> HttpResponse:
    key = selectors.gateway_key_get(workspace=request.workspace, public_id=key_id)  # type: ignore[attr-defined]
    services.gateway_key_revoke(key=key, acting_user=request.user, ip=client_ip(request))  # type: ignore[arg-type]
    messages.success(request, f"Key {key.name} revoked. The proxy refuses it within a second.")
    return redirect("dashboard:keys", slug)


# --- connect -------------------------------------------------------------------------------------------------

CONNECT_KEY_SESSION_KEY = "turnpike_connect_key_once"
CONNECT_KEY_TTL = timedelta(minutes=15)
CONNECT_TEST_TIMEOUT = httpx.Timeout(15.0, connect=3.0)
CONNECT_TEST_PROMPT = "Say hello"
CONNECT_TEST_MAX_TOKENS = 16


def _connect_model(credentials: list[Any]) -> str:
    """The model the snippets (and the test request) use: one this workspace has a provider key for."""
    for credential in credentials:
        if credential.provider in DEMO_MODELS:
            return f"{credential.provider}/{DEMO_MODELS[credential.provider]}"
    return "openai/gpt-4o-mini"


def _connect_page(
    request: HttpRequest, *, key: str = "", fresh: bool = False, status: int = 200, **extra: Any
) -> HttpResponse:
    workspace = request.workspace  # type: ignore[attr-defined]
    credentials = list(selectors.provider_credentials_list(workspace=workspace))
    response = render(
        request,
        "dashboard/connect.html",
        page_context(
            request,
            "connect",
            base_url=settings.TURNPIKE_PROXY_BASE_URL,
            # the anthropic SDK appends /v1/messages itself
            anthropic_base_url=settings.TURNPIKE_PROXY_BASE_URL.rstrip("/").removesuffix("/v1"),
            model=_connect_model(credentials),
            has_credentials=bool(credentials),
            key=key,
            fresh=fresh,
            **extra,
        ),
        status=status,
    )
    if key:
        response["Cache-Control"] = "no-store"
    return response


@workspace_view(Perm.WORKSPACE_VIEW)
def connect(request: HttpRequest, slug: str) -> HttpResponse:
    """The snippets; right after a key was created (Gateway keys page) they carry that key, this once."""
    once = request.session.pop(CONNECT_KEY_SESSION_KEY, None)
    key = ""
    if (
        isinstance(once, dict)
        and once.get("workspace") == request.workspace.pk  # type: ignore[attr-defined]
        and timezone.now().timestamp() - float(once.get("at", 0)) < CONNECT_KEY_TTL.total_seconds()
    ):
        key = str(once.get("key", ""))
    return _connect_page(request, key=key, fresh=bool(key))


@require_POST
@sensitive_post_parameters("key")
@workspace_view(Perm.WORKSPACE_VIEW)
def connect_test(request: HttpRequest, slug: str) -> HttpResponse:
    """The "Send a test request" button: a tiny chat completion through the proxy with the key from the
    form, and the proxy's real answer (or its error: status and message) on the page. The key is neither
    logged nor stored; it goes back into this one response (no-store) so the snippets stay filled."""
    form = ConnectTestForm(request.POST)
    if not form.is_valid():
        return _connect_page(request, test={"error": "Paste a Turnpike key to send a test request."}, status=400)
    key = form.cleaned_data["key"]
    credentials = list(selectors.provider_credentials_list(workspace=request.workspace))  # type: ignore[attr-defined]
    model = _connect_model(credentials)
    return _connect_page(request, key=key, test=_send_test_request(key=key, model=model))


def _send_test_request(*, key: str, model: str) -> dict[str, Any]:
    url = f"{settings.TURNPIKE_PROXY_BASE_URL.rstrip('/')}/chat/completions"
    body = {
        "model": model,
        "messages": [{"role": "user", "content": CONNECT_TEST_PROMPT}],
        "max_tokens": CONNECT_TEST_MAX_TOKENS,
    }
    started = monotonic()
    try:
        reply = httpx.post(url, json=body, headers={"Authorization": f"Bearer {key}"}, timeout=CONNECT_TEST_TIMEOUT)
    except httpx.HTTPError as exc:
        return {"model": model, "error": f"Could not reach Turnpike at {url} ({type(exc).__name__})."}
    result: dict[str, Any] = {
        "model": model,
        "status": reply.status_code,
        "ms": round((monotonic() - started) * 1000),
        "request_id": reply.headers.get("x-request-id", ""),
    }
    try:
        data = reply.json()
    except ValueError:
        data = None
    if reply.is_success and isinstance(data, dict):
        try:
            result["answer"] = str(data["choices"][0]["message"]["content"] or "").strip() or "(an empty answer)"
        except (KeyError, IndexError, TypeError):
            result["error"] = "The answer was not a chat completion."
        return result
    message = ""
    if isinstance(data, dict) and isinstance(data.get("error"), dict):
        message = str(data["error"].get("message") or "")
    result["error"] = message or reply.reason_phrase or "The request failed."
    return result


# --- members -------------------------------------------------------------------------------------------------


@workspace_view(Perm.MEMBERS_VIEW)
def members(request: HttpRequest, slug: str) -> HttpResponse:
    workspace = request.workspace  # type: ignore[attr-defined]
    form = InviteForm(request.POST or None)
    if request.method == "POST":
        if not page_context(request, "")["can"]["manage_members"]:
            return forbidden(request, "Your role cannot invite members.")
        if form.is_valid():
            try:
                invitation, token = services.invitation_create(
                    workspace=workspace,
                    email=form.cleaned_data["email"],
                    role=form.cleaned_data["role"],
                    acting_user=request.user,  # type: ignore[arg-type]
                    ip=client_ip(request),  # type: ignore[arg-type]
                )
            except ApplicationError as exc:
                apply_error(form, exc)
            else:
                messages.success(request, f"Invitation sent to {invitation.email}.")
                _flash_invite_link(request, invitation, token)
                return redirect("dashboard:members", slug)
    # The link of an invitation just created or re-issued: shown once (popped here), never stored elsewhere.
    invite_link = request.session.pop(INVITE_LINK_SESSION_KEY, None)
    if invite_link and invite_link.get("workspace") != workspace.pk:
        invite_link = None
    response = render(request, "dashboard/members.html", _members_context(request, form, invite_link=invite_link))
    if invite_link:
        response["Cache-Control"] = "no-store"
    return response


def _members_context(request: HttpRequest, form: InviteForm, **extra: Any) -> dict[str, Any]:
    workspace = request.workspace  # type: ignore[attr-defined]
    return page_context(
        request,
        "members",
        form=form,
        items=selectors.memberships_list(workspace=workspace),
        invitations=selectors.invitations_pending(workspace=workspace),
        roles=Role.choices,
        **extra,
    )


INVITE_LINK_SESSION_KEY = "turnpike_invite_link_once"


def _flash_invite_link(request: HttpRequest, invitation: Invitation, token: str) -> None:
    """Keep the link for the next members page only; the token is otherwise stored as a hash alone."""
    request.session[INVITE_LINK_SESSION_KEY] = {
        "workspace": invitation.workspace_id,
        "email": invitation.email,
        "url": services.invitation_accept_url(token),
    }


@require_POST
@workspace_view(Perm.MEMBERS_MANAGE)
def invitation_link(request: HttpRequest, slug: str, invitation_id: str) -> HttpResponse:
    """A fresh link for a pending invitation, to copy (the old link stops working; the new one is emailed too)."""
    invitation = selectors.invitation_get(workspace=request.workspace, invitation_id=invitation_id)  # type: ignore[attr-defined]
    try:
        invitation, token = services.invitation_reissue(
            invitation=invitation,
            acting_user=request.user,  # type: ignore[arg-type]
            ip=client_ip(request),
        )
    except ApplicationError as exc:
        if exc.status_code == 403:
            return forbidden(request, exc.message)
        messages.error(request, exc.message)
    else:
        messages.success(request, f"New link for {invitation.email}; the previous link no longer works.")
        _flash_invite_link(request, invitation, token)
    return redirect("dashboard:members", slug)


@require_POST
@workspace_view(Perm.MEMBERS_MANAGE)
def member_role(request: HttpRequest, slug: str, member_id: str) -> HttpResponse:
    """Change a member's role, after a confirmation: a POST without `confirm=yes` shows the question
    ("Make alice@x.com a Finance member?") at the top of the members page, with a button that sends
    `confirm=yes` (no JavaScript needed); with JavaScript the page asks in place and sends it itself."""
    membership = selectors.membership_get(workspace=request.workspace, membership_id=member_id)  # type: ignore[attr-defined]
    form = RoleForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Choose a valid role.")
        return redirect("dashboard:members", slug)
    role = Role(form.cleaned_data["role"])
    if role == membership.role:
        messages.info(request, f"{membership.user.email} is already {role.label}.")
        return redirect("dashboard:members", slug)
    if request.POST.get("confirm") != "yes":
        confirm = {"member": membership, "role": role, "question": role_question(membership, role)}
        return render(request, "dashboard/members.html", _members_context(request, InviteForm(), confirm=confirm))
    try:
        services.membership_change_role(
            membership=membership,
            role=form.cleaned_data["role"],
            acting_user=request.user,  # type: ignore[arg-type]
            ip=client_ip(request),  # type: ignore[arg-type]
        )
    except ApplicationError as exc:
        if exc.status_code == 403:
            return forbidden(request, exc.message)
        messages.error(request, exc.message)
    else:
        messages.success(request, f"{membership.user.email} is now {Role(form.cleaned_data['role']).label}.")
    return redirect("dashboard:members", slug)


def role_question(membership: Membership, role: Role) -> str:
    article = "an" if role.label[0] in "AEIOU" else "a"
    return f"Make {membership.user.email} {article} {role.label} member?"


@require_POST
@workspace_view(Perm.WORKSPACE_VIEW)
def member_remove(request: HttpRequest, slug: str, member_id: str) -> HttpResponse:
    """Remove a member (members.manage), or leave the workspace yourself (any role)."""
    membership = selectors.membership_get(workspace=request.workspace, membership_id=member_id)  # type: ignore[attr-defined]
    leaving = membership.user_id == request.user.pk
    try:
        services.membership_remove(membership=membership, acting_user=request.user, ip=client_ip(request))  # type: ignore[arg-type]
    except ApplicationError as exc:
        if exc.status_code == 403:
            return forbidden(request, exc.message)
        messages.error(request, exc.message)
        return redirect("dashboard:members", slug)
    if leaving:
        request.session.pop(LAST_WORKSPACE_SESSION_KEY, None)
        messages.success(request, f"You left {membership.workspace.name}.")
        return redirect("dashboard:home")
    messages.success(request, f"{membership.user.email} removed.")
    return redirect("dashboard:members", slug)


@require_POST
@workspace_view(Perm.MEMBERS_MANAGE)
def invitation_revoke(request: HttpRequest, slug: str, invitation_id: str) -> HttpResponse:
    invitation = selectors.invitation_get(workspace=request.workspace, invitation_id=invitation_id)  # type: ignore[attr-defined]
    services.invitation_revoke(invitation=invitation, acting_user=request.user, ip=client_ip(request))  # type: ignore[arg-type]
    messages.success(request, f"Invitation for {invitation.email} revoked.")
    return redirect("dashboard:members", slug)


@login_required
def invitation_accept(request: HttpRequest, token: str) -> HttpResponse:
    invitation = services.invitation_for_token(token=token)
    if request.method == "POST":
        try:
            membership = services.invitation_accept(token=token, user=request.user, ip=client_ip(request))  # type: ignore[arg-type]
        except ApplicationError as exc:
            return render(
                request,
                "dashboard/invitation.html",
                {"invitation": invitation, "error": exc.message},
                status=exc.status_code,
            )
        messages.success(request, f"You joined {membership.workspace.name}.")
        return redirect("dashboard:overview", membership.workspace.slug)
    error = None
    if invitation is None or not invitation.is_pending:
        error = "This invitation is invalid, expired or already used."
    elif invitation.email.lower() != request.user.email.lower():  # type: ignore[union-attr]
        error = f"This invitation was sent to {invitation.email}; log in with that address to accept it."
    return render(
        request,
        "dashboard/invitation.html",
        {"invitation": invitation if not error else None, "error": error},
        status=404 if error else 200,
    )


# --- settings and audit -----------------------------------------------------------------------------------------


@workspace_view(Perm.WORKSPACE_VIEW)
def workspace_settings(request: HttpRequest, slug: str) -> HttpResponse:
    workspace = request.workspace  # type: ignore[attr-defined]
    form = WorkspaceForm(request.POST or None, initial={"name": workspace.name})
    if request.method == "POST":
        if not page_context(request, "")["can"]["manage_workspace"]:
            return forbidden(request, "Your role cannot change workspace settings.")
        if form.is_valid():
            try:
                services.workspace_update(
                    workspace=workspace,
                    name=form.cleaned_data["name"],
                    acting_user=request.user,  # type: ignore[arg-type]
                    ip=client_ip(request),
                )
            except ApplicationError as exc:
                apply_error(form, exc)
            else:
                messages.success(request, "Workspace renamed.")
                return redirect("dashboard:settings", slug)
    return render(request, "dashboard/settings.html", page_context(request, "settings", form=form))


@workspace_view(Perm.AUDIT_VIEW)
def audit(request: HttpRequest, slug: str) -> HttpResponse:
    workspace = request.workspace  # type: ignore[attr-defined]
    filters, problems = _audit_filters(request)
    try:
        page = max(1, min(int(request.GET.get("page", "1")), 100_000))
    except ValueError:
        page = 1
    rows = list(
        selectors.audit_log_list(workspace=workspace, limit=AUDIT_PAGE + 1, offset=(page - 1) * AUDIT_PAGE, **filters)
    )
    query = request.GET.copy()
    query.pop("page", None)
    return render(
        request,
        "dashboard/audit.html",
        page_context(
            request,
            "audit",
            entries=rows[:AUDIT_PAGE],
            has_next=len(rows) > AUDIT_PAGE,
            page=page,
            query=query.urlencode(),
            areas=selectors.audit_areas(workspace=workspace),
            selected={name: request.GET.get(name, "") for name in ("area", "actor", "from", "to")},
            problems=problems,
        ),
        status=400 if problems else 200,
    )


AUDIT_PAGE = 100


def _audit_filters(request: HttpRequest) -> tuple[dict[str, Any], list[str]]:
    bounds, problems = day_range(request)
    area = request.GET.get("area", "").strip()
    if area and not area.replace("_", "").isalnum():
        problems.append("Unknown area.")
        area = ""
    return {
        "area": area[:40],
        "actor": request.GET.get("actor", "").replace("\x00", "").strip()[:254],
        **bounds,
    }, problems


@workspace_view(Perm.AUDIT_VIEW)
def audit_csv(request: HttpRequest, slug: str) -> HttpResponseBase:
    """Every row the filter matches (not only a page), streamed, with the details in words."""
    workspace = request.workspace  # type: ignore[attr-defined]
    filters, problems = _audit_filters(request)
    if problems:
        return HttpResponse(" ".join(problems), status=400, content_type="text/plain; charset=utf-8")
    writer = csv.writer(Echo())

    def rows() -> Iterator[str]:
        yield writer.writerow(
            ["created_at_utc", "actor", "action", "object_type", "object_id", "object", "details", "ip"]
        )
        for row in selectors.audit_log_list(workspace=workspace, limit=None, **filters).iterator(chunk_size=2000):
            yield writer.writerow(
                [
                    row.created_at.astimezone(UTC).isoformat(),
                    csv_safe(row.actor_email or "system"),
                    row.action,
                    row.target_type,
                    row.target_id,
                    csv_safe(row.target_repr),
                    csv_safe("; ".join(audit_details(row.metadata))),
                    row.ip_address or "",
                ]
            )

    response = StreamingHttpResponse(rows(), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="turnpike-audit-{workspace.slug}.csv"'
    return response
