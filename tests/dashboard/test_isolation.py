"""A member of workspace A can neither read nor change anything of workspace B: not by guessing B's
URLs, not by putting B's object ids under A's URLs, not by tampering with form fields. Every dashboard
route is listed here; a new route without a case fails `test_every_route_is_covered`."""

from __future__ import annotations

import pytest
from django.urls import get_resolver

from tenants.models import AuditLog, GatewayKey, Invitation, Membership, ProviderCredential
from tests.dashboard.conftest import client_for

pytestmark = pytest.mark.django_db


def _request_of(world) -> str:
    """A real request of `world`, written by the ingest code (its id is what an attacker would try)."""
    import time
    import uuid

    from billing.ingest import usage_ingest_batch
    from contracts.events import UsageEvent

    now = int(time.time() * 1000)
    event = UsageEvent(
        request_id=f"req_{uuid.uuid4().hex}",
        workspace_id=world.workspace.pk,
        key_id=world.key.pk,
        provider="openai",
        credential_id=world.credential.pk,
        credential_kind="byok",
        model_requested="openai/gpt-4o-mini",
        model_served="gpt-4o-mini",
        status=200,
        started_at_ms=now,
        finished_at_ms=now + 5,
    )
    usage_ingest_batch(events=[event])
    return event.request_id


def _export_of(world) -> str:
    """A ready request log export of `world`."""
    from billing.models import UsageExport, UsageExportPart

    export = UsageExport.objects.create(workspace=world.workspace, filters={}, status="ready", rows=0, size_bytes=1)
    UsageExportPart.objects.create(export=export, seq=0, data=b"x")
    return str(export.public_id)


# name -> (method, builds the URL from (slug, world of the objects), form data)
ROUTES = {
    "overview": ("GET", lambda s, w: f"/w/{s}/", {}),
    "analytics": ("GET", lambda s, w: f"/w/{s}/analytics/", {}),
    "requests": ("GET", lambda s, w: f"/w/{s}/requests/", {}),
    "requests_csv": ("GET", lambda s, w: f"/w/{s}/requests.csv", {}),
    "requests_export": ("POST", lambda s, w: f"/w/{s}/requests/exports/", {"range": "30d"}),
    "requests_export_download": (
        "GET",
        lambda s, w: f"/w/{s}/requests/exports/{_export_of(w)}/",
        {},
    ),
    "request_detail": ("GET", lambda s, w: f"/w/{s}/requests/{_request_of(w)}/", {}),
    "settings_request_log": ("POST", lambda s, w: f"/w/{s}/settings/request-log/", {"log_bodies": "on"}),
    "credentials": ("GET", lambda s, w: f"/w/{s}/credentials/", {}),
    "credential_rotate": (
        "POST",
        lambda s, w: f"/w/{s}/credentials/{w.credential.public_id}/rotate/",
        {"secret": "fake-rotated-by-attacker"},
    ),
    "credential_remove": ("POST", lambda s, w: f"/w/{s}/credentials/{w.credential.public_id}/remove/", {}),
    "keys": ("GET", lambda s, w: f"/w/{s}/keys/", {}),
    "key_revoke": ("POST", lambda s, w: f"/w/{s}/keys/{w.key.public_id}/revoke/", {}),
    "connect": ("GET", lambda s, w: f"/w/{s}/connect/", {}),
    "connect_test": ("POST", lambda s, w: f"/w/{s}/connect/test/", {"key": "tpk_live_not-a-real-key"}),
    "members": ("GET", lambda s, w: f"/w/{s}/members/", {}),
    "member_role": ("POST", lambda s, w: f"/w/{s}/members/{w.member.pk}/role/", {"role": "owner"}),
    "member_remove": ("POST", lambda s, w: f"/w/{s}/members/{w.member.pk}/remove/", {}),
    "invitation_revoke": ("POST", lambda s, w: f"/w/{s}/invitations/{w.invitation.pk}/revoke/", {}),
    "invitation_link": ("POST", lambda s, w: f"/w/{s}/invitations/{w.invitation.pk}/link/", {}),
    "settings": ("GET", lambda s, w: f"/w/{s}/settings/", {}),
    "audit": ("GET", lambda s, w: f"/w/{s}/audit/", {}),
    "audit_csv": ("GET", lambda s, w: f"/w/{s}/audit.csv", {}),
    "billing": ("GET", lambda s, w: f"/w/{s}/billing/", {}),
    "billing_topup": ("POST", lambda s, w: f"/w/{s}/billing/topup/", {"amount": "25"}),
    "billing_plan": ("POST", lambda s, w: f"/w/{s}/billing/plan/", {"plan": "team"}),
    "billing_auto_recharge": ("POST", lambda s, w: f"/w/{s}/billing/auto-recharge/", {"enabled": "on"}),
    "billing_card_remove": ("POST", lambda s, w: f"/w/{s}/billing/card/remove/", {}),
    "billing_low_balance": ("POST", lambda s, w: f"/w/{s}/billing/alerts/", {"low_balance": "5"}),
    "billing_profile": ("POST", lambda s, w: f"/w/{s}/billing/profile/", {"legal_name": "Attacker Ltd"}),
    "billing_history": ("GET", lambda s, w: f"/w/{s}/billing/history/", {}),
    "billing_history_csv": ("GET", lambda s, w: f"/w/{s}/billing/history.csv", {}),
    "invoice_pdf": ("GET", lambda s, w: f"/w/{s}/billing/invoices/00000000-0000-4000-8000-000000000000/pdf/", {}),
    "invoice_csv": ("GET", lambda s, w: f"/w/{s}/billing/invoices/00000000-0000-4000-8000-000000000000/csv/", {}),
    "statement_pdf": ("GET", lambda s, w: f"/w/{s}/billing/statements/00000000-0000-4000-8000-000000000000/pdf/", {}),
    "statement_csv": ("GET", lambda s, w: f"/w/{s}/billing/statements/00000000-0000-4000-8000-000000000000/csv/", {}),
    "statement_generate": ("POST", lambda s, w: f"/w/{s}/billing/statements/generate/", {}),
}
# Workspace-level actions: no object id in the URL, so there is no other workspace's id to try under my slug
# (the slug test covers them). tests/dashboard/test_documents_views.py tries B's real documents under A's slug.
NO_OBJECT_ID = {
    "requests_export",
    "settings_request_log",
    "connect_test",
    "billing_topup",
    "billing_plan",
    "billing_auto_recharge",
    "billing_card_remove",
    "billing_low_balance",
    "billing_profile",
    "statement_generate",
}
NOT_WORKSPACE_SCOPED = {"home", "healthz", "switch", "workspace_create", "invitation_accept", "models"}


def test_every_route_is_covered():
    names = {p.name for p in get_resolver().url_patterns[-1].url_patterns}  # the dashboard include
    assert names == set(ROUTES) | NOT_WORKSPACE_SCOPED


def snapshot(world):
    """Everything about workspace B that an attack could change."""
    world.credential.refresh_from_db()
    world.key.refresh_from_db()
    world.invitation.refresh_from_db()
    return (
        bytes(world.credential.secret_ciphertext),
        world.credential.removed_at,
        world.key.revoked_at,
        world.invitation.revoked_at,
        Membership.objects.filter(workspace=world.workspace).values_list("pk", "role").order_by("pk")[::1],
        world.workspace.name,
        AuditLog.objects.filter(workspace=world.workspace).count(),
    )


@pytest.mark.parametrize("name", sorted(ROUTES))
def test_another_workspaces_slug_is_not_found(name, world_a, world_b):
    method, url, data = ROUTES[name]
    client = client_for(world_a.owner)
    before = snapshot(world_b)
    response = getattr(client, method.lower())(url(world_b.workspace.slug, world_b), data)
    assert response.status_code == 404
    assert snapshot(world_b) == before


@pytest.mark.parametrize("name", sorted(ROUTES))
def test_another_workspaces_ids_under_my_slug_are_not_found(name, world_a, world_b):
    method, url, data = ROUTES[name]
    if name in NO_OBJECT_ID:
        pytest.skip("no object id in the URL")
    client = client_for(world_a.owner)
    before = snapshot(world_b)
    response = getattr(client, method.lower())(url(world_a.workspace.slug, world_b), data)
    if method == "POST":
        assert response.status_code == 404
    assert snapshot(world_b) == before


def test_pages_of_a_never_show_bs_data(world_a, world_b):
    client = client_for(world_a.owner)
    slug = world_a.workspace.slug
    for path in ("", "credentials/", "keys/", "members/", "audit/", "settings/", "connect/"):
        html = client.get(f"/w/{slug}/{path}").content.decode()
        assert world_b.workspace.name not in html
        assert world_b.credential.label not in html
        assert world_b.key.prefix not in html
        assert world_b.owner.email not in html


def test_switcher_refuses_a_workspace_the_user_is_not_in(world_a, world_b):
    client = client_for(world_a.owner)
    response = client.get("/switch/", {"to": world_b.workspace.slug})
    assert response.status_code == 302 and world_b.workspace.slug not in response["Location"]


def test_invitation_of_b_cannot_be_accepted_by_someone_else(world_a, world_b):
    from tenants.services import invitation_create

    _, token = invitation_create(
        workspace=world_b.workspace, email="someone@example.com", role="admin", acting_user=world_b.owner
    )
    client = client_for(world_a.owner)
    response = client.post(f"/invitations/{token}/")
    assert response.status_code == 403
    assert not Membership.objects.filter(workspace=world_b.workspace, user=world_a.owner).exists()


def test_anonymous_users_are_sent_to_login(world_a):
    from django.test import Client

    for name, (method, url, data) in ROUTES.items():
        response = getattr(Client(), method.lower())(url(world_a.workspace.slug, world_a), data)
        assert response.status_code == 302, name
        assert "/accounts/login/" in response["Location"], name
    assert ProviderCredential.objects.filter(removed_at__isnull=False).count() == 0
    assert GatewayKey.objects.filter(revoked_at__isnull=False).count() == 0
    assert Invitation.objects.filter(revoked_at__isnull=False).count() == 0
