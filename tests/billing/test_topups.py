"""Top-ups through Stripe, end to end over real sockets: the dashboard's Add credit → the real `stripe` SDK
→ the bundled fake Stripe (a process) → its signed webhook → our /stripe/webhook/ on a live server →
the ledger. Also refunds, disputes, auto-recharge, and every way a webhook can be wrong."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest
import stripe
from django.core import mail
from django.db import transaction

from billing.models import BillingAccount, Invoice, LedgerEntry, StripeEvent, TopUp
from billing.selectors import workspace_balance
from billing.services import ledger_post
from billing.services.accounts import auto_recharge_update
from billing.services.topups import auto_recharge_run, topup_checkout_start
from tests.conftest import STRIPE_KEY as KEY
from tests.conftest import STRIPE_WEBHOOK_SECRET as WEBHOOK_SECRET
from tests.dashboard.conftest import SECRET_A, World, build_world, client_for
from tests.servers import wait_until

USD = 1_000_000_000

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


@pytest.fixture
def fake(stripe_fake: httpx.Client, settings: Any) -> httpx.Client:
    settings.TURNPIKE_TAX_RATES = ["NL=0.21"]
    return stripe_fake


@pytest.fixture
def world_a(transactional_db: None, fake_provider_url: str) -> World:
    return build_world("Alpha", SECRET_A, fake_provider_url)


def ledger(workspace: Any, kind: str) -> list[LedgerEntry]:
    return list(LedgerEntry.objects.filter(workspace=workspace, kind=kind).order_by("id"))


def start_and_pay(world: Any, fake: httpx.Client, *, amount: str = "25", card: str = "4242424242424242") -> TopUp:
    client = client_for(world.owner)
    response = client.post(
        f"/w/{world.workspace.slug}/billing/topup/", {"amount": "custom", "custom_amount": amount, "save_card": "on"}
    )
    assert response.status_code == 302 and "/checkout/cs_test_" in response["Location"], response
    topup = TopUp.objects.get(workspace=world.workspace, status="pending")
    assert workspace_balance(workspace_id=world.workspace.pk)[0] == 0  # nothing before Stripe says so
    paid = fake.post(f"/_fake/checkout/{topup.stripe_checkout_session_id}/pay", json={"card": card, "save": True})
    paid.raise_for_status()
    return topup


def wait_paid(topup: TopUp) -> TopUp:
    def paid() -> TopUp | None:
        topup.refresh_from_db()
        return topup if topup.status == "paid" else None

    return wait_until(paid, timeout=10, what=f"top-up {topup.public_id} credited by the webhook")


def event_ids(fake: httpx.Client, event_type: str) -> list[str]:
    deliveries = fake.get("/_fake/deliveries", params={"type": event_type}).json()
    rows = deliveries["data"] if isinstance(deliveries, dict) else deliveries
    return sorted({d["event"] for d in rows})


def test_add_credit_is_credited_once_from_the_verified_webhook(world_a, fake):
    topup = wait_paid(start_and_pay(world_a, fake))
    ws = world_a.workspace
    assert [e.amount_nanos for e in ledger(ws, "topup")] == [25 * USD]
    assert workspace_balance(workspace_id=ws.pk)[0] == 25 * USD
    account = BillingAccount.objects.get(workspace=ws)
    assert account.card_last4 == "4242" and account.payment_method_id.startswith("pm_")
    invoice = Invoice.objects.get(topup=topup, kind="invoice")
    assert invoice.number.startswith("TP-") and invoice.total_cents == 2500 and invoice.net_cents == 2500

    # Stripe delivers again (and again): still one credit.
    for event_id in event_ids(fake, "checkout.session.completed"):
        fake.post(f"/_fake/events/{event_id}/redeliver").raise_for_status()
        fake.post(f"/_fake/events/{event_id}/redeliver").raise_for_status()
    wait_until(
        lambda: all(d["status"] == "succeeded" for d in _deliveries(fake)),
        timeout=10,
        what="redeliveries answered",
    )
    assert [e.amount_nanos for e in ledger(ws, "topup")] == [25 * USD]
    assert Invoice.objects.filter(topup=topup).count() == 1

    page = client_for(world_a.owner).get(f"/w/{ws.slug}/billing/?topup={topup.public_id}")
    assert "Payment received: $25.00 added" in page.content.decode()


def _deliveries(fake: httpx.Client) -> list[dict[str, Any]]:
    body = fake.get("/_fake/deliveries").json()
    return body["data"] if isinstance(body, dict) else body


def test_tax_is_added_at_checkout_and_only_the_credit_reaches_the_balance(world_a, fake):
    client_for(world_a.owner).post(
        f"/w/{world_a.workspace.slug}/billing/profile/", {"legal_name": "Acme BV", "country": "NL"}
    )
    topup = wait_paid(start_and_pay(world_a, fake, amount="10"))
    assert (topup.tax_cents, topup.total_cents) == (210, 1210)
    assert workspace_balance(workspace_id=world_a.workspace.pk)[0] == 10 * USD
    invoice = Invoice.objects.get(topup=topup)
    assert (invoice.net_cents, invoice.tax_cents, invoice.total_cents) == (1000, 210, 1210)


def test_a_declined_card_credits_nothing(world_a, fake):
    client_for(world_a.owner).post(f"/w/{world_a.workspace.slug}/billing/topup/", {"amount": "25", "save_card": "on"})
    topup = TopUp.objects.get(workspace=world_a.workspace)
    declined = fake.post(f"/_fake/checkout/{topup.stripe_checkout_session_id}/pay", json={"card": "4000000000000002"})
    assert declined.status_code == 402
    time.sleep(0.5)
    assert not ledger(world_a.workspace, "topup")
    topup.refresh_from_db()
    assert topup.status == "pending"


def test_async_payment_is_credited_when_it_clears_in_any_event_order(world_a, fake):
    topup = start_and_pay(world_a, fake, card="4000000000008880")  # completes unpaid
    wait_until(
        lambda: StripeEvent.objects.filter(type="checkout.session.completed").exists(),
        timeout=10,
        what="the completed (unpaid) event",
    )
    assert not ledger(world_a.workspace, "topup")
    fake.post(f"/_fake/checkout/{topup.stripe_checkout_session_id}/async", json={"result": "succeeded"})
    wait_paid(topup)
    # the earlier "completed" event again, now out of order: the session is paid, credited already
    for event_id in event_ids(fake, "checkout.session.completed"):
        fake.post(f"/_fake/events/{event_id}/redeliver").raise_for_status()
    time.sleep(0.5)
    assert [e.amount_nanos for e in ledger(world_a.workspace, "topup")] == [25 * USD]


def test_bad_webhooks_get_400_and_change_nothing(world_a, fake, live_server):
    url = f"{live_server.url}/stripe/webhook/"
    body = b'{"id": "evt_forged", "type": "checkout.session.completed", "data": {"object": {"id": "cs_x"}}}'
    assert httpx.post(url, content=body).status_code == 400  # unsigned
    forged = stripe.WebhookSignature._compute_signature(f"{int(time.time())}.{body.decode()}", "whsec_wrong")
    header = f"t={int(time.time())},v1={forged}"
    assert httpx.post(url, content=body, headers={"Stripe-Signature": header}).status_code == 400
    stale_t = int(time.time()) - 3600  # a replay of an old, genuinely signed delivery
    stale = stripe.WebhookSignature._compute_signature(f"{stale_t}.{body.decode()}", WEBHOOK_SECRET)
    assert httpx.post(url, content=body, headers={"Stripe-Signature": f"t={stale_t},v1={stale}"}).status_code == 400
    assert not StripeEvent.objects.exists() and not LedgerEntry.objects.exists()


def test_a_payment_that_is_not_ours_is_recorded_and_credits_no_one(world_a, fake, fake_stripe_url):
    sdk = stripe.StripeClient(KEY, base_addresses={"api": fake_stripe_url})
    session = sdk.v1.checkout.sessions.create(
        params={
            "mode": "payment",
            "line_items": [
                {"price_data": {"currency": "usd", "unit_amount": 999, "product_data": {"name": "x"}}, "quantity": 1}
            ],
            "success_url": "http://example.test/ok",
            "metadata": {"workspace_id": "999999", "topup_id": "not-a-uuid"},
        }
    )
    fake.post(f"/_fake/checkout/{session.id}/pay", json={"card": "4242424242424242"}).raise_for_status()
    row = wait_until(
        lambda: StripeEvent.objects.filter(type="checkout.session.completed").first(),
        timeout=10,
        what="the foreign event recorded",
    )
    assert "no top-up of ours" in row.outcome
    assert not LedgerEntry.objects.exists()


def test_refunds_post_compensating_entries_once_in_any_order(world_a, fake):
    topup = wait_paid(start_and_pay(world_a, fake, amount="25"))
    ws = world_a.workspace
    fake.post(
        "/_fake/refunds", json={"payment_intent": topup.stripe_payment_intent_id, "amount": 1000}
    ).raise_for_status()
    wait_until(lambda: ledger(ws, "refund"), timeout=10, what="the first refund posted")
    fake.post("/_fake/refunds", json={"payment_intent": topup.stripe_payment_intent_id}).raise_for_status()
    wait_until(lambda: len(ledger(ws, "refund")) == 2, timeout=10, what="the second refund posted")
    for event_id in event_ids(fake, "charge.refunded"):  # replays, the first one now out of order
        fake.post(f"/_fake/events/{event_id}/redeliver").raise_for_status()
    time.sleep(0.5)
    assert [e.amount_nanos for e in ledger(ws, "refund")] == [-10 * USD, -15 * USD]
    assert workspace_balance(workspace_id=ws.pk)[0] == 0
    notes = Invoice.objects.filter(topup=topup, kind="credit_note")
    assert notes.count() == 2


def test_disputes_withdraw_and_reinstate_once(world_a, fake):
    topup = wait_paid(start_and_pay(world_a, fake, amount="20"))
    ws = world_a.workspace
    dispute = fake.post("/_fake/disputes", json={"payment_intent": topup.stripe_payment_intent_id}).json()
    wait_until(lambda: ledger(ws, "adjustment"), timeout=10, what="the dispute withdrawal")
    assert workspace_balance(workspace_id=ws.pk)[0] == 0
    fake.post(f"/_fake/disputes/{dispute['id']}/close", json={"status": "won"}).raise_for_status()
    wait_until(lambda: len(ledger(ws, "adjustment")) == 2, timeout=10, what="the reinstatement")
    time.sleep(0.5)
    assert [e.amount_nanos for e in ledger(ws, "adjustment")] == [-20 * USD, 20 * USD]
    assert workspace_balance(workspace_id=ws.pk)[0] == 20 * USD


def spend(workspace: Any, nanos: int, key: str) -> None:
    with transaction.atomic():
        ledger_post(workspace_id=workspace.pk, kind="usage", amount_nanos=-nanos, idempotency_key=key)


def test_auto_recharge_charges_the_saved_card_once_and_turns_off_after_three_failures(world_a, fake):
    ws, owner = world_a.workspace, world_a.owner
    wait_paid(start_and_pay(world_a, fake, amount="10"))
    auto_recharge_update(workspace=ws, acting_user=owner, enabled=True, threshold_usd="5", amount_usd="20")
    assert auto_recharge_run(workspace_id=ws.pk) == "balance is above the threshold"
    spend(ws, 6 * USD, "spend-1")  # balance $4 < $5
    # credited by the task, or a moment earlier by the payment_intent.succeeded webhook racing it: once either way
    assert auto_recharge_run(workspace_id=ws.pk) in {"credited $20.00", "already credited"}
    assert auto_recharge_run(workspace_id=ws.pk) == "balance is above the threshold"
    assert workspace_balance(workspace_id=ws.pk)[0] == 24 * USD
    assert len(ledger(ws, "topup")) == 2 and Invoice.objects.filter(workspace=ws, kind="invoice").count() == 2

    account = BillingAccount.objects.get(workspace=ws)
    fake.post(f"/_fake/customers/{account.stripe_customer_id}/decline", json={"code": "card_declined"})
    spend(ws, 23 * USD, "spend-2")  # $1
    mail.outbox.clear()
    outcomes = [auto_recharge_run(workspace_id=ws.pk) for _ in range(4)]
    assert all("card refused" in o for o in outcomes[:3]), outcomes
    assert "turned off" in outcomes[2] and outcomes[3] == "auto-recharge is off"
    account.refresh_from_db()
    assert not account.auto_recharge_enabled and account.auto_recharge_failures == 3
    assert len(mail.outbox) == 1 and "Auto-recharge turned off" in mail.outbox[0].subject
    assert owner.email in mail.outbox[0].to
    assert len(ledger(ws, "topup")) == 2  # nothing credited for the declines


def test_a_start_without_stripe_configured_says_so(world_a, settings, standard_plans):
    settings.STRIPE_SECRET_KEY = ""
    with pytest.raises(Exception, match="not configured"):
        topup_checkout_start(
            workspace=world_a.workspace, acting_user=world_a.owner, amount="10", save_card=False, return_url="http://x/"
        )
    assert not TopUp.objects.exists()
