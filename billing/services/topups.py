"""Buying credit through Stripe: Checkout top-ups, the webhooks that credit them, refunds and disputes,
and auto-recharge. docs/billing.md tells the whole story; the rules that keep money exact:

- The ledger is credited only from Stripe's word, never from a redirect: a verified webhook whose
  Checkout session (or PaymentIntent) we retrieve from the Stripe API and find paid, or the auto-recharge
  task's own confirmed PaymentIntent.
- Each top-up is credited once: the credit and `TopUp.ledger_entry` are written in one transaction under
  the top-up's row lock, with the ledger idempotency key `topup:<public id>`. A re-delivered, replayed or
  out-of-order event finds the top-up credited and changes nothing; events themselves are recorded
  (`StripeEvent`, unique id) in the same transaction as their effect.
- Refunds and disputes post new, compensating entries (never an edit), keyed by Stripe's cumulative
  figures so any delivery order posts each cent once.
- Stripe calls are made outside database transactions (a slow Stripe never holds a row lock), with
  idempotency keys derived from our own ids, so a retry after a crash repeats nothing.
"""

from __future__ import annotations

import logging
import uuid
from datetime import timedelta
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

import stripe
from django.conf import settings
from django.core.mail import send_mail
from django.db import IntegrityError, transaction
from django.utils import timezone

from billing.contacts import billing_contacts
from billing.models import BillingAccount, BillingProfile, LedgerEntry, StripeEvent, TopUp
from billing.services.invoices import credit_note_issue, invoice_issue_for_topup
from billing.services.ledger import ledger_post
from billing.stripe_client import construct_event, stripe_client
from billing.tax import tax_treatment
from config.errors import ApplicationError
from contracts.money import usd_text
from tenants.models import User, Workspace
from tenants.roles import Perm
from tenants.services import audit, authorize

log = logging.getLogger("turnpike.billing.stripe")

NANOS_PER_CENT = 10_000_000
STALE_AUTO_RECHARGE = timedelta(minutes=2)  # a pending off-session charge older than this is resolved again


class WebhookRejected(Exception):
    """The payload is not a genuine Stripe event for us (bad or missing signature, not JSON)."""


def billing_account_for(workspace: Workspace) -> BillingAccount:
    account, _ = BillingAccount.objects.get_or_create(workspace=workspace)
    return account


def _field(obj: Any, name: str) -> Any:
    """A field of a Stripe object or plain dict, None if absent."""
    if obj is None:
        return None
    try:
        return obj[name]
    except (KeyError, TypeError):
        return getattr(obj, name, None)


def _id(value: Any) -> str | None:
    """The id of an expandable field: the string itself, or the expanded object's id."""
    if value is None or isinstance(value, str):
        return value
    return _field(value, "id")


# --- starting a top-up -------------------------------------------------------------------------------


def parse_topup_amount(value: Any) -> int:
    """Whole cents of a top-up amount typed by a person ("25", "25.50", "$1,000"), within the bounds."""
    text = str(value or "").strip().replace("$", "").replace(",", "")
    try:
        amount = Decimal(text)
    except InvalidOperation as exc:
        raise ApplicationError("Enter an amount in US dollars, like 25 or 25.50.", extra={"field": "amount"}) from exc
    low, high = settings.TURNPIKE_TOPUP_MIN_USD, settings.TURNPIKE_TOPUP_MAX_USD
    if not amount.is_finite() or amount != amount.quantize(Decimal("0.01")):
        raise ApplicationError("An amount has at most two decimals (cents).", extra={"field": "amount"})
    if not low <= amount <= high:
        raise ApplicationError(f"Add between ${low:,} and ${high:,} at a time.", extra={"field": "amount"})
    return int(amount * 100)


def _customer_id(client: stripe.StripeClient, workspace: Workspace) -> str:
    account = billing_account_for(workspace)
    if account.stripe_customer_id:
        return account.stripe_customer_id
    profile = BillingProfile.objects.filter(workspace=workspace).first()
    email = (profile.billing_emails[0] if profile and profile.billing_emails else "") or ""
    customer = client.v1.customers.create(
        params={
            "name": (profile.legal_name if profile and profile.legal_name else workspace.name)[:200],
            **({"email": email} if email else {}),
            "metadata": {"workspace_id": str(workspace.pk), "workspace": str(workspace.public_id)},
        },
        options={"idempotency_key": f"customer:{workspace.public_id}"},
    )
    # Two concurrent first top-ups share the idempotency key, so both get this same customer.
    BillingAccount.objects.filter(pk=account.pk, stripe_customer_id__isnull=True).update(
        stripe_customer_id=customer.id, updated_at=timezone.now()
    )
    return customer.id


def topup_checkout_start(
    *,
    workspace: Workspace,
    acting_user: User,
    amount: Any,
    save_card: bool,
    return_url: str,
    ip: str | None = None,
) -> tuple[TopUp, str]:
    """Start buying credit: a pending TopUp and a Stripe Checkout session. Returns (top-up, checkout URL).

    `return_url` is the billing page; Stripe sends the browser back there. The balance is credited by
    the webhook, not by that return."""
    authorize(workspace=workspace, acting_user=acting_user, perm=Perm.BILLING_MANAGE)
    net_cents = parse_topup_amount(amount)
    profile = BillingProfile.objects.filter(workspace=workspace).first()
    treatment = tax_treatment(country=profile.country if profile else "", tax_id=profile.tax_id if profile else "")
    tax_cents = treatment.tax_cents(net_cents)
    client = stripe_client()
    customer = _customer_id(client, workspace)
    with transaction.atomic():
        topup = TopUp.objects.create(
            workspace=workspace,
            source=TopUp.Source.CHECKOUT,
            amount_nanos=net_cents * NANOS_PER_CENT,
            tax_cents=tax_cents,
            tax_rate=treatment.rate,
            reverse_charge=treatment.reverse_charge,
            created_by=acting_user,
        )
        audit(
            workspace=workspace,
            actor=acting_user,
            action="billing.topup_started",
            target=topup,
            ip=ip,
            metadata={"amount_usd": f"{net_cents / 100:.2f}", "tax_cents": tax_cents, "save_card": save_card},
        )
    line_items: list[dict[str, Any]] = [
        {
            "price_data": {
                "currency": "usd",
                "unit_amount": net_cents,
                "product_data": {"name": f"Turnpike credit for {workspace.name}"[:250]},
            },
            "quantity": 1,
        }
    ]
    if tax_cents:
        line_items.append(
            {
                "price_data": {
                    "currency": "usd",
                    "unit_amount": tax_cents,
                    "product_data": {"name": f"VAT {treatment.rate * 100:g}%"},
                },
                "quantity": 1,
            }
        )
    metadata = {"workspace_id": str(workspace.pk), "topup_id": str(topup.public_id)}
    intent_data: dict[str, Any] = {"metadata": metadata}
    if save_card:
        intent_data["setup_future_usage"] = "off_session"
    separator = "&" if "?" in return_url else "?"
    try:
        session = client.v1.checkout.sessions.create(
            params={  # type: ignore[arg-type]
                "mode": "payment",
                "customer": customer,
                "client_reference_id": str(topup.public_id),
                "line_items": line_items,
                "payment_intent_data": intent_data,
                "metadata": metadata,
                "success_url": f"{return_url}{separator}topup={topup.public_id}",
                "cancel_url": f"{return_url}{separator}topup={topup.public_id}&cancelled=1",
            },
            options={"idempotency_key": f"checkout:{topup.public_id}"},
        )
    except stripe.StripeError as exc:
        log.warning("Stripe refused or failed a Checkout session for %s: %s", topup.public_id, exc)
        TopUp.objects.filter(pk=topup.pk).update(status=TopUp.Status.FAILED, failure_message=str(exc)[:300])
        raise ApplicationError("The payment page could not be opened (Stripe did not answer). Try again.") from exc
    TopUp.objects.filter(pk=topup.pk).update(stripe_checkout_session_id=session.id)
    topup.stripe_checkout_session_id = session.id
    return topup, str(session.url)


# --- crediting ---------------------------------------------------------------------------------------


def _save_card(workspace_id: int, payment_method: Any) -> None:
    card = _field(payment_method, "card")
    if card is None:
        return
    BillingAccount.objects.filter(workspace_id=workspace_id).update(
        payment_method_id=_id(payment_method) or "",
        card_brand=str(_field(card, "brand") or "")[:20],
        card_last4=str(_field(card, "last4") or "")[:4],
        card_exp_month=_field(card, "exp_month"),
        card_exp_year=_field(card, "exp_year"),
        updated_at=timezone.now(),
    )


def _credit(topup_pk: int, *, payment_intent: Any, paid_cents: int, currency: str, save_card: bool) -> str:
    """Credit a top-up that Stripe says is paid. Runs inside the caller's transaction; returns an outcome."""
    topup = TopUp.objects.select_for_update().get(pk=topup_pk)
    if topup.ledger_entry_id is not None:
        return "already credited"
    if currency.lower() != "usd" or paid_cents != topup.total_cents:
        log.error(
            "top-up %s: Stripe reports %s %s paid, expected %s usd; not credited",
            topup.public_id,
            paid_cents,
            currency,
            topup.total_cents,
        )
        return f"amount mismatch ({paid_cents} {currency}); not credited"
    entry, _ = ledger_post(
        workspace_id=topup.workspace_id,
        kind=LedgerEntry.Kind.TOPUP,
        amount_nanos=topup.amount_nanos,
        idempotency_key=f"topup:{topup.public_id}",
        memo=f"Top-up ({topup.get_source_display()})",
        acting_user=topup.created_by,
    )
    intent_id = _id(payment_intent)
    topup.ledger_entry = entry
    topup.status = TopUp.Status.PAID
    topup.paid_at = timezone.now()
    topup.stripe_payment_intent_id = intent_id
    topup.stripe_charge_id = _id(_field(payment_intent, "latest_charge")) or ""
    topup.failure_message = ""
    topup.save()
    if save_card:
        _save_card(topup.workspace_id, _field(payment_intent, "payment_method"))
    BillingAccount.objects.filter(workspace_id=topup.workspace_id).update(low_balance_alerted_at=None)
    invoice = invoice_issue_for_topup(topup=topup)
    audit(
        workspace=topup.workspace,
        actor=None,
        action="billing.topup_paid",
        target=topup,
        metadata={"amount": usd_text(topup.amount_nanos), "invoice": invoice.number, "source": topup.source},
    )
    return f"credited {usd_text(topup.amount_nanos)}"


def _topup_for(*, session_id: str | None = None, intent_id: str | None = None, metadata: Any = None) -> TopUp | None:
    if session_id:
        found = TopUp.objects.filter(stripe_checkout_session_id=session_id).first()
        if found:
            return found
    if intent_id:
        found = TopUp.objects.filter(stripe_payment_intent_id=intent_id).first()
        if found:
            return found
    public_id = _field(metadata, "topup_id") if metadata is not None else None
    if public_id:
        try:
            return TopUp.objects.filter(public_id=uuid.UUID(str(public_id))).first()
        except ValueError:  # not a uuid: not one of ours
            return None
    return None


def _on_checkout_session(session_id: str) -> tuple[int | None, str, Any]:
    """Retrieve the session from Stripe (never trust the event body) and what to do with it."""
    session = stripe_client().v1.checkout.sessions.retrieve(
        session_id, params={"expand": ["payment_intent", "payment_intent.payment_method"]}
    )
    topup = _topup_for(session_id=session.id, metadata=_field(session, "metadata"))
    if topup is None:
        return None, "no top-up of ours has this session", None
    return topup.pk, "", session


# --- webhooks ----------------------------------------------------------------------------------------


def stripe_webhook_handle(*, payload: bytes, signature: str) -> str:
    """Verify and handle one webhook delivery; returns what happened (for the log and the event row).
    Raises WebhookRejected for anything not signed by Stripe with our secret."""
    try:
        event = construct_event(payload, signature)
    except (stripe.SignatureVerificationError, ValueError) as exc:
        raise WebhookRejected(str(exc)[:200]) from exc
    if StripeEvent.objects.filter(event_id=event.id).exists():
        return "duplicate delivery; already handled"
    obj = event.data.object
    handler = _HANDLERS.get(event.type)
    prepared: Any = None
    if handler is not None and event.type.startswith("checkout.session."):
        prepared = _on_checkout_session(str(_field(obj, "id")))  # a Stripe call, before any transaction
    elif handler is not None and event.type.startswith("payment_intent."):
        intent_id = str(_field(obj, "id"))
        prepared = stripe_client().v1.payment_intents.retrieve(intent_id, params={"expand": ["payment_method"]})
    try:
        with transaction.atomic():
            record = StripeEvent.objects.create(event_id=event.id, type=event.type)
            outcome, workspace_id = handler(obj, prepared) if handler else ("ignored: not a type we act on", None)
            record.outcome, record.workspace_id = outcome[:300], workspace_id
            record.save(update_fields=["outcome", "workspace_id"])
    except IntegrityError:
        return "duplicate delivery; already handled"  # a concurrent delivery of the same event won
    log.info("stripe event %s (%s): %s", event.id, event.type, outcome)
    return outcome


def _checkout_completed(obj: Any, prepared: Any) -> tuple[str, int | None]:
    topup_pk, problem, session = prepared
    if topup_pk is None:
        log.error("Stripe Checkout session %s is not one of our top-ups", _field(obj, "id"))
        return problem, None
    topup = TopUp.objects.get(pk=topup_pk)
    status = _field(session, "payment_status")
    if status != "paid":
        return f"session {status}: waiting for the payment to clear", topup.workspace_id
    intent = _field(session, "payment_intent")
    saved = _field(intent, "setup_future_usage") == "off_session"
    outcome = _credit(
        topup_pk,
        payment_intent=intent,
        paid_cents=int(_field(session, "amount_total") or 0),
        currency=str(_field(session, "currency") or ""),
        save_card=saved,
    )
    return outcome, topup.workspace_id


def _checkout_closed_unpaid(obj: Any, prepared: Any) -> tuple[str, int | None]:
    topup_pk, problem, session = prepared
    if topup_pk is None:
        return problem, None
    topup = TopUp.objects.select_for_update().get(pk=topup_pk)
    if topup.status != TopUp.Status.PENDING:
        return f"top-up already {topup.status}", topup.workspace_id
    expired = _field(session, "status") == "expired"
    topup.status = TopUp.Status.EXPIRED if expired else TopUp.Status.FAILED
    topup.failure_message = "The checkout expired." if expired else "The payment failed."
    topup.save(update_fields=["status", "failure_message"])
    return f"top-up {topup.status}", topup.workspace_id


def _intent_succeeded(obj: Any, intent: Any) -> tuple[str, int | None]:
    """Auto-recharge charges are credited by their task; this is the safety net if it died after Stripe
    took the money. Checkout payments are credited from their session events instead."""
    topup = _topup_for(intent_id=intent.id, metadata=_field(intent, "metadata"))
    if topup is None or topup.source != TopUp.Source.AUTO_RECHARGE:
        return "not an auto-recharge of ours; Checkout events credit the rest", topup.workspace_id if topup else None
    if _field(intent, "status") != "succeeded":
        return f"payment intent is {_field(intent, 'status')}", topup.workspace_id
    outcome = _credit(
        topup.pk,
        payment_intent=intent,
        paid_cents=int(_field(intent, "amount_received") or _field(intent, "amount") or 0),
        currency=str(_field(intent, "currency") or ""),
        save_card=False,
    )
    if outcome.startswith("credited"):
        # only when this event did the crediting: a late delivery for a charge the task already credited must
        # not reset the failure count of declines that came after it
        _auto_recharge_succeeded(topup.workspace_id)
    return outcome, topup.workspace_id


def _net_share(topup: TopUp, cents: int) -> int:
    """The credit part of `cents` paid back (refunds and disputes cover tax pro rata), half-up."""
    if topup.total_cents <= 0:
        return 0
    share = Decimal(cents) * topup.amount_cents / topup.total_cents
    return min(int(share.quantize(Decimal(1), rounding=ROUND_HALF_UP)), topup.amount_cents)


def _charge_refunded(obj: Any, prepared: Any) -> tuple[str, int | None]:
    intent_id = _id(_field(obj, "payment_intent"))
    topup = _topup_for(intent_id=intent_id)
    if topup is None:
        return "refund of a charge that is not a top-up of ours", None
    topup = TopUp.objects.select_for_update().get(pk=topup.pk)
    refunded = int(_field(obj, "amount_refunded") or 0)  # cumulative: any delivery order counts each cent once
    if refunded <= topup.refunded_cents:
        return f"refund of {refunded} cents already posted", topup.workspace_id
    delta = refunded - topup.refunded_cents
    net_before, net_after = _net_share(topup, topup.refunded_cents), _net_share(topup, refunded)
    net_delta = net_after - net_before
    charge_id = _id(obj) or ""
    ledger_post(
        workspace_id=topup.workspace_id,
        kind=LedgerEntry.Kind.REFUND,
        amount_nanos=-net_delta * NANOS_PER_CENT,
        idempotency_key=f"refund:{charge_id}:{refunded}",
        memo=f"Refund of top-up {topup.public_id} ({delta / 100:.2f} USD paid back)",
    )
    topup.refunded_cents = refunded
    topup.save(update_fields=["refunded_cents"])
    _credit_note(topup, delta, reason="Refund", key=f"refund:{charge_id}:{refunded}")
    audit(
        workspace=topup.workspace,
        actor=None,
        action="billing.topup_refunded",
        target=topup,
        metadata={"refunded_cents": refunded, "credit_removed": usd_text(net_delta * NANOS_PER_CENT)},
    )
    return f"refund posted: {usd_text(net_delta * NANOS_PER_CENT)} of credit removed", topup.workspace_id


def _credit_note(topup: TopUp, gross_cents: int, *, reason: str, key: str) -> None:
    """A credit note for money paid back (tax included, split pro rata as the ledger entry was)."""
    invoice = topup.invoices.filter(kind="invoice").first()
    if invoice is not None and gross_cents > 0:
        credit_note_issue(invoice=invoice, gross_cents=gross_cents, reason=reason, idempotency_key=f"cn:{key}")


def _dispute(obj: Any, *, withdraw: bool) -> tuple[str, int | None]:
    intent_id = _id(_field(obj, "payment_intent"))
    topup = _topup_for(intent_id=intent_id)
    if topup is None:
        return "dispute of a charge that is not a top-up of ours", None
    topup = TopUp.objects.select_for_update().get(pk=topup.pk)
    dispute_id = _id(obj) or ""
    cents = int(_field(obj, "amount") or 0)
    net = _net_share(topup, cents)
    step = "withdrawn" if withdraw else "reinstated"
    _, created = ledger_post(
        workspace_id=topup.workspace_id,
        kind=LedgerEntry.Kind.ADJUSTMENT,
        amount_nanos=(-net if withdraw else net) * NANOS_PER_CENT,
        idempotency_key=f"dispute:{dispute_id}:{step}",
        memo=f"Dispute {dispute_id} of top-up {topup.public_id}: funds {step}",
    )
    if not created:
        return f"dispute funds already {step}", topup.workspace_id
    topup.disputed_cents = max(topup.disputed_cents + (cents if withdraw else -cents), 0)
    topup.save(update_fields=["disputed_cents"])
    audit(
        workspace=topup.workspace,
        actor=None,
        action=f"billing.dispute_{step}",
        target=topup,
        metadata={"dispute": dispute_id, "amount": usd_text(net * NANOS_PER_CENT)},
    )
    return f"dispute: {usd_text(net * NANOS_PER_CENT)} of credit {step}", topup.workspace_id


def _dispute_opened(obj: Any, prepared: Any) -> tuple[str, int | None]:
    return _dispute(obj, withdraw=True)


def _dispute_closed(obj: Any, prepared: Any) -> tuple[str, int | None]:
    if _field(obj, "status") == "won":
        # won: the funds come back. Withdrawn once (keyed), reinstated once (keyed), in any order of events.
        _dispute(obj, withdraw=True)
        return _dispute(obj, withdraw=False)
    return _dispute(obj, withdraw=True)  # lost: withdrawn, if no earlier event did it


def _dispute_reinstated(obj: Any, prepared: Any) -> tuple[str, int | None]:
    _dispute(obj, withdraw=True)
    return _dispute(obj, withdraw=False)


_HANDLERS: dict[str, Any] = {
    "checkout.session.completed": _checkout_completed,
    "checkout.session.async_payment_succeeded": _checkout_completed,
    "checkout.session.async_payment_failed": _checkout_closed_unpaid,
    "checkout.session.expired": _checkout_closed_unpaid,
    "payment_intent.succeeded": _intent_succeeded,
    "charge.refunded": _charge_refunded,
    "charge.dispute.created": _dispute_opened,
    "charge.dispute.funds_withdrawn": _dispute_opened,
    "charge.dispute.funds_reinstated": _dispute_reinstated,
    "charge.dispute.closed": _dispute_closed,
}


# --- auto-recharge -----------------------------------------------------------------------------------


def _auto_recharge_succeeded(workspace_id: int) -> None:
    BillingAccount.objects.filter(workspace_id=workspace_id).update(
        auto_recharge_failures=0, auto_recharge_last_error="", updated_at=timezone.now()
    )


def auto_recharge_due(*, workspace_id: int, balance_nanos: int) -> bool:
    account = BillingAccount.objects.filter(workspace_id=workspace_id, auto_recharge_enabled=True).first()
    return bool(account and account.payment_method_id and balance_nanos < account.auto_recharge_threshold_nanos)


def auto_recharge_run(*, workspace_id: int) -> str:
    """Charge the saved card off-session if the balance is below the threshold. At most one in flight
    per workspace (a partial unique index on pending auto-recharges); safe to call any number of times."""
    from billing.selectors import workspace_balance

    with transaction.atomic():
        account = BillingAccount.objects.select_for_update().filter(workspace_id=workspace_id).first()
        if account is None or not account.auto_recharge_enabled or not account.payment_method_id:
            return "auto-recharge is off"
        balance, _ = workspace_balance(workspace_id=workspace_id)
        if balance >= account.auto_recharge_threshold_nanos:
            return "balance is above the threshold"
        if TopUp.objects.filter(
            workspace_id=workspace_id, source=TopUp.Source.AUTO_RECHARGE, status=TopUp.Status.PENDING
        ).exists():
            return "a recharge is already in flight"
        profile = BillingProfile.objects.filter(workspace_id=workspace_id).first()
        treatment = tax_treatment(country=profile.country if profile else "", tax_id=profile.tax_id if profile else "")
        net_cents = account.auto_recharge_amount_nanos // NANOS_PER_CENT
        topup = TopUp.objects.create(
            workspace_id=workspace_id,
            source=TopUp.Source.AUTO_RECHARGE,
            amount_nanos=net_cents * NANOS_PER_CENT,
            tax_cents=treatment.tax_cents(net_cents),
            tax_rate=treatment.rate,
            reverse_charge=treatment.reverse_charge,
        )
    return _auto_recharge_charge(topup)


def _auto_recharge_charge(topup: TopUp) -> str:
    account = BillingAccount.objects.get(workspace_id=topup.workspace_id)
    if not account.stripe_customer_id or not account.payment_method_id:
        return _auto_recharge_failed(topup, "no saved card")
    try:
        intent = stripe_client().v1.payment_intents.create(
            params={
                "amount": topup.total_cents,
                "currency": "usd",
                "customer": account.stripe_customer_id,
                "payment_method": account.payment_method_id,
                "off_session": True,
                "confirm": True,
                "metadata": {"workspace_id": str(topup.workspace_id), "topup_id": str(topup.public_id)},
            },
            options={"idempotency_key": f"auto-recharge:{topup.public_id}"},
        )
    except stripe.CardError as exc:
        return _auto_recharge_failed(topup, f"card refused: {exc.user_message or exc.code or 'declined'}")
    except stripe.InvalidRequestError as exc:
        return _auto_recharge_failed(topup, f"Stripe refused the charge: {exc.user_message or exc}")
    except stripe.StripeError as exc:
        # Stripe unreachable or erring: the top-up stays pending and the sweep retries it with the same
        # idempotency key, so it is charged at most once.
        log.warning("auto-recharge %s: Stripe did not answer (%s); will retry", topup.public_id, exc)
        return "Stripe did not answer; will retry"
    if intent.status != "succeeded":
        return _auto_recharge_failed(topup, f"payment {intent.status}")
    with transaction.atomic():
        TopUp.objects.filter(pk=topup.pk).update(stripe_payment_intent_id=intent.id)
        outcome = _credit(
            topup.pk,
            payment_intent=intent,
            paid_cents=int(intent.amount_received or intent.amount or 0),
            currency=str(intent.currency or ""),
            save_card=False,
        )
        _auto_recharge_succeeded(topup.workspace_id)
    return outcome


def _auto_recharge_failed(topup: TopUp, reason: str) -> str:
    limit = settings.TURNPIKE_AUTO_RECHARGE_MAX_FAILURES
    with transaction.atomic():
        TopUp.objects.filter(pk=topup.pk, status=TopUp.Status.PENDING).update(
            status=TopUp.Status.FAILED, failure_message=reason[:300]
        )
        account = BillingAccount.objects.select_for_update().get(workspace_id=topup.workspace_id)
        account.auto_recharge_failures += 1
        account.auto_recharge_last_error = reason[:300]
        turned_off = account.auto_recharge_failures >= limit
        if turned_off:
            account.auto_recharge_enabled = False
        account.updated_at = timezone.now()
        account.save()
        workspace = Workspace.objects.get(pk=topup.workspace_id)
        audit(
            workspace=workspace,
            actor=None,
            action="billing.auto_recharge_failed",
            target=topup,
            metadata={"reason": reason, "failures": account.auto_recharge_failures, "turned_off": turned_off},
        )
        if turned_off:
            transaction.on_commit(lambda: _tell_auto_recharge_off(workspace, reason))
    return f"failed ({reason}){'; auto-recharge turned off' if turned_off else ''}"


def _tell_auto_recharge_off(workspace: Workspace, reason: str) -> None:
    recipients = billing_contacts(workspace=workspace)
    if not recipients:
        return
    url = f"{settings.TURNPIKE_DASHBOARD_URL}/w/{workspace.slug}/billing/"
    limit = settings.TURNPIKE_AUTO_RECHARGE_MAX_FAILURES
    send_mail(
        subject=f"[Turnpike] Auto-recharge turned off for {workspace.name}",
        message=(
            f"Auto-recharge for the workspace {workspace.name} failed {limit} times in a row and is now off.\n"
            f"Last error: {reason}\n\n"
            f"Requests that need credit are refused once the balance runs out. Update the card or add credit:\n"
            f"{url}\n"
        ),
        from_email=None,
        recipient_list=recipients,
    )


def auto_recharge_sweep() -> int:
    """Resolve off-session charges left pending by a worker that died mid-charge (same idempotency key:
    Stripe returns the first attempt's result). Returns how many it looked at."""
    stale = TopUp.objects.filter(
        source=TopUp.Source.AUTO_RECHARGE,
        status=TopUp.Status.PENDING,
        created_at__lt=timezone.now() - STALE_AUTO_RECHARGE,
    )[:100]
    count = 0
    for topup in stale:
        _auto_recharge_charge(topup)
        count += 1
    return count


# --- after usage is posted ---------------------------------------------------------------------------


def after_usage_posted(*, balances: dict[int, tuple[int, int]]) -> None:
    """The ingester's hook, after a batch committed: queue an auto-recharge for workspaces that fell below
    their threshold and alert (once) those below their low-balance line. Never raises: usage is stored
    already, and the periodic sweep (billing.auto_recharge_sweep) catches anything missed here."""
    if not balances:
        return
    from billing import tasks  # the tasks module imports this one

    try:
        accounts = BillingAccount.objects.filter(workspace_id__in=list(balances)).exclude(
            auto_recharge_enabled=False, low_balance_threshold_nanos__isnull=True
        )
        for account in accounts:
            balance = balances[account.workspace_id][0]
            if auto_recharge_due(workspace_id=account.workspace_id, balance_nanos=balance):
                tasks.auto_recharge.delay(account.workspace_id)
            threshold = account.low_balance_threshold_nanos
            if threshold is not None and balance < threshold and account.low_balance_alerted_at is None:
                claimed = BillingAccount.objects.filter(pk=account.pk, low_balance_alerted_at__isnull=True).update(
                    low_balance_alerted_at=timezone.now()
                )
                if claimed:
                    tasks.low_balance_alert.delay(account.workspace_id)
    except Exception:
        log.exception("balance thresholds not checked after a usage batch; the sweep will")


def low_balance_alert_send(*, workspace_id: int) -> None:
    workspace = Workspace.objects.get(pk=workspace_id)
    account = BillingAccount.objects.get(workspace=workspace)
    recipients = billing_contacts(workspace=workspace)
    if not recipients or account.low_balance_threshold_nanos is None:
        return
    from billing.selectors import workspace_balance

    balance, _ = workspace_balance(workspace_id=workspace_id)
    url = f"{settings.TURNPIKE_DASHBOARD_URL}/w/{workspace.slug}/billing/"
    send_mail(
        subject=f"[Turnpike] {workspace.name}: balance below {usd_text(account.low_balance_threshold_nanos)}",
        message=(
            f"The prepaid balance of {workspace.name} is {usd_text(balance)}, below your alert line of "
            f"{usd_text(account.low_balance_threshold_nanos)}.\n"
            "Requests that need credit are refused once it runs out. Add credit or turn on auto-recharge:\n"
            f"{url}\n"
        ),
        from_email=None,
        recipient_list=recipients,
    )


def auto_recharge_scan() -> int:
    """Every workspace with auto-recharge on and a balance below its threshold gets a run (the sweep
    behind the ingester's hook). Returns how many were due."""
    from billing.selectors import workspace_balance

    due = 0
    for account in BillingAccount.objects.filter(auto_recharge_enabled=True).exclude(payment_method_id=""):
        balance, _ = workspace_balance(workspace_id=account.workspace_id)
        if balance < account.auto_recharge_threshold_nanos:
            auto_recharge_run(workspace_id=account.workspace_id)
            due += 1
    return due
