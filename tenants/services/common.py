"""What every tenants service (and billing.services) shares: the audit row, the permission check (a
member's role, or the operator path), the audit diff of changed fields, and unique slugs."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.utils.text import slugify

from config.errors import PermissionDenied
from tenants.models import AuditLog, Membership, User, Workspace
from tenants.roles import role_allows


def audit(
    *,
    workspace: Workspace | None,
    actor: User | None,
    action: str,
    target: Any = None,
    ip: str | None = None,
    metadata: dict[str, Any] | None = None,
) -> AuditLog:
    """Record a sensitive mutation. Call inside the transaction that makes the change. `workspace` is
    None only for platform-wide changes (plans, managed credentials)."""
    return AuditLog.objects.create(
        workspace=workspace,
        actor=actor,
        actor_email=getattr(actor, "email", "") or "",
        action=action,
        target_type=type(target).__name__ if target is not None else "",
        target_id=str(getattr(target, "public_id", getattr(target, "pk", ""))) if target is not None else "",
        target_repr=str(target)[:200] if target is not None else "",
        ip_address=ip or None,
        metadata=metadata or {},
    )


def require_permission(*, workspace: Workspace, user: User, perm: str) -> Membership:
    """The acting user's membership, if their role allows `perm` in this workspace."""
    membership = Membership.objects.filter(workspace=workspace, user=user).first()
    if membership is None or not role_allows(membership.role, perm):
        raise PermissionDenied("You do not have permission to do that in this workspace.")
    return membership


def operator_metadata(acting_user: User) -> dict[str, Any]:
    """The operator path: only active platform staff may take it; returns what the audit row adds."""
    if not (acting_user.is_active and acting_user.is_staff):
        raise PermissionDenied("Only platform operators can do that.")
    return {"operator": True}


def authorize(*, workspace: Workspace, acting_user: User, perm: str, operator: bool = False) -> dict[str, Any]:
    """A member whose role allows `perm`, or (operator=True) platform staff. Returns audit metadata."""
    if operator:
        return operator_metadata(acting_user)
    require_permission(workspace=workspace, user=acting_user, perm=perm)
    return {}


def audit_changes(before: dict[str, Any], after: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """{field: {"from": old, "to": new}} for the fields whose value differs (values as JSON-safe text)."""

    def shown(value: Any) -> Any:
        if isinstance(value, datetime):
            return value.isoformat()
        return value if value is None or isinstance(value, bool | int | str | list) else str(value)

    return {
        name: {"from": shown(before[name]), "to": shown(after[name])} for name in after if before[name] != after[name]
    }


def _unique_slug(base: str, taken: Any, *, max_length: int = 50) -> str:
    root = (slugify(base) or "workspace")[:max_length]
    candidate, n = root, 1
    while taken(candidate):
        n += 1
        candidate = f"{root[: max_length - len(str(n)) - 1]}-{n}"
    return candidate
