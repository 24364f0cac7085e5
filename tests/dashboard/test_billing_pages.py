"""The Billing pages without Stripe: who sees them, plans, the billing profile, the ledger history and
its CSV, and money shown so a person can read it."""

from __future__ import annotations

import csv
import io
from decimal import Decimal

import pytest

from billing.models import BillingProfile, LedgerEntry, Plan
from billing.services import ledger_grant_post, ledger_post
from dashboard.templatetags.money import usd_cents
from tenants.models import AuditLog, Membership
from tenants.roles import Role
from tests.dashboard.conftest import client_for, make_user

pytestmark = pytest.mark.django_db


def test_sign_up_plan_is_free_byok_and_a_fee_plan_is_public(standard_plans):
    free = Plan.objects.get(is_default=True)
    assert (free.code, free.byok_fee_rate, free.managed_markup_rate, free.public) == ("free", 0, 0, True)
    assert Plan.objects.filter(public=True).exclude(byok_fee_rate=0).exists()


def test_finance_lands_on_billing_and_never_sees_keys(world_a, member_client):
    client, _ = member_client(Role.FINANCE)
    home = client.get("/")
    assert home.status_code == 302 and home["Location"] == f"/w/{world_a.workspace.slug}/billing/"
    page = client.get(home["Location"])
    assert page.status_code == 200
    text = page.content.decode()
    assert "Add credit" in text and "Gateway keys" not in text and "Provider credentials" not in text
    assert client.get(f"/w/{world_a.workspace.slug}/keys/").status_code == 403
    assert client.get(f"/w/{world_a.workspace.slug}/credentials/").status_code == 403


@pytest.mark.parametrize("role", [Role.DEVELOPER, Role.VIEWER])
def test_billing_is_for_owners_admins_and_finance(world_a, member_client, role):
    client, _ = member_client(role)
    assert client.get(f"/w/{world_a.workspace.slug}/billing/").status_code == 403
    assert client.post(f"/w/{world_a.workspace.slug}/billing/plan/", {"plan": "team"}).status_code == 403


def test_another_workspace_billing_is_not_found(world_a, world_b):
    client = client_for(world_a.owner)
    assert client.get(f"/w/{world_b.workspace.slug}/billing/").status_code == 404
    assert client.get(f"/w/{world_b.workspace.slug}/billing/history.csv").status_code == 404


def test_owner_switches_plan_and_it_is_audited(world_a, standard_plans):
    client = client_for(world_a.owner)
    response = client.post(f"/w/{world_a.workspace.slug}/billing/plan/", {"plan": "team"})
    assert response.status_code == 302
    world_a.workspace.refresh_from_db()
    assert world_a.workspace.plan is not None and world_a.workspace.plan.code == "team"
    row = AuditLog.objects.filter(workspace=world_a.workspace, action="billing.plan_changed").get()
    assert row.metadata["changes"]["plan"] == {"from": "free", "to": "team"}
    Plan.objects.create(code="secret", name="Negotiated", byok_fee_rate=Decimal("0.01"), public=False)
    client.post(f"/w/{world_a.workspace.slug}/billing/plan/", {"plan": "secret"})
    world_a.workspace.refresh_from_db()
    assert world_a.workspace.plan.code == "team"  # a non-public plan cannot be chosen


def test_billing_profile_validates_and_audits(world_a):
    client = client_for(world_a.owner)
    url = f"/w/{world_a.workspace.slug}/billing/profile/"
    bad = client.post(url, {"legal_name": "Acme\x00 GmbH", "country": "DE", "tax_id": "DE12"})
    assert bad.status_code == 400 and "not a valid DE VAT number" in bad.content.decode()
    assert not BillingProfile.objects.filter(workspace=world_a.workspace, tax_id__gt="").exists()
    bad_email = client.post(url, {"billing_emails": "ap@acme.example, not-an-email"})
    assert bad_email.status_code == 400 and "not an email address" in bad_email.content.decode()
    ok = client.post(
        url,
        {
            "legal_name": "Acme\x00 GmbH",
            "address_line1": "Hauptstraße 1",
            "city": "Berlin",
            "country": "de",
            "tax_id": "DE 123 456 789",
            "billing_emails": "AP@acme.example; ap@acme.example, cfo@acme.example",
        },
    )
    assert ok.status_code == 302
    profile = BillingProfile.objects.get(workspace=world_a.workspace)
    assert (profile.legal_name, profile.country, profile.tax_id) == ("Acme GmbH", "DE", "DE123456789")
    assert profile.billing_emails == ["ap@acme.example", "cfo@acme.example"]
    assert AuditLog.objects.filter(workspace=world_a.workspace, action="billing.profile_updated").count() == 1


def test_finance_can_edit_the_profile_but_a_viewer_cannot(world_a, member_client):
    viewer = make_user()
    Membership.objects.create(workspace=world_a.workspace, user=viewer, role=Role.VIEWER)
    url = f"/w/{world_a.workspace.slug}/billing/profile/"
    assert client_for(viewer).post(url, {"legal_name": "X"}).status_code == 403
    finance, _ = member_client(Role.FINANCE)
    assert finance.post(url, {"legal_name": "Acme Ltd", "country": "GB"}).status_code == 302
    assert BillingProfile.objects.get(workspace=world_a.workspace).legal_name == "Acme Ltd"


def test_ledger_history_filters_and_exports_everything_it_matches(world_a):
    ws = world_a.workspace
    ledger_grant_post(workspace=ws, amount_usd="5", idempotency_key="g1", memo="=HYPERLINK(evil)")
    from django.db import transaction

    with transaction.atomic():
        for i in range(60):  # more than a page
            ledger_post(workspace_id=ws.pk, kind=LedgerEntry.Kind.USAGE, amount_nanos=-1_234, idempotency_key=f"u{i}")
    client = client_for(world_a.owner)
    page = client.get(f"/w/{ws.slug}/billing/history/?kind=usage")
    assert page.status_code == 200 and "Older" in page.content.decode()
    assert page.content.decode().count("<td>Usage</td>") == 50
    bad = client.get(f"/w/{ws.slug}/billing/history/?from=2026-13-40")
    assert bad.status_code == 400 and "is not a date" in bad.content.decode()

    export = client.get(f"/w/{ws.slug}/billing/history.csv?kind=usage")
    rows = list(csv.reader(io.StringIO(b"".join(export.streaming_content).decode())))
    assert rows[0][:4] == ["created_at_utc", "kind", "amount_usd", "amount_nanos"]
    assert len(rows) == 61 and {r[1] for r in rows[1:]} == {"usage"}
    assert rows[1][2] == "-0.000001234" and rows[1][3] == "-1234"
    everything = client.get(f"/w/{ws.slug}/billing/history.csv")
    grant = [r for r in csv.reader(io.StringIO(b"".join(everything.streaming_content).decode())) if r[1] == "grant"]
    assert grant[0][4] == "'=HYPERLINK(evil)"  # no formula injection in spreadsheets


def test_sub_cent_amounts_never_read_as_zero():
    assert usd_cents(4_200_000) == "$0.0042"
    assert usd_cents(-1_234) == "-$0.0000012"
    assert usd_cents(12_345_000_000) == "$12.35"
    assert usd_cents(0) == "$0.00"


def test_audit_log_shows_dollars_and_changes_in_words(world_a, standard_plans):
    from billing.models import BillingAccount
    from billing.services import auto_recharge_update

    client = client_for(world_a.owner)
    client.post(f"/w/{world_a.workspace.slug}/billing/plan/", {"plan": "team"})
    BillingAccount.objects.create(workspace=world_a.workspace, payment_method_id="pm_x", card_last4="4242")
    auto_recharge_update(
        workspace=world_a.workspace, acting_user=world_a.owner, enabled=True, threshold_usd="5", amount_usd="20"
    )
    html = client.get(f"/w/{world_a.workspace.slug}/audit/").content.decode()
    assert "plan: free → team" in html
    assert "auto recharge threshold: — → $5.00" in html or "auto recharge threshold: $0.00 → $5.00" in html
    assert "000000000" not in html  # no nano-USD figures


def test_overview_says_whether_credit_is_needed(world_a, standard_plans):
    client = client_for(world_a.owner)
    free = client.get(f"/w/{world_a.workspace.slug}/").content.decode()
    assert "No credit needed" in free
    client.post(f"/w/{world_a.workspace.slug}/billing/plan/", {"plan": "team"})
    fee = client.get(f"/w/{world_a.workspace.slug}/").content.decode()
    assert "Add credit" in fee and f"/w/{world_a.workspace.slug}/billing/#add-credit" in fee


def test_audit_log_filters_and_exports_what_it_shows(world_a, standard_plans):
    client = client_for(world_a.owner)
    slug = world_a.workspace.slug
    client.post(f"/w/{slug}/billing/plan/", {"plan": "team"})
    client.post(f"/w/{slug}/billing/alerts/", {"low_balance": "7.5"})
    page = client.get(f"/w/{slug}/audit/?area=billing").content.decode()
    assert "billing.plan_changed" in page and "billing.low_balance_alert_updated" in page
    assert "key.created" not in page and "credential.created" not in page
    everything = client.get(f"/w/{slug}/audit/").content.decode()
    assert "key.created" in everything
    assert "is not a date" in client.get(f"/w/{slug}/audit/?to=yesterday").content.decode()

    export = client.get(f"/w/{slug}/audit.csv?area=billing")
    rows = list(csv.reader(io.StringIO(b"".join(export.streaming_content).decode())))
    assert rows[0][:3] == ["created_at_utc", "actor", "action"]
    actions = {row[2] for row in rows[1:]}
    assert actions == {"billing.plan_changed", "billing.low_balance_alert_updated"}
    details = next(row[6] for row in rows[1:] if row[2] == "billing.low_balance_alert_updated")
    assert "$7.50" in details


def test_hostile_filter_values_get_a_page_not_a_500(world_a):
    client = client_for(world_a.owner)
    slug = world_a.workspace.slug
    for path in (
        f"/w/{slug}/audit/?actor=a%00b&area=bil%00ling&from=2026-01-01%00",
        f"/w/{slug}/audit.csv?actor=%00",
        f"/w/{slug}/billing/history/?kind=%00&page=999999999999999999999",
        f"/w/{slug}/billing/?topup=%00",
    ):
        assert client.get(path).status_code in (200, 400), path
