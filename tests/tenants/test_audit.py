"""Every sensitive change leaves exactly one audit row, written in the same transaction as the change,
and no audit row ever holds a secret."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from django.db import DatabaseError

from config.errors import ApplicationError, PermissionDenied
from tenants.models import AuditLog, GatewayKey, Membership, ProviderCredential, User, Workspace
from tenants.roles import Role
from tenants.selectors import audit_log_list
from tenants.services import (
    gateway_key_create,
    gateway_key_revoke,
    invitation_accept,
    invitation_create,
    invitation_revoke,
    membership_change_role,
    membership_remove,
    provider_credential_create,
    provider_credential_remove,
    provider_credential_rotate,
    workspace_update,
)

IP = "203.0.113.7"
SECRET = "sk-live-8Hq2Lm0Vb7Xc4Nz1Rt6Yw3Pa5Sd9Fg"
NEW_SECRET = "sk-live-2Wq9Er8Ty7Ui6Op5As4Df3Gh2Jk1Lz"


@dataclass
class Ctx:
    workspace: Workspace
    owner: User
    add_member: Callable[..., Membership]
    make_user: Callable[..., User]

    def credential(self) -> ProviderCredential:
        return provider_credential_create(
            workspace=self.workspace,
            provider="openai",
            label="OpenAI",
            secret=SECRET,
            acting_user=self.owner,
            validate=False,
        )


def target_of(obj: Any) -> tuple[str, str]:
    return type(obj).__name__, str(getattr(obj, "public_id", obj.pk))


# Each scenario prepares what it needs and returns (the mutation, who performs it, expected metadata subset).
# The mutation returns the (target type, target id) the audit row must name.
Scenario = Callable[[Ctx], tuple[Callable[[], tuple[str, str]], User, dict[str, Any]]]


def s_workspace_updated(ctx: Ctx):
    def act():
        return target_of(workspace_update(workspace=ctx.workspace, name="Renamed", acting_user=ctx.owner, ip=IP))

    return act, ctx.owner, {"name": {"from": "Acme", "to": "Renamed"}}


def s_credential_created(ctx: Ctx):
    def act():
        return target_of(
            provider_credential_create(
                workspace=ctx.workspace,
                provider="openai",
                label="OpenAI",
                secret=SECRET,
                acting_user=ctx.owner,
                validate=False,
                ip=IP,
            )
        )

    return act, ctx.owner, {"provider": "openai"}


def s_credential_rotated(ctx: Ctx):
    credential = ctx.credential()

    def act():
        return target_of(
            provider_credential_rotate(
                credential=credential, secret=NEW_SECRET, acting_user=ctx.owner, validate=False, ip=IP
            )
        )

    return act, ctx.owner, {"from_last4": SECRET[-4:], "to_last4": NEW_SECRET[-4:]}


def s_credential_removed(ctx: Ctx):
    credential = ctx.credential()
    admin = ctx.add_member(ctx.workspace, Role.ADMIN).user

    def act():
        provider_credential_remove(credential=credential, acting_user=admin, ip=IP)
        return target_of(credential)

    return act, admin, {}


def s_key_created(ctx: Ctx):
    developer = ctx.add_member(ctx.workspace, Role.DEVELOPER).user

    def act():
        key, _ = gateway_key_create(workspace=ctx.workspace, name="ci", acting_user=developer, ip=IP)
        return target_of(key)

    return act, developer, {"expires_at": None}


def s_key_revoked(ctx: Ctx):
    key, _ = gateway_key_create(workspace=ctx.workspace, name="ci", acting_user=ctx.owner)

    def act():
        return target_of(gateway_key_revoke(key=key, acting_user=ctx.owner, ip=IP))

    return act, ctx.owner, {}


def s_member_invited(ctx: Ctx):
    def act():
        invitation, _ = invitation_create(
            workspace=ctx.workspace, email="new@example.com", role=Role.FINANCE, acting_user=ctx.owner, ip=IP
        )
        return target_of(invitation)

    return act, ctx.owner, {"email": "new@example.com", "role": "finance"}


def s_member_role_changed(ctx: Ctx):
    membership = ctx.add_member(ctx.workspace, Role.VIEWER)

    def act():
        return target_of(
            membership_change_role(membership=membership, role=Role.DEVELOPER, acting_user=ctx.owner, ip=IP)
        )

    return act, ctx.owner, {"email": membership.user.email, "from": "viewer", "to": "developer"}


def s_member_removed(ctx: Ctx):
    membership = ctx.add_member(ctx.workspace, Role.DEVELOPER)
    target = target_of(membership)

    def act():
        membership_remove(membership=membership, acting_user=ctx.owner, ip=IP)
        return target

    return act, ctx.owner, {"email": membership.user.email, "role": "developer"}


def s_invitation_revoked(ctx: Ctx):
    invitation, _ = invitation_create(
        workspace=ctx.workspace, email="later@example.com", role=Role.VIEWER, acting_user=ctx.owner
    )

    def act():
        invitation_revoke(invitation=invitation, acting_user=ctx.owner, ip=IP)
        return target_of(invitation)

    return act, ctx.owner, {"email": "later@example.com"}


def s_invitation_accepted(ctx: Ctx):
    invitee = ctx.make_user("joiner@example.com")
    _, token = invitation_create(workspace=ctx.workspace, email=invitee.email, role=Role.ADMIN, acting_user=ctx.owner)

    def act():
        return target_of(invitation_accept(token=token, user=invitee, ip=IP))

    return act, invitee, {"role": "admin"}


SCENARIOS: dict[str, Scenario] = {
    "workspace.updated": s_workspace_updated,
    "credential.created": s_credential_created,
    "credential.rotated": s_credential_rotated,
    "credential.removed": s_credential_removed,
    "key.created": s_key_created,
    "key.revoked": s_key_revoked,
    "member.invited": s_member_invited,
    "member.role_changed": s_member_role_changed,
    "member.removed": s_member_removed,
    "member.invitation_revoked": s_invitation_revoked,
    "member.joined": s_invitation_accepted,
}


@pytest.fixture
def ctx(workspace, owner, add_member, make_user) -> Ctx:
    return Ctx(workspace=workspace, owner=owner, add_member=add_member, make_user=make_user)


@pytest.mark.parametrize("action", list(SCENARIOS))
def test_sensitive_mutation_writes_exactly_one_audit_row(ctx, action):
    act, actor, metadata = SCENARIOS[action](ctx)
    before = set(AuditLog.objects.values_list("pk", flat=True))

    target_type, target_id = act()

    rows = list(AuditLog.objects.exclude(pk__in=before))
    assert len(rows) == 1, [r.action for r in rows]
    row = rows[0]
    assert row.action == action
    assert row.workspace_id == ctx.workspace.pk
    assert row.actor == actor and row.actor_email == actor.email
    assert (row.target_type, row.target_id) == (target_type, target_id)
    assert row.target_repr
    assert row.ip_address == IP
    assert metadata.items() <= row.metadata.items()
    assert audit_log_list(workspace=ctx.workspace)[0] == row  # newest first, in the workspace's own log


def test_audit_rows_never_contain_a_secret_or_token(ctx, make_workspace):
    credential = ctx.credential()
    provider_credential_rotate(credential=credential, secret=NEW_SECRET, acting_user=ctx.owner, validate=False)
    provider_credential_remove(credential=credential, acting_user=ctx.owner)
    _, key_plain = gateway_key_create(workspace=ctx.workspace, name="k", acting_user=ctx.owner)
    invitee = ctx.make_user("in@example.com")
    _, token = invitation_create(workspace=ctx.workspace, email=invitee.email, role=Role.VIEWER, acting_user=ctx.owner)
    invitation_accept(token=token, user=invitee)

    rows = list(AuditLog.objects.filter(workspace=ctx.workspace))
    assert {r.action for r in rows} >= {"credential.created", "credential.rotated", "credential.removed", "key.created"}
    for row in rows:
        text = " ".join([row.target_repr, row.target_id, row.target_type, json.dumps(row.metadata)])
        for needle in (SECRET, NEW_SECRET, SECRET[:-4], NEW_SECRET[:-4], key_plain, key_plain[-20:], token):
            assert needle not in text, (row.action, needle)


def test_failed_change_leaves_no_audit_row(ctx):
    viewer = ctx.add_member(ctx.workspace, Role.VIEWER).user
    before = AuditLog.objects.count()

    with pytest.raises(PermissionDenied):
        gateway_key_create(workspace=ctx.workspace, name="nope", acting_user=viewer)
    owner_membership = Membership.objects.get(workspace=ctx.workspace, user=ctx.owner)
    with pytest.raises(ApplicationError, match="at least one owner"):
        membership_remove(membership=owner_membership, acting_user=ctx.owner)
    with pytest.raises(ApplicationError):
        workspace_update(workspace=ctx.workspace, name="  ", acting_user=ctx.owner)

    assert AuditLog.objects.count() == before
    assert Membership.objects.filter(pk=owner_membership.pk).exists()


def test_change_is_undone_when_its_audit_row_cannot_be_written(ctx):
    """The audit row and the change commit together: if the audit insert fails, the key stays active."""
    key, _ = gateway_key_create(workspace=ctx.workspace, name="ci", acting_user=ctx.owner)

    with pytest.raises((DatabaseError, ValueError)):  # refused by the driver or by Postgres
        gateway_key_revoke(key=key, acting_user=ctx.owner, ip="not-an-ip-address")

    row = GatewayKey.objects.get(pk=key.pk)
    assert row.revoked_at is None and row.is_active
    assert not AuditLog.objects.filter(action="key.revoked").exists()


def test_credential_failing_its_live_check_leaves_neither_credential_nor_audit_row(ctx, fake_provider_url):
    before = AuditLog.objects.count()
    with pytest.raises(ApplicationError):
        provider_credential_create(
            workspace=ctx.workspace,
            provider="openai_compatible",
            label="Local",
            base_url=f"{fake_provider_url}/v1",
            secret="sk-not-a-fake-key-123456",
            acting_user=ctx.owner,
            ip=IP,
        )
    assert not ProviderCredential.objects.filter(workspace=ctx.workspace).exists()
    assert AuditLog.objects.count() == before


def test_audit_row_keeps_the_actor_email_after_the_user_is_deleted(ctx):
    admin = ctx.add_member(ctx.workspace, Role.ADMIN).user
    key, _ = gateway_key_create(workspace=ctx.workspace, name="ci", acting_user=admin)
    email = admin.email
    admin.delete()

    row = AuditLog.objects.get(action="key.created", target_id=str(key.public_id))
    assert row.actor is None and row.actor_email == email


def test_a_workspace_sees_only_its_own_audit_log(ctx, make_workspace, make_user):
    other_owner = make_user()
    other = make_workspace(owner=other_owner)
    gateway_key_create(workspace=other, name="theirs", acting_user=other_owner)
    gateway_key_create(workspace=ctx.workspace, name="ours", acting_user=ctx.owner)

    ours = list(audit_log_list(workspace=ctx.workspace))
    assert ours and all(row.workspace_id == ctx.workspace.pk for row in ours)
    assert "theirs" not in " ".join(row.target_repr for row in ours)
