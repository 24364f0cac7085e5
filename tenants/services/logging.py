"""The request log's opt-in for stored bodies: the workspace's switch and retention, and a key's override
(inherit / on / off). Only members who may manage the workspace change them; each change is audited and
drops the proxy's cached workspace or key document once committed (tenants.cache), so the proxy stores, or
stops storing, bodies within a second."""

from __future__ import annotations

from django.db import transaction

from config.errors import ApplicationError
from tenants.cache import invalidate_key_on_commit, invalidate_workspace_on_commit
from tenants.models import GatewayKey, User, Workspace
from tenants.roles import Perm
from tenants.services.common import audit, audit_changes, authorize

MIN_BODY_RETENTION_DAYS = 1
MAX_BODY_RETENTION_DAYS = 365


@transaction.atomic
def workspace_logging_update(
    *,
    workspace: Workspace,
    log_bodies: bool,
    body_retention_days: int,
    acting_user: User,
    operator: bool = False,
    ip: str | None = None,
) -> Workspace:
    """Turn stored bodies on or off for the workspace and set how many days they are kept (1-365)."""
    extra = authorize(workspace=workspace, acting_user=acting_user, perm=Perm.WORKSPACE_MANAGE, operator=operator)
    if (
        not isinstance(body_retention_days, int)
        or isinstance(body_retention_days, bool)
        or not MIN_BODY_RETENTION_DAYS <= body_retention_days <= MAX_BODY_RETENTION_DAYS
    ):
        raise ApplicationError(
            f"Bodies are kept {MIN_BODY_RETENTION_DAYS} to {MAX_BODY_RETENTION_DAYS} days.",
            extra={"field": "body_retention_days"},
        )
    row = Workspace.objects.select_for_update().get(pk=workspace.pk)
    changes = audit_changes(
        {"log_bodies": row.log_bodies, "body_retention_days": row.body_retention_days},
        {"log_bodies": bool(log_bodies), "body_retention_days": body_retention_days},
    )
    if not changes:
        return row
    row.log_bodies, row.body_retention_days = bool(log_bodies), body_retention_days
    row.save(update_fields=["log_bodies", "body_retention_days"])
    workspace.log_bodies, workspace.body_retention_days = row.log_bodies, row.body_retention_days
    audit(
        workspace=row,
        actor=acting_user,
        action="workspace.logging_updated",
        target=row,
        ip=ip,
        metadata={"changes": changes, **extra},
    )
    invalidate_workspace_on_commit(row.pk)
    return row


@transaction.atomic
def gateway_key_logging_update(
    *, key: GatewayKey, log_bodies: bool | None, acting_user: User, operator: bool = False, ip: str | None = None
) -> GatewayKey:
    """A key's override: True / False store or never store its requests' bodies; None: as the workspace says."""
    extra = authorize(workspace=key.workspace, acting_user=acting_user, perm=Perm.WORKSPACE_MANAGE, operator=operator)
    if log_bodies is not None and not isinstance(log_bodies, bool):
        raise ApplicationError("A key's body logging is on, off or as the workspace says.")
    row = GatewayKey.objects.select_for_update().get(pk=key.pk)
    changes = audit_changes({"log_bodies": row.log_bodies}, {"log_bodies": log_bodies})
    if not changes:
        return row
    row.log_bodies = log_bodies
    row.save(update_fields=["log_bodies"])
    key.log_bodies = log_bodies
    audit(
        workspace=row.workspace,
        actor=acting_user,
        action="key.logging_updated",
        target=row,
        ip=ip,
        metadata={"changes": changes, **extra},
    )
    invalidate_key_on_commit(row.key_hash)
    return row
