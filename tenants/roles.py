"""Workspace roles and what each may do. One table; views and services ask `role_allows`."""

from __future__ import annotations

from django.db import models


class Role(models.TextChoices):
    OWNER = "owner", "Owner"
    ADMIN = "admin", "Admin"
    DEVELOPER = "developer", "Developer"
    FINANCE = "finance", "Finance"
    VIEWER = "viewer", "Viewer"


class Perm(models.TextChoices):
    WORKSPACE_VIEW = "workspace.view"
    WORKSPACE_MANAGE = "workspace.manage"
    MEMBERS_VIEW = "members.view"
    MEMBERS_MANAGE = "members.manage"
    CREDENTIALS_VIEW = "credentials.view"
    CREDENTIALS_MANAGE = "credentials.manage"
    KEYS_VIEW = "keys.view"
    KEYS_MANAGE = "keys.manage"
    BILLING_VIEW = "billing.view"
    BILLING_MANAGE = "billing.manage"
    AUDIT_VIEW = "audit.view"
    USAGE_VIEW = "usage.view"  # analytics and the request log (metadata of every request)
    BODIES_VIEW = "bodies.view"  # stored request and response bodies (prompts and answers)


_ALL = frozenset(Perm)
_READ = frozenset({Perm.WORKSPACE_VIEW, Perm.MEMBERS_VIEW, Perm.KEYS_VIEW, Perm.CREDENTIALS_VIEW, Perm.USAGE_VIEW})

ROLE_PERMISSIONS: dict[str, frozenset[str]] = {
    Role.OWNER: _ALL,
    Role.ADMIN: _ALL,  # admins cannot touch owners; that rule lives in tenants.services
    Role.DEVELOPER: _READ | {Perm.KEYS_MANAGE, Perm.BODIES_VIEW},
    # finance sees usage and money, never provider keys, gateway keys or what was said to a model
    Role.FINANCE: frozenset(
        {
            Perm.WORKSPACE_VIEW,
            Perm.MEMBERS_VIEW,
            Perm.BILLING_VIEW,
            Perm.BILLING_MANAGE,
            Perm.AUDIT_VIEW,
            Perm.USAGE_VIEW,
        }
    ),
    Role.VIEWER: _READ,
}


def role_allows(role: str, perm: str) -> bool:
    return perm in ROLE_PERMISSIONS.get(role, frozenset())
