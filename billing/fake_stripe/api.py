"""The `/v1` endpoints: read and check the params (Stripe's 400s), call the flows in `payments.py`,
return the object. The app adds auth, idempotency, `expand[]` and the JSON envelope around them.

Unknown params are accepted: on a checkout session they are stored on the object (so options such as
`saved_payment_method_options` or `consent_collection` read back), elsewhere they are ignored.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import Any

from billing.fake_stripe import objects, payments
from billing.fake_stripe.routing import Context, Request, Route, route
from billing.fake_stripe.settings import SESSION_LIFETIME
from billing.fake_stripe.wire import (
    MAX_AMOUNT,
    Params,
    StripeError,
    get_bool,
    get_currency,
    get_enum,
    get_hash,
    get_int,
    get_list,
    get_ref,
    get_str,
    merge_metadata,
)

URL = re.compile(r"https?://[^\s]+")


def _url(params: Params, name: str) -> str | None:
    value = get_str(params, name)
    if value is not None and not URL.fullmatch(value):
        raise StripeError(f"Not a valid URL: {name}.", code="url_invalid", param=name)
    return value


# --- customers ---------------------------------------------------------------------------------------------


def _customer_fields(ctx: Context, customer: Params, params: Params) -> Params:
    """Apply the writable fields in `params`; returns the previous values of what changed."""
    before = {k: customer[k] for k in ("email", "name", "description", "phone", "metadata", "invoice_settings")}
    for name in ("email", "name", "description", "phone"):
        if name in params:
            customer[name] = get_str(params, name)  # "" unsets
    customer["metadata"] = merge_metadata(customer["metadata"], params)
    settings = get_hash(params, "invoice_settings")
    if "default_payment_method" in settings:
        method_id = get_str(settings, "default_payment_method", path="invoice_settings")
        if method_id is not None:
            method = ctx.store.get(method_id, "payment_method", param="invoice_settings[default_payment_method]")
            if method["customer"] != customer["id"]:
                raise StripeError(
                    f"The customer does not have a payment method with the ID {method_id}. The payment method "
                    "must be attached to the customer.",
                    code="resource_missing",
                    param="invoice_settings[default_payment_method]",
                )
        customer["invoice_settings"] = {**customer["invoice_settings"], "default_payment_method": method_id}
    return {k: v for k, v in before.items() if customer[k] != v}


def customer_create(ctx: Context, req: Request) -> Params:
    p = req.params
    customer = objects.customer(
        email=get_str(p, "email"),
        name=get_str(p, "name"),
        description=get_str(p, "description"),
        phone=get_str(p, "phone"),
    )
    customer["metadata"] = merge_metadata({}, p)
    ctx.store.add(customer)
    method_id = get_ref(p, "payment_method")
    if method_id is not None:
        payments.payment_method_attach(ctx.store, payments.payment_method_resolve(ctx.store, method_id), customer)
    _customer_fields(ctx, customer, {"invoice_settings": get_hash(p, "invoice_settings")})
    ctx.store.emit("customer.created", customer)
    return customer


def customer_retrieve(ctx: Context, req: Request, id: str) -> Params:
    return ctx.store.get(id, "customer")


def customer_update(ctx: Context, req: Request, id: str) -> Params:
    customer = ctx.store.get(id, "customer")
    previous = _customer_fields(ctx, customer, req.params)
    if previous:
        ctx.store.emit("customer.updated", customer, previous_attributes=previous)
    return customer


def customer_list(ctx: Context, req: Request) -> Params:
    items = ctx.store.all("customer", email=get_str(req.params, "email"))
    return ctx.store.page("/v1/customers", items, req.params)


def customer_payment_methods(ctx: Context, req: Request, id: str) -> Params:
    ctx.store.get(id, "customer")
    items = ctx.store.all("payment_method", customer=id, type=get_str(req.params, "type"))
    return ctx.store.page(f"/v1/customers/{id}/payment_methods", items, req.params)


def customer_payment_method(ctx: Context, req: Request, id: str, pm: str) -> Params:
    ctx.store.get(id, "customer")
    method = ctx.store.get(pm, "payment_method")
    if method["customer"] != id:
        raise StripeError(f"No such PaymentMethod: '{pm}'", status=404, code="resource_missing", param="payment_method")
    return method


# --- checkout sessions -------------------------------------------------------------------------------------

SESSION_PARAMS = frozenset(
    "mode customer customer_email client_reference_id line_items success_url cancel_url metadata "
    "payment_intent_data expires_at customer_creation expand".split()
)


def _line_items(params: Params) -> tuple[list[Params], str, int]:
    raw = get_list(params, "line_items")
    if not raw:
        raise StripeError("Missing required param: line_items.", code="parameter_missing", param="line_items")
    items: list[Params] = []
    for index, item in enumerate(raw):
        path = f"line_items[{index}]"
        if not isinstance(item, dict):
            raise StripeError(f"Invalid object: {path} must be a hash.", param=path)
        if get_str(item, "price", path=path) is not None:
            raise StripeError(
                f"No such price: '{item['price']}' (the fake knows no prices; use price_data).",
                status=404,
                code="resource_missing",
                param=f"{path}[price]",
            )
        price_data = get_hash(item, "price_data", path=path)
        if not price_data:
            raise StripeError(
                f"Missing required param: {path}[price_data].", code="parameter_missing", param=f"{path}[price_data]"
            )
        data_path = f"{path}[price_data]"
        currency = get_currency(price_data, "currency", path=data_path)
        unit_amount = get_int(price_data, "unit_amount", minimum=0, maximum=MAX_AMOUNT, path=data_path)
        if unit_amount is None:
            decimal_text = get_str(price_data, "unit_amount_decimal", path=data_path)
            if decimal_text is None:
                raise StripeError(
                    f"Missing required param: {data_path}[unit_amount].",
                    code="parameter_missing",
                    param=f"{data_path}[unit_amount]",
                )
            try:
                decimal = Decimal(decimal_text)
            except InvalidOperation as exc:
                raise StripeError(
                    f"Invalid decimal: {decimal_text[:40]}", param=f"{data_path}[unit_amount_decimal]"
                ) from exc
            if not decimal.is_finite() or decimal != decimal.to_integral_value() or not 0 <= decimal <= MAX_AMOUNT:
                raise StripeError(
                    "The fake Stripe takes whole, non-negative unit_amount_decimal values only.",
                    param=f"{data_path}[unit_amount_decimal]",
                )
            unit_amount = int(decimal)
        product_data = get_hash(price_data, "product_data", path=data_path)
        if not product_data:
            raise StripeError(
                f"Missing required param: {data_path}[product_data].",
                code="parameter_missing",
                param=f"{data_path}[product_data]",
            )
        name = get_str(product_data, "name", required=True, path=f"{data_path}[product_data]")
        quantity = get_int(item, "quantity", required=True, minimum=1, maximum=999_999, path=path)
        assert currency is not None and name is not None and quantity is not None
        items.append(objects.line_item(name=name, currency=currency, unit_amount=unit_amount, quantity=quantity))
    currencies = {item["currency"] for item in items}
    if len(currencies) > 1:
        raise StripeError("All line_items must have the same currency.", param="line_items")
    total = sum(item["amount_total"] for item in items)
    currency = items[0]["currency"]
    payments.check_amount(total, currency, param="line_items")
    return items, currency, total


def checkout_session_create(ctx: Context, req: Request) -> Params:
    p = req.params
    mode = get_enum(p, "mode", ("payment", "setup", "subscription"))
    if mode is None:
        raise StripeError("Missing required param: mode.", code="parameter_missing", param="mode")
    if mode != "payment":
        raise StripeError("The fake Stripe implements mode=payment only.", param="mode")
    customer_id = get_ref(p, "customer")
    if customer_id is not None:
        ctx.store.get(customer_id, "customer", param="customer")
    customer_email = get_str(p, "customer_email")
    if customer_id and customer_email:
        raise StripeError(
            "You may only specify one of these parameters: customer, customer_email.", code="parameters_exclusive"
        )
    items, currency, total = _line_items(p)
    client_reference_id = get_str(p, "client_reference_id")
    if client_reference_id is not None and len(client_reference_id) > 200:
        raise StripeError("client_reference_id must be at most 200 characters.", param="client_reference_id")
    now = objects.now()
    expires_at = get_int(p, "expires_at") or now + SESSION_LIFETIME
    if not now < expires_at <= now + SESSION_LIFETIME:
        raise StripeError(
            "The expires_at timestamp must be in the future and at most 24 hours after the Checkout Session is "
            "created.",
            param="expires_at",
        )
    intent_data = get_hash(p, "payment_intent_data")
    setup_future_usage = get_enum(
        intent_data, "setup_future_usage", ("on_session", "off_session"), path="payment_intent_data"
    )
    creation = get_enum(p, "customer_creation", ("always", "if_required"))
    saved = get_hash(p, "saved_payment_method_options")
    session = objects.checkout_session(
        url_base=ctx.base_url(req),
        amount_total=total,
        currency=currency,
        customer_id=customer_id,
        customer_email=customer_email,
        client_reference_id=client_reference_id,
        success_url=_url(p, "success_url"),
        cancel_url=_url(p, "cancel_url"),
        expires_at=expires_at,
        metadata=merge_metadata({}, p),
    )
    if creation is not None:
        session["customer_creation"] = creation
    for name, value in p.items():  # accepted and stored as sent (see the module docstring)
        if name not in SESSION_PARAMS and session.get(name) in (None, [], {}):
            session[name] = value
    return ctx.store.add(
        session,
        line_items=items,
        setup_future_usage=setup_future_usage,
        intent_metadata=merge_metadata({}, intent_data, path="payment_intent_data"),
        description=get_str(intent_data, "description", path="payment_intent_data"),
        customer_creation=creation,
        save_enabled=saved.get("payment_method_save") == "enabled",
    )


def checkout_session_retrieve(ctx: Context, req: Request, id: str) -> Params:
    return payments.checkout_session_refresh(ctx.store, ctx.store.get(id, "checkout.session"))


def checkout_session_list(ctx: Context, req: Request) -> Params:
    p = req.params
    for session in ctx.store.all("checkout.session"):
        payments.checkout_session_refresh(ctx.store, session)
    items = ctx.store.all(
        "checkout.session",
        customer=get_str(p, "customer"),
        payment_intent=get_str(p, "payment_intent"),
        status=get_str(p, "status"),
    )
    return ctx.store.page("/v1/checkout/sessions", items, p)


def checkout_session_line_items(ctx: Context, req: Request, id: str) -> Params:
    ctx.store.get(id, "checkout.session")
    items = list(ctx.store.private[id]["line_items"])
    return ctx.store.page(f"/v1/checkout/sessions/{id}/line_items", items, req.params)


def checkout_session_expire(ctx: Context, req: Request, id: str) -> Params:
    session = payments.checkout_session_refresh(ctx.store, ctx.store.get(id, "checkout.session"))
    payments.checkout_session_expire(ctx.store, session)
    return session


# --- payment intents ---------------------------------------------------------------------------------------


def _off_session(params: Params) -> bool:
    value = params.get("off_session")
    if value in ("one_off", "recurring"):
        return True
    return get_bool(params, "off_session")


def payment_intent_create(ctx: Context, req: Request) -> Params:
    p = req.params
    amount = get_int(p, "amount", required=True)
    currency = get_currency(p, "currency")
    assert amount is not None and currency is not None
    payments.check_amount(amount, currency)
    customer_id = get_ref(p, "customer")
    if customer_id is not None:
        ctx.store.get(customer_id, "customer", param="customer")
    confirm = get_bool(p, "confirm")
    off_session = _off_session(p)
    if off_session and not confirm:
        raise StripeError("You can only pass off_session when confirm is set to true.", param="off_session")
    method_id = get_ref(p, "payment_method")
    method = payments.payment_method_resolve(ctx.store, method_id) if method_id else None
    intent = objects.payment_intent(
        amount=amount,
        currency=currency,
        customer_id=customer_id,
        description=get_str(p, "description"),
        metadata=merge_metadata({}, p),
        setup_future_usage=get_enum(p, "setup_future_usage", ("on_session", "off_session")),
    )
    intent["receipt_email"] = get_str(p, "receipt_email")
    intent["statement_descriptor"] = get_str(p, "statement_descriptor")
    if method is not None:
        intent["payment_method"] = method["id"]
        intent["status"] = "requires_confirmation"
    ctx.store.add(intent)
    ctx.store.emit("payment_intent.created", intent)
    if confirm:
        payments.payment_intent_confirm(ctx.store, intent, method, off_session=off_session)
    return intent


def payment_intent_retrieve(ctx: Context, req: Request, id: str) -> Params:
    return ctx.store.get(id, "payment_intent")


def payment_intent_update(ctx: Context, req: Request, id: str) -> Params:
    intent = ctx.store.get(id, "payment_intent")
    before = {"metadata": intent["metadata"], "description": intent["description"]}
    intent["metadata"] = merge_metadata(intent["metadata"], req.params)
    if "description" in req.params:
        intent["description"] = get_str(req.params, "description")
    previous = {k: v for k, v in before.items() if intent[k] != v}
    if previous:
        ctx.store.emit("payment_intent.updated", intent, previous_attributes=previous)
    return intent


def payment_intent_confirm(ctx: Context, req: Request, id: str) -> Params:
    intent = ctx.store.get(id, "payment_intent")
    method_id = get_ref(req.params, "payment_method")
    method = payments.payment_method_resolve(ctx.store, method_id) if method_id else None
    return payments.payment_intent_confirm(ctx.store, intent, method, off_session=_off_session(req.params))


def payment_intent_cancel(ctx: Context, req: Request, id: str) -> Params:
    reason = get_enum(
        req.params, "cancellation_reason", ("duplicate", "fraudulent", "requested_by_customer", "abandoned")
    )
    return payments.payment_intent_cancel(ctx.store, ctx.store.get(id, "payment_intent"), reason=reason)


def payment_intent_list(ctx: Context, req: Request) -> Params:
    items = ctx.store.all("payment_intent", customer=get_str(req.params, "customer"))
    return ctx.store.page("/v1/payment_intents", items, req.params)


# --- payment methods ---------------------------------------------------------------------------------------


def payment_method_list(ctx: Context, req: Request) -> Params:
    customer_id = get_str(req.params, "customer", required=True)
    assert customer_id is not None
    ctx.store.get(customer_id, "customer", param="customer")
    items = ctx.store.all("payment_method", customer=customer_id, type=get_str(req.params, "type"))
    return ctx.store.page("/v1/payment_methods", items, req.params)


def payment_method_retrieve(ctx: Context, req: Request, id: str) -> Params:
    return ctx.store.get(id, "payment_method")


def payment_method_attach(ctx: Context, req: Request, id: str) -> Params:
    customer_id = get_ref(req.params, "customer", required=True)
    assert customer_id is not None
    customer = ctx.store.get(customer_id, "customer", param="customer")
    method = payments.payment_method_resolve(ctx.store, id, param="id")
    payments.check_reusable(ctx.store, method)
    payments.payment_method_attach(ctx.store, method, customer)
    return method


def payment_method_detach(ctx: Context, req: Request, id: str) -> Params:
    method = ctx.store.get(id, "payment_method")
    payments.payment_method_detach(ctx.store, method)
    return method


# --- charges, refunds, disputes, events --------------------------------------------------------------------


def charge_retrieve(ctx: Context, req: Request, id: str) -> Params:
    return ctx.store.get(id, "charge")


def charge_list(ctx: Context, req: Request) -> Params:
    p = req.params
    items = ctx.store.all("charge", customer=get_str(p, "customer"), payment_intent=get_str(p, "payment_intent"))
    return ctx.store.page("/v1/charges", items, p)


def refund_create(ctx: Context, req: Request) -> Params:
    return refund_from(ctx, req.params)


def refund_from(ctx: Context, p: Params) -> Params:
    """Shared by `POST /v1/refunds` and `POST /_fake/refunds`."""
    charge = payments.charge_for(
        ctx.store, charge_id=get_ref(p, "charge"), payment_intent_id=get_ref(p, "payment_intent")
    )
    return payments.refund_create(
        ctx.store,
        charge=charge,
        amount=get_int(p, "amount", maximum=MAX_AMOUNT),
        reason=get_enum(p, "reason", payments.REFUND_REASONS),
        metadata=merge_metadata({}, p),
    )


def refund_retrieve(ctx: Context, req: Request, id: str) -> Params:
    return ctx.store.get(id, "refund")


def refund_list(ctx: Context, req: Request) -> Params:
    p = req.params
    items = ctx.store.all("refund", charge=get_str(p, "charge"), payment_intent=get_str(p, "payment_intent"))
    return ctx.store.page("/v1/refunds", items, p)


def dispute_retrieve(ctx: Context, req: Request, id: str) -> Params:
    return ctx.store.get(id, "dispute")


def dispute_list(ctx: Context, req: Request) -> Params:
    p = req.params
    items = ctx.store.all("dispute", charge=get_str(p, "charge"), payment_intent=get_str(p, "payment_intent"))
    return ctx.store.page("/v1/disputes", items, p)


def dispute_close(ctx: Context, req: Request, id: str) -> Params:
    """The merchant accepts the dispute: it is lost."""
    return payments.dispute_close(ctx.store, ctx.store.get(id, "dispute"), status="lost")


def event_retrieve(ctx: Context, req: Request, id: str) -> Params:
    return ctx.store.get(id, "event")


def event_list(ctx: Context, req: Request) -> Params:
    p = req.params
    items = ctx.store.all("event", type=get_str(p, "type"))
    types: list[Any] = get_list(p, "types")
    if types:
        items = [event for event in items if event["type"] in types]
    return ctx.store.page("/v1/events", items, p)


ROUTES: list[Route] = [
    route("POST", "/v1/customers", customer_create),
    route("GET", "/v1/customers", customer_list),
    route("GET", "/v1/customers/{id}", customer_retrieve),
    route("POST", "/v1/customers/{id}", customer_update),
    route("GET", "/v1/customers/{id}/payment_methods", customer_payment_methods),
    route("GET", "/v1/customers/{id}/payment_methods/{pm}", customer_payment_method),
    route("POST", "/v1/checkout/sessions", checkout_session_create),
    route("GET", "/v1/checkout/sessions", checkout_session_list),
    route("GET", "/v1/checkout/sessions/{id}", checkout_session_retrieve),
    route("GET", "/v1/checkout/sessions/{id}/line_items", checkout_session_line_items),
    route("POST", "/v1/checkout/sessions/{id}/expire", checkout_session_expire),
    route("POST", "/v1/payment_intents", payment_intent_create),
    route("GET", "/v1/payment_intents", payment_intent_list),
    route("GET", "/v1/payment_intents/{id}", payment_intent_retrieve),
    route("POST", "/v1/payment_intents/{id}", payment_intent_update),
    route("POST", "/v1/payment_intents/{id}/confirm", payment_intent_confirm),
    route("POST", "/v1/payment_intents/{id}/cancel", payment_intent_cancel),
    route("GET", "/v1/payment_methods", payment_method_list),
    route("GET", "/v1/payment_methods/{id}", payment_method_retrieve),
    route("POST", "/v1/payment_methods/{id}/attach", payment_method_attach),
    route("POST", "/v1/payment_methods/{id}/detach", payment_method_detach),
    route("GET", "/v1/charges", charge_list),
    route("GET", "/v1/charges/{id}", charge_retrieve),
    route("POST", "/v1/refunds", refund_create),
    route("GET", "/v1/refunds", refund_list),
    route("GET", "/v1/refunds/{id}", refund_retrieve),
    route("GET", "/v1/disputes", dispute_list),
    route("GET", "/v1/disputes/{id}", dispute_retrieve),
    route("POST", "/v1/disputes/{id}/close", dispute_close),
    route("GET", "/v1/events", event_list),
    route("GET", "/v1/events/{id}", event_retrieve),
]
