"""Tenant isolation: every tenant-owned table carries the workspace foreign key, and selectors only ever
find objects through the caller's workspace."""

from __future__ import annotations

import pytest
from django.apps import apps
from django.db import models

from config.errors import NotFound
from tenants.models import Workspace
from tenants.roles import Role
from tenants.selectors import (
    gateway_key_get,
    invitation_get,
    membership_for_user,
    membership_get,
    provider_credential_get,
    provider_credentials_list,
)
from tenants.services import (
    gateway_key_create,
    invitation_create,
    provider_credential_create,
    provider_credential_remove,
)

OUR_PACKAGES = ("tenants", "billing", "proxy", "dashboard")

# Models that legitimately have no workspace foreign key. Each needs a reason; add to this list only
# for data that is not owned by one tenant.
NOT_TENANT_OWNED: dict[str, str] = {
    "tenants.User": "a person can belong to many workspaces (through Membership)",
    "tenants.Workspace": "the tenant itself",
    "billing.ModelPrice": "the published, platform-wide price catalog, the same for every workspace",
    "billing.Plan": "a platform-wide offer configured by operators; workspaces refer to a plan, not own it",
    "tenants.PlatformCredential": "the platform's own provider keys (managed credentials), shared by workspaces",
    "billing.DocumentSequence": "the platform-wide counter of invoice and credit-note numbers per issuing entity",
    "billing.StripeEvent": "Stripe webhook events handled, platform-wide: an event may name no workspace of ours",
    "billing.UsageExportPart": "a slice of one export's file, reached only through its UsageExport (which has "
    "the workspace key) and deleted with it",
    "billing.UsageDeadLetter": "usage entries ingestion could not store, for operators: one may name no known "
    "workspace (undecodable, or a workspace id that does not exist), and its insert must never fail on a key",
}


def our_models() -> list[type[models.Model]]:
    return [m for m in apps.get_models() if m.__module__.split(".")[0] in OUR_PACKAGES]


def has_workspace_fk(model: type[models.Model]) -> bool:
    try:
        field = model._meta.get_field("workspace")
    except Exception:
        return False
    return isinstance(field, models.ForeignKey) and field.related_model is Workspace  # OneToOne is a ForeignKey


def test_every_tenant_table_has_a_workspace_foreign_key():
    checked = our_models()
    assert len(checked) >= 10, "the model scan found suspiciously few models"
    missing = [
        m._meta.label
        for m in checked
        if m._meta.label not in NOT_TENANT_OWNED and not has_workspace_fk(m) and not m._meta.abstract
    ]
    assert not missing, (
        f"{missing} lack a `workspace` ForeignKey to tenants.Workspace. Add one, or add the model to "
        "NOT_TENANT_OWNED with the reason it is not tenant data."
    )


def test_allow_list_is_current():
    labels = {m._meta.label for m in our_models()}
    stale = [label for label in NOT_TENANT_OWNED if label not in labels]
    assert not stale, f"remove {stale} from NOT_TENANT_OWNED: no such model"
    needless = [label for label in NOT_TENANT_OWNED if has_workspace_fk(apps.get_model(label))]
    assert not needless, f"{needless} have a workspace FK; take them off NOT_TENANT_OWNED"
    assert all(reason.strip() for reason in NOT_TENANT_OWNED.values())


def test_the_check_catches_a_model_without_the_key():
    class Unscoped(models.Model):
        name = models.CharField(max_length=10)

        class Meta:
            app_label = "tenants"
            managed = False

        def __str__(self) -> str:
            return self.name

    class Scoped(models.Model):
        workspace = models.OneToOneField(Workspace, on_delete=models.CASCADE, related_name="+")

        class Meta:
            app_label = "tenants"
            managed = False

        def __str__(self) -> str:
            return str(self.workspace_id)

    try:
        assert not has_workspace_fk(Unscoped)
        assert has_workspace_fk(Scoped)
    finally:
        for model in (Unscoped, Scoped):
            apps.all_models["tenants"].pop(model._meta.model_name, None)
        apps.clear_cache()


# --- selectors -------------------------------------------------------------------------------------------------


@pytest.fixture
def two_tenants(make_workspace, make_user, add_member):
    alice, bob = make_user("alice@example.com"), make_user("bob@example.com")
    ws_a, ws_b = make_workspace(name="A", owner=alice), make_workspace(name="B", owner=bob)
    b_credential = provider_credential_create(
        workspace=ws_b, provider="openai", label="B key", secret="sk-bbbbbbbbbbbb", acting_user=bob, validate=False
    )
    b_key, _ = gateway_key_create(workspace=ws_b, name="B key", acting_user=bob)
    b_member = add_member(ws_b, Role.VIEWER)
    b_invitation, _ = invitation_create(workspace=ws_b, email="guest@example.com", role=Role.VIEWER, acting_user=bob)
    return {
        "a": ws_a,
        "b": ws_b,
        "bob": bob,
        "credential": b_credential,
        "key": b_key,
        "member": b_member,
        "invitation": b_invitation,
    }


def test_objects_of_another_workspace_are_not_found(two_tenants):
    a, b = two_tenants["a"], two_tenants["b"]
    lookups = [
        (provider_credential_get, "public_id", two_tenants["credential"].public_id),
        (gateway_key_get, "public_id", two_tenants["key"].public_id),
        (membership_get, "membership_id", two_tenants["member"].pk),
        (invitation_get, "invitation_id", two_tenants["invitation"].pk),
    ]
    for selector, arg, value in lookups:
        # Found in its own workspace (so the NotFound below is about isolation, not a bad id)...
        assert selector(workspace=b, **{arg: value}).workspace == b
        assert selector(workspace=b, **{arg: str(value)}).workspace == b
        # ...and not found from another.
        with pytest.raises(NotFound):
            selector(workspace=a, **{arg: value})


def test_a_non_member_cannot_tell_a_workspace_exists(two_tenants, make_user):
    with pytest.raises(NotFound):
        membership_for_user(user=make_user(), workspace_slug=two_tenants["b"].slug)
    with pytest.raises(NotFound):
        membership_for_user(user=two_tenants["bob"], workspace_slug="no-such-workspace")
    assert membership_for_user(user=two_tenants["bob"], workspace_slug=two_tenants["b"].slug).role == Role.OWNER


def test_removed_credential_is_not_found_or_listed(two_tenants):
    b, credential = two_tenants["b"], two_tenants["credential"]
    provider_credential_remove(credential=credential, acting_user=two_tenants["bob"])
    with pytest.raises(NotFound):
        provider_credential_get(workspace=b, public_id=credential.public_id)
    assert credential not in provider_credentials_list(workspace=b)


MALFORMED = ["", "   ", "not-an-id", "1; DROP TABLE tenants_user", "../1", None, "1.5", "-", "0x10"]


@pytest.mark.parametrize(
    "value", [*MALFORMED, "6f1c7a52-8d3e-4b7a-9c1e-2f3a4b5c6d7e", "12345678123456781234567812345678" * 2]
)
@pytest.mark.parametrize("selector,arg", [(provider_credential_get, "public_id"), (gateway_key_get, "public_id")])
def test_malformed_or_unknown_public_ids_are_not_found(two_tenants, selector, arg, value):
    with pytest.raises(NotFound):
        selector(workspace=two_tenants["b"], **{arg: value})


@pytest.mark.parametrize("value", [*MALFORMED, "0", "-1", "999999999", "99999999999999999999999999"])
@pytest.mark.parametrize("selector,arg", [(membership_get, "membership_id"), (invitation_get, "invitation_id")])
def test_malformed_or_unknown_integer_ids_are_not_found(two_tenants, selector, arg, value):
    with pytest.raises(NotFound):
        selector(workspace=two_tenants["b"], **{arg: value})
