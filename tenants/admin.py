"""Django admin for platform operators. Secrets are never shown: ciphertexts and hashes are excluded."""

from django import forms
from django.contrib import admin, messages
from django.contrib.auth.admin import UserAdmin as BaseUserAdmin

from config.errors import ApplicationError
from tenants import services
from tenants.models import (
    AuditLog,
    GatewayKey,
    Invitation,
    Membership,
    PlatformCredential,
    ProviderCredential,
    User,
    Workspace,
)


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
    list_display = ["name", "slug", "plan", "managed_access", "created_at"]
    list_filter = ["plan", "managed_access"]
    search_fields = ["name", "slug"]
    readonly_fields = ["public_id", "created_at"]
    inlines = [MembershipInline]

    def save_model(self, request, obj, form, change):  # type: ignore[no-untyped-def]
        if change:
            services.workspace_billing_update(workspace=obj, fields=list(form.changed_data) or ["name"])
        else:
            super().save_model(request, obj, form, change)


class PlatformCredentialForm(forms.ModelForm):
    base_url = forms.CharField(
        label="Base URL",
        required=False,
        max_length=500,
        help_text="Empty: the provider's public API. OpenAI-format providers include the version path (…/v1).",
    )
    secret = forms.CharField(
        label="API key",
        required=False,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "off"}),
        help_text="Required when adding; leave empty to keep the current key. Checked live against the provider.",
    )

    class Meta:
        model = PlatformCredential
        fields = ["provider", "label", "base_url", "is_active"]

    def clean(self):  # type: ignore[no-untyped-def]
        cleaned = super().clean()
        credential = self.instance
        for name in ("provider", "label", "base_url", "is_active"):
            if name in cleaned:
                setattr(credential, name, cleaned[name])
        try:
            # validate and encrypt here, so a rejected key is shown on the form and nothing is saved
            self._saved = services.platform_credential_save(credential=credential, secret=cleaned.get("secret", ""))
        except ApplicationError as exc:
            field = exc.extra.get("field")
            self.add_error(field if field in self.fields else None, exc.message)
        return cleaned


@admin.register(PlatformCredential)
class PlatformCredentialAdmin(admin.ModelAdmin):
    """Managed credentials: the platform's own provider keys, used by workspaces with managed access and
    charged at provider cost x (1 + the plan's managed markup)."""

    form = PlatformCredentialForm
    list_display = ["label", "provider", "masked_secret", "is_active", "updated_at"]
    list_filter = ["provider", "is_active"]
    readonly_fields = ["public_id", "secret_last4", "created_at", "updated_at"]

    @admin.display(description="Key")
    def masked_secret(self, obj: PlatformCredential) -> str:
        return f"…{obj.secret_last4}"

    def save_model(self, request, obj, form, change):  # type: ignore[no-untyped-def]
        messages.info(request, "Proxy workers pick up the change within a second.")  # saved in form.clean

    def has_delete_permission(self, request, obj=None):  # type: ignore[no-untyped-def]
        return False  # usage events refer to what served them: deactivate instead


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
