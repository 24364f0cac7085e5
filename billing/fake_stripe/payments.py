"""The money flows, shared by the API, the hosted checkout page and the control endpoints: paying a
checkout session, charging a saved card off-session, settling an asynchronous payment, refunds and
disputes. Each function runs under `Store.lock` (the caller holds it), changes the objects the way
Stripe does, and emits the events Stripe sends, in this order:

    checkout paid        payment_intent.created, charge.succeeded, payment_intent.succeeded,
                         [payment_method.attached], checkout.session.completed
    checkout async card  payment_intent.created, charge.pending, payment_intent.processing,
                         [payment_method.attached], checkout.session.completed (payment_status "unpaid");
                         later charge.succeeded, payment_intent.succeeded,
                         checkout.session.async_payment_succeeded (or the .failed trio)
    declined attempt     [payment_intent.created], charge.failed, payment_intent.payment_failed
                         (no charge when the decline is authentication_required)
    refund               charge.refunded (amount_refunded cumulative), refund.created
    dispute              charge.dispute.created, charge.dispute.funds_withdrawn;
                         closing: charge.dispute.closed, and charge.dispute.funds_reinstated when won
"""

from __future__ import annotations

import copy
from typing import Any

from billing.fake_stripe import cards, objects
from billing.fake_stripe.cards import Decline
from billing.fake_stripe.store import Store
from billing.fake_stripe.wire import MAX_AMOUNT, Params, StripeError

DISPUTE_REASONS = (
    "bank_cannot_process",
    "check_returned",
    "credit_not_processed",
    "customer_initiated",
    "debit_not_authorized",
    "duplicate",
    "fraudulent",
    "general",
    "incorrect_account_details",
    "insufficient_funds",
    "product_not_received",
    "product_unacceptable",
    "subscription_canceled",
    "unrecognized",
)
REFUND_REASONS = ("duplicate", "fraudulent", "requested_by_customer")
ZERO_DECIMAL = frozenset(
    "bif clp djf gnf jpy kmf krw mga pyg rwf ugx vnd vuv xaf xof xpf".split()
)  # currencies without minor units
DISPUTE_FEE = 1500


def check_amount(amount: int, currency: str, *, param: str = "amount") -> None:
    minimum = 1 if currency in ZERO_DECIMAL else 50
    if amount < minimum:
        raise StripeError(
            f"Amount must be at least {minimum} {currency} (in the currency's smallest unit).",
            code="amount_too_small",
            param=param,
        )
    if amount > MAX_AMOUNT:
        raise StripeError(
            f"Amount must be no more than {MAX_AMOUNT} {currency} (in the currency's smallest unit).",
            code="amount_too_large",
            param=param,
        )


# --- payment methods ---------------------------------------------------------------------------------------


def payment_method_create(
    store: Store,
    *,
    number: str,
    exp_month: int = 12,
    exp_year: int = 2034,
    email: str | None = None,
    name: str | None = None,
) -> Params:
    """A card PaymentMethod from a card number (402 incorrect_number when it fails the Luhn check)."""
    digits = cards.normalise(number)
    if not cards.luhn_valid(digits):
        decline = cards.INCORRECT_NUMBER
        raise StripeError(decline.message, status=402, type="card_error", code=decline.code, param="number")
    method = objects.payment_method(
        digits=digits, brand=cards.brand(digits), exp_month=exp_month, exp_year=exp_year, email=email, name=name
    )
    return store.add(method, digits=digits)


def payment_method_resolve(store: Store, method_id: str, *, param: str = "payment_method") -> Params:
    """An existing PaymentMethod, or a fresh one for Stripe's test ids (`pm_card_visa`, …)."""
    if method_id in cards.MAGIC_PAYMENT_METHODS:
        return payment_method_create(store, number=cards.MAGIC_PAYMENT_METHODS[method_id])
    return store.get(method_id, "payment_method", param=param)


def payment_method_attach(store: Store, method: Params, customer: Params, *, redisplay: str | None = None) -> None:
    if method["customer"] == customer["id"]:
        return
    if method["customer"] is not None:
        raise StripeError(
            f"The payment method you provided has already been attached to a customer ({method['customer']}).",
            code="payment_method_unexpected_state",
            param="payment_method",
        )
    method["customer"] = customer["id"]
    if redisplay is not None:
        method["allow_redisplay"] = redisplay
    store.emit("payment_method.attached", method)


SINGLE_USE = (
    "The provided PaymentMethod was previously used with a PaymentIntent without Customer attachment, shared with a "
    "connected account without Customer attachment, or was detached from a Customer. It may not be used again. To "
    "use a PaymentMethod multiple times, you must attach it to a Customer first."
)


def check_reusable(store: Store, method: Params) -> None:
    """A PaymentMethod that is not attached to a customer can be used once (Stripe's rule)."""
    if method["customer"] is None and store.private[method["id"]].get("used"):
        raise StripeError(SINGLE_USE, param="payment_method")


def payment_method_detach(store: Store, method: Params) -> None:
    if method["customer"] is None:
        raise StripeError(
            "The payment method you provided is not attached to a customer so detachment is impossible.",
            code="payment_method_unexpected_state",
        )
    owner = store.objects.get(method["customer"])
    previous = method["customer"]
    method["customer"] = None
    store.private[method["id"]]["used"] = True
    if owner is not None and owner["invoice_settings"]["default_payment_method"] == method["id"]:
        owner["invoice_settings"]["default_payment_method"] = None
        store.emit(
            "customer.updated",
            owner,
            previous_attributes={"invoice_settings": {"default_payment_method": method["id"]}},
        )
    store.emit("payment_method.detached", method, previous_attributes={"customer": previous})


# --- one payment attempt -----------------------------------------------------------------------------------


def _decline(store: Store, intent: Params, method: Params, *, off_session: bool) -> Decline | None:
    """Forced declines (control endpoints: customer, then payment method) win over the card's own."""
    for owner in (intent["customer"], method["customer"], method["id"]):
        if owner is not None and owner in store.declines:
            return store.declines[owner]
    behaviour = cards.behaviour(store.private[method["id"]].get("digits", ""))
    if behaviour.decline is not None:
        return behaviour.decline
    return behaviour.off_session_decline if off_session else None


def attempt(store: Store, intent: Params, method: Params, *, off_session: bool, asynchronous: bool = False) -> None:
    """Confirm `intent` with `method`: it succeeds (or starts processing), or a 402 card_error is raised
    with the intent left in requires_payment_method."""
    intent["payment_method"] = method["id"]
    decline = _decline(store, intent, method, off_session=off_session)
    if decline is not None:
        charge_id = None
        if decline.code != "authentication_required":
            failed = store.add(objects.charge(intent=intent, method=method, status="failed"))
            failed["failure_code"] = decline.code
            failed["failure_message"] = decline.message
            failed["outcome"] = {
                "network_status": "declined_by_network",
                "reason": decline.decline_code,
                "risk_level": "normal",
                "risk_score": 20,
                "seller_message": "The bank did not return any further details with this decline.",
                "type": "issuer_declined",
            }
            intent["latest_charge"] = charge_id = failed["id"]
            store.emit("charge.failed", failed)
        intent["status"] = "requires_payment_method"
        intent["last_payment_error"] = {
            "charge": charge_id,
            "code": decline.code,
            "decline_code": decline.decline_code,
            "doc_url": f"https://stripe.com/docs/error-codes/{decline.code.replace('_', '-')}",
            "message": decline.message,
            "payment_method": copy.deepcopy(method),
            "type": "card_error",
        }
        store.emit("payment_intent.payment_failed", intent)
        raise StripeError(
            decline.message,
            status=402,
            type="card_error",
            code=decline.code,
            decline_code=decline.decline_code,
            charge=charge_id,
            payment_intent=copy.deepcopy(intent),
            payment_method=copy.deepcopy(method),
        )
    charge = store.add(objects.charge(intent=intent, method=method, status="pending" if asynchronous else "succeeded"))
    intent["latest_charge"] = charge["id"]
    intent["last_payment_error"] = None
    if asynchronous:
        intent["status"] = "processing"
        store.emit("charge.pending", charge)
        store.emit("payment_intent.processing", intent)
        return
    intent["status"] = "succeeded"
    intent["amount_received"] = intent["amount"]
    store.emit("charge.succeeded", charge)
    store.emit("payment_intent.succeeded", intent)


def _after_success(store: Store, intent: Params) -> None:
    method = store.objects[intent["payment_method"]]
    if cards.behaviour(store.private[method["id"]].get("digits", "")).dispute and intent["status"] == "succeeded":
        dispute_create(store, charge=store.objects[intent["latest_charge"]], amount=None, reason="fraudulent")


# --- checkout sessions -------------------------------------------------------------------------------------


def checkout_session_refresh(store: Store, session: Params) -> Params:
    """Expire an open session whose `expires_at` has passed (Stripe expires them on its own)."""
    if session["status"] == "open" and objects.now() >= session["expires_at"]:
        checkout_session_expire(store, session)
    return session


def checkout_session_expire(store: Store, session: Params) -> None:
    if session["status"] != "open":
        raise StripeError(
            f'Only Checkout Sessions with a status in ["open"] can be expired. This Checkout Session has a '
            f'status of "{session["status"]}".'
        )
    session["status"] = "expired"
    if session["payment_intent"]:
        intent = store.objects[session["payment_intent"]]
        if intent["status"] in ("requires_payment_method", "requires_confirmation"):
            intent["status"] = "canceled"
            intent["canceled_at"] = objects.now()
            intent["cancellation_reason"] = "automatic"
            store.emit("payment_intent.canceled", intent)
    store.emit("checkout.session.expired", session)


def checkout_session_pay(
    store: Store,
    session: Params,
    *,
    number: str,
    save: bool,
    email: str | None = None,
    name: str | None = None,
    exp_month: int = 12,
    exp_year: int = 2034,
) -> Params:
    """What the hosted page does when the buyer presses Pay (also `POST /_fake/checkout/{id}/pay`)."""
    checkout_session_refresh(store, session)
    if session["status"] != "open":
        raise StripeError(
            f"This Checkout Session is no longer open (status {session['status']}).", param="checkout_session"
        )
    private = store.private[session["id"]]
    digits = cards.normalise(number)
    behaviour = cards.behaviour(digits)
    customer = store.objects.get(session["customer"]) if session["customer"] else None
    email = email or session["customer_email"] or (customer["email"] if customer else None)
    method = payment_method_create(store, number=digits, exp_month=exp_month, exp_year=exp_year, email=email, name=name)
    setup_future_usage = private.get("setup_future_usage")
    save = save and bool(setup_future_usage or private.get("save_enabled"))
    if customer is None and (private.get("customer_creation") == "always" or save):
        customer = store.add(objects.customer(email=email, name=name, description=None, phone=None))
        store.emit("customer.created", customer)
        session["customer"] = customer["id"]
    if session["payment_intent"]:
        intent = store.objects[session["payment_intent"]]
        intent["customer"] = session["customer"]
    else:
        intent = store.add(
            objects.payment_intent(
                amount=session["amount_total"],
                currency=session["currency"],
                customer_id=session["customer"],
                description=private.get("description"),
                metadata=dict(private.get("intent_metadata", {})),
                setup_future_usage=setup_future_usage,
            )
        )
        session["payment_intent"] = intent["id"]
        store.emit("payment_intent.created", intent)
    attempt(store, intent, method, off_session=False, asynchronous=behaviour.asynchronous)
    if save and customer is not None:
        payment_method_attach(store, method, customer, redisplay="always")
    else:
        intent["setup_future_usage"] = None
        method["allow_redisplay"] = "limited"
    session["status"] = "complete"
    session["payment_status"] = "unpaid" if behaviour.asynchronous else "paid"
    session["customer_details"] = {
        "address": None,
        "email": email,
        "name": name,
        "phone": None,
        "tax_exempt": "none",
        "tax_ids": [],
    }
    store.emit("checkout.session.completed", session)
    _after_success(store, intent)
    return session


def checkout_success_url(session: Params) -> str | None:
    """`success_url` with the literal `{CHECKOUT_SESSION_ID}` replaced, as Stripe does."""
    url = session.get("success_url")
    return url.replace("{CHECKOUT_SESSION_ID}", session["id"]) if url else None


def checkout_session_settle(store: Store, session: Params, *, succeed: bool) -> Params:
    """The bank's answer to an asynchronous payment (`POST /_fake/checkout/{id}/async`)."""
    intent = store.objects.get(session["payment_intent"] or "")
    if session["status"] != "complete" or intent is None or intent["status"] != "processing":
        raise StripeError(
            "This Checkout Session has no payment waiting to settle (pay it with the async test card "
            f"{cards.ASYNC_CARD} first).",
            param="checkout_session",
        )
    charge = store.objects[intent["latest_charge"]]
    if succeed:
        charge.update(
            status="succeeded",
            paid=True,
            captured=True,
            amount_captured=charge["amount"],
            balance_transaction=objects.balance_transaction_id(),
        )
        intent["status"] = "succeeded"
        intent["amount_received"] = intent["amount"]
        session["payment_status"] = "paid"
        store.emit("charge.succeeded", charge)
        store.emit("payment_intent.succeeded", intent)
        store.emit("checkout.session.async_payment_succeeded", session)
        return session
    decline = cards.DECLINES["generic_decline"]
    charge.update(status="failed", failure_code=decline.code, failure_message=decline.message)
    intent["status"] = "requires_payment_method"
    intent["last_payment_error"] = {
        "charge": charge["id"],
        "code": decline.code,
        "decline_code": decline.decline_code,
        "message": decline.message,
        "payment_method": copy.deepcopy(store.objects[intent["payment_method"]]),
        "type": "card_error",
    }
    store.emit("charge.failed", charge)
    store.emit("payment_intent.payment_failed", intent)
    store.emit("checkout.session.async_payment_failed", session)
    return session


# --- payment intents ---------------------------------------------------------------------------------------


def payment_intent_confirm(store: Store, intent: Params, method: Params | None, *, off_session: bool) -> Params:
    if intent["status"] not in ("requires_payment_method", "requires_confirmation"):
        raise StripeError(
            f"This PaymentIntent's status is {intent['status']}, so it cannot be confirmed.",
            code="payment_intent_unexpected_state",
            payment_intent=copy.deepcopy(intent),
        )
    if method is None:
        if intent["payment_method"] is None:
            raise StripeError(
                "You cannot confirm this PaymentIntent because it's missing a payment method. Update the "
                "PaymentIntent with a payment method and then confirm it again.",
                code="payment_intent_unexpected_state",
                param="payment_method",
            )
        method = store.objects[intent["payment_method"]]
    customer = store.objects.get(intent["customer"]) if intent["customer"] else None
    if method["customer"] is not None and intent["customer"] != method["customer"]:
        raise StripeError(
            f"The provided PaymentMethod {method['id']} belongs to another customer; pass customer="
            f"{method['customer']} or a payment method attached to {intent['customer']}.",
            param="payment_method",
        )
    check_reusable(store, method)
    attempt(store, intent, method, off_session=off_session)
    if intent["setup_future_usage"] and customer is not None and method["customer"] is None:
        payment_method_attach(store, method, customer)
    _after_success(store, intent)
    return intent


def payment_intent_cancel(store: Store, intent: Params, *, reason: str | None) -> Params:
    if intent["status"] in ("succeeded", "canceled", "processing"):
        raise StripeError(
            f"You cannot cancel this PaymentIntent because it has a status of {intent['status']}. Only a "
            "PaymentIntent with one of the following statuses may be canceled: requires_payment_method, "
            "requires_capture, requires_confirmation, requires_action, processing.",
            code="payment_intent_unexpected_state",
        )
    intent["status"] = "canceled"
    intent["canceled_at"] = objects.now()
    intent["cancellation_reason"] = reason
    store.emit("payment_intent.canceled", intent)
    return intent


# --- refunds and disputes ----------------------------------------------------------------------------------


def format_amount(amount: int, currency: str) -> str:
    """Minor units → "$1,234.50" (USD) or "1,234.50 EUR"; integer arithmetic only."""
    if currency in ZERO_DECIMAL:
        return f"{amount:,} {currency.upper()}"
    sign = "-" if amount < 0 else ""
    whole, cents = divmod(abs(amount), 100)
    if currency == "usd":
        return f"{sign}${whole:,}.{cents:02d}"
    return f"{sign}{whole:,}.{cents:02d} {currency.upper()}"


def charge_for(store: Store, *, charge_id: str | None, payment_intent_id: str | None) -> Params:
    if charge_id:
        return store.get(charge_id, "charge", param="charge")
    if payment_intent_id:
        intent = store.get(payment_intent_id, "payment_intent", param="payment_intent")
        if intent["status"] != "succeeded" or intent["latest_charge"] is None:
            raise StripeError(
                f"This PaymentIntent ({intent['id']}) does not have a successful charge to refund.",
                param="payment_intent",
            )
        return store.objects[intent["latest_charge"]]
    raise StripeError(
        "One of the following params should be provided for this request: payment_intent or charge.",
        code="parameter_missing",
    )


def refund_create(
    store: Store, *, charge: Params, amount: int | None, reason: str | None, metadata: dict[str, str]
) -> Params:
    if charge["status"] != "succeeded":
        raise StripeError(f"Charge {charge['id']} has not succeeded; only a paid charge can be refunded.")
    remaining = charge["amount"] - charge["amount_refunded"]
    if remaining == 0:
        raise StripeError(f"Charge {charge['id']} has already been refunded.", code="charge_already_refunded")
    disputes = [d for d in store.all("dispute", charge=charge["id"]) if d["status"] != "won"]
    if disputes:
        raise StripeError(
            f"Charge {charge['id']} has been charged back; cannot issue a refund.", code="charge_disputed"
        )
    amount = remaining if amount is None else amount
    if amount <= 0:
        raise StripeError("Refund amount must be a positive integer.", param="amount")
    if amount > remaining:
        raise StripeError(
            f"Refund amount ({format_amount(amount, charge['currency'])}) is greater than unrefunded amount on charge "
            f"({format_amount(remaining, charge['currency'])})",
            code="amount_too_large",
            param="amount",
        )
    refund = store.add(objects.refund(of_charge=charge, amount=amount, reason=reason, metadata=metadata))
    previous = {"amount_refunded": charge["amount_refunded"], "refunded": charge["refunded"]}
    charge["amount_refunded"] += amount
    charge["refunded"] = charge["amount_refunded"] == charge["amount"]
    store.emit("charge.refunded", charge, previous_attributes=previous)
    store.emit("refund.created", refund)
    return refund


def _balance_transaction(*, amount: int, fee: int, currency: str, description: str) -> Params:
    return {
        "id": objects.balance_transaction_id(),
        "object": "balance_transaction",
        "amount": amount,
        "available_on": objects.now(),
        "created": objects.now(),
        "currency": currency,
        "description": description,
        "fee": fee,
        "net": amount - fee,
        "reporting_category": "dispute" if amount < 0 else "dispute_reversal",
        "status": "available",
        "type": "adjustment",
    }


def dispute_create(store: Store, *, charge: Params, amount: int | None, reason: str) -> Params:
    if charge["status"] != "succeeded":
        raise StripeError(f"Charge {charge['id']} has not succeeded; only a paid charge can be disputed.")
    if charge["disputed"]:
        raise StripeError(f"Charge {charge['id']} is already disputed.", code="charge_disputed")
    amount = charge["amount"] if amount is None else amount
    if not 0 < amount <= charge["amount"]:
        raise StripeError(
            f"A dispute amount must be between 1 and the charge amount ({charge['amount']}).", param="amount"
        )
    dispute = store.add(objects.dispute(of_charge=charge, amount=amount, reason=reason))
    charge["disputed"] = True
    store.emit("charge.dispute.created", dispute)
    dispute["balance_transactions"].append(
        _balance_transaction(
            amount=-amount,
            fee=DISPUTE_FEE,
            currency=charge["currency"],
            description=f"Chargeback withdrawal for {charge['id']}",
        )
    )
    store.emit("charge.dispute.funds_withdrawn", dispute)
    return dispute


def dispute_close(store: Store, dispute: Params, *, status: str) -> Params:
    if dispute["status"] in ("won", "lost", "warning_closed"):
        raise StripeError(f"This dispute is already closed (status {dispute['status']}).")
    previous: dict[str, Any] = {"status": dispute["status"]}
    dispute["status"] = status
    store.emit("charge.dispute.closed", dispute, previous_attributes=previous)
    if status == "won":
        dispute["balance_transactions"].append(
            _balance_transaction(
                amount=dispute["amount"],
                fee=-DISPUTE_FEE,
                currency=dispute["currency"],
                description=f"Chargeback reversal for {dispute['charge']}",
            )
        )
        store.emit("charge.dispute.funds_reinstated", dispute)
    return dispute
