"""Members and invitations: invite by email, accept, revoke, re-issue a link, change a role, remove.

An invitation's token is stored only as its SHA-256 hash. The plaintext leaves `invitation_create` and
`invitation_reissue` twice: in the email (sent on commit) and in the return value, which the dashboard
shows the inviter once (a one-time session value popped on display) so the link can be copied.
`invitation_for_next` reads a pending invitation back from a `next` URL (the sign-in and sign-up pages
say who invited you to what). Owner rules: only owners grant, change or remove the owner role, and a workspace
always keeps at least one owner (owner rows are locked so concurrent demotions serialise)."""

from __future__ import annotations

import re
import secrets
from datetime import timedelta
from urllib.parse import urlsplit

from django.conf import settings
from django.core.mail import send_mail
from django.db import IntegrityError, transaction
from django.utils import timezone

from config.errors import ApplicationError, PermissionDenied
from contracts.cachekeys import hash_token
from tenants.models import Invitation, Membership, User, Workspace
from tenants.roles import Perm, Role
from tenants.services.common import audit, require_permission


def _guard_owner_rules(*, actor: Membership, target_role: str, new_role: str | None = None) -> None:
    """Only owners may grant, change or remove the owner role."""
    touches_owner = target_role == Role.OWNER or new_role == Role.OWNER
    if touches_owner and actor.role != Role.OWNER:
        raise PermissionDenied("Only an owner can change an owner or make someone an owner.")


def _ensure_another_owner(membership: Membership) -> None:
    if membership.role != Role.OWNER:
        return
    # Lock the owner rows (Django drops FOR UPDATE from .count(), so fetch them): two owners leaving or
    # demoting each other at once then serialise, and the second sees only one owner left.
    owners = list(
        Membership.objects.select_for_update()
        .filter(workspace_id=membership.workspace_id, role=Role.OWNER)
        .values_list("pk", flat=True)
    )
    if len(owners) <= 1:
        raise ApplicationError("A workspace must keep at least one owner.")


@transaction.atomic
def invitation_create(
    *, workspace: Workspace, email: str, role: str, acting_user: User, ip: str | None = None
) -> tuple[Invitation, str]:
    """Invite an email address; returns (invitation, token). The token goes out by email only."""
    actor = require_permission(workspace=workspace, user=acting_user, perm=Perm.MEMBERS_MANAGE)
    email = User.objects.normalize_email((email or "").strip()).lower()
    if "@" not in email or len(email) > 254:
        raise ApplicationError("Enter a valid email address.", extra={"field": "email"})
    if role not in Role.values:
        raise ApplicationError(f"Unknown role {role!r}.", extra={"field": "role"})
    _guard_owner_rules(actor=actor, target_role=role)
    if Membership.objects.filter(workspace=workspace, user__email__iexact=email).exists():
        raise ApplicationError(f"{email} is already a member of this workspace.", extra={"field": "email"})
    now = timezone.now()
    # A new invitation replaces any pending one for the same address.
    Invitation.objects.filter(
        workspace=workspace, email__iexact=email, accepted_at__isnull=True, revoked_at__isnull=True
    ).update(revoked_at=now)
    token = secrets.token_urlsafe(32)
    invitation = Invitation.objects.create(
        workspace=workspace,
        email=email,
        role=role,
        token_hash=hash_token(token),
        invited_by=acting_user,
        expires_at=now + timedelta(days=settings.TURNPIKE_INVITATION_TTL_DAYS),
    )
    audit(
        workspace=workspace,
        actor=acting_user,
        action="member.invited",
        target=invitation,
        ip=ip,
        metadata={"email": email, "role": role},
    )
    _send_invitation_email(invitation=invitation, token=token, inviter=acting_user)
    return invitation, token


def invitation_accept_url(token: str) -> str:
    """The link an invited person opens (in the email, and the one the inviter may copy)."""
    return f"{settings.TURNPIKE_DASHBOARD_URL.rstrip('/')}/invitations/{token}/"


def _send_invitation_email(*, invitation: Invitation, token: str, inviter: User) -> None:
    workspace, email, accept_url = invitation.workspace, invitation.email, invitation_accept_url(token)
    transaction.on_commit(
        lambda: send_mail(
            subject=f"[Turnpike] {inviter.email} invited you to {workspace.name}",
            message=(
                f"{inviter.email} invited you to join the workspace {workspace.name!r} on Turnpike "
                f"as {Role(invitation.role).label}.\n\nAccept the invitation: {accept_url}\n\n"
                f"The link expires on {invitation.expires_at:%Y-%m-%d %H:%M} UTC."
            ),
            from_email=None,
            recipient_list=[email],
        )
    )


@transaction.atomic
def invitation_reissue(*, invitation: Invitation, acting_user: User, ip: str | None = None) -> tuple[Invitation, str]:
    """A fresh link for a pending invitation (the old one stops working), valid for the full period again,
    and emailed again. Returns (invitation, token); the token is not stored."""
    invitation = Invitation.objects.select_for_update().select_related("workspace").get(pk=invitation.pk)
    actor = require_permission(workspace=invitation.workspace, user=acting_user, perm=Perm.MEMBERS_MANAGE)
    _guard_owner_rules(actor=actor, target_role=invitation.role)
    if invitation.accepted_at is not None or invitation.revoked_at is not None:
        raise ApplicationError("This invitation was already accepted or revoked; invite again instead.")
    token = secrets.token_urlsafe(32)
    invitation.token_hash = hash_token(token)
    invitation.expires_at = timezone.now() + timedelta(days=settings.TURNPIKE_INVITATION_TTL_DAYS)
    invitation.save(update_fields=["token_hash", "expires_at"])
    audit(
        workspace=invitation.workspace,
        actor=acting_user,
        action="member.invitation_reissued",
        target=invitation,
        ip=ip,
        metadata={"email": invitation.email, "role": invitation.role},
    )
    _send_invitation_email(invitation=invitation, token=token, inviter=acting_user)
    return invitation, token


def invitation_for_token(*, token: str) -> Invitation | None:
    return (
        Invitation.objects.select_related("workspace", "invited_by").filter(token_hash=hash_token(token or "")).first()
    )


_ACCEPT_PATH = re.compile(r"^/invitations/([A-Za-z0-9_-]{16,100})/$")


def invitation_for_next(next_url: str | None) -> Invitation | None:
    """The pending invitation a sign-in page's `next` points at (`/invitations/<token>/`), else None.
    Anything else (another URL, an unknown, used, revoked or expired token) is None: no context, no error."""
    if not next_url or len(next_url) > 300:
        return None
    parts = urlsplit(next_url)
    if parts.scheme or parts.netloc or parts.query or parts.fragment:
        return None
    match = _ACCEPT_PATH.match(parts.path)
    if match is None:
        return None
    invitation = (
        Invitation.objects.select_related("workspace", "invited_by").filter(token_hash=hash_token(match[1])).first()
    )
    return invitation if invitation is not None and invitation.is_pending else None


@transaction.atomic
def invitation_accept(*, token: str, user: User, ip: str | None = None) -> Membership:
    invitation = (
        Invitation.objects.select_for_update().select_related("workspace").filter(token_hash=hash_token(token)).first()
    )
    if invitation is None or not invitation.is_pending:
        raise ApplicationError("This invitation is invalid, expired or already used.")
    if invitation.email.lower() != user.email.lower():
        raise PermissionDenied(f"This invitation was sent to {invitation.email}; log in with that address.")
    try:
        with transaction.atomic():
            membership = Membership.objects.create(workspace=invitation.workspace, user=user, role=invitation.role)
    except IntegrityError:
        membership = Membership.objects.get(workspace=invitation.workspace, user=user)
    invitation.accepted_at = timezone.now()
    invitation.accepted_by = user
    invitation.save(update_fields=["accepted_at", "accepted_by"])
    audit(
        workspace=invitation.workspace,
        actor=user,
        action="member.joined",
        target=membership,
        ip=ip,
        metadata={"role": membership.role},
    )
    return membership


@transaction.atomic
def invitation_revoke(*, invitation: Invitation, acting_user: User, ip: str | None = None) -> None:
    require_permission(workspace=invitation.workspace, user=acting_user, perm=Perm.MEMBERS_MANAGE)
    if invitation.accepted_at is not None or invitation.revoked_at is not None:
        return
    invitation.revoked_at = timezone.now()
    invitation.save(update_fields=["revoked_at"])
    audit(
        workspace=invitation.workspace,
        actor=acting_user,
        action="member.invitation_revoked",
        target=invitation,
        ip=ip,
        metadata={"email": invitation.email},
    )


@transaction.atomic
def membership_change_role(
    *, membership: Membership, role: str, acting_user: User, ip: str | None = None
) -> Membership:
    actor = require_permission(workspace=membership.workspace, user=acting_user, perm=Perm.MEMBERS_MANAGE)
    if role not in Role.values:
        raise ApplicationError(f"Unknown role {role!r}.", extra={"field": "role"})
    if membership.role == role:
        return membership
    _guard_owner_rules(actor=actor, target_role=membership.role, new_role=role)
    if membership.role == Role.OWNER:
        _ensure_another_owner(membership)
    old = membership.role
    membership.role = role
    membership.save(update_fields=["role"])
    audit(
        workspace=membership.workspace,
        actor=acting_user,
        action="member.role_changed",
        target=membership,
        ip=ip,
        metadata={"email": membership.user.email, "from": old, "to": role},
    )
    return membership


@transaction.atomic
def membership_remove(*, membership: Membership, acting_user: User, ip: str | None = None) -> None:
    """Remove a member. Anyone may leave a workspace themselves (unless they are its last owner)."""
    if membership.user_id != acting_user.pk:
        actor = require_permission(workspace=membership.workspace, user=acting_user, perm=Perm.MEMBERS_MANAGE)
        _guard_owner_rules(actor=actor, target_role=membership.role)
    _ensure_another_owner(membership)
    audit(
        workspace=membership.workspace,
        actor=acting_user,
        action="member.removed",
        target=membership,
        ip=ip,
        metadata={"email": membership.user.email, "role": membership.role},
    )
    membership.delete()
