"""Workspaces: creation (with the owner membership and a fresh data key), renaming, and the operator's
billing settings (plan, managed access); plan changes drop every workspace's cached rates."""

from __future__ import annotations

from typing import Any

from django.db import transaction

from config.errors import ApplicationError
from contracts import crypto
from tenants.cache import invalidate_all_workspaces_on_commit, invalidate_workspace_on_commit
from tenants.keyring import keyring
from tenants.models import Membership, User, Workspace, WorkspaceDataKey
from tenants.roles import Perm, Role
from tenants.services.common import _unique_slug, audit, audit_changes, authorize, operator_metadata


@transaction.atomic
def workspace_create(*, name: str, acting_user: User, ip: str | None = None) -> Workspace:
    name = name.strip()
    if not name:
        raise ApplicationError("A workspace needs a name.")
    if len(name) > 100:
        raise ApplicationError("A workspace name can be at most 100 characters.")
    slug = _unique_slug(name, lambda s: Workspace.objects.filter(slug=s).exists())
    workspace = Workspace.objects.create(name=name, slug=slug, created_by=acting_user)
    Membership.objects.create(workspace=workspace, user=acting_user, role=Role.OWNER)
    key_id, wrapped = crypto.wrap_data_key(
        dek=crypto.new_data_key(), workspace_public_id=str(workspace.public_id), ring=keyring()
    )
    WorkspaceDataKey.objects.create(workspace=workspace, master_key_id=key_id, wrapped_key=wrapped)
    audit(workspace=workspace, actor=acting_user, action="workspace.created", target=workspace, ip=ip)
    return workspace


@transaction.atomic
def workspace_update(
    *, workspace: Workspace, name: str, acting_user: User, operator: bool = False, ip: str | None = None
) -> Workspace:
    extra = authorize(workspace=workspace, acting_user=acting_user, perm=Perm.WORKSPACE_MANAGE, operator=operator)
    name = name.strip()
    if not name or len(name) > 100:
        raise ApplicationError("A workspace name must be 1 to 100 characters.")
    old = workspace.name
    workspace.name = name
    workspace.save(update_fields=["name"])
    audit(
        workspace=workspace,
        actor=acting_user,
        action="workspace.updated",
        target=workspace,
        ip=ip,
        metadata={"name": {"from": old, "to": name}, **extra},
    )
    return workspace


_BILLING_FIELDS = ("plan", "managed_access")


@transaction.atomic
def workspace_billing_update(
    *,
    workspace: Workspace,
    fields: list[str],
    acting_user: User | None = None,
    ip: str | None = None,
) -> Workspace:
    """Save an operator's change to a workspace's plan or managed access (set on the instance, named in
    `fields`), audit it (as the system when `acting_user` is None: management commands), and re-read
    it in the proxy."""
    unknown = set(fields) - set(_BILLING_FIELDS)
    if unknown or not fields:
        raise ApplicationError(f"Only {', '.join(_BILLING_FIELDS)} are billing settings, not {sorted(unknown)}.")
    extra = operator_metadata(acting_user) if acting_user is not None else {"system": True}
    row = Workspace.objects.select_for_update().get(pk=workspace.pk)

    def shown(ws: Workspace) -> dict[str, Any]:
        return {"plan": ws.plan.code if ws.plan else None, "managed_access": ws.managed_access}

    changes = audit_changes(shown(row), shown(workspace))
    workspace.save(update_fields=fields)
    if changes:
        audit(
            workspace=workspace,
            actor=acting_user,
            action="workspace.billing_updated",
            target=workspace,
            ip=ip,
            metadata={"changes": changes, **extra},
        )
    invalidate_workspace_on_commit(workspace.pk)
    return workspace


def plans_changed() -> None:
    """A plan's rates changed (operators): every workspace's cached charge rates are stale."""
    invalidate_all_workspaces_on_commit()
