"""The Billing pages (owners, admins and finance): balance, add credit, plan, card and auto-recharge,
alerts, invoices and statements, ledger history and the billing profile. Thin: one service or selector
per action; every write goes through billing.services."""

from __future__ import annotations

import csv
import uuid
from collections.abc import Iterator
from datetime import UTC

from django.conf import settings
from django.contrib import messages
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from billing import selectors as billing_selectors
from billing.models import BillingProfile, LedgerEntry, Plan, TopUp
from billing.services.accounts import (
    auto_recharge_update,
    billing_profile_update,
    low_balance_alert_update,
    saved_card_remove,
    workspace_plan_choose,
)
from billing.services.topups import billing_account_for, topup_checkout_start
from config.errors import ApplicationError
from contracts.money import nanos_to_cents_str
from dashboard.access import client_ip, page_context, workspace_view
from dashboard.filters import Echo, csv_safe, day_range
from tenants.roles import Perm, role_allows

LEDGER_PAGE = 50


def _can_manage(request: HttpRequest) -> bool:
    return role_allows(request.membership.role, Perm.BILLING_MANAGE)  # type: ignore[attr-defined]


def _billing_url(request: HttpRequest, slug: str) -> str:
    return request.build_absolute_uri(reverse("dashboard:billing", args=[slug]))


@workspace_view(Perm.BILLING_VIEW)
def billing(request: HttpRequest, slug: str) -> HttpResponse:
    workspace = request.workspace  # type: ignore[attr-defined]
    account = billing_account_for(workspace)
    returned: TopUp | None = None
    topup_id = request.GET.get("topup", "")
    if topup_id:
        try:
            returned = TopUp.objects.filter(workspace=workspace, public_id=uuid.UUID(topup_id)).first()
        except ValueError:  # not a uuid
            returned = None
    plans = list(Plan.objects.filter(public=True).order_by("byok_fee_rate", "managed_markup_rate", "name"))
    current_plan = workspace.plan or Plan.objects.filter(is_default=True).first()
    return render(
        request,
        "dashboard/billing.html",
        page_context(
            request,
            "billing",
            money=billing_selectors.balance_overview(workspace=workspace),
            account=account,
            returned=returned,
            cancelled=request.GET.get("cancelled") == "1",
            presets=settings.TURNPIKE_TOPUP_PRESETS_USD,
            topup_min=settings.TURNPIKE_TOPUP_MIN_USD,
            topup_max=settings.TURNPIKE_TOPUP_MAX_USD,
            plans=plans,
            current_plan=current_plan,
            can_manage=_can_manage(request),
            invoices=billing_selectors.invoices_list(workspace=workspace, limit=24),
            statements=billing_selectors.statements_list(workspace=workspace, limit=24),
            threshold_usd=_dollars(account.auto_recharge_threshold_nanos),
            recharge_usd=_dollars(account.auto_recharge_amount_nanos),
            low_balance_usd=_dollars(account.low_balance_threshold_nanos),
        ),
    )


def _dollars(nanos: int | None) -> str:
    return "" if not nanos else nanos_to_cents_str(nanos)


def _run(request: HttpRequest, slug: str, action: str, call: object, success: str) -> HttpResponse:
    try:
        call()  # type: ignore[operator]
    except ApplicationError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, success)
    return redirect(f"{reverse('dashboard:billing', args=[slug])}#{action}")


@require_POST
@workspace_view(Perm.BILLING_MANAGE)
def topup_start(request: HttpRequest, slug: str) -> HttpResponse:
    amount = request.POST.get("amount") or request.POST.get("custom_amount") or ""
    if request.POST.get("amount") == "custom":
        amount = request.POST.get("custom_amount", "")
    try:
        _, url = topup_checkout_start(
            workspace=request.workspace,  # type: ignore[attr-defined]
            acting_user=request.user,  # type: ignore[arg-type]
            amount=amount,
            save_card=request.POST.get("save_card") == "on",
            return_url=_billing_url(request, slug),
            ip=client_ip(request),
        )
    except ApplicationError as exc:
        messages.error(request, exc.message)
        return redirect(f"{reverse('dashboard:billing', args=[slug])}#add-credit")
    return redirect(url)  # Stripe Checkout; it sends the browser back to the billing page


@require_POST
@workspace_view(Perm.BILLING_MANAGE)
def plan_choose(request: HttpRequest, slug: str) -> HttpResponse:
    return _run(
        request,
        slug,
        "plan",
        lambda: workspace_plan_choose(
            workspace=request.workspace,  # type: ignore[attr-defined]
            acting_user=request.user,  # type: ignore[arg-type]
            plan_code=request.POST.get("plan", ""),
            ip=client_ip(request),
        ),
        "Plan changed. New requests are charged at its rates.",
    )


@require_POST
@workspace_view(Perm.BILLING_MANAGE)
def auto_recharge(request: HttpRequest, slug: str) -> HttpResponse:
    return _run(
        request,
        slug,
        "auto-recharge",
        lambda: auto_recharge_update(
            workspace=request.workspace,  # type: ignore[attr-defined]
            acting_user=request.user,  # type: ignore[arg-type]
            enabled=request.POST.get("enabled") == "on",
            threshold_usd=request.POST.get("threshold", ""),
            amount_usd=request.POST.get("recharge_amount", ""),
            ip=client_ip(request),
        ),
        "Auto-recharge settings saved.",
    )


@require_POST
@workspace_view(Perm.BILLING_MANAGE)
def card_remove(request: HttpRequest, slug: str) -> HttpResponse:
    return _run(
        request,
        slug,
        "card",
        lambda: saved_card_remove(
            workspace=request.workspace,  # type: ignore[attr-defined]
            acting_user=request.user,  # type: ignore[arg-type]
            ip=client_ip(request),
        ),
        "Card removed. Auto-recharge is off.",
    )


@require_POST
@workspace_view(Perm.BILLING_MANAGE)
def low_balance(request: HttpRequest, slug: str) -> HttpResponse:
    return _run(
        request,
        slug,
        "alerts",
        lambda: low_balance_alert_update(
            workspace=request.workspace,  # type: ignore[attr-defined]
            acting_user=request.user,  # type: ignore[arg-type]
            threshold_usd=request.POST.get("low_balance", ""),
            ip=client_ip(request),
        ),
        "Low-balance alert saved.",
    )


PROFILE_FIELDS = ("legal_name", "address_line1", "address_line2", "postal_code", "city", "region", "country", "tax_id")


@workspace_view(Perm.BILLING_VIEW)
def profile(request: HttpRequest, slug: str) -> HttpResponse:
    workspace = request.workspace  # type: ignore[attr-defined]
    current = BillingProfile.objects.filter(workspace=workspace).first()
    values = {name: getattr(current, name, "") for name in PROFILE_FIELDS}
    values["billing_emails"] = ", ".join(current.billing_emails) if current else ""
    error: ApplicationError | None = None
    if request.method == "POST":
        if not _can_manage(request):
            messages.error(request, "Your role cannot change the billing profile.")
            return redirect("dashboard:billing_profile", slug)
        values = {name: request.POST.get(name, "") for name in (*PROFILE_FIELDS, "billing_emails")}
        try:
            billing_profile_update(
                workspace=workspace,
                acting_user=request.user,  # type: ignore[arg-type]
                data=values,
                ip=client_ip(request),
            )
        except ApplicationError as exc:
            error = exc
        else:
            messages.success(request, "Billing profile saved. New invoices use these details.")
            return redirect("dashboard:billing_profile", slug)
    return render(
        request,
        "dashboard/billing_profile.html",
        page_context(
            request,
            "billing",
            values=values,
            error=error,
            error_field=error.extra.get("field") if error else None,
            can_manage=_can_manage(request),
        ),
        status=400 if error else 200,
    )


def _ledger_filters(request: HttpRequest) -> tuple[dict[str, object], list[str]]:
    """Kind and date range (UTC days, inclusive) from the query string; errors as messages."""
    bounds, problems = day_range(request)
    filters: dict[str, object] = dict(bounds)
    kind = request.GET.get("kind", "")
    if kind:
        if kind in LedgerEntry.Kind.values:
            filters["kind"] = kind
        else:
            problems.append("Unknown entry type.")
    return filters, problems


@workspace_view(Perm.BILLING_VIEW)
def history(request: HttpRequest, slug: str) -> HttpResponse:
    workspace = request.workspace  # type: ignore[attr-defined]
    filters, problems = _ledger_filters(request)
    try:
        page = max(1, min(int(request.GET.get("page", "1")), 100_000))
    except ValueError:
        page = 1
    entries = billing_selectors.ledger_entries(
        workspace=workspace, offset=(page - 1) * LEDGER_PAGE, limit=LEDGER_PAGE + 1, **filters
    )
    query = request.GET.copy()
    query.pop("page", None)
    return render(
        request,
        "dashboard/billing_history.html",
        page_context(
            request,
            "billing",
            entries=entries[:LEDGER_PAGE],
            has_next=len(entries) > LEDGER_PAGE,
            page=page,
            query=query.urlencode(),
            kinds=LedgerEntry.Kind.choices,
            selected={
                "kind": request.GET.get("kind", ""),
                "from": request.GET.get("from", ""),
                "to": request.GET.get("to", ""),
            },
            problems=problems,
        ),
        status=400 if problems else 200,
    )


@workspace_view(Perm.BILLING_VIEW)
def history_csv(request: HttpRequest, slug: str) -> HttpResponse | StreamingHttpResponse:
    """Every entry the filter matches (not only a page), streamed."""
    workspace = request.workspace  # type: ignore[attr-defined]
    filters, problems = _ledger_filters(request)
    if problems:
        return HttpResponse(" ".join(problems), status=400, content_type="text/plain; charset=utf-8")
    writer = csv.writer(Echo())

    def rows() -> Iterator[str]:
        yield writer.writerow(["created_at_utc", "kind", "amount_usd", "amount_nanos", "memo", "entry_id"])
        for entry in billing_selectors.ledger_entries_iter(workspace=workspace, **filters):
            yield writer.writerow(
                [
                    entry.created_at.astimezone(UTC).isoformat(),
                    entry.kind,
                    _exact_usd(entry.amount_nanos),
                    entry.amount_nanos,
                    csv_safe(entry.memo),
                    entry.pk,
                ]
            )

    response = StreamingHttpResponse(rows(), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="turnpike-ledger-{workspace.slug}.csv"'
    return response


def _exact_usd(nanos: int) -> str:
    sign = "-" if nanos < 0 else ""
    whole, frac = divmod(abs(nanos), 1_000_000_000)
    return f"{sign}{whole}.{frac:09d}"
