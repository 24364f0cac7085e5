from django.contrib import admin

from billing import services
from billing.catalog import PRICE_FIELDS
from billing.models import (
    BillingAccount,
    Invoice,
    LedgerEntry,
    ModelPrice,
    Plan,
    Statement,
    StripeEvent,
    TopUp,
    WorkspaceModelPrice,
)
from contracts.pricing import Price
from tenants.admin import ReadOnlyAdmin, ServiceAdmin


@admin.register(LedgerEntry)
class LedgerEntryAdmin(ReadOnlyAdmin):
    """Append-only: entries are posted by billing.services (balance row, idempotency, audit); a correction
    is a new entry, never an edit."""

    list_display = ["created_at", "workspace", "kind", "amount_nanos", "memo"]
    list_filter = ["kind"]
    search_fields = ["workspace__name", "idempotency_key", "memo"]


@admin.register(Plan)
class PlanAdmin(ServiceAdmin):
    """Plans through billing.services: audited platform-wide, every workspace's cached rates dropped."""

    list_display = ["name", "code", "byok_fee_rate", "managed_markup_rate", "is_default", "public"]

    def save_model(self, request, obj, form, change):  # type: ignore[no-untyped-def]
        names = ("code", "name", "byok_fee_rate", "managed_markup_rate", "is_default", "public", "description")
        terms = {name: form.cleaned_data[name] for name in names}
        if change:
            self.run(request, services.plan_update, plan=obj, **terms)
        else:
            obj.pk = self.run(request, services.plan_create, **terms).pk
        obj.refresh_from_db()

    def delete_model(self, request, obj):  # type: ignore[no-untyped-def]
        self.run(request, services.plan_delete, plan=obj)

    def delete_queryset(self, request, queryset):  # type: ignore[no-untyped-def]
        for plan in queryset:
            self.run(request, services.plan_delete, plan=plan)


@admin.register(ModelPrice)
class ModelPriceAdmin(ReadOnlyAdmin):
    """The published catalog, shown, not edited: it is generated (sync_price_catalog from the public source
    plus billing/data/price_overrides.toml, reviewed in a commit) and loaded by load_price_catalog, so a
    hand edit here would be silently replaced by the next load. A workspace's own prices are edited below."""

    list_display = ["provider", "model", "mode", "input_usd_per_mtok", "output_usd_per_mtok", "catalog_version"]
    list_filter = ["provider", "mode"]
    search_fields = ["model"]


@admin.register(WorkspaceModelPrice)
class WorkspaceModelPriceAdmin(ServiceAdmin):
    """A workspace's own prices through billing.services: audited in its log, its cached document dropped."""

    list_display = ["workspace", "provider", "model", "input_usd_per_mtok", "output_usd_per_mtok"]
    search_fields = ["workspace__name", "model"]
    raw_id_fields = ["workspace"]
    readonly_fields = ["created_at", "updated_at"]

    def get_readonly_fields(self, request, obj=None):  # type: ignore[no-untyped-def]
        # a price belongs to one workspace for good: moving it would leave the old one's cache stale
        return [*self.readonly_fields, "workspace"] if obj is not None else self.readonly_fields

    def save_model(self, request, obj, form, change):  # type: ignore[no-untyped-def]
        data = form.cleaned_data
        price = Price(**{key: data[column] for key, column in PRICE_FIELDS.items()})
        target = {"provider": data["provider"], "model": data["model"], "price": price, "operator": True}
        if change:
            self.run(request, services.workspace_model_price_update, model_price=obj, **target)
        else:
            created = self.run(request, services.workspace_model_price_create, workspace=data["workspace"], **target)
            obj.pk = created.pk
        obj.refresh_from_db()

    def delete_model(self, request, obj):  # type: ignore[no-untyped-def]
        self.run(request, services.workspace_model_price_delete, model_price=obj, operator=True)

    def delete_queryset(self, request, queryset):  # type: ignore[no-untyped-def]
        for model_price in queryset:
            self.run(request, services.workspace_model_price_delete, model_price=model_price, operator=True)


# --- usage dead letters (billing.deadletters) --------------------------------------------------------------

from billing.models import UsageDeadLetter  # noqa: E402 (this section is appended: the header is shared)


@admin.register(UsageDeadLetter)
class UsageDeadLetterAdmin(ReadOnlyAdmin):
    """Usage entries ingestion could not store: read-only evidence (raw fields, error, released charge)."""

    list_display = ["created_at", "entry_id", "workspace_id", "request_id", "charge_nanos", "deliveries", "error_head"]
    search_fields = ["entry_id", "request_id", "error", "=workspace_id"]
    date_hierarchy = "created_at"
    readonly_fields = [
        "entry_id",
        "request_id",
        "workspace_id",
        "charge_nanos",
        "deliveries",
        "created_at",
        "error",
        "raw_fields",
    ]

    @admin.display(description="error")
    def error_head(self, obj: UsageDeadLetter) -> str:
        return obj.error if len(obj.error) <= 120 else obj.error[:119] + "…"


@admin.register(TopUp)
class TopUpAdmin(ReadOnlyAdmin):
    list_display = ["created_at", "workspace", "source", "status", "amount_nanos", "tax_cents", "refunded_cents"]
    list_filter = ["source", "status"]
    search_fields = ["workspace__name", "stripe_checkout_session_id", "stripe_payment_intent_id"]


@admin.register(Invoice)
class InvoiceAdmin(ReadOnlyAdmin):
    list_display = ["number", "issued_at", "workspace", "kind", "net_cents", "tax_cents", "total_cents"]
    list_filter = ["kind"]
    search_fields = ["number", "workspace__name", "payment_reference"]


@admin.register(Statement)
class StatementAdmin(ReadOnlyAdmin):
    list_display = ["period_start", "workspace", "kind", "opening_cents", "closing_cents", "emailed_at"]
    list_filter = ["kind"]
    search_fields = ["workspace__name"]


@admin.register(StripeEvent)
class StripeEventAdmin(ReadOnlyAdmin):
    list_display = ["received_at", "event_id", "type", "workspace_id", "outcome"]
    list_filter = ["type"]
    search_fields = ["event_id", "outcome"]


@admin.register(BillingAccount)
class BillingAccountAdmin(ReadOnlyAdmin):
    list_display = ["workspace", "card_brand", "card_last4", "auto_recharge_enabled", "auto_recharge_failures"]
    search_fields = ["workspace__name", "stripe_customer_id"]
