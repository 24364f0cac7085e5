"""The fake Stripe: a stand-in for the parts of Stripe's API that Turnpike uses, speaking Stripe's wire
format so the real `stripe` SDK talks to it unchanged, for dev and tests. Django-free; state in memory.

Run it:  python -m billing.fake_stripe --port 12111 [--secret-key sk_test_…] [--webhook-url URL]
                                      [--webhook-secret whsec_…]
SDK:     stripe.StripeClient("sk_test_fake_stripe", base_addresses={"api": "http://127.0.0.1:12111"})

Configuration (flag, else environment variable, else default)
    --secret-key       FAKE_STRIPE_SECRET_KEY        sk_test_fake_stripe   the only API key accepted
    --webhook-url      FAKE_STRIPE_WEBHOOK_URL       (none: events are only stored)
    --webhook-secret   FAKE_STRIPE_WEBHOOK_SECRET    whsec_fake_stripe     signs Stripe-Signature
    --retry-delays     FAKE_STRIPE_WEBHOOK_RETRY_DELAYS  1,2,4,8,16       seconds between delivery attempts
    --api-version      FAKE_STRIPE_API_VERSION       2026-10-28.endive     `api_version` of events
    --public-url       FAKE_STRIPE_PUBLIC_URL        (none: http://<Host header>)  base of checkout URLs

API (`Authorization: Bearer <secret key>`, form bodies in bracket notation, `expand[]`, `Idempotency-Key`)
    customers            POST /v1/customers, GET/POST /v1/customers/{id}, GET /v1/customers,
                         GET /v1/customers/{id}/payment_methods[/{pm}]
    checkout sessions    POST /v1/checkout/sessions (mode=payment, price_data line items),
                         GET /v1/checkout/sessions[/{id}[/line_items]], POST …/{id}/expire
    payment intents      POST /v1/payment_intents (confirm, off_session), GET/POST /v1/payment_intents/{id},
                         POST …/{id}/confirm, POST …/{id}/cancel, GET /v1/payment_intents
    payment methods      GET /v1/payment_methods?customer=…&type=card, GET /v1/payment_methods/{id},
                         POST …/{id}/attach, POST …/{id}/detach (test ids such as pm_card_visa work)
    charges, refunds     GET /v1/charges[/{id}], POST /v1/refunds, GET /v1/refunds[/{id}]
    disputes, events     GET /v1/disputes[/{id}], POST /v1/disputes/{id}/close, GET /v1/events[/{id}]

Hosted checkout page: GET /checkout/{session_id} (the session's `url`); POST pays it. Test cards: `cards.py`.

Controls (no auth, JSON; errors in Stripe's envelope)
    GET/POST /_fake/config                     webhook_url, webhook_secret, retry_delays at run time
    POST /_fake/reset                          forget every object, event and delivery
    POST /_fake/checkout/{id}/pay              {"card", "save", "email", "name"}: pay without a browser
    POST /_fake/checkout/{id}/async            {"result": "succeeded"|"failed"}: settle an async payment
    POST /_fake/payment_methods/{id}/decline   {"code", "decline_code"}; …/succeed undoes it
    POST /_fake/customers/{id}/decline         every payment by this customer declines; …/succeed
    POST /_fake/refunds                        {"payment_intent"|"charge", "amount", "reason"}
    POST /_fake/disputes                       {"payment_intent"|"charge", "amount", "reason"}
    POST /_fake/disputes/{id}/close            {"status": "won"|"lost"}
    POST /_fake/events/{id}/redeliver          send the event to the webhook URL again
    GET  /_fake/deliveries?event=…&type=…      the webhook delivery log, with every attempt
    GET  /_fake/health

docs/fake-stripe.md has the details: objects, events in order, test cards, examples.
"""
