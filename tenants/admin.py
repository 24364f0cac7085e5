"""Django admin for platform operators. Secrets are never shown: ciphertexts and hashes are excluded."""

from django.contrib import admin
from django.contrib.auth.admin import UserAdmin as BaseUserAdmin

from tenants.models import AuditLog, GatewayKey, Invitation, Membership, ProviderCredential, User, Workspace


@admin.register(User)
class UserAdmin(BaseUserAdmin):
    ordering = ["email"]
    list_display = ["email", "name", "is_staff", "is_active", "date_joined"]
    search_fields = ["email", "name"]
    fieldsets = (
        (None, {"fields": ("email", "password")}),
        ("Profile", {"fields": ("name",)}),
        ("Permissions", {"fields": ("is_active", "is_staff", "is_superuser", "groups", "user_permissions")}),
        ("Dates", {"fields": ("last_login", "date_joined")}),
    )
    add_fieldsets = ((None, {"classes": ("wide",), "fields": ("email", "password1", "password2")}),)


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    raw_id_fields = ["user"]


@admin.register(Workspace)
class WorkspaceAdmin(admin.ModelAdmin):
    list_display = ["name", "slug", "created_at"]
    search_fields = ["name", "slug"]
    readonly_fields = ["public_id", "created_at"]
    inlines = [MembershipInline]


@admin.register(ProviderCredential)
class ProviderCredentialAdmin(admin.ModelAdmin):
    list_display = ["label", "workspace", "provider", "masked_secret", "created_at", "removed_at"]
    list_filter = ["provider"]
    search_fields = ["label", "workspace__name"]
    exclude = ["secret_ciphertext"]
    readonly_fields = [
        "public_id",
        "workspace",
        "provider",
        "secret_last4",
        "created_by",
        "created_at",
        "updated_at",
        "last_validated_at",
        "removed_at",
    ]

    def has_add_permission(self, request):  # type: ignore[no-untyped-def]
        return False  # secrets are added through the dashboard, which validates and encrypts them


@admin.register(GatewayKey)
class GatewayKeyAdmin(admin.ModelAdmin):
    list_display = ["name", "prefix", "workspace", "created_at", "last_used_at", "revoked_at"]
    search_fields = ["name", "prefix", "workspace__name"]
    exclude = ["key_hash"]
    readonly_fields = ["public_id", "workspace", "prefix", "created_by", "created_at", "last_used_at", "revoked_by"]

    def has_add_permission(self, request):  # type: ignore[no-untyped-def]
        return False


@admin.register(Invitation)
class InvitationAdmin(admin.ModelAdmin):
    list_display = ["email", "workspace", "role", "created_at", "expires_at", "accepted_at", "revoked_at"]
    exclude = ["token_hash"]


@admin.register(AuditLog)
class AuditLogAdmin(admin.ModelAdmin):
    list_display = ["created_at", "workspace", "actor_email", "action", "target_repr", "ip_address"]
    list_filter = ["action"]
    search_fields = ["actor_email", "target_repr", "workspace__name"]

    def has_add_permission(self, request):  # type: ignore[no-untyped-def]
        return False

    def has_change_permission(self, request, obj=None):  # type: ignore[no-untyped-def]
        return False

    def has_delete_permission(self, request, obj=None):  # type: ignore[no-untyped-def]
        return False
