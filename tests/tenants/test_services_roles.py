"""Who may do what in a workspace (tenants/roles.py, enforced in tenants/services/), the owner rules,
and the invitation flow."""

from __future__ import annotations

import re
import threading
from datetime import timedelta

import pytest
from django.core import mail
from django.db import connection
from django.utils import timezone

from config.errors import ApplicationError, PermissionDenied
from tenants.models import GatewayKey, Invitation, Membership, ProviderCredential, User, Workspace
from tenants.roles import Role
from tenants.services import (
    gateway_key_create,
    gateway_key_revoke,
    invitation_accept,
    invitation_create,
    invitation_for_token,
    invitation_revoke,
    membership_change_role,
    membership_remove,
    provider_credential_create,
    provider_credential_remove,
    provider_credential_rotate,
    workspace_create,
    workspace_update,
)

SECRET = "sk-test-abcdefgh12345678"

# The rule set as a product decision, written independently of tenants/roles.py so a change there that
# hands out a permission by accident fails here.
EVERYONE_WHO_MANAGES = {Role.OWNER, Role.ADMIN}
KEY_MANAGERS = {Role.OWNER, Role.ADMIN, Role.DEVELOPER}
ALLOWED: dict[str, set[str]] = {
    "workspace_update": EVERYONE_WHO_MANAGES,
    "credential_create": EVERYONE_WHO_MANAGES,
    "credential_rotate": EVERYONE_WHO_MANAGES,
    "credential_remove": EVERYONE_WHO_MANAGES,
    "key_create": KEY_MANAGERS,
    "key_revoke": KEY_MANAGERS,
    "invitation_create": EVERYONE_WHO_MANAGES,
    "invitation_revoke": EVERYONE_WHO_MANAGES,
    "membership_change_role": EVERYONE_WHO_MANAGES,
    "membership_remove": EVERYONE_WHO_MANAGES,
}


def _credential(workspace, owner):
    return provider_credential_create(
        workspace=workspace, provider="openai", label="OpenAI", secret=SECRET, acting_user=owner, validate=False
    )


def prepare(action, workspace, owner, actor, add_member):
    """(mutation, did-it-happen check) for `action` performed by `actor`."""
    if action == "workspace_update":
        return (
            lambda: workspace_update(workspace=workspace, name="Renamed", acting_user=actor),
            lambda: Workspace.objects.get(pk=workspace.pk).name == "Renamed",
        )
    if action == "credential_create":
        return (
            lambda: provider_credential_create(
                workspace=workspace, provider="groq", label="Groq", secret=SECRET, acting_user=actor, validate=False
            ),
            lambda: ProviderCredential.objects.filter(workspace=workspace, provider="groq").exists(),
        )
    if action == "credential_rotate":
        credential = _credential(workspace, owner)
        return (
            lambda: provider_credential_rotate(
                credential=credential, secret="sk-test-rotated-9999", acting_user=actor, validate=False
            ),
            lambda: ProviderCredential.objects.get(pk=credential.pk).secret_last4 == "9999",
        )
    if action == "credential_remove":
        credential = _credential(workspace, owner)
        return (
            lambda: provider_credential_remove(credential=credential, acting_user=actor),
            lambda: ProviderCredential.objects.get(pk=credential.pk).removed_at is not None,
        )
    if action == "key_create":
        return (
            lambda: gateway_key_create(workspace=workspace, name="new", acting_user=actor),
            lambda: GatewayKey.objects.filter(workspace=workspace, name="new").exists(),
        )
    if action == "key_revoke":
        key, _ = gateway_key_create(workspace=workspace, name="old", acting_user=owner)
        return (
            lambda: gateway_key_revoke(key=key, acting_user=actor),
            lambda: not GatewayKey.objects.get(pk=key.pk).is_active,
        )
    if action == "invitation_create":
        return (
            lambda: invitation_create(workspace=workspace, email="x@example.com", role=Role.VIEWER, acting_user=actor),
            lambda: Invitation.objects.filter(workspace=workspace, email="x@example.com").exists(),
        )
    if action == "invitation_revoke":
        invitation, _ = invitation_create(
            workspace=workspace, email="y@example.com", role=Role.VIEWER, acting_user=owner
        )
        return (
            lambda: invitation_revoke(invitation=invitation, acting_user=actor),
            lambda: Invitation.objects.get(pk=invitation.pk).revoked_at is not None,
        )
    if action == "membership_change_role":
        target = add_member(workspace, Role.VIEWER)
        return (
            lambda: membership_change_role(membership=target, role=Role.DEVELOPER, acting_user=actor),
            lambda: Membership.objects.get(pk=target.pk).role == Role.DEVELOPER,
        )
    if action == "membership_remove":
        target = add_member(workspace, Role.DEVELOPER)
        return (
            lambda: membership_remove(membership=target, acting_user=actor),
            lambda: not Membership.objects.filter(pk=target.pk).exists(),
        )
    raise AssertionError(action)


@pytest.mark.parametrize("role", [*Role.values, "non-member"])
@pytest.mark.parametrize("action", list(ALLOWED))
def test_role_matrix(action, role, workspace, owner, add_member, make_user, make_workspace):
    if role == "non-member":
        actor = make_user()
        make_workspace(owner=actor)  # an owner elsewhere is nobody here
    else:
        actor = add_member(workspace, role).user
    act, happened = prepare(action, workspace, owner, actor, add_member)

    if role in ALLOWED[action]:
        act()
        assert happened()
    else:
        with pytest.raises(PermissionDenied):
            act()
        assert not happened()


# --- owners --------------------------------------------------------------------------------------------------


@pytest.fixture
def admin(workspace, add_member):
    return add_member(workspace, Role.ADMIN).user


def owner_membership(workspace, owner):
    return Membership.objects.get(workspace=workspace, user=owner)


def test_admin_cannot_demote_or_remove_an_owner(workspace, owner, admin, add_member):
    add_member(workspace, Role.OWNER)  # so "last owner" is not the reason for refusing
    target = owner_membership(workspace, owner)

    with pytest.raises(PermissionDenied, match="owner"):
        membership_change_role(membership=target, role=Role.VIEWER, acting_user=admin)
    with pytest.raises(PermissionDenied, match="owner"):
        membership_remove(membership=target, acting_user=admin)
    assert owner_membership(workspace, owner).role == Role.OWNER


def test_admin_cannot_make_anyone_an_owner(workspace, admin, add_member):
    developer = add_member(workspace, Role.DEVELOPER)
    with pytest.raises(PermissionDenied):
        membership_change_role(membership=developer, role=Role.OWNER, acting_user=admin)
    with pytest.raises(PermissionDenied):
        membership_change_role(membership=Membership.objects.get(user=admin), role=Role.OWNER, acting_user=admin)
    with pytest.raises(PermissionDenied):
        invitation_create(workspace=workspace, email="boss@example.com", role=Role.OWNER, acting_user=admin)
    assert Membership.objects.get(pk=developer.pk).role == Role.DEVELOPER
    assert not Invitation.objects.filter(email="boss@example.com").exists()


def test_admin_can_manage_non_owners(workspace, admin, add_member):
    developer = add_member(workspace, Role.DEVELOPER)
    membership_change_role(membership=developer, role=Role.ADMIN, acting_user=admin)
    assert Membership.objects.get(pk=developer.pk).role == Role.ADMIN
    membership_remove(membership=developer, acting_user=admin)
    assert not Membership.objects.filter(pk=developer.pk).exists()


def test_owner_can_appoint_another_owner_who_can_then_step_the_first_down(workspace, owner, add_member):
    second = add_member(workspace, Role.ADMIN)
    membership_change_role(membership=second, role=Role.OWNER, acting_user=owner)
    membership_change_role(membership=owner_membership(workspace, owner), role=Role.ADMIN, acting_user=second.user)
    assert owner_membership(workspace, owner).role == Role.ADMIN
    assert Membership.objects.get(pk=second.pk).role == Role.OWNER


def test_last_owner_cannot_be_demoted_or_removed(workspace, owner):
    only = owner_membership(workspace, owner)
    with pytest.raises(ApplicationError, match="at least one owner"):
        membership_change_role(membership=only, role=Role.ADMIN, acting_user=owner)
    with pytest.raises(ApplicationError, match="at least one owner"):
        membership_remove(membership=only, acting_user=owner)
    assert owner_membership(workspace, owner).role == Role.OWNER


def test_one_of_two_owners_may_leave(workspace, owner, add_member):
    add_member(workspace, Role.OWNER)
    membership_remove(membership=owner_membership(workspace, owner), acting_user=owner)
    assert not Membership.objects.filter(workspace=workspace, user=owner).exists()
    assert Membership.objects.filter(workspace=workspace, role=Role.OWNER).count() == 1


@pytest.mark.parametrize("role", [Role.ADMIN, Role.DEVELOPER, Role.FINANCE, Role.VIEWER])
def test_any_member_can_leave(workspace, add_member, role):
    membership = add_member(workspace, role)
    membership_remove(membership=membership, acting_user=membership.user)
    assert not Membership.objects.filter(pk=membership.pk).exists()


def test_unknown_role_is_refused(workspace, owner, add_member):
    member = add_member(workspace, Role.VIEWER)
    with pytest.raises(ApplicationError, match="Unknown role"):
        membership_change_role(membership=member, role="superuser", acting_user=owner)
    with pytest.raises(ApplicationError, match="Unknown role"):
        invitation_create(workspace=workspace, email="z@example.com", role="god", acting_user=owner)


# --- invitations -------------------------------------------------------------------------------------------------


def invite(workspace, owner, email="newbie@example.com", role=Role.DEVELOPER):
    return invitation_create(workspace=workspace, email=email, role=role, acting_user=owner)


def test_invitation_email_goes_out_on_commit_and_its_token_works_once(
    workspace, owner, make_user, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        invitation, token = invite(workspace, owner)
        assert mail.outbox == [], "no email before the transaction commits"
    assert callbacks
    for callback in callbacks:
        callback()

    assert len(mail.outbox) == 1
    message = mail.outbox[0]
    assert message.to == ["newbie@example.com"]
    assert "Acme" in message.subject and owner.email in message.subject
    link = re.search(r"https?://\S+/invitations/(\S+)/", message.body)
    assert link and link.group(1) == token
    # Only a hash of the token is stored.
    assert token not in str(Invitation.objects.filter(pk=invitation.pk).values().get())
    assert invitation_for_token(token=token) == invitation

    invitee = make_user("newbie@example.com")
    membership = invitation_accept(token=token, user=invitee)
    assert membership.workspace == workspace and membership.role == Role.DEVELOPER
    invitation.refresh_from_db()
    assert invitation.accepted_at is not None and invitation.accepted_by == invitee
    assert not invitation.is_pending

    with pytest.raises(ApplicationError, match="invalid, expired or already used"):
        invitation_accept(token=token, user=invitee)
    assert Membership.objects.filter(workspace=workspace, user=invitee).count() == 1


def test_email_is_sent_with_execute_true(workspace, owner, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        invite(workspace, owner, email="Mixed@Example.COM", role=Role.VIEWER)
    assert [m.to for m in mail.outbox] == [["mixed@example.com"]]
    assert "Viewer" in mail.outbox[0].body


def test_failed_invitation_sends_no_email(workspace, owner, add_member, django_capture_on_commit_callbacks):
    member = add_member(workspace, Role.VIEWER)
    with django_capture_on_commit_callbacks(execute=True), pytest.raises(ApplicationError, match="already a member"):
        invite(workspace, owner, email=member.user.email.upper())
    assert mail.outbox == []
    assert not Invitation.objects.exists()


def test_expired_invitation_is_refused(workspace, owner, make_user):
    invitation, token = invite(workspace, owner)
    Invitation.objects.filter(pk=invitation.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    with pytest.raises(ApplicationError, match="expired"):
        invitation_accept(token=token, user=make_user("newbie@example.com"))
    assert Membership.objects.filter(workspace=workspace).count() == 1


def test_invitation_for_another_address_is_refused(workspace, owner, make_user):
    _, token = invite(workspace, owner)
    stranger = make_user("stranger@example.com")
    with pytest.raises(PermissionDenied, match=r"newbie@example\.com"):
        invitation_accept(token=token, user=stranger)
    assert not Membership.objects.filter(user=stranger).exists()
    # The rightful invitee can still use it.
    invitation_accept(token=token, user=make_user("newbie@example.com"))


def test_revoked_or_replaced_invitation_no_longer_works(workspace, owner, make_user):
    _, first_token = invite(workspace, owner)
    second, second_token = invite(workspace, owner, role=Role.VIEWER)  # replaces the first
    user = make_user("newbie@example.com")
    with pytest.raises(ApplicationError):
        invitation_accept(token=first_token, user=user)
    invitation_revoke(invitation=second, acting_user=owner)
    with pytest.raises(ApplicationError):
        invitation_accept(token=second_token, user=user)
    with pytest.raises(ApplicationError):
        invitation_accept(token="made-up-token", user=user)
    assert not Membership.objects.filter(user=user).exists()


def test_inviting_an_existing_member_is_refused(workspace, owner):
    with pytest.raises(ApplicationError, match="already a member"):
        invite(workspace, owner, email=owner.email)


@pytest.mark.parametrize("email", ["", "not-an-email", "a" * 250 + "@example.com"])
def test_inviting_an_invalid_address_is_refused(workspace, owner, email):
    with pytest.raises(ApplicationError, match="valid email"):
        invite(workspace, owner, email=email)


# --- under concurrency -------------------------------------------------------------------------------------------


def _at_once(*calls):
    """Run each call in its own thread and database connection, released together; returns the outcomes."""
    barrier = threading.Barrier(len(calls))
    outcomes: list[object] = [None] * len(calls)

    def run(i: int) -> None:
        try:
            barrier.wait(timeout=10)
            outcomes[i] = calls[i]()
        except Exception as exc:
            outcomes[i] = exc
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    return outcomes


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("how", ["both leave", "each demotes the other"])
def test_two_owners_acting_at_once_never_leave_a_workspace_without_owner(how):
    for round_ in range(5):
        first, second = (User.objects.create_user(email=f"o{round_}{n}-{how[0]}@example.com") for n in (1, 2))
        workspace = workspace_create(name=f"Race {round_}", acting_user=first)
        Membership.objects.create(workspace=workspace, user=second, role=Role.OWNER)
        m1, m2 = (Membership.objects.get(workspace=workspace, user=u) for u in (first, second))
        if how == "both leave":
            calls = (
                lambda m1=m1, u=first: membership_remove(membership=m1, acting_user=u),
                lambda m2=m2, u=second: membership_remove(membership=m2, acting_user=u),
            )
        else:
            calls = (
                lambda m2=m2, u=first: membership_change_role(membership=m2, role=Role.ADMIN, acting_user=u),
                lambda m1=m1, u=second: membership_change_role(membership=m1, role=Role.ADMIN, acting_user=u),
            )

        outcomes = _at_once(*calls)

        assert Membership.objects.filter(workspace=workspace, role=Role.OWNER).count() >= 1, outcomes
        refused = [o for o in outcomes if isinstance(o, Exception)]
        assert len(refused) <= 1 and all(isinstance(o, ApplicationError) for o in refused), outcomes
