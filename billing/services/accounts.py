"""A workspace's billing settings, changed by its owners, admins and finance members (or operators):
the billing profile, the plan it chooses, auto-recharge, the low-balance alert and the saved card.
Each change is validated, audited in the workspace's log and, where the proxy caches it, invalidated."""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import Any

import stripe
from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import transaction
from django.utils import timezone

from billing.models import BillingAccount, BillingProfile, Plan
from billing.services.topups import billing_account_for
from billing.stripe_client import stripe_client
from billing.tax import EU_COUNTRIES, normalise_tax_id, valid_eu_vat_id
from config.errors import ApplicationError
from contracts.money import usd_text
from tenants.cache import invalidate_workspace_on_commit
from tenants.models import User, Workspace
from tenants.roles import Perm
from tenants.services import audit, audit_changes, authorize

NANOS_PER_USD = 1_000_000_000
MAX_BILLING_EMAILS = 5
_COUNTRY = re.compile(r"^[A-Z]{2}$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _text(value: Any, *, field: str, label: str, max_length: int) -> str:
    text = _CONTROL.sub("", str(value or "")).strip()
    if len(text) > max_length:
        raise ApplicationError(f"{label} can be at most {max_length} characters.", extra={"field": field})
    return text


def _dollars(value: Any, *, field: str, label: str, low: int, high: int) -> int:
    """Whole-cent nano-USD of a dollar amount a person typed, within [low, high] dollars."""
    text = str(value or "").strip().replace("$", "").replace(",", "")
    try:
        amount = Decimal(text)
    except InvalidOperation as exc:
        raise ApplicationError(f"{label}: enter an amount in US dollars.", extra={"field": field}) from exc
    if not amount.is_finite() or amount != amount.quantize(Decimal("0.01")):
        raise ApplicationError(f"{label}: at most two decimals (cents).", extra={"field": field})
    if not low <= amount <= high:
        raise ApplicationError(f"{label} must be between ${low:,} and ${high:,}.", extra={"field": field})
    return int(amount * NANOS_PER_USD)


@transaction.atomic
def billing_profile_update(
    *, workspace: Workspace, acting_user: User, data: dict[str, Any], operator: bool = False, ip: str | None = None
) -> BillingProfile:
    """Set who the buyer is on invoices. Finalized invoices keep the details they were issued with."""
    extra = authorize(workspace=workspace, acting_user=acting_user, perm=Perm.BILLING_MANAGE, operator=operator)
    profile, _ = BillingProfile.objects.select_for_update().get_or_create(workspace=workspace)
    country = _text(data.get("country"), field="country", label="Country", max_length=2).upper()
    if country and not _COUNTRY.match(country):
        raise ApplicationError("Country is a two-letter ISO code, like NL or US.", extra={"field": "country"})
    tax_id = normalise_tax_id(_text(data.get("tax_id"), field="tax_id", label="Tax ID", max_length=32))
    if tax_id and country in EU_COUNTRIES and not valid_eu_vat_id(tax_id, country):
        raise ApplicationError(
            f"{tax_id} is not a valid {country} VAT number format (it starts with the country prefix).",
            extra={"field": "tax_id"},
        )
    raw_emails = data.get("billing_emails") or ""
    if isinstance(raw_emails, str):
        raw_emails = [e for e in re.split(r"[,\s;]+", raw_emails) if e]
    emails: list[str] = []
    for email in raw_emails:
        email = str(email).strip().lower()
        try:
            validate_email(email)
        except ValidationError as exc:
            raise ApplicationError(
                f"{email[:80]!r} is not an email address.", extra={"field": "billing_emails"}
            ) from exc
        if email not in emails:
            emails.append(email)
    if len(emails) > MAX_BILLING_EMAILS:
        raise ApplicationError(f"At most {MAX_BILLING_EMAILS} billing emails.", extra={"field": "billing_emails"})
    values: dict[str, Any] = {
        "legal_name": _text(data.get("legal_name"), field="legal_name", label="Legal name", max_length=200),
        "address_line1": _text(data.get("address_line1"), field="address_line1", label="Address", max_length=200),
        "address_line2": _text(data.get("address_line2"), field="address_line2", label="Address", max_length=200),
        "postal_code": _text(data.get("postal_code"), field="postal_code", label="Postal code", max_length=20),
        "city": _text(data.get("city"), field="city", label="City", max_length=100),
        "region": _text(data.get("region"), field="region", label="Region", max_length=100),
        "country": country,
        "tax_id": tax_id,
        "billing_emails": emails,
    }
    changes = audit_changes({name: getattr(profile, name) for name in values}, values)
    if not changes:
        return profile
    for name, value in values.items():
        setattr(profile, name, value)
    profile.updated_at = timezone.now()
    profile.save()
    audit(
        workspace=workspace,
        actor=acting_user,
        action="billing.profile_updated",
        target=profile,
        ip=ip,
        metadata={"changes": changes, **extra},
    )
    return profile


@transaction.atomic
def auto_recharge_update(
    *,
    workspace: Workspace,
    acting_user: User,
    enabled: bool,
    threshold_usd: Any,
    amount_usd: Any,
    operator: bool = False,
    ip: str | None = None,
) -> BillingAccount:
    """ "When the balance falls below X, add Y" with the saved card. Turning it on resets the failure count."""
    extra = authorize(workspace=workspace, acting_user=acting_user, perm=Perm.BILLING_MANAGE, operator=operator)
    billing_account_for(workspace)
    account = BillingAccount.objects.select_for_update().get(workspace=workspace)
    if enabled and not account.payment_method_id:
        raise ApplicationError("Save a card first: add credit once with “Save this card” ticked.")
    values: dict[str, Any] = {"auto_recharge_enabled": bool(enabled)}
    if enabled or str(threshold_usd or "").strip():
        values["auto_recharge_threshold_nanos"] = _dollars(
            threshold_usd, field="threshold", label="The threshold", low=1, high=settings.TURNPIKE_TOPUP_MAX_USD
        )
        values["auto_recharge_amount_nanos"] = _dollars(
            amount_usd,
            field="recharge_amount",
            label="The recharge amount",
            low=settings.TURNPIKE_TOPUP_MIN_USD,
            high=settings.TURNPIKE_TOPUP_MAX_USD,
        )
    before = {name: getattr(account, name) for name in values}
    changes = audit_changes(before, values)
    if not changes:
        return account
    for name, value in values.items():
        setattr(account, name, value)
    if enabled and not before["auto_recharge_enabled"]:
        account.auto_recharge_failures, account.auto_recharge_last_error = 0, ""
    account.updated_at = timezone.now()
    account.save()
    audit(
        workspace=workspace,
        actor=acting_user,
        action="billing.auto_recharge_updated",
        target=account,
        ip=ip,
        metadata={"changes": _dollar_changes(changes), **extra},
    )
    return account


def _dollar_changes(changes: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The audit log shows dollars, not nano-USD."""
    shown: dict[str, dict[str, Any]] = {}
    for name, change in changes.items():
        if name.endswith("_nanos"):
            label = name.removesuffix("_nanos")
            shown[label] = {k: usd_text(int(v)) if v is not None else None for k, v in change.items()}
        else:
            shown[name] = change
    return shown


@transaction.atomic
def low_balance_alert_update(
    *, workspace: Workspace, acting_user: User, threshold_usd: Any, operator: bool = False, ip: str | None = None
) -> BillingAccount:
    """Email the billing contacts once when the balance falls below this (empty: no alert)."""
    extra = authorize(workspace=workspace, acting_user=acting_user, perm=Perm.BILLING_MANAGE, operator=operator)
    billing_account_for(workspace)
    account = BillingAccount.objects.select_for_update().get(workspace=workspace)
    text = str(threshold_usd or "").strip()
    value = (
        _dollars(text, field="low_balance", label="The alert threshold", low=1, high=settings.TURNPIKE_TOPUP_MAX_USD)
        if text
        else None
    )
    changes = audit_changes(
        {"low_balance_threshold_nanos": account.low_balance_threshold_nanos}, {"low_balance_threshold_nanos": value}
    )
    if not changes:
        return account
    account.low_balance_threshold_nanos = value
    account.low_balance_alerted_at = None
    account.updated_at = timezone.now()
    account.save()
    audit(
        workspace=workspace,
        actor=acting_user,
        action="billing.low_balance_alert_updated",
        target=account,
        ip=ip,
        metadata={"changes": _dollar_changes(changes), **extra},
    )
    return account


def saved_card_remove(
    *, workspace: Workspace, acting_user: User, operator: bool = False, ip: str | None = None
) -> None:
    """Detach the saved card at Stripe and forget it; auto-recharge turns off with it."""
    extra = authorize(workspace=workspace, acting_user=acting_user, perm=Perm.BILLING_MANAGE, operator=operator)
    account = BillingAccount.objects.filter(workspace=workspace).first()
    if account is None or not account.payment_method_id:
        return
    try:
        stripe_client().v1.payment_methods.detach(account.payment_method_id)
    except stripe.InvalidRequestError:
        pass  # already detached at Stripe: forgetting it is all that is left
    except stripe.StripeError as exc:
        raise ApplicationError("Stripe did not answer; the card was not removed. Try again.") from exc
    with transaction.atomic():
        account = BillingAccount.objects.select_for_update().get(pk=account.pk)
        last4 = account.card_last4
        account.payment_method_id = account.card_brand = account.card_last4 = ""
        account.card_exp_month = account.card_exp_year = None
        account.auto_recharge_enabled = False
        account.updated_at = timezone.now()
        account.save()
        audit(
            workspace=workspace,
            actor=acting_user,
            action="billing.card_removed",
            target=account,
            ip=ip,
            metadata={"last4": last4, **extra},
        )


@transaction.atomic
def workspace_plan_choose(
    *, workspace: Workspace, acting_user: User, plan_code: str, ip: str | None = None
) -> Workspace:
    """A workspace moves itself to a public plan; the proxy charges the new rates from the next request."""
    extra = authorize(workspace=workspace, acting_user=acting_user, perm=Perm.BILLING_MANAGE)
    plan = Plan.objects.filter(code=str(plan_code or "")[:40], public=True).first()
    if plan is None:
        raise ApplicationError("Choose one of the plans listed.", extra={"field": "plan"})
    row = Workspace.objects.select_for_update().get(pk=workspace.pk)
    before = row.plan or Plan.objects.filter(is_default=True).first()
    if before is not None and before.pk == plan.pk:
        return row
    row.plan = plan
    row.save(update_fields=["plan"])
    audit(
        workspace=row,
        actor=acting_user,
        action="billing.plan_changed",
        target=row,
        ip=ip,
        metadata={"changes": {"plan": {"from": before.code if before else None, "to": plan.code}}, **extra},
    )
    invalidate_workspace_on_commit(row.pk)
    return row
