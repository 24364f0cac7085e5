"""The bundled fake Stripe (`billing/fake_stripe/`), run as a real process and driven by the real `stripe`
SDK over a socket: checkout through the hosted page and through the control endpoint, off-session
charges and declines, idempotency, auth, Stripe-shaped errors, and webhooks that
`stripe.Webhook.construct_event` verifies, delivered (with retries) to a small HTTP server run here."""

from __future__ import annotations

import http.server
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
import pytest
import stripe

from tests.servers import ROOT, free_port, process, wait_until

KEY = "sk_test_turnpike_fake_stripe_tests"
WEBHOOK_SECRET = "whsec_turnpike_tests"
SUCCESS_URL = "http://app.test/billing/success?session_id={CHECKOUT_SESSION_ID}"
CANCEL_URL = "http://app.test/billing/cancel"


# --- a webhook receiver ------------------------------------------------------------------------------------


@dataclass
class Receiver:
    """Records every POST; answers 500 to the next `fail_next` of them."""

    received: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    fail_next: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    url: str = ""

    def events(self, event_type: str | None = None) -> list[dict[str, Any]]:
        with self.lock:
            bodies = [orjson.loads(body) for _, body in self.received]
        return [event for event in bodies if event_type is None or event["type"] == event_type]

    def verified(self, event_type: str, *, count: int = 1) -> list[stripe.Event]:
        """Wait for `count` deliveries of `event_type`; verify each one's signature as Turnpike will."""

        def found() -> list[tuple[dict[str, str], bytes]]:
            with self.lock:
                hits = [(h, b) for h, b in self.received if orjson.loads(b)["type"] == event_type]
            return hits if len(hits) >= count else []

        hits = wait_until(found, timeout=5, what=f"{count} × {event_type} webhook")
        return [
            stripe.Webhook.construct_event(body, headers["stripe-signature"], WEBHOOK_SECRET) for headers, body in hits
        ]


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    state = Receiver()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["content-length"]))
            with state.lock:
                failing = state.fail_next > 0
                if failing:
                    state.fail_next -= 1
                else:
                    state.received.append(({k.lower(): v for k, v in self.headers.items()}, body))
            self.send_response(500 if failing else 200)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}/billing/stripe/webhook"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()


# --- the fake, as a process --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fake_url(tmp_path_factory: pytest.TempPathFactory, receiver: Receiver) -> Iterator[str]:
    port = free_port()
    args = [sys.executable, "-m", "billing.fake_stripe", "--port", str(port), "--secret-key", KEY]
    args += ["--webhook-url", receiver.url, "--webhook-secret", WEBHOOK_SECRET, "--retry-delays", "0.05,0.1,0.2"]
    log_path = tmp_path_factory.mktemp("fake_stripe") / "fake_stripe.log"
    with process(args, port=port, log_path=log_path, env={"FAKE_STRIPE_WEBHOOK_URL": ""}):
        yield f"http://127.0.0.1:{port}"


@pytest.fixture
def fake(fake_url: str, receiver: Receiver) -> Iterator[httpx.Client]:
    """An httpx client on the fake, with state, webhook config and the receiver reset for each test."""
    with httpx.Client(base_url=fake_url, timeout=10) as client:
        client.post("/_fake/reset").raise_for_status()
        client.post(
            "/_fake/config", json={"webhook_url": receiver.url, "webhook_secret": WEBHOOK_SECRET}
        ).raise_for_status()
        with receiver.lock:
            receiver.received.clear()
            receiver.fail_next = 0
        yield client


@pytest.fixture
def sdk(fake: httpx.Client, fake_url: str) -> stripe.StripeClient:
    return stripe.StripeClient(KEY, base_addresses={"api": fake_url}, max_network_retries=0)


def top_up_session(sdk: stripe.StripeClient, customer_id: str | None, *, save: bool = True) -> Any:
    intent_data: dict[str, Any] = {"metadata": {"workspace_id": "3", "top_up": "42"}}
    if save:
        intent_data["setup_future_usage"] = "off_session"
    return sdk.v1.checkout.sessions.create(
        params={
            "mode": "payment",
            **({"customer": customer_id} if customer_id else {}),
            "client_reference_id": "workspace-3",
            "line_items": [
                {
                    "price_data": {"currency": "usd", "unit_amount": 500, "product_data": {"name": "Turnpike credit"}},
                    "quantity": 4,
                }
            ],
            "success_url": SUCCESS_URL,
            "cancel_url": CANCEL_URL,
            "metadata": {"workspace_id": "3", "top_up": "42"},
            "payment_intent_data": intent_data,
            "saved_payment_method_options": {"payment_method_save": "enabled"},
        }
    )


def paid_customer(sdk: stripe.StripeClient, fake: httpx.Client) -> tuple[Any, Any]:
    """A customer who paid $20 in checkout and saved the card: (customer, expanded session)."""
    customer = sdk.v1.customers.create(params={"email": "finance@acme.test", "metadata": {"workspace_id": "3"}})
    session = top_up_session(sdk, customer.id)
    fake.post(f"/_fake/checkout/{session.id}/pay", json={"card": "4242424242424242", "save": True}).raise_for_status()
    expanded = sdk.v1.checkout.sessions.retrieve(
        session.id, params={"expand": ["payment_intent", "payment_intent.payment_method"]}
    )
    return customer, expanded


# --- checkout ----------------------------------------------------------------------------------------------


def test_checkout_through_the_hosted_page(sdk: stripe.StripeClient, fake: httpx.Client, receiver: Receiver) -> None:
    customer = sdk.v1.customers.create(
        params={"email": "finance@acme.test", "name": "Acme", "metadata": {"workspace_id": "3"}}
    )
    assert customer.id.startswith("cus_") and customer.livemode is False and customer.metadata["workspace_id"] == "3"
    session = top_up_session(sdk, customer.id)
    assert session.id.startswith("cs_test_")
    assert (session.status, session.payment_status, session.amount_total, session.currency) == (
        "open",
        "unpaid",
        2000,
        "usd",
    )
    assert session.url == f"{fake.base_url}/checkout/{session.id}"
    assert session.saved_payment_method_options["payment_method_save"] == "enabled"  # unknown-to-the-fake param kept

    page = httpx.get(session.url)
    assert page.status_code == 200
    assert "$20.00" in page.text
    assert re.search(r'id="card_number"[^>]*value="4242 4242 4242 4242"', page.text)
    assert re.search(r'<input type="checkbox" id="save" name="save" value="on" checked>', page.text)
    assert '<label for="save">Save this card for future payments</label>' in page.text
    assert '<button type="submit">Pay</button>' in page.text
    assert f'<a href="{CANCEL_URL}">Cancel</a>' in page.text

    form = {"card_number": "4000 0000 0000 0002", "expiry": "12 / 34", "cvc": "123", "save": "on"}
    declined = httpx.post(session.url, data=form)
    assert declined.status_code == 402
    assert '<p class="error" role="alert">Your card was declined.</p>' in declined.text
    assert sdk.v1.checkout.sessions.retrieve(session.id).status == "open"

    paid = httpx.post(session.url, data={**form, "card_number": "5555 5555 5555 4444"})
    assert paid.status_code == 303
    assert paid.headers["location"] == SUCCESS_URL.replace("{CHECKOUT_SESSION_ID}", session.id)

    done = sdk.v1.checkout.sessions.retrieve(
        session.id, params={"expand": ["payment_intent", "payment_intent.payment_method"]}
    )
    assert (done.status, done.payment_status, done.customer) == ("complete", "paid", customer.id)
    intent = done.payment_intent
    assert intent.id.startswith("pi_") and intent.status == "succeeded" and intent.amount_received == 2000
    assert intent.metadata.to_dict() == {"workspace_id": "3", "top_up": "42"}
    assert intent.setup_future_usage == "off_session"
    assert intent.payment_method.card.last4 == "4444" and intent.payment_method.card.brand == "mastercard"
    charge = sdk.v1.charges.retrieve(intent.latest_charge)
    assert (charge.amount, charge.amount_refunded, charge.refunded, charge.payment_intent) == (
        2000,
        0,
        False,
        intent.id,
    )

    saved = sdk.v1.payment_methods.list(params={"customer": customer.id, "type": "card"})
    assert [m.id for m in saved.data] == [intent.payment_method.id]
    assert sdk.v1.customers.payment_methods.list(customer.id).data[0].card.last4 == "4444"

    (completed,) = receiver.verified("checkout.session.completed")
    assert completed.data.object.id == session.id
    assert completed.data.object.payment_status == "paid"
    assert completed.data.object.client_reference_id == "workspace-3"
    assert completed.data.object.metadata["top_up"] == "42"
    assert completed.api_version and completed.livemode is False
    (succeeded,) = receiver.verified("payment_intent.succeeded")
    assert succeeded.data.object.id == intent.id
    assert receiver.verified("charge.succeeded")[0].data.object.id == charge.id
    assert sdk.v1.events.retrieve(completed.id).type == "checkout.session.completed"

    again = httpx.get(session.url)
    assert "already been paid" in again.text
    assert httpx.post(session.url, data=form).status_code == 200  # a second submit charges nothing
    assert len(sdk.v1.charges.list(params={"payment_intent": intent.id}).data) == 2  # the decline and the payment


def test_pay_without_saving_keeps_the_card_off_the_customer(sdk: stripe.StripeClient, fake: httpx.Client) -> None:
    customer = sdk.v1.customers.create(params={"email": "dev@acme.test"})
    session = top_up_session(sdk, customer.id)
    paid = fake.post(f"/_fake/checkout/{session.id}/pay", json={"card": "4242 4242 4242 4242", "save": False})
    assert paid.status_code == 200, paid.text
    body = paid.json()
    assert body["redirect_url"] == SUCCESS_URL.replace("{CHECKOUT_SESSION_ID}", session.id)
    intent = body["checkout_session"]["payment_intent"]
    assert intent["status"] == "succeeded" and intent["setup_future_usage"] is None
    assert intent["payment_method"]["customer"] is None
    assert sdk.v1.payment_methods.list(params={"customer": customer.id, "type": "card"}).data == []


def test_expired_session_cannot_be_paid(sdk: stripe.StripeClient, fake: httpx.Client, receiver: Receiver) -> None:
    session = top_up_session(sdk, None)
    expired = sdk.v1.checkout.sessions.expire(session.id)
    assert expired.status == "expired"
    page = httpx.get(session.url)
    assert page.status_code == 410 and "has expired" in page.text
    refused = fake.post(f"/_fake/checkout/{session.id}/pay", json={})
    assert refused.status_code == 400 and "no longer open" in refused.json()["error"]["message"]
    assert receiver.verified("checkout.session.expired")[0].data.object.id == session.id


def test_async_payment_completes_unpaid_then_settles(
    sdk: stripe.StripeClient, fake: httpx.Client, receiver: Receiver
) -> None:
    session = top_up_session(sdk, None, save=False)
    fake.post(f"/_fake/checkout/{session.id}/pay", json={"card": "4000000000008880"}).raise_for_status()
    pending = sdk.v1.checkout.sessions.retrieve(session.id, params={"expand": ["payment_intent"]})
    assert (pending.status, pending.payment_status, pending.payment_intent.status) == (
        "complete",
        "unpaid",
        "processing",
    )
    assert receiver.verified("checkout.session.completed")[0].data.object.payment_status == "unpaid"

    fake.post(f"/_fake/checkout/{session.id}/async", json={"result": "succeeded"}).raise_for_status()
    (settled,) = receiver.verified("checkout.session.async_payment_succeeded")
    assert settled.data.object.id == session.id and settled.data.object.payment_status == "paid"
    assert sdk.v1.checkout.sessions.retrieve(session.id).payment_status == "paid"


# --- off-session charges -----------------------------------------------------------------------------------


def test_off_session_charge_succeeds_and_declines_on_demand(
    sdk: stripe.StripeClient, fake: httpx.Client, receiver: Receiver
) -> None:
    customer, session = paid_customer(sdk, fake)
    method_id = session.payment_intent.payment_method.id
    sdk.v1.customers.update(customer.id, params={"invoice_settings": {"default_payment_method": method_id}})
    assert sdk.v1.customers.retrieve(customer.id).invoice_settings.default_payment_method == method_id

    params = {
        "amount": 2500,
        "currency": "usd",
        "customer": customer.id,
        "payment_method": method_id,
        "off_session": True,
        "confirm": True,
        "metadata": {"workspace_id": "3", "recharge": "7"},
    }
    intent = sdk.v1.payment_intents.create(params=params)
    assert intent.status == "succeeded" and intent.latest_charge.startswith("ch_")
    assert sdk.v1.payment_intents.retrieve(intent.id).amount_received == 2500

    decline = fake.post(f"/_fake/payment_methods/{method_id}/decline", json={"decline_code": "insufficient_funds"})
    assert decline.json()["declines"] is True
    with pytest.raises(stripe.CardError) as caught:
        sdk.v1.payment_intents.create(params=params)
    error = caught.value
    assert error.http_status == 402 and error.code == "card_declined"
    assert error.error is not None and error.error.decline_code == "insufficient_funds"
    assert error.error.payment_intent is not None
    assert error.error.payment_intent["status"] == "requires_payment_method"
    failed = receiver.verified("payment_intent.payment_failed")[0].data.object
    assert failed.id == error.error.payment_intent["id"] and failed.metadata["recharge"] == "7"

    fake.post(f"/_fake/payment_methods/{method_id}/succeed").raise_for_status()
    assert sdk.v1.payment_intents.create(params=params).status == "succeeded"

    fake.post(f"/_fake/customers/{customer.id}/decline", json={"code": "expired_card"}).raise_for_status()
    with pytest.raises(stripe.CardError) as expired:
        sdk.v1.payment_intents.create(params=params)
    assert expired.value.code == "expired_card"

    detached = sdk.v1.payment_methods.detach(method_id)
    assert detached.customer is None
    assert sdk.v1.customers.retrieve(customer.id).invoice_settings.default_payment_method is None
    fake.post(f"/_fake/customers/{customer.id}/succeed").raise_for_status()
    with pytest.raises(stripe.InvalidRequestError) as detached_card:
        sdk.v1.payment_intents.create(params=params)
    assert detached_card.value.param == "payment_method" and "may not be used again" in str(detached_card.value)


def test_idempotency_key_replays_the_first_answer(sdk: stripe.StripeClient, fake: httpx.Client) -> None:
    first = sdk.v1.customers.create(params={"email": "a@acme.test"}, options={"idempotency_key": "signup-1"})
    again = sdk.v1.customers.create(params={"email": "a@acme.test"}, options={"idempotency_key": "signup-1"})
    assert again.id == first.id
    assert again.last_response is not None and again.last_response.headers["idempotent-replayed"] == "true"
    with pytest.raises(stripe.IdempotencyError) as caught:
        sdk.v1.customers.create(params={"email": "b@acme.test"}, options={"idempotency_key": "signup-1"})
    assert caught.value.http_status == 400 and "same parameters" in str(caught.value)
    assert len(sdk.v1.customers.list().data) == 1

    customer, session = paid_customer(sdk, fake)
    fake.post(f"/_fake/customers/{customer.id}/decline", json={"code": "card_declined"}).raise_for_status()
    params = {
        "amount": 1000,
        "currency": "usd",
        "customer": customer.id,
        "payment_method": session.payment_intent.payment_method.id,
        "off_session": True,
        "confirm": True,
    }
    declined = []
    for _ in range(2):
        with pytest.raises(stripe.CardError) as card_error:
            sdk.v1.payment_intents.create(params=params, options={"idempotency_key": "recharge-9"})
        assert card_error.value.error is not None and card_error.value.error.payment_intent is not None
        declined.append(card_error.value.error.payment_intent["id"])
    assert declined[0] == declined[1]  # the stored 402, not a second attempt


# --- auth and errors ---------------------------------------------------------------------------------------


def test_wrong_or_missing_key_is_401(fake_url: str, fake: httpx.Client) -> None:
    wrong = stripe.StripeClient("sk_test_not_the_key", base_addresses={"api": fake_url}, max_network_retries=0)
    with pytest.raises(stripe.AuthenticationError) as caught:
        wrong.v1.customers.create(params={"email": "x@acme.test"})
    assert caught.value.http_status == 401 and "sk_test_not_the_key" not in str(caught.value)
    missing = httpx.get(f"{fake_url}/v1/customers")
    assert missing.status_code == 401
    assert missing.json()["error"]["type"] == "invalid_request_error"


def test_errors_have_stripes_shape(sdk: stripe.StripeClient, fake: httpx.Client) -> None:
    with pytest.raises(stripe.InvalidRequestError) as missing:
        sdk.v1.customers.retrieve("cus_doesnotexist")
    assert (missing.value.http_status, missing.value.code) == (404, "resource_missing")
    assert "cus_doesnotexist" in str(missing.value)

    with pytest.raises(stripe.InvalidRequestError) as no_items:
        sdk.v1.checkout.sessions.create(params={"mode": "payment", "success_url": "http://app.test/ok"})
    assert (no_items.value.code, no_items.value.param) == ("parameter_missing", "line_items")

    def post(body: str) -> dict[str, Any]:
        response = fake.post(
            "/v1/payment_intents",
            content=body,
            headers={"authorization": f"Bearer {KEY}", "content-type": "application/x-www-form-urlencoded"},
        )
        assert response.status_code == 400, response.text
        return response.json()["error"]

    assert post("amount=9" + "9" * 5000 + "&currency=usd")["param"] == "amount"
    assert post("amount=5.5&currency=usd")["code"] == "parameter_invalid_integer"
    assert post("amount=1000&currency=usd&customer=")["code"] == "parameter_invalid_empty"
    assert post("amount=100000000&currency=usd")["code"] == "amount_too_large"
    assert post("amount=1000&currency=usd&description=a%00b")["code"] == "invalid_characters"
    assert post("amount=1000&currency=usd&metadata=x&metadata[a]=b")["param"] == "metadata[a]"
    customer = sdk.v1.customers.create(params={"email": "e@acme.test"})
    with pytest.raises(stripe.InvalidRequestError) as bad_expand:
        sdk.v1.customers.list(params={"expand": ["data.nothing"], "email": customer.email})
    assert "cannot be expanded" in str(bad_expand.value)


def test_bracket_notation_on_the_wire(fake: httpx.Client) -> None:
    """What any Stripe client sends: `a[b][c]=`, `a[0][b]=`, `expand[]=`, and `{CHECKOUT_SESSION_ID}`."""
    auth = {"authorization": f"Bearer {KEY}", "stripe-version": "2024-06-20"}
    customer = fake.post("/v1/customers", data={"email": "w@acme.test", "metadata[workspace_id]": "3"}, headers=auth)
    assert customer.headers["stripe-version"] == "2024-06-20"
    form = {
        "mode": "payment",
        "customer": customer.json()["id"],
        "line_items[0][price_data][currency]": "usd",
        "line_items[0][price_data][unit_amount]": "500",
        "line_items[0][price_data][product_data][name]": "Credit",
        "line_items[0][quantity]": "1",
        "line_items[1][price_data][currency]": "usd",
        "line_items[1][price_data][unit_amount]": "250",
        "line_items[1][price_data][product_data][name]": "Fee",
        "line_items[1][quantity]": "2",
        "payment_intent_data[setup_future_usage]": "off_session",
        "payment_intent_data[metadata][workspace_id]": "3",
        "success_url": SUCCESS_URL,
        "expand[]": "customer",
    }
    created = fake.post("/v1/checkout/sessions", data=form, headers=auth)
    assert created.status_code == 200, created.text
    session = created.json()
    assert session["object"] == "checkout.session" and session["amount_total"] == 1000
    assert session["customer"]["metadata"] == {"workspace_id": "3"}  # expanded
    fake.post(f"/_fake/checkout/{session['id']}/pay", json={}).raise_for_status()
    read = fake.get(
        f"/v1/checkout/sessions/{session['id']}",
        params=[("expand[]", "payment_intent"), ("expand[]", "payment_intent.payment_method")],
        headers=auth,
    ).json()
    assert read["payment_intent"]["payment_method"]["object"] == "payment_method"
    assert read["payment_intent"]["payment_method"]["customer"] == session["customer"]["id"]  # saved by default
    events = fake.get("/v1/events", params={"type": "checkout.session.completed"}, headers=auth).json()
    assert events["object"] == "list" and events["url"] == "/v1/events" and events["has_more"] is False
    (event,) = events["data"]
    assert event["id"].startswith("evt_") and event["data"]["object"]["id"] == session["id"]


# --- webhooks ----------------------------------------------------------------------------------------------


def test_webhooks_are_signed_retried_and_logged(
    sdk: stripe.StripeClient, fake: httpx.Client, receiver: Receiver
) -> None:
    with receiver.lock:
        receiver.fail_next = 2
    customer = sdk.v1.customers.create(params={"email": "hook@acme.test"})
    (created,) = receiver.verified("customer.created")
    assert created.data.object.id == customer.id
    (delivery,) = fake.get("/_fake/deliveries", params={"event": created.id}).json()["data"]
    assert delivery["status"] == "succeeded"
    assert [attempt["status_code"] for attempt in delivery["attempts"]] == [500, 500, 200]
    wait_until(lambda: sdk.v1.events.retrieve(created.id).pending_webhooks == 0, timeout=5, what="pending_webhooks 0")

    headers, body = receiver.received[0]
    assert headers["content-type"] == "application/json; charset=utf-8"
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.Webhook.construct_event(body.replace(b"hook@", b"evil@"), headers["stripe-signature"], WEBHOOK_SECRET)
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.Webhook.construct_event(body, headers["stripe-signature"], "whsec_someone_else")
    assert sdk.construct_event(body, headers["stripe-signature"], WEBHOOK_SECRET).id == created.id

    fake.post(f"/_fake/events/{created.id}/redeliver").raise_for_status()
    assert [event.id for event in receiver.verified("customer.created", count=2)] == [created.id, created.id]


def test_refund_and_dispute_events(sdk: stripe.StripeClient, fake: httpx.Client, receiver: Receiver) -> None:
    _, session = paid_customer(sdk, fake)
    intent_id = session.payment_intent.id
    first = fake.post("/_fake/refunds", json={"payment_intent": intent_id, "amount": 300}).json()
    assert first["id"].startswith("re_") and first["amount"] == 300 and first["status"] == "succeeded"
    fake.post("/_fake/refunds", json={"payment_intent": intent_id}).raise_for_status()  # the rest: 1700
    refunded = [event.data.object for event in receiver.verified("charge.refunded", count=2)]
    assert [(c.amount_refunded, c.refunded) for c in refunded] == [(300, False), (2000, True)]
    assert {event.data.object.amount for event in receiver.verified("refund.created", count=2)} == {300, 1700}
    too_much = fake.post("/_fake/refunds", json={"payment_intent": intent_id, "amount": 1})
    assert too_much.status_code == 400 and too_much.json()["error"]["code"] == "charge_already_refunded"

    _, other = paid_customer(sdk, fake)
    dispute = fake.post("/_fake/disputes", json={"payment_intent": other.payment_intent.id}).json()
    assert dispute["id"].startswith("dp_")
    assert (dispute["amount"], dispute["status"], dispute["reason"]) == (2000, "needs_response", "fraudulent")
    assert dispute["charge"] == other.payment_intent.latest_charge
    opened = receiver.verified("charge.dispute.created")[0].data.object
    assert (opened.id, opened.payment_intent) == (dispute["id"], other.payment_intent.id)
    assert receiver.verified("charge.dispute.funds_withdrawn")[0].data.object.id == dispute["id"]
    blocked = fake.post("/_fake/refunds", json={"payment_intent": other.payment_intent.id})
    assert blocked.json()["error"]["code"] == "charge_disputed"

    fake.post(f"/_fake/disputes/{dispute['id']}/close", json={"status": "won"}).raise_for_status()
    assert receiver.verified("charge.dispute.closed")[0].data.object.status == "won"
    assert receiver.verified("charge.dispute.funds_reinstated")[0].data.object.id == dispute["id"]
    assert sdk.v1.disputes.retrieve(dispute["id"]).status == "won"


def test_unreachable_endpoint_is_retried_then_given_up(sdk: stripe.StripeClient, fake: httpx.Client) -> None:
    nobody = f"http://127.0.0.1:{free_port()}/webhook"
    fake.post("/_fake/config", json={"webhook_url": nobody, "retry_delays": [0.05, 0.05]}).raise_for_status()
    try:
        customer = sdk.v1.customers.create(params={"email": "lost@acme.test"})

        def given_up() -> list[dict[str, Any]]:
            data = fake.get("/_fake/deliveries", params={"type": "customer.created"}).json()["data"]
            return data if data and data[0]["status"] == "failed" else []

        (delivery,) = wait_until(given_up, timeout=5, what="the delivery to be given up")
        assert len(delivery["attempts"]) == 3
        assert all(a["status_code"] is None and "Connection" in a["error"] for a in delivery["attempts"])
        event = sdk.v1.events.retrieve(delivery["event"])
        assert event.data.object.id == customer.id and event.pending_webhooks == 1
    finally:
        fake.post("/_fake/config", json={"retry_delays": [0.05, 0.1, 0.2]}).raise_for_status()


def test_without_a_webhook_url_events_are_only_stored(sdk: stripe.StripeClient, fake: httpx.Client) -> None:
    fake.post("/_fake/config", json={"webhook_url": None}).raise_for_status()
    customer = sdk.v1.customers.create(params={"email": "quiet@acme.test"})
    (event,) = sdk.v1.events.list(params={"type": "customer.created"}).data
    assert event.data.object.id == customer.id and event.pending_webhooks == 0
    assert fake.get("/_fake/deliveries").json()["data"] == []
    assert fake.post(f"/_fake/events/{event.id}/redeliver").status_code == 400


def test_the_fake_imports_no_django() -> None:
    code = (
        "import sys, billing.fake_stripe.app, billing.fake_stripe.__main__\n"
        "bad = sorted({m.split('.')[0] for m in sys.modules} & {'django', 'stripe', 'tenants', 'config', 'proxy'})\n"
        "assert not bad, bad"
    )
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, check=True, timeout=30)
