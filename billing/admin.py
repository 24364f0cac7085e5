from django.contrib import admin

from billing import services
from billing.catalog import PRICE_FIELDS
from billing.models import LedgerEntry, ModelPrice, Plan, WorkspaceModelPrice
from contracts.pricing import Price
from tenants.admin import ServiceAdmin


@admin.register(LedgerEntry)
class LedgerEntryAdmin(admin.ModelAdmin):
    list_display = ["created_at", "workspace", "kind", "amount_nanos", "memo"]
    list_filter = ["kind"]
    search_fields = ["workspace__name", "idempotency_key", "memo"]

    def has_add_permission(self, request):  # type: ignore[no-untyped-def]
        return False  # entries are posted by billing.services (balance row, idempotency, audit), never typed in

    def has_change_permission(self, request, obj=None):  # type: ignore[no-untyped-def]
        return False  # append-only: post a correcting entry instead

    def has_delete_permission(self, request, obj=None):  # type: ignore[no-untyped-def]
        return False


@admin.register(Plan)
class PlanAdmin(ServiceAdmin):
    """Plans through billing.services: audited platform-wide, every workspace's cached rates dropped."""

    list_display = ["name", "code", "byok_fee_rate", "managed_markup_rate", "is_default"]

    def save_model(self, request, obj, form, change):  # type: ignore[no-untyped-def]
        terms = {name: form.cleaned_data[name] for name in ("code", "name", "byok_fee_rate", "managed_markup_rate")}
        terms["is_default"] = form.cleaned_data["is_default"]
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
class ModelPriceAdmin(admin.ModelAdmin):
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
class UsageDeadLetterAdmin(admin.ModelAdmin):
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

    def has_add_permission(self, request):  # type: ignore[no-untyped-def]
        return False  # written by the ingester only

    def has_change_permission(self, request, obj=None):  # type: ignore[no-untyped-def]
        return False  # evidence: never edited

    def has_delete_permission(self, request, obj=None):  # type: ignore[no-untyped-def]
        return False
