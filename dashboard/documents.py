"""Downloads of invoices, credit notes and statements (PDF, CSV), and generating a month-to-date statement.

Owners, admins and finance (Perm.BILLING_VIEW). Documents are looked up by (workspace in the URL, public
id): another workspace's document is a 404, like an id that does not exist."""

from __future__ import annotations

from uuid import UUID

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.views.decorators.http import require_GET, require_POST

from billing import documents
from billing.models import Invoice, Statement
from billing.statements import statement_generate_month_to_date
from config.errors import ApplicationError, NotFound, PermissionDenied
from dashboard.access import workspace_view
from tenants.roles import Perm

CONTENT_TYPES = {"pdf": "application/pdf", "csv": "text/csv; charset=utf-8"}


def _attachment(body: bytes | str, *, filename: str, ext: str) -> HttpResponse:
    response = HttpResponse(body, content_type=CONTENT_TYPES[ext])
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    response["Cache-Control"] = "private, no-store"
    response["X-Content-Type-Options"] = "nosniff"
    return response


def _invoice(request: HttpRequest, invoice_id: UUID) -> Invoice:
    invoice = (
        Invoice.objects.select_related("corrects")
        .filter(workspace=request.workspace, public_id=invoice_id)  # type: ignore[attr-defined]
        .first()
    )
    if invoice is None:
        raise NotFound("No such invoice.")
    return invoice


def _statement(request: HttpRequest, statement_id: UUID) -> Statement:
    statement = (
        Statement.objects.select_related("workspace")
        .filter(workspace=request.workspace, public_id=statement_id)  # type: ignore[attr-defined]
        .first()
    )
    if statement is None:
        raise NotFound("No such statement.")
    return statement


@require_GET
@workspace_view(Perm.BILLING_VIEW)
def invoice_pdf(request: HttpRequest, slug: str, invoice_id: UUID) -> HttpResponse:
    invoice = _invoice(request, invoice_id)
    return _attachment(documents.invoice_pdf(invoice), filename=documents.invoice_filename(invoice, "pdf"), ext="pdf")


@require_GET
@workspace_view(Perm.BILLING_VIEW)
def invoice_csv(request: HttpRequest, slug: str, invoice_id: UUID) -> HttpResponse:
    invoice = _invoice(request, invoice_id)
    return _attachment(documents.invoice_csv(invoice), filename=documents.invoice_filename(invoice, "csv"), ext="csv")


@require_GET
@workspace_view(Perm.BILLING_VIEW)
def statement_pdf(request: HttpRequest, slug: str, statement_id: UUID) -> HttpResponse:
    statement = _statement(request, statement_id)
    filename = documents.statement_filename(statement, "pdf")
    return _attachment(documents.statement_pdf(statement), filename=filename, ext="pdf")


@require_GET
@workspace_view(Perm.BILLING_VIEW)
def statement_csv(request: HttpRequest, slug: str, statement_id: UUID) -> HttpResponse:
    statement = _statement(request, statement_id)
    filename = documents.statement_filename(statement, "csv")
    return _attachment(documents.statement_csv(statement), filename=filename, ext="csv")


@require_POST
@workspace_view(Perm.BILLING_VIEW)
def statement_generate(request: HttpRequest, slug: str) -> HttpResponse:
    """Generate the month-to-date statement (replacing the previous one) and go back to the billing page."""
    try:
        statement = statement_generate_month_to_date(
            workspace=request.workspace,  # type: ignore[attr-defined]
            acting_user=request.user,  # type: ignore[arg-type]
        )
    except ApplicationError as exc:
        if isinstance(exc, NotFound | PermissionDenied):
            raise  # the decorator answers 404 / 403
        messages.error(request, exc.message)
    else:
        messages.success(request, f"Month-to-date statement generated ({documents.statement_period_text(statement)}).")
    return redirect("dashboard:billing", slug)
