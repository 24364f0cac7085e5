"""POST /stripe/webhook/: Stripe's deliveries. Only a payload signed with STRIPE_WEBHOOK_SECRET is read;
anything else is a 400 that changes nothing. A 5xx makes Stripe deliver again later (it retries for
days), which is what we want when Stripe's API or our database is briefly unreachable."""

from __future__ import annotations

import logging

import stripe
from django.db import DatabaseError
from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from billing.services.topups import WebhookRejected, stripe_webhook_handle
from billing.stripe_client import BillingNotConfigured

log = logging.getLogger("turnpike.billing.stripe")


@csrf_exempt  # authenticated by Stripe's signature, not by a session
@require_POST
def stripe_webhook(request: HttpRequest) -> JsonResponse:
    signature = request.headers.get("Stripe-Signature", "")
    if not signature:
        return JsonResponse({"error": "missing Stripe-Signature header"}, status=400)
    try:
        outcome = stripe_webhook_handle(payload=request.body, signature=signature)
    except WebhookRejected as exc:
        log.warning("refused a webhook delivery: %s", exc)
        return JsonResponse({"error": "invalid signature or payload"}, status=400)
    except BillingNotConfigured:
        return JsonResponse({"error": "billing is not configured"}, status=503)
    except (stripe.StripeError, DatabaseError) as exc:
        log.warning("webhook delivery not handled now (%s); Stripe will deliver it again", exc)
        return JsonResponse({"error": "temporarily unavailable"}, status=503)
    return JsonResponse({"received": True, "outcome": outcome})
