"""The Stripe SDK client Turnpike uses: the real `stripe` library, against Stripe or (dev, tests) the
bundled fake at STRIPE_API_BASE (billing/fake_stripe)."""

from __future__ import annotations

import stripe
from django.conf import settings

from config.errors import ApplicationError


class BillingNotConfigured(ApplicationError):
    status_code = 503

    def __init__(self) -> None:
        super().__init__("Card payments are not configured on this server (STRIPE_SECRET_KEY); contact support.")


def stripe_client() -> stripe.StripeClient:
    if not settings.STRIPE_SECRET_KEY:
        raise BillingNotConfigured
    base = settings.STRIPE_API_BASE.rstrip("/")
    return stripe.StripeClient(
        settings.STRIPE_SECRET_KEY,
        base_addresses={"api": base} if base else None,
        max_network_retries=2,  # the SDK retries with the same idempotency key: safe for payments
    )


def construct_event(payload: bytes, signature: str) -> stripe.Event:
    """The verified event, or stripe.SignatureVerificationError / ValueError."""
    if not settings.STRIPE_WEBHOOK_SECRET:
        raise BillingNotConfigured
    return stripe.Webhook.construct_event(payload, signature, settings.STRIPE_WEBHOOK_SECRET)
