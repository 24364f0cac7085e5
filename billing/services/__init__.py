"""Writes for billing, one module per sub-domain; every write path (dashboard, API, admin, command,
webhook, task) goes through these functions.

- ledger:   ledger_post (idempotent postings), grants
- plans:    plans (operators), a workspace choosing a public plan
- prices:   a workspace's own model prices
- accounts: billing profile, saved card, auto-recharge and low-balance settings
- topups:   Stripe Checkout top-ups, webhooks (payments, refunds, disputes), auto-recharge charges
- invoices: invoice and credit-note finalization with gapless numbers
"""

from billing.services.accounts import (
    auto_recharge_update,
    billing_profile_update,
    low_balance_alert_update,
    saved_card_remove,
    workspace_plan_choose,
)
from billing.services.invoices import credit_note_issue, invoice_issue_for_topup
from billing.services.ledger import MAX_ENTRY_NANOS, ledger_grant_post, ledger_post
from billing.services.plans import plan_create, plan_delete, plan_update
from billing.services.prices import (
    workspace_model_price_create,
    workspace_model_price_delete,
    workspace_model_price_update,
)
from billing.services.topups import (
    auto_recharge_run,
    stripe_webhook_handle,
    topup_checkout_start,
)

__all__ = [
    "MAX_ENTRY_NANOS",
    "auto_recharge_run",
    "auto_recharge_update",
    "billing_profile_update",
    "credit_note_issue",
    "invoice_issue_for_topup",
    "ledger_grant_post",
    "ledger_post",
    "low_balance_alert_update",
    "plan_create",
    "plan_delete",
    "plan_update",
    "saved_card_remove",
    "stripe_webhook_handle",
    "topup_checkout_start",
    "workspace_model_price_create",
    "workspace_model_price_delete",
    "workspace_model_price_update",
    "workspace_plan_choose",
]
