"""Document downloads from the dashboard: owners, admins and finance download invoices and statements
(PDF, CSV) of their own workspace; other roles get 403; another workspace's documents are 404."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime

import pytest
from django.test import Client
from django.urls import reverse

from billing.models import Statement
from billing.services import invoice_issue_for_topup
from billing.statements import statement_issue
from tenants.roles import Role
from tests.billing.docsupport import paid_topup, pdf_text, post
from tests.dashboard.conftest import client_for

JAN, FEB = datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 2, 1, tzinfo=UTC)


@pytest.fixture
def docs_a(world_a):
    post(world_a.workspace, "topup", 25 * 10**9, at=datetime(2026, 1, 10, tzinfo=UTC))
    invoice = invoice_issue_for_topup(topup=paid_topup(world_a.workspace, cents=2_500))
    statement = statement_issue(workspace=world_a.workspace, period_start=JAN, period_end=FEB, kind="monthly")
    return invoice, statement


def urls(slug: str, invoice, statement) -> dict[str, str]:
    return {
        "invoice_pdf": reverse("dashboard:invoice_pdf", args=[slug, invoice.public_id]),
        "invoice_csv": reverse("dashboard:invoice_csv", args=[slug, invoice.public_id]),
        "statement_pdf": reverse("dashboard:statement_pdf", args=[slug, statement.public_id]),
        "statement_csv": reverse("dashboard:statement_csv", args=[slug, statement.public_id]),
    }


def test_finance_member_downloads_invoice_and_statement(world_a, docs_a, member_client):
    invoice, statement = docs_a
    client, _ = member_client(Role.FINANCE)
    links = urls(world_a.workspace.slug, invoice, statement)

    pdf = client.get(links["invoice_pdf"])
    assert pdf.status_code == 200 and pdf["Content-Type"] == "application/pdf"
    assert pdf["Content-Disposition"] == f'attachment; filename="turnpike-{invoice.number}.pdf"'
    assert invoice.number in pdf_text(pdf.content) and "$25.00" in pdf_text(pdf.content)

    rows = list(csv.DictReader(io.StringIO(client.get(links["invoice_csv"]).content.decode())))
    assert rows[0]["number"] == invoice.number and rows[0]["total_amount"] == "25.00"

    spdf = client.get(links["statement_pdf"])
    slug = world_a.workspace.slug
    assert spdf.status_code == 200
    assert spdf["Content-Disposition"] == f'attachment; filename="turnpike-statement-{slug}-2026-01.pdf"'
    assert "Usage statement" in pdf_text(spdf.content) and "$25.00" in pdf_text(spdf.content)
    scsv = client.get(links["statement_csv"])
    assert scsv["Content-Type"].startswith("text/csv")
    closing = [r for r in csv.DictReader(io.StringIO(scsv.content.decode())) if r["row_type"] == "closing_balance"]
    assert closing[0]["amount_usd"] == "25.00"


@pytest.mark.parametrize("role", [Role.OWNER, Role.ADMIN])
def test_owner_and_admin_download(world_a, docs_a, member_client, role):
    client, _ = member_client(role)
    for url in urls(world_a.workspace.slug, *docs_a).values():
        assert client.get(url).status_code == 200


@pytest.mark.parametrize("role", [Role.DEVELOPER, Role.VIEWER])
def test_other_roles_are_forbidden(world_a, docs_a, member_client, role):
    client, _ = member_client(role)
    for url in urls(world_a.workspace.slug, *docs_a).values():
        response = client.get(url)
        assert response.status_code == 403 and b"%PDF" not in response.content
    generate = client.post(reverse("dashboard:statement_generate", args=[world_a.workspace.slug]))
    assert generate.status_code == 403
    assert not Statement.objects.filter(kind="to_date").exists()


def test_another_workspaces_documents_are_not_found(world_a, world_b, docs_a):
    invoice, statement = docs_a
    owner_b = client_for(world_b.owner)
    # B's owner, B's slug, A's document ids: 404, like an id that does not exist
    for url in urls(world_b.workspace.slug, invoice, statement).values():
        assert owner_b.get(url).status_code == 404
    # B's owner on A's slug: not a member, 404
    for url in urls(world_a.workspace.slug, invoice, statement).values():
        assert owner_b.get(url).status_code == 404
    anonymous = urls(world_a.workspace.slug, invoice, statement)["invoice_pdf"]
    assert client_for(world_a.owner).get(anonymous).status_code == 200
    assert Client().get(anonymous).status_code == 302  # to the login page


def test_generate_month_to_date_statement(world_a, member_client):
    client, _ = member_client(Role.FINANCE)
    url = reverse("dashboard:statement_generate", args=[world_a.workspace.slug])
    assert client.get(url).status_code == 405
    response = client.post(url)
    assert response.status_code == 302
    assert response["Location"] == reverse("dashboard:billing", args=[world_a.workspace.slug])
    first = Statement.objects.get(workspace=world_a.workspace)
    assert first.kind == "to_date"
    client.post(url)
    second = Statement.objects.get(workspace=world_a.workspace)
    assert second.pk != first.pk, "the new month-to-date statement replaces the previous one"
    pdf = client.get(reverse("dashboard:statement_pdf", args=[world_a.workspace.slug, second.public_id]))
    assert pdf.status_code == 200 and "month to date" in pdf_text(pdf.content)
    assert "month-to-date.pdf" in pdf["Content-Disposition"]
