"""The hosted checkout page (`GET/POST /checkout/{session_id}`): plain, accessible HTML without script.

Every field has a label, the error is announced (`role="alert"`), the button's accessible name is "Pay",
and the amount is shown in the currency's major unit. Everything interpolated is HTML-escaped.
"""

from __future__ import annotations

import re
import time
from html import escape
from typing import Any

from billing.fake_stripe import payments
from billing.fake_stripe.payments import format_amount
from billing.fake_stripe.routing import Context, Request, Response, Route, route
from billing.fake_stripe.wire import Params, StripeError

DEFAULT_CARD = "4242 4242 4242 4242"
DEFAULT_EXPIRY = "12 / 34"
DEFAULT_CVC = "123"

STYLE = """
body{font-family:system-ui,sans-serif;background:#f6f8fa;color:#1a1f36;margin:0}
main{max-width:28rem;margin:3rem auto;background:#fff;padding:2rem;border-radius:8px;box-shadow:0 1px 4px #0002}
h1{font-size:1.25rem;margin:0 0 .25rem}.amount{font-size:2rem;font-weight:600;margin:.25rem 0 1rem}
label{display:block;margin:.75rem 0 .25rem;font-weight:500}
input[type=text],input[type=email]{width:100%;box-sizing:border-box;padding:.5rem;font-size:1rem;
border:1px solid #8792a2;border-radius:4px}
.row{display:flex;gap:1rem}.row>div{flex:1}
.check{display:flex;gap:.5rem;align-items:center;margin:1rem 0}.check label{margin:0;font-weight:400}
button{width:100%;padding:.75rem;font-size:1rem;background:#635bff;color:#fff;border:0;border-radius:4px;
margin-top:1rem;cursor:pointer}
.error{background:#fdecea;color:#8a1c1c;padding:.75rem;border-radius:4px;margin:1rem 0}
.note{color:#4f566b;font-size:.875rem}ul{padding-left:1.25rem}a{color:#635bff}
"""


def _document(title: str, body: str) -> str:
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)}</title><style>{STYLE}</style></head>"
        f"<body><main>{body}</main></body></html>"
    )


def checkout(
    session: Params,
    line_items: list[Params],
    *,
    show_save: bool,
    save_checked: bool,
    error: str | None = None,
    values: dict[str, Any] | None = None,
) -> str:
    values = values or {}
    amount = format_amount(session["amount_total"], session["currency"])
    items = "".join(
        f"<li>{escape(item['description'])} × {item['quantity']} — "
        f"{escape(format_amount(item['amount_total'], item['currency']))}</li>"
        for item in line_items
    )
    alert = f'<p class="error" role="alert">{escape(error)}</p>' if error else ""
    email = values.get("email") or session.get("customer_email") or ""
    save = ""
    if show_save:
        checked = " checked" if values.get("save", save_checked) else ""
        save = (
            '<div class="check"><input type="checkbox" id="save" name="save" value="on"'
            f'{checked}><label for="save">Save this card for future payments</label></div>'
        )
    cancel = ""
    if session.get("cancel_url"):
        cancel = f'<p class="note"><a href="{escape(session["cancel_url"])}">Cancel</a> and return to the merchant</p>'
    body = (
        "<h1>Pay Turnpike</h1>"
        f'<p class="amount" aria-label="Amount due: {escape(amount)}">{escape(amount)}</p>'
        f"<ul>{items}</ul>{alert}"
        f'<form method="post" action="/checkout/{escape(session["id"])}" novalidate>'
        '<label for="email">Email</label>'
        f'<input type="email" id="email" name="email" autocomplete="email" value="{escape(email)}">'
        '<label for="card_number">Card number</label>'
        '<input type="text" id="card_number" name="card_number" inputmode="numeric" autocomplete="cc-number" '
        f'value="{escape(values.get("card_number", DEFAULT_CARD))}">'
        '<div class="row"><div><label for="expiry">Expiry (MM / YY)</label>'
        '<input type="text" id="expiry" name="expiry" autocomplete="cc-exp" '
        f'value="{escape(values.get("expiry", DEFAULT_EXPIRY))}"></div>'
        '<div><label for="cvc">CVC</label><input type="text" id="cvc" name="cvc" inputmode="numeric" '
        f'autocomplete="cc-csc" value="{escape(values.get("cvc", DEFAULT_CVC))}"></div></div>'
        '<label for="name">Name on card</label>'
        f'<input type="text" id="name" name="name" autocomplete="cc-name" value="{escape(values.get("name", ""))}">'
        f'{save}<button type="submit">Pay</button></form>{cancel}'
        '<p class="note">Test mode: this is the bundled fake Stripe. No real card is charged.</p>'
    )
    return _document(f"Pay {amount}", body)


def notice(title: str, message: str, *, link: str | None = None, link_text: str = "Return to the merchant") -> str:
    body = f"<h1>{escape(title)}</h1><p>{escape(message)}</p>"
    if link:
        body += f'<p><a href="{escape(link)}">{escape(link_text)}</a></p>'
    return _document(title, body)


# --- handlers ----------------------------------------------------------------------------------------------


def _show_save(private: dict[str, Any]) -> bool:
    return bool(private.get("setup_future_usage") or private.get("save_enabled"))


def _closed(session: Params) -> Response:
    if session["status"] == "complete":
        return Response.html(
            notice(
                "Already paid",
                "This checkout session is complete: it has already been paid.",
                link=payments.checkout_success_url(session),
                link_text="Continue",
            )
        )
    return Response.html(
        notice("Session expired", "This checkout session has expired.", link=session.get("cancel_url")), status=410
    )


def _session(ctx: Context, session_id: str) -> Params | None:
    session = ctx.store.objects.get(session_id)
    if session is None or session["object"] != "checkout.session":
        return None
    return payments.checkout_session_refresh(ctx.store, session)


def checkout_get(ctx: Context, req: Request, id: str) -> Response:
    session = _session(ctx, id)
    if session is None:
        return Response.html(notice("Not found", "There is no checkout session with this id."), status=404)
    if session["status"] != "open":
        return _closed(session)
    private = ctx.store.private[id]
    return Response.html(
        checkout(
            session,
            private["line_items"],
            show_save=_show_save(private),
            save_checked=bool(private.get("setup_future_usage")),
        )
    )


def _expiry(text: str) -> tuple[int, int] | None:
    match = re.fullmatch(r"\s*(\d{1,2})\s*/\s*(\d{2}|\d{4})\s*", text)
    if not match:
        return None
    month, year = int(match.group(1)), int(match.group(2))
    year = year + 2000 if year < 100 else year
    return (month, year) if 1 <= month <= 12 else None


def checkout_post(ctx: Context, req: Request, id: str) -> Response:
    session = _session(ctx, id)
    if session is None:
        return Response.html(notice("Not found", "There is no checkout session with this id."), status=404)
    if session["status"] != "open":
        return _closed(session)
    private = ctx.store.private[id]
    form = {k: v for k, v in req.params.items() if isinstance(v, str)}
    values: dict[str, Any] = {**form, "save": form.get("save") == "on"}

    def again(message: str) -> Response:
        page = checkout(
            session,
            private["line_items"],
            show_save=_show_save(private),
            save_checked=False,
            error=message,
            values=values,
        )
        return Response.html(page, status=402)

    expiry = _expiry(form.get("expiry", ""))
    if expiry is None:
        return again("Your card's expiration date is incomplete or invalid.")
    today = time.gmtime()
    if expiry[1] < today.tm_year or (expiry[1] == today.tm_year and expiry[0] < today.tm_mon):
        return again("Your card's expiration date is in the past.")
    if not re.fullmatch(r"\d{3,4}", form.get("cvc", "").strip()):
        return again("Your card's security code is incomplete.")
    try:
        payments.checkout_session_pay(
            ctx.store,
            session,
            number=form.get("card_number", ""),
            save=values["save"],
            email=form.get("email") or None,
            name=form.get("name") or None,
            exp_month=expiry[0],
            exp_year=expiry[1],
        )
    except StripeError as error:
        if error.status != 402:
            raise
        return again(str(error))
    target = payments.checkout_success_url(session)
    if target:
        return Response.redirect(target)
    return Response.html(notice("Payment complete", "Thank you: your payment succeeded."))


ROUTES: list[Route] = [
    route("GET", "/checkout/{id}", checkout_get),
    route("POST", "/checkout/{id}", checkout_post),
]
