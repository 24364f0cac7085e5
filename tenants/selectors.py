"""Reads for tenants. Everything tenant-owned is looked up through the caller's workspace, so an id
from another workspace is simply not found (404), whatever the URL or form says."""

from __future__ import annotations

import uuid
from datetime import datetime

from django.db.models import QuerySet
from django.utils import timezone

from config.errors import NotFound
from tenants.models import (
    AuditLog,
    GatewayKey,
    Invitation,
    Membership,
    ProviderCredential,
    User,
    Workspace,
)


def _uuid_or_not_found(value: object, what: str) -> uuid.UUID:
    try:
        return uuid.UUID(str(value))
    except ValueError as exc:
        raise NotFound(f"No such {what}.") from exc


def workspaces_for_user(*, user: User) -> QuerySet[Workspace]:
    return Workspace.objects.filter(memberships__user=user).order_by("name", "pk")


def membership_for_user(*, user: User, workspace_slug: str) -> Membership:
    """The user's membership in the workspace named by slug; NotFound if they are not a member
    (a non-member cannot tell a missing workspace from someone else's)."""
    if not user.is_authenticated:
        raise NotFound("No such workspace.")
    membership = (
        Membership.objects.select_related("workspace", "user").filter(user=user, workspace__slug=workspace_slug).first()
    )
    if membership is None:
        raise NotFound("No such workspace.")
    return membership


def memberships_list(*, workspace: Workspace) -> QuerySet[Membership]:
    return Membership.objects.filter(workspace=workspace).select_related("user").order_by("created_at", "pk")


def membership_get(*, workspace: Workspace, membership_id: object) -> Membership:
    try:
        pk = int(str(membership_id))
    except ValueError as exc:
        raise NotFound("No such member.") from exc
    membership = Membership.objects.select_related("user", "workspace").filter(workspace=workspace, pk=pk).first()
    if membership is None:
        raise NotFound("No such member.")
    return membership


def invitations_pending(*, workspace: Workspace) -> QuerySet[Invitation]:
    return Invitation.objects.filter(
        workspace=workspace, accepted_at__isnull=True, revoked_at__isnull=True, expires_at__gt=timezone.now()
    ).order_by("-created_at")


def invitation_get(*, workspace: Workspace, invitation_id: object) -> Invitation:
    try:
        pk = int(str(invitation_id))
    except ValueError as exc:
        raise NotFound("No such invitation.") from exc
    invitation = Invitation.objects.select_related("workspace").filter(workspace=workspace, pk=pk).first()
    if invitation is None:
        raise NotFound("No such invitation.")
    return invitation


def provider_credentials_list(*, workspace: Workspace) -> QuerySet[ProviderCredential]:
    return ProviderCredential.objects.filter(workspace=workspace, removed_at__isnull=True).order_by("label", "pk")


def provider_credential_get(*, workspace: Workspace, public_id: object) -> ProviderCredential:
    pid = _uuid_or_not_found(public_id, "credential")
    credential = (
        ProviderCredential.objects.select_related("workspace")
        .filter(workspace=workspace, public_id=pid, removed_at__isnull=True)
        .first()
    )
    if credential is None:
        raise NotFound("No such credential.")
    return credential


def gateway_keys_list(*, workspace: Workspace, include_revoked: bool = True) -> QuerySet[GatewayKey]:
    qs = GatewayKey.objects.filter(workspace=workspace).select_related("created_by")
    if not include_revoked:
        qs = qs.filter(revoked_at__isnull=True)
    return qs.order_by("revoked_at", "-created_at")


def gateway_key_get(*, workspace: Workspace, public_id: object) -> GatewayKey:
    pid = _uuid_or_not_found(public_id, "key")
    key = GatewayKey.objects.select_related("workspace").filter(workspace=workspace, public_id=pid).first()
    if key is None:
        raise NotFound("No such key.")
    return key


def audit_log_list(
    *,
    workspace: Workspace,
    limit: int | None = 100,
    offset: int = 0,
    area: str = "",
    actor: str = "",
    since: datetime | None = None,
    before: datetime | None = None,
) -> QuerySet[AuditLog]:
    """The workspace's audit rows, newest first; `area` is an action prefix ("billing", "key"...), `actor` a
    part of the actor's email. `limit=None`: every matching row (exports iterate it)."""
    rows = AuditLog.objects.filter(workspace=workspace)
    if area:
        rows = rows.filter(action__startswith=f"{area}.")
    if actor:
        rows = rows.filter(actor_email__icontains=actor)
    if since is not None:
        rows = rows.filter(created_at__gte=since)
    if before is not None:
        rows = rows.filter(created_at__lt=before)
    rows = rows.order_by("-created_at", "-id")
    return rows[offset : offset + limit] if limit is not None else rows


def audit_areas(*, workspace: Workspace) -> list[str]:
    """The action prefixes that occur in the workspace's log, for the filter."""
    actions = AuditLog.objects.filter(workspace=workspace).values_list("action", flat=True).distinct()
    return sorted({action.split(".", 1)[0] for action in actions})
