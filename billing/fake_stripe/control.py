"""The test and dev controls under `/_fake/` (no auth, JSON in and out, errors in Stripe's envelope).
They do what a buyer, a bank or the Stripe dashboard would do; see the package docstring for the list."""

from __future__ import annotations

from typing import Any

from billing.fake_stripe import api, cards, payments
from billing.fake_stripe.routing import Context, Request, Response, Route, route
from billing.fake_stripe.settings import parse_delays
from billing.fake_stripe.wire import Params, StripeError, get_bool, get_enum, get_int, get_str


def config_show(ctx: Context, req: Request) -> Params:
    s = ctx.settings
    return {
        "object": "fake.config",
        "webhook_url": s.webhook_url,
        "webhook_secret_set": bool(s.webhook_secret),
        "api_version": s.api_version,
        "retry_delays": list(s.retry_delays),
        "public_url": s.public_url,
    }


def config_update(ctx: Context, req: Request) -> Params:
    """{"webhook_url": str|null, "webhook_secret": str, "retry_delays": [seconds…]|null}"""
    p = req.params
    if "webhook_url" in p:
        url = p["webhook_url"]
        if url is not None and (not isinstance(url, str) or not url.startswith(("http://", "https://"))):
            raise StripeError("webhook_url must be an http(s) URL or null.", param="webhook_url")
        ctx.settings.webhook_url = url or None
    if "webhook_secret" in p:
        ctx.settings.webhook_secret = get_str(p, "webhook_secret", required=True) or ""
    if "retry_delays" in p:
        delays = p["retry_delays"]
        if delays is not None and (
            not isinstance(delays, list)
            or not all(isinstance(d, (int, float)) and not isinstance(d, bool) for d in delays)
        ):
            raise StripeError("retry_delays must be a list of seconds or null.", param="retry_delays")
        ctx.settings.retry_delays = parse_delays(",".join(str(d) for d in delays) if delays is not None else "")
        if delays == []:
            ctx.settings.retry_delays = ()
    return config_show(ctx, req)


def reset(ctx: Context, req: Request) -> Params:
    ctx.store.reset()
    ctx.deliverer.reset()
    return {"object": "fake.reset", "reset": True}


def _decline_body(p: Params) -> cards.Decline:
    code = get_str(p, "code") or "card_declined"
    decline = cards.decline_for(code, get_str(p, "decline_code"))
    if decline is None:
        known = ", ".join(sorted({"card_declined", *cards.DECLINES}))
        raise StripeError(f"Unknown decline code {code!r}; use one of: {known}.", param="code")
    return decline


def _forced(owner: str, decline: cards.Decline | None) -> Params:
    return {
        "object": "fake.card_behaviour",
        "id": owner,
        "declines": decline is not None,
        "code": decline.code if decline else None,
        "decline_code": decline.decline_code if decline else None,
    }


def payment_method_decline(ctx: Context, req: Request, id: str) -> Params:
    ctx.store.get(id, "payment_method")
    ctx.store.declines[id] = decline = _decline_body(req.params)
    return _forced(id, decline)


def payment_method_succeed(ctx: Context, req: Request, id: str) -> Params:
    ctx.store.get(id, "payment_method")
    ctx.store.declines.pop(id, None)
    return _forced(id, None)


def customer_decline(ctx: Context, req: Request, id: str) -> Params:
    ctx.store.get(id, "customer")
    ctx.store.declines[id] = decline = _decline_body(req.params)
    return _forced(id, decline)


def customer_succeed(ctx: Context, req: Request, id: str) -> Params:
    ctx.store.get(id, "customer")
    ctx.store.declines.pop(id, None)
    return _forced(id, None)


def checkout_pay(ctx: Context, req: Request, id: str) -> Params:
    """{"card": "4242…", "save": bool (default: what the page pre-ticks), "email", "name"}"""
    session = ctx.store.get(id, "checkout.session")
    p = req.params
    private = ctx.store.private[id]
    payments.checkout_session_pay(
        ctx.store,
        session,
        number=get_str(p, "card") or "4242424242424242",
        save=get_bool(p, "save", default=bool(private.get("setup_future_usage"))),
        email=get_str(p, "email"),
        name=get_str(p, "name"),
        exp_month=get_int(p, "exp_month", minimum=1, maximum=12) or 12,
        exp_year=get_int(p, "exp_year", minimum=2000, maximum=2100) or 2034,
    )
    rendered = ctx.store.render(session, ["payment_intent", "payment_intent.payment_method"])
    return {"checkout_session": rendered, "redirect_url": payments.checkout_success_url(session)}


def checkout_async(ctx: Context, req: Request, id: str) -> Params:
    """{"result": "succeeded" | "failed"} — the bank's answer to a payment made with the async card."""
    session = ctx.store.get(id, "checkout.session")
    result = get_enum(req.params, "result", ("succeeded", "failed")) or "succeeded"
    payments.checkout_session_settle(ctx.store, session, succeed=result == "succeeded")
    return session


def refund(ctx: Context, req: Request) -> Params:
    return api.refund_from(ctx, req.params)


def dispute(ctx: Context, req: Request) -> Params:
    """{"payment_intent" | "charge", "amount" (default: the whole charge), "reason" (default fraudulent)}"""
    p = req.params
    charge = payments.charge_for(
        ctx.store, charge_id=get_str(p, "charge"), payment_intent_id=get_str(p, "payment_intent")
    )
    reason = get_enum(p, "reason", payments.DISPUTE_REASONS) or "fraudulent"
    return payments.dispute_create(ctx.store, charge=charge, amount=get_int(p, "amount"), reason=reason)


def dispute_close(ctx: Context, req: Request, id: str) -> Params:
    status = get_enum(req.params, "status", ("won", "lost"))
    if status is None:
        raise StripeError("Missing required param: status (won or lost).", code="parameter_missing", param="status")
    return payments.dispute_close(ctx.store, ctx.store.get(id, "dispute"), status=status)


def event_redeliver(ctx: Context, req: Request, id: str) -> Params:
    event = ctx.store.get(id, "event")
    delivery = ctx.deliverer.enqueue(event)
    if delivery is None:
        raise StripeError("No webhook URL is configured (--webhook-url or POST /_fake/config).")
    return delivery


def deliveries(ctx: Context, req: Request) -> Params:
    """?event=evt_…&type=… — every delivery (pending, succeeded, failed) with its attempts, oldest first."""
    p = req.params
    data: list[Any] = ctx.deliverer.deliveries(event=get_str(p, "event"), event_type=get_str(p, "type"))
    return {"object": "list", "data": data, "has_more": False, "url": "/_fake/deliveries"}


def health(ctx: Context, req: Request) -> Response:
    return Response.json({"object": "fake.health", "ok": True})


ROUTES: list[Route] = [
    route("GET", "/_fake/health", health),
    route("GET", "/_fake/config", config_show),
    route("POST", "/_fake/config", config_update),
    route("POST", "/_fake/reset", reset),
    route("POST", "/_fake/payment_methods/{id}/decline", payment_method_decline),
    route("POST", "/_fake/payment_methods/{id}/succeed", payment_method_succeed),
    route("POST", "/_fake/customers/{id}/decline", customer_decline),
    route("POST", "/_fake/customers/{id}/succeed", customer_succeed),
    route("POST", "/_fake/checkout/{id}/pay", checkout_pay),
    route("POST", "/_fake/checkout/{id}/async", checkout_async),
    route("POST", "/_fake/refunds", refund),
    route("POST", "/_fake/disputes", dispute),
    route("POST", "/_fake/disputes/{id}/close", dispute_close),
    route("POST", "/_fake/events/{id}/redeliver", event_redeliver),
    route("GET", "/_fake/deliveries", deliveries),
]
