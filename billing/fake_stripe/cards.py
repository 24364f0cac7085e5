"""Test cards: what a card number does when it pays, and the declines the fake can answer with.

The numbers are Stripe's own test cards (docs.stripe.com/testing), except ASYNC_CARD, which is the fake's:
Stripe's asynchronous payments come from bank debits, not cards, and the hosted page only takes cards.

| number               | on the checkout page / first payment | later off-session payments      |
|----------------------|--------------------------------------|---------------------------------|
| 4242 4242 4242 4242  | succeeds (Visa)                      | succeed                         |
| 5555 5555 5555 4444  | succeeds (Mastercard)                | succeed                         |
| 4000 0000 0000 0002  | declined: card_declined/generic_decline                                |
| 4000 0000 0000 9995  | declined: card_declined/insufficient_funds                             |
| 4000 0000 0000 9987  | declined: card_declined/lost_card                                      |
| 4000 0000 0000 0069  | declined: expired_card                                                 |
| 4000 0000 0000 0127  | declined: incorrect_cvc                                                |
| 4000 0000 0000 0119  | declined: processing_error                                             |
| 4242 4242 4242 4241  | refused: incorrect_number (fails the Luhn check)                       |
| 4000 0000 0000 0341  | succeeds and is saved            | declined: card_declined/generic_decline |
| 4000 0027 6000 3184  | succeeds (the buyer authenticates) | declined: authentication_required  |
| 4000 0000 0000 0259  | succeeds, then a dispute (fraudulent) is opened at once               |
| 4000 0000 0000 8880  | ASYNC_CARD: the session completes with payment_status "unpaid"; the   |
|                      | payment settles when `POST /_fake/checkout/{id}/async` is called      |

Any other number that passes the Luhn check succeeds (brand from the prefix).
"""

from __future__ import annotations

from dataclasses import dataclass

ASYNC_CARD = "4000000000008880"
DISPUTE_CARD = "4000000000000259"


@dataclass(frozen=True)
class Decline:
    """What a declined attempt answers: the error `code`, the issuer's `decline_code`, the message."""

    code: str
    decline_code: str | None
    message: str


DECLINES: dict[str, Decline] = {
    "generic_decline": Decline("card_declined", "generic_decline", "Your card was declined."),
    "insufficient_funds": Decline("card_declined", "insufficient_funds", "Your card has insufficient funds."),
    "lost_card": Decline("card_declined", "lost_card", "Your card was declined."),
    "stolen_card": Decline("card_declined", "stolen_card", "Your card was declined."),
    "do_not_honor": Decline("card_declined", "do_not_honor", "Your card was declined."),
    "expired_card": Decline("expired_card", "expired_card", "Your card has expired."),
    "incorrect_cvc": Decline("incorrect_cvc", "incorrect_cvc", "Your card's security code is incorrect."),
    "processing_error": Decline(
        "processing_error",
        "processing_error",
        "An error occurred while processing your card. Try again in a little bit.",
    ),
    "authentication_required": Decline(
        "authentication_required",
        "authentication_required",
        "Your card was declined. This transaction requires authentication.",
    ),
}
INCORRECT_NUMBER = Decline("incorrect_number", None, "Your card number is incorrect.")


@dataclass(frozen=True)
class CardBehaviour:
    """How a card number behaves: a decline when paying in the checkout (or on any payment), and one
    for later off-session payments only."""

    decline: Decline | None = None
    off_session_decline: Decline | None = None
    dispute: bool = False
    asynchronous: bool = False


BEHAVIOURS: dict[str, CardBehaviour] = {
    "4000000000000002": CardBehaviour(decline=DECLINES["generic_decline"]),
    "4000000000009995": CardBehaviour(decline=DECLINES["insufficient_funds"]),
    "4000000000009987": CardBehaviour(decline=DECLINES["lost_card"]),
    "4000000000009979": CardBehaviour(decline=DECLINES["stolen_card"]),
    "4000000000000069": CardBehaviour(decline=DECLINES["expired_card"]),
    "4000000000000127": CardBehaviour(decline=DECLINES["incorrect_cvc"]),
    "4000000000000119": CardBehaviour(decline=DECLINES["processing_error"]),
    "4000000000000341": CardBehaviour(off_session_decline=DECLINES["generic_decline"]),
    "4000002760003184": CardBehaviour(off_session_decline=DECLINES["authentication_required"]),
    DISPUTE_CARD: CardBehaviour(dispute=True),
    ASYNC_CARD: CardBehaviour(asynchronous=True),
}

# Stripe's test PaymentMethod ids: passing one as `payment_method` makes a fresh PaymentMethod from the card.
MAGIC_PAYMENT_METHODS: dict[str, str] = {
    "pm_card_visa": "4242424242424242",
    "pm_card_mastercard": "5555555555554444",
    "pm_card_chargeDeclined": "4000000000000002",
    "pm_card_chargeDeclinedInsufficientFunds": "4000000000009995",
    "pm_card_chargeDeclinedExpiredCard": "4000000000000069",
    "pm_card_chargeCustomerFail": "4000000000000341",
    "pm_card_authenticationRequired": "4000002760003184",
    "pm_card_createDispute": DISPUTE_CARD,
}


def normalise(number: str) -> str:
    return "".join(ch for ch in number if ch not in " -")


def luhn_valid(digits: str) -> bool:
    if not (13 <= len(digits) <= 19) or not digits.isdigit():
        return False
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = int(char)
        if position % 2 == 1:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return total % 10 == 0


def brand(digits: str) -> str:
    if digits.startswith("4"):
        return "visa"
    if digits[:2] in ("34", "37"):
        return "amex"
    if 51 <= int(digits[:2]) <= 55 or 2221 <= int(digits[:4]) <= 2720:
        return "mastercard"
    if digits.startswith(("6011", "65")):
        return "discover"
    return "unknown"


def behaviour(digits: str) -> CardBehaviour:
    return BEHAVIOURS.get(digits, CardBehaviour())


def decline_for(code: str, decline_code: str | None = None) -> Decline | None:
    """A control endpoint's {"code", "decline_code"} → the Decline (None when unknown)."""
    if code == "card_declined":
        return DECLINES.get(decline_code or "generic_decline")
    return DECLINES.get(code)
