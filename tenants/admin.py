"""Django admin for platform operators. Secrets are never shown: ciphertexts and hashes are excluded.

Every write goes through the same service functions as the dashboard (`ServiceAdmin`), on their
operator path: audited in the same transaction under the operator's email with `{"operator": true}`,
and the proxy's cached documents dropped once the change commits. Gateway keys and provider
credentials are never deleted (usage events refer to them): they are revoked or removed instead.

The admin login is counted by allauth's failed-login limits (per client IP and per email), like the
dashboard's; a locked-out attempt gets the login form with the reason and HTTP 429.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from allauth.account.adapter import get_adapter
from django import forms
from django.contrib import admin, messages
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth.admin import UserAdmin as BaseUserAdmin
from django.core.exceptions import NON_FIELD_ERRORS
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect

from config.errors import ApplicationError
from tenants import services
from tenants.adapters import client_ip
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

T = TypeVar("T")

# allauth's code for "too many failed login attempts" (allauth.account.adapter.DefaultAccountAdapter)
LOCKED_OUT = "too_many_login_attempts"


# --- login --------------------------------------------------------------------------------------------


class AdminLoginForm(AdminAuthenticationForm):
    """Authenticates through allauth's adapter, which counts failures per client IP and per email in
    the Redis cache (ACCOUNT_RATE_LIMITS["login_failed"]) and refuses further attempts, even with
    the right password, until the window passes."""

    def clean(self) -> dict[str, Any]:
        email = self.cleaned_data.get("username")
        password = self.cleaned_data.get("password")
        if email is not None and password:
            # raises ValidationError(code=LOCKED_OUT) when the limit is reached
            self.user_cache = get_adapter(self.request).authenticate(self.request, email=email, password=password)
            if self.user_cache is None:
                raise self.get_invalid_login_error()
            self.confirm_login_allowed(self.user_cache)
        return self.cleaned_data


admin.site.login_form = AdminLoginForm


def admin_login(request: HttpRequest) -> HttpResponse:
    """Django admin's login view (routed in config/urls.py); a locked-out attempt answers 429."""
    response = admin.site.login(request)
    form = (getattr(response, "context_data", None) or {}).get("form")
    if form is not None and form.has_error(NON_FIELD_ERRORS, LOCKED_OUT):
        response.status_code = 429
    return response


# --- writes through services ------------------------------------------------------------------------------


class Refused(Exception):
    """A service refused an operator's change; carries its ApplicationError."""

    def __init__(self, error: ApplicationError) -> None:
        super().__init__(error.message)
        self.error = error


_REFUSAL_ATTR = "_turnpike_refusal"


class ServiceAdmin(admin.ModelAdmin):
    """A ModelAdmin whose save_model/delete_model call services (through `run`), never `obj.save()`.

    A refusal (ApplicationError) aborts the admin's transaction, so nothing is saved, not even the
    admin's own history entry. An edit is then shown again with the reason on the field the error
    names and the operator's input kept; a delete or an action shows it as a message."""

    def run(self, request: HttpRequest, service: Callable[..., T], **kwargs: Any) -> T:
        try:
            return service(**kwargs, acting_user=request.user, ip=client_ip(request))
        except ApplicationError as exc:
            raise Refused(exc) from exc

    def changeform_view(
        self,
        request: HttpRequest,
        object_id: str | None = None,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        try:
            return super().changeform_view(request, object_id, form_url, extra_context)
        except Refused as refused:
            # The first pass rolled back. Validate the same input again with the refusal attached to
            # the form: it is invalid this time, so the form is rendered and no service is called.
            setattr(request, _REFUSAL_ATTR, refused.error)
            return super().changeform_view(request, object_id, form_url, extra_context)

    def get_form(self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs: Any) -> Any:
        form_class = super().get_form(request, obj, change, **kwargs)
        error: ApplicationError | None = getattr(request, _REFUSAL_ATTR, None)
        if error is None:
            return form_class

        def clean(form: forms.ModelForm) -> dict[str, Any] | None:
            cleaned = form_class.clean(form)
            field = error.extra.get("field")
            form.add_error(field if field in form.fields else None, error.message)
            return cleaned

        return type(form_class.__name__, (form_class,), {"clean": clean})

    def delete_view(
        self, request: HttpRequest, object_id: str, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        try:
            return super().delete_view(request, object_id, extra_context)
        except Refused as refused:
            messages.error(request, refused.error.message)
            return HttpResponseRedirect(request.path.rsplit("/delete/", 1)[0] + "/change/")

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        try:
            return super().changelist_view(request, extra_context)
        except Refused as refused:  # a bulk delete: the objects before the refused one are gone
            messages.error(request, refused.error.message)
            return HttpResponseRedirect(request.get_full_path())

    def run_each(
        self, request: HttpRequest, queryset: QuerySet[Any], done: str, service: Callable[..., Any], arg: str
    ) -> None:
        """An action: call `service(<arg>=obj, operator=True)` for each selected object, one
        transaction each; report what was done and each refusal."""
        count = 0
        for obj in queryset:
            try:
                self.run(request, service, **{arg: obj}, operator=True)
            except Refused as refused:
                messages.error(request, f"{obj}: {refused.error.message}")
            else:
                count += 1
        if count:
            messages.success(request, f"{count} {done}. The proxy applies it within a second.")


# --- users and workspaces ------------------------------------------------------------------------------------


class ReadOnlyAdmin(admin.ModelAdmin):
    """Records operators look at but never type in: their writes belong to services with rules and audit rows
    (members, invitations, the ledger, Stripe), to generated data (the catalog) or to nobody (the audit log)."""

    def has_add_permission(self, request):  # type: ignore[no-untyped-def]
        return False

    def has_change_permission(self, request, obj=None):  # type: ignore[no-untyped-def]
        return False

    def has_delete_permission(self, request, obj=None):  # type: ignore[no-untyped-def]
        return False


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
    """Shown, not edited: roles change through the member services (the dashboard's Members page), which
    keep the owner rules (a workspace keeps an owner; admins cannot touch owners) and audit every change."""

    model = Membership
    extra = 0
    fields = ("user", "role", "created_at")
    readonly_fields = ("user", "role", "created_at")

    def has_add_permission(self, request, obj=None):  # type: ignore[no-untyped-def]
        return False

    def has_change_permission(self, request, obj=None):  # type: ignore[no-untyped-def]
        return False

    def has_delete_permission(self, request, obj=None):  # type: ignore[no-untyped-def]
        return False


@admin.register(Workspace)
class WorkspaceAdmin(ServiceAdmin):
    list_display = ["name", "slug", "plan", "managed_access", "created_at"]
    list_filter = ["plan", "managed_access"]
    search_fields = ["name", "slug"]
    # the slug is in every dashboard URL and in the proxy's cached documents: fixed at creation; the
    # request-log settings are the workspace's own choice (dashboard Settings, tenants.services.logging)
    readonly_fields = ["public_id", "slug", "created_by", "created_at", "log_bodies", "body_retention_days"]
    inlines = [MembershipInline]

    def has_add_permission(self, request):  # type: ignore[no-untyped-def]
        # workspace_create (dashboard, bootstrap_workspace) also makes the owner and the data key
        return False

    def save_model(self, request, obj, form, change):  # type: ignore[no-untyped-def]
        if "name" in form.changed_data:
            current = Workspace.objects.get(pk=obj.pk)
            self.run(request, services.workspace_update, workspace=current, name=obj.name, operator=True)
        billing = [name for name in ("plan", "managed_access") if name in form.changed_data]
        if billing:
            self.run(request, services.workspace_billing_update, workspace=obj, fields=billing)


# --- credentials -------------------------------------------------------------------------------------------


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


@admin.register(PlatformCredential)
class PlatformCredentialAdmin(ServiceAdmin):
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
        # the service validates (SSRF guard, live check of a new key), encrypts, audits, invalidates
        self.run(request, services.platform_credential_save, credential=obj, secret=form.cleaned_data["secret"])
        messages.info(request, "Proxy workers pick up the change within a second.")

    def has_delete_permission(self, request, obj=None):  # type: ignore[no-untyped-def]
        return False  # usage events refer to what served them: deactivate instead


class ProviderCredentialForm(forms.ModelForm):
    # validated by the service (SSRF guard, https rule) exactly as on the dashboard
    base_url = forms.CharField(label="Base URL", required=False, max_length=500)

    class Meta:
        model = ProviderCredential
        fields = ["label", "base_url"]


@admin.register(ProviderCredential)
class ProviderCredentialAdmin(ServiceAdmin):
    form = ProviderCredentialForm
    list_display = ["label", "workspace", "provider", "masked_secret", "created_at", "removed_at"]
    list_filter = ["provider"]
    search_fields = ["label", "workspace__name"]
    # only the label and the base URL are edited here (through provider_credential_update)
    readonly_fields = [
        "public_id",
        "workspace",
        "provider",
        "slug",
        "secret_last4",
        "created_by",
        "created_at",
        "updated_at",
        "last_validated_at",
        "removed_at",
    ]
    fields = ["label", "base_url", *readonly_fields]
    actions = ["remove"]

    def has_add_permission(self, request):  # type: ignore[no-untyped-def]
        return False  # secrets are added through the dashboard, which validates and encrypts them

    def has_delete_permission(self, request, obj=None):  # type: ignore[no-untyped-def]
        return False  # usage events refer to the credential that served them: remove it instead

    def save_model(self, request, obj, form, change):  # type: ignore[no-untyped-def]
        data = form.cleaned_data
        self.run(
            request,
            services.provider_credential_update,
            credential=obj,
            label=data["label"],
            base_url=data["base_url"],
            operator=True,
        )

    @admin.action(description="Remove selected credentials (the secret is wiped; the proxy stops using them)")
    def remove(self, request: HttpRequest, queryset: QuerySet[ProviderCredential]) -> None:
        self.run_each(request, queryset, "credential(s) removed", services.provider_credential_remove, "credential")


# --- gateway keys ----------------------------------------------------------------------------------------------


@admin.register(GatewayKey)
class GatewayKeyAdmin(ServiceAdmin):
    list_display = ["name", "prefix", "workspace", "created_at", "last_used_at", "revoked_at"]
    search_fields = ["name", "prefix", "workspace__name"]
    # only the name, expiry and allowed models are edited here (through gateway_key_update)
    readonly_fields = [
        "public_id",
        "workspace",
        "prefix",
        "created_by",
        "created_at",
        "last_used_at",
        "revoked_at",
        "revoked_by",
        "log_bodies",
    ]
    fields = ["name", "expires_at", "allowed_models", *readonly_fields]
    actions = ["revoke"]

    def has_add_permission(self, request):  # type: ignore[no-untyped-def]
        return False  # a key's plaintext is shown once, to a member, on the dashboard

    def has_delete_permission(self, request, obj=None):  # type: ignore[no-untyped-def]
        return False  # usage events refer to the key that made them: revoke it instead

    def save_model(self, request, obj, form, change):  # type: ignore[no-untyped-def]
        data = form.cleaned_data
        allowed = data["allowed_models"]
        self.run(
            request,
            services.gateway_key_update,
            key=obj,
            name=data["name"],
            expires_at=data["expires_at"],
            allowed_models=[] if allowed is None else allowed,
            operator=True,
        )

    @admin.action(description="Revoke selected keys")
    def revoke(self, request: HttpRequest, queryset: QuerySet[GatewayKey]) -> None:
        self.run_each(request, queryset, "key(s) revoked", services.gateway_key_revoke, "key")


# --- read-mostly -------------------------------------------------------------------------------------------------


@admin.register(Invitation)
class InvitationAdmin(ReadOnlyAdmin):
    """Shown, not edited: invitations are made, accepted and revoked through the member services (audited)."""

    list_display = ["email", "workspace", "role", "created_at", "expires_at", "accepted_at", "revoked_at"]
    exclude = ["token_hash"]


@admin.register(AuditLog)
class AuditLogAdmin(ReadOnlyAdmin):
    list_display = ["created_at", "workspace", "actor_email", "action", "target_repr", "ip_address"]
    list_filter = ["action"]
    search_fields = ["actor_email", "target_repr", "workspace__name"]
