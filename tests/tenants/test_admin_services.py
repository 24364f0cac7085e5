"""Operators in Django admin change keys, credentials, workspace prices, plans and managed credentials
through the same audited services as the dashboard: each change writes an audit row naming the
operator, and once it commits the proxy's cached document in Redis is no longer the stale one.

Driven through the real admin with the test client, against real Postgres and Redis; transactional,
so invalidation runs on a real commit."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
import redis
from django.test import override_settings

from billing.models import Plan, WorkspaceModelPrice
from config.errors import PermissionDenied
from contracts.cachekeys import key_doc_key, workspace_doc_key
from tenants.models import AuditLog, GatewayKey, PlatformCredential, ProviderCredential, User, Workspace
from tenants.selectors import audit_log_list
from tenants.services import gateway_key_create, gateway_key_revoke, provider_credential_create

pytestmark = pytest.mark.django_db(transaction=True)

OPERATOR_IP = "192.0.2.44"
STALE = b'{"stale": true}'
SECRET = "fake-byok-secret-for-admin-tests-1234"
MANAGED_SECRET = "fake-managed-secret-admin-5678"


@pytest.fixture
def operator(db) -> User:
    return User.objects.create_superuser(email="ops@turnpike.test", password="operator-password-1")


@pytest.fixture
def admin_client(client, operator):
    client.force_login(operator)
    return client


@pytest.fixture
def key(workspace, owner) -> GatewayKey:
    key, _ = gateway_key_create(workspace=workspace, name="ci", acting_user=owner, allowed_models=["openai/*"])
    return key


@pytest.fixture
def credential(workspace, owner, fake_provider_url) -> ProviderCredential:
    return provider_credential_create(
        workspace=workspace,
        provider="openai_compatible",
        label="Local",
        base_url=f"{fake_provider_url}/v1",
        secret=SECRET,
        acting_user=owner,
        validate=False,
    )


def stale(r: redis.Redis, name: str) -> str:
    """Put a document the proxy could have cached before the change."""
    r.set(name, STALE, ex=300)
    return name


def only_new_row(before: set[int]) -> AuditLog:
    rows = list(AuditLog.objects.exclude(pk__in=before))
    assert len(rows) == 1, [row.action for row in rows]
    return rows[0]


def audit_ids() -> set[int]:
    return set(AuditLog.objects.values_list("pk", flat=True))


def assert_by_operator(row: AuditLog, operator: User, action: str) -> None:
    assert row.action == action
    assert row.actor == operator and row.actor_email == operator.email
    assert row.metadata.get("operator") is True
    assert row.ip_address == OPERATOR_IP


def key_form(key: GatewayKey, **changes: str) -> dict[str, str]:
    return {
        "name": key.name,
        "expires_at_0": "",
        "expires_at_1": "",
        "allowed_models": json.dumps(key.allowed_models),
        **changes,
    }


# --- gateway keys ----------------------------------------------------------------------------------------


def test_operator_edits_a_keys_allowed_models(admin_client, operator, key, workspace, r):
    doc = stale(r, key_doc_key(key.key_hash))
    before = audit_ids()

    response = admin_client.post(
        f"/admin/tenants/gatewaykey/{key.pk}/change/",
        key_form(key, allowed_models='["anthropic/*", "openai/gpt-4o-mini"]'),
        REMOTE_ADDR=OPERATOR_IP,
    )

    assert response.status_code == 302, response.content.decode()[:2000]
    key.refresh_from_db()
    assert key.allowed_models == ["anthropic/*", "openai/gpt-4o-mini"]
    row = only_new_row(before)
    assert_by_operator(row, operator, "key.updated")
    assert row.workspace_id == workspace.pk
    assert row.metadata["changes"]["allowed_models"] == {
        "from": ["openai/*"],
        "to": ["anthropic/*", "openai/gpt-4o-mini"],
    }
    assert audit_log_list(workspace=workspace)[0] == row  # the tenant sees who changed its key
    assert r.get(doc) != STALE


def test_a_refused_key_edit_is_shown_on_the_field_and_changes_nothing(admin_client, key, r):
    doc = stale(r, key_doc_key(key.key_hash))
    before = audit_ids()

    response = admin_client.post(
        f"/admin/tenants/gatewaykey/{key.pk}/change/", key_form(key, allowed_models='["open ai/*"]')
    )

    assert response.status_code == 200
    assert "allowed_models" in response.context["adminform"].form.errors
    key.refresh_from_db()
    assert key.allowed_models == ["openai/*"]
    assert audit_ids() == before
    assert r.get(doc) == STALE  # nothing committed, nothing invalidated


def test_operator_revokes_a_key(admin_client, operator, key, r):
    doc = stale(r, key_doc_key(key.key_hash))
    before = audit_ids()

    response = admin_client.post(
        "/admin/tenants/gatewaykey/",
        {"action": "revoke", "_selected_action": [str(key.pk)]},
        REMOTE_ADDR=OPERATOR_IP,
    )

    assert response.status_code == 302
    key.refresh_from_db()
    assert key.revoked_at is not None and key.revoked_by == operator and not key.is_active
    assert_by_operator(only_new_row(before), operator, "key.revoked")
    assert r.get(doc) != STALE


def test_keys_and_credentials_cannot_be_deleted_in_admin(admin_client, key, credential):
    for model, pk in (("gatewaykey", key.pk), ("providercredential", credential.pk)):
        page = admin_client.get(f"/admin/tenants/{model}/{pk}/change/")
        assert page.status_code == 200
        assert f"/admin/tenants/{model}/{pk}/delete/" not in page.content.decode()
        assert admin_client.post(f"/admin/tenants/{model}/{pk}/delete/", {"post": "yes"}).status_code == 403
        listing = admin_client.get(f"/admin/tenants/{model}/")
        actions = [name for name, _ in listing.context["action_form"].fields["action"].choices]
        assert "delete_selected" not in actions
    assert GatewayKey.objects.filter(pk=key.pk).exists()
    assert ProviderCredential.objects.filter(pk=credential.pk).exists()


def test_operator_path_needs_platform_staff(key, make_user):
    outsider = make_user()
    with pytest.raises(PermissionDenied):
        gateway_key_revoke(key=key, acting_user=outsider, operator=True)
    key.refresh_from_db()
    assert key.revoked_at is None


# --- provider credentials ----------------------------------------------------------------------------------------


def credential_form(credential: ProviderCredential, **changes: str) -> dict[str, str]:
    return {"label": credential.label, "base_url": credential.base_url, **changes}


@override_settings(TURNPIKE_ALLOW_PRIVATE_PROVIDER_URLS=False)
def test_an_internal_base_url_is_refused_in_admin(admin_client, credential, workspace, r):
    doc = stale(r, workspace_doc_key(workspace.pk))
    before = audit_ids()
    original = credential.base_url

    response = admin_client.post(
        f"/admin/tenants/providercredential/{credential.pk}/change/",
        credential_form(credential, base_url="http://10.0.0.7/v1"),
    )

    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert "internal address" in " ".join(errors.get("base_url", [])), errors
    credential.refresh_from_db()
    assert credential.base_url == original
    assert audit_ids() == before
    assert r.get(doc) == STALE


def test_operator_changes_a_credentials_base_url(admin_client, operator, credential, workspace, fake_provider_url, r):
    doc = stale(r, workspace_doc_key(workspace.pk))
    before = audit_ids()
    new_url = f"{fake_provider_url}/v1/"  # normalised by the SSRF guard

    response = admin_client.post(
        f"/admin/tenants/providercredential/{credential.pk}/change/",
        credential_form(credential, base_url=new_url.replace("127.0.0.1", "localhost"), label="Local GPU"),
        REMOTE_ADDR=OPERATOR_IP,
    )

    assert response.status_code == 302, response.content.decode()[:2000]
    credential.refresh_from_db()
    assert credential.label == "Local GPU"
    assert credential.base_url == f"{fake_provider_url}/v1".replace("127.0.0.1", "localhost")
    assert credential.slug == "local"  # clients' model names keep working
    row = only_new_row(before)
    assert_by_operator(row, operator, "credential.updated")
    assert row.workspace_id == workspace.pk
    assert set(row.metadata["changes"]) == {"label", "base_url"}
    assert r.get(doc) != STALE


def test_operator_removes_a_credential(admin_client, operator, credential, workspace, r):
    doc = stale(r, workspace_doc_key(workspace.pk))
    before = audit_ids()

    response = admin_client.post(
        "/admin/tenants/providercredential/",
        {"action": "remove", "_selected_action": [str(credential.pk)]},
        REMOTE_ADDR=OPERATOR_IP,
    )

    assert response.status_code == 302
    credential.refresh_from_db()
    assert credential.removed_at is not None and bytes(credential.secret_ciphertext) == b""
    assert_by_operator(only_new_row(before), operator, "credential.removed")
    assert r.get(doc) != STALE


# --- workspace prices ---------------------------------------------------------------------------------------------


def price_form(workspace: Workspace, **changes: str) -> dict[str, str]:
    return {
        "workspace": str(workspace.pk),
        "provider": "local",
        "model": "llama-3-8b",
        "input_usd_per_mtok": "0.10",
        "cached_input_usd_per_mtok": "",
        "cache_write_usd_per_mtok": "",
        "output_usd_per_mtok": "0.20",
        "reasoning_usd_per_mtok": "",
        "request_fee_usd": "0",
        **changes,
    }


def test_operator_creates_changes_and_deletes_a_workspace_price(admin_client, operator, workspace, r):
    doc = workspace_doc_key(workspace.pk)

    stale(r, doc)
    before = audit_ids()
    created = admin_client.post(
        "/admin/billing/workspacemodelprice/add/", price_form(workspace), REMOTE_ADDR=OPERATOR_IP
    )
    assert created.status_code == 302, created.content.decode()[:2000]
    price = WorkspaceModelPrice.objects.get(workspace=workspace)
    row = only_new_row(before)
    assert_by_operator(row, operator, "price.created")
    assert row.workspace_id == workspace.pk
    assert r.get(doc) != STALE

    stale(r, doc)
    before = audit_ids()
    changed = admin_client.post(
        f"/admin/billing/workspacemodelprice/{price.pk}/change/",
        price_form(workspace, output_usd_per_mtok="0.35"),
        REMOTE_ADDR=OPERATOR_IP,
    )
    assert changed.status_code == 302, changed.content.decode()[:2000]
    price.refresh_from_db()
    assert price.output_usd_per_mtok == Decimal("0.35")
    row = only_new_row(before)
    assert_by_operator(row, operator, "price.updated")
    assert row.metadata["changes"] == {"output_usd_per_mtok": {"from": "0.200000000", "to": "0.35"}}
    assert r.get(doc) != STALE

    stale(r, doc)
    before = audit_ids()
    deleted = admin_client.post(
        f"/admin/billing/workspacemodelprice/{price.pk}/delete/", {"post": "yes"}, REMOTE_ADDR=OPERATOR_IP
    )
    assert deleted.status_code == 302
    assert not WorkspaceModelPrice.objects.filter(workspace=workspace).exists()
    assert_by_operator(only_new_row(before), operator, "price.deleted")
    assert r.get(doc) != STALE


def test_a_negative_price_is_refused_on_its_field(admin_client, workspace):
    response = admin_client.post(
        "/admin/billing/workspacemodelprice/add/", price_form(workspace, input_usd_per_mtok="-1")
    )
    assert response.status_code == 200
    assert "input_usd_per_mtok" in response.context["adminform"].form.errors
    assert not WorkspaceModelPrice.objects.exists()


# --- plans and managed credentials (platform-wide) ------------------------------------------------------------------


def plan_form(**changes: str) -> dict[str, str]:
    return {"code": "pro", "name": "Pro", "byok_fee_rate": "0.05", "managed_markup_rate": "0.25", **changes}


def test_operator_creates_changes_and_deletes_a_plan(admin_client, operator, make_workspace, r):
    workspaces = [make_workspace(), make_workspace()]
    docs = [workspace_doc_key(ws.pk) for ws in workspaces]

    before = audit_ids()
    assert admin_client.post("/admin/billing/plan/add/", plan_form(), REMOTE_ADDR=OPERATOR_IP).status_code == 302
    plan = Plan.objects.get(code="pro")
    row = only_new_row(before)
    assert_by_operator(row, operator, "plan.created")
    assert row.workspace is None  # platform-wide: in no tenant's log

    for doc in docs:
        stale(r, doc)
    before = audit_ids()
    changed = admin_client.post(
        f"/admin/billing/plan/{plan.pk}/change/", plan_form(byok_fee_rate="0.5"), REMOTE_ADDR=OPERATOR_IP
    )
    assert changed.status_code == 302, changed.content.decode()[:2000]
    plan.refresh_from_db()
    assert plan.byok_fee_rate == Decimal("0.5")
    row = only_new_row(before)
    assert_by_operator(row, operator, "plan.updated")
    assert row.workspace is None
    assert row.metadata["changes"] == {"byok_fee_rate": {"from": "0.050000", "to": "0.5"}}
    for doc in docs:  # every workspace's cached charge rates are dropped
        assert r.get(doc) != STALE
    for ws in workspaces:
        assert not [entry for entry in audit_log_list(workspace=ws) if entry.action.startswith("plan.")]

    before = audit_ids()
    deleted = admin_client.post(f"/admin/billing/plan/{plan.pk}/delete/", {"post": "yes"}, REMOTE_ADDR=OPERATOR_IP)
    assert deleted.status_code == 302
    assert not Plan.objects.filter(pk=plan.pk).exists()
    assert_by_operator(only_new_row(before), operator, "plan.deleted")


def test_a_refused_plan_is_shown_on_the_form_and_not_saved(admin_client, standard_plans):
    assert Plan.objects.filter(is_default=True).exists()  # Free BYOK, from migration 0006
    before = audit_ids()
    for form, field in (
        (plan_form(is_default="on"), None),
        (plan_form(managed_markup_rate="-0.1"), "managed_markup_rate"),
    ):
        response = admin_client.post("/admin/billing/plan/add/", form)
        assert response.status_code == 200
        errors = response.context["adminform"].form.errors
        assert errors and (field is None or field in errors), errors
    assert not Plan.objects.filter(code="pro").exists()
    assert audit_ids() == before


def test_operator_moves_a_workspace_to_a_plan(admin_client, operator, workspace, owner, r):
    plan = Plan.objects.create(code="enterprise", name="Enterprise", managed_markup_rate=Decimal("0.1"))
    doc = stale(r, workspace_doc_key(workspace.pk))
    before = audit_ids()

    response = admin_client.post(
        f"/admin/tenants/workspace/{workspace.pk}/change/",
        {
            "name": "Acme Corp",
            "slug": workspace.slug,
            "plan": str(plan.pk),
            "managed_access": "on",
            "memberships-TOTAL_FORMS": "1",
            "memberships-INITIAL_FORMS": "1",
            "memberships-MIN_NUM_FORMS": "0",
            "memberships-MAX_NUM_FORMS": "1000",
            "memberships-0-id": str(workspace.memberships.get().pk),
            "memberships-0-workspace": str(workspace.pk),
            "memberships-0-user": str(owner.pk),
            "memberships-0-role": "owner",
            "memberships-0-created_at_0": "2026-01-01",
            "memberships-0-created_at_1": "00:00:00",
        },
        REMOTE_ADDR=OPERATOR_IP,
    )

    assert response.status_code == 302, (
        response.context["adminform"].form.errors,
        [f.formset.errors for f in response.context["inline_admin_formsets"]],
    )
    workspace.refresh_from_db()
    assert (workspace.name, workspace.plan, workspace.managed_access) == ("Acme Corp", plan, True)
    rows = {row.action: row for row in AuditLog.objects.exclude(pk__in=before)}
    assert set(rows) == {"workspace.updated", "workspace.billing_updated"}
    for row in rows.values():
        assert_by_operator(row, operator, row.action)
    assert rows["workspace.billing_updated"].metadata["changes"] == {
        "plan": {"from": None, "to": "enterprise"},
        "managed_access": {"from": False, "to": True},
    }
    assert r.get(doc) != STALE
    assert admin_client.get("/admin/tenants/workspace/add/").status_code == 403


def test_operator_adds_a_managed_credential_audited_platform_wide(
    admin_client, operator, make_workspace, fake_provider_url, r
):
    doc = stale(r, workspace_doc_key(make_workspace().pk))
    before = audit_ids()

    response = admin_client.post(
        "/admin/tenants/platformcredential/add/",
        {
            "provider": "groq",
            "label": "Platform Groq",
            "base_url": f"{fake_provider_url}/v1",
            "is_active": "on",
            "secret": MANAGED_SECRET,
        },
        REMOTE_ADDR=OPERATOR_IP,
    )

    assert response.status_code == 302, response.content.decode()[:2000]
    credential = PlatformCredential.objects.get()
    row = only_new_row(before)
    assert_by_operator(row, operator, "platform_credential.created")
    assert row.workspace is None and row.target_id == str(credential.public_id)
    assert MANAGED_SECRET not in json.dumps(row.metadata)
    assert MANAGED_SECRET[:-4] not in json.dumps(row.metadata)
    assert r.get(doc) != STALE


def test_admin_shows_but_never_writes_memberships_invitations_catalog_or_billing_records(
    admin_client, workspace, owner, standard_plans
):
    """Those writes belong to services with rules and audit rows (members, invitations) or to generated data
    (the catalog): the admin pages are read-only, and nothing changes when posted to."""
    from billing.models import ModelPrice, TopUp
    from tenants.models import Membership
    from tenants.services import invitation_create

    invitation, _ = invitation_create(workspace=workspace, email="x@example.com", role="viewer", acting_user=owner)
    price = ModelPrice.objects.create(provider="openai", model="m-admin", input_usd_per_mtok=1, output_usd_per_mtok=2)
    for path in (
        f"/admin/tenants/invitation/{invitation.pk}/change/",
        f"/admin/billing/modelprice/{price.pk}/change/",
    ):
        assert admin_client.get(path).status_code == 200  # view
        admin_client.post(path, {"role": "owner", "input_usd_per_mtok": "0"})
    for path in ("/admin/tenants/invitation/add/", "/admin/billing/modelprice/add/", "/admin/billing/topup/add/"):
        assert admin_client.get(path).status_code == 403
    invitation.refresh_from_db()
    price.refresh_from_db()
    assert invitation.role == "viewer" and price.input_usd_per_mtok == 1
    assert not TopUp.objects.exists()

    page = admin_client.get(f"/admin/tenants/workspace/{workspace.pk}/change/").content.decode()
    assert 'name="memberships-0-role"' not in page  # the inline shows roles, offers no field to change them
    assert 'name="slug"' not in page
    assert Membership.objects.get(workspace=workspace, user=owner).role == "owner"
