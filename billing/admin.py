from django.contrib import admin

from billing.models import LedgerEntry, ModelPrice, Plan, WorkspaceModelPrice
from tenants.services import plans_changed


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
class PlanAdmin(admin.ModelAdmin):
    list_display = ["name", "code", "byok_fee_rate", "managed_markup_rate", "is_default"]

    def save_model(self, request, obj, form, change):  # type: ignore[no-untyped-def]
        super().save_model(request, obj, form, change)
        plans_changed()  # cached charge rates of every workspace are stale


@admin.register(ModelPrice)
class ModelPriceAdmin(admin.ModelAdmin):
    list_display = ["provider", "model", "mode", "input_usd_per_mtok", "output_usd_per_mtok", "catalog_version"]
    list_filter = ["provider", "mode"]
    search_fields = ["model"]


@admin.register(WorkspaceModelPrice)
class WorkspaceModelPriceAdmin(admin.ModelAdmin):
    list_display = ["workspace", "provider", "model", "input_usd_per_mtok", "output_usd_per_mtok"]
    search_fields = ["workspace__name", "model"]
