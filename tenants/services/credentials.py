"""A workspace's own provider credentials (bring your own key): create after a live check, rotate the
secret, edit label/base URL, remove (the row stays, the ciphertext is wiped), decrypt for the proxy.
The secret, base URL (SSRF guard) and live-check helpers are shared with platform_credentials."""

from __future__ import annotations

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from config.errors import ApplicationError
from contracts import crypto
from contracts.netguard import validate_base_url
from contracts.providers import get_spec
from tenants.cache import invalidate_workspace_on_commit
from tenants.credential_check import check_credential
from tenants.models import ProviderCredential, ProviderType, User, Workspace
from tenants.roles import Perm
from tenants.services.common import _unique_slug, audit, audit_changes, authorize, require_permission
from tenants.services.datakeys import _workspace_dek


def _clean_base_url(*, provider: str, base_url: str) -> str:
    spec = get_spec(provider)
    base_url = (base_url or "").strip()
    if not base_url:
        if spec.requires_base_url:
            raise ApplicationError(f"{spec.label} needs a base URL.", extra={"field": "base_url"})
        return ""
    try:
        return validate_base_url(
            base_url,
            allow_private=settings.TURNPIKE_ALLOW_PRIVATE_PROVIDER_URLS,
            require_https=settings.TURNPIKE_REQUIRE_HTTPS_PROVIDER_URLS,
        )
    except ValueError as exc:
        raise ApplicationError(str(exc), extra={"field": "base_url"}) from exc


def _check_live(*, provider: str, base_url: str, secret: str) -> None:
    result = check_credential(
        provider_type=provider,
        base_url=base_url or None,
        secret=secret,
        timeout=settings.TURNPIKE_CREDENTIAL_CHECK_TIMEOUT,
    )
    if not result.ok:
        raise ApplicationError(result.message, extra={"field": "secret"})


def _clean_secret(secret: str) -> str:
    secret = (secret or "").strip()
    if len(secret) < 8:
        raise ApplicationError("That does not look like an API key (too short).", extra={"field": "secret"})
    if len(secret) > 4096 or any(ch.isspace() for ch in secret):
        raise ApplicationError("That does not look like an API key.", extra={"field": "secret"})
    return secret


@transaction.atomic
def provider_credential_create(
    *,
    workspace: Workspace,
    provider: str,
    label: str,
    secret: str,
    acting_user: User,
    base_url: str = "",
    validate: bool = True,
    ip: str | None = None,
) -> ProviderCredential:
    """Store a provider key for the workspace, after checking it with a live call to the provider's
    models endpoint (unless `validate=False`, for operator tooling)."""
    require_permission(workspace=workspace, user=acting_user, perm=Perm.CREDENTIALS_MANAGE)
    if provider not in ProviderType.values:
        raise ApplicationError(f"Unknown provider type {provider!r}.", extra={"field": "provider"})
    label = (label or "").strip() or get_spec(provider).label
    if len(label) > 100:
        raise ApplicationError("A label can be at most 100 characters.", extra={"field": "label"})
    secret = _clean_secret(secret)
    base_url = _clean_base_url(provider=provider, base_url=base_url)
    if validate:
        _check_live(provider=provider, base_url=base_url, secret=secret)
    active = ProviderCredential.objects.filter(workspace=workspace, removed_at__isnull=True)
    slug = _unique_slug(label, lambda s: active.filter(slug=s).exists())
    credential = ProviderCredential(
        workspace=workspace,
        provider=provider,
        label=label,
        slug=slug,
        base_url=base_url,
        secret_last4=secret[-4:],
        created_by=acting_user,
        last_validated_at=timezone.now() if validate else None,
    )
    credential.secret_ciphertext = crypto.encrypt_secret(
        dek=_workspace_dek(workspace), secret=secret, credential_public_id=str(credential.public_id)
    )
    credential.save()
    audit(
        workspace=workspace,
        actor=acting_user,
        action="credential.created",
        target=credential,
        ip=ip,
        metadata={"provider": provider, "base_url": base_url, "validated": validate},
    )
    invalidate_workspace_on_commit(workspace.pk)
    return credential


@transaction.atomic
def provider_credential_rotate(
    *,
    credential: ProviderCredential,
    secret: str,
    acting_user: User,
    validate: bool = True,
    ip: str | None = None,
) -> ProviderCredential:
    """Replace the stored secret (e.g. after the provider key was rolled)."""
    workspace = credential.workspace
    require_permission(workspace=workspace, user=acting_user, perm=Perm.CREDENTIALS_MANAGE)
    if credential.removed_at is not None:
        raise ApplicationError("This credential has been removed.")
    secret = _clean_secret(secret)
    if validate:
        _check_live(provider=credential.provider, base_url=credential.base_url, secret=secret)
    old_last4 = credential.secret_last4
    credential.secret_ciphertext = crypto.encrypt_secret(
        dek=_workspace_dek(workspace), secret=secret, credential_public_id=str(credential.public_id)
    )
    credential.secret_last4 = secret[-4:]
    credential.updated_at = timezone.now()
    if validate:
        credential.last_validated_at = credential.updated_at
    credential.save()
    audit(
        workspace=workspace,
        actor=acting_user,
        action="credential.rotated",
        target=credential,
        ip=ip,
        metadata={"from_last4": old_last4, "to_last4": credential.secret_last4},
    )
    invalidate_workspace_on_commit(workspace.pk)
    return credential


@transaction.atomic
def provider_credential_update(
    *,
    credential: ProviderCredential,
    label: str,
    base_url: str,
    acting_user: User,
    operator: bool = False,
    ip: str | None = None,
) -> ProviderCredential:
    """Change a credential's label or base URL. The base URL passes the same SSRF check as when the
    credential was added; the slug (how clients address its models) never changes."""
    extra = authorize(
        workspace=credential.workspace, acting_user=acting_user, perm=Perm.CREDENTIALS_MANAGE, operator=operator
    )
    row = ProviderCredential.objects.select_for_update().get(pk=credential.pk)
    if row.removed_at is not None:
        raise ApplicationError("This credential has been removed.")
    label = (label or "").strip() or get_spec(row.provider).label
    if len(label) > 100:
        raise ApplicationError("A label can be at most 100 characters.", extra={"field": "label"})
    after = {"label": label, "base_url": _clean_base_url(provider=row.provider, base_url=base_url)}
    changes = audit_changes({"label": row.label, "base_url": row.base_url}, after)
    if not changes:
        return row
    row.label, row.base_url = after["label"], after["base_url"]
    row.updated_at = timezone.now()
    row.save(update_fields=["label", "base_url", "updated_at"])
    audit(
        workspace=row.workspace,
        actor=acting_user,
        action="credential.updated",
        target=row,
        ip=ip,
        metadata={"changes": changes, **extra},
    )
    invalidate_workspace_on_commit(row.workspace_id)
    return row


@transaction.atomic
def provider_credential_remove(
    *, credential: ProviderCredential, acting_user: User, operator: bool = False, ip: str | None = None
) -> None:
    """Remove a credential: the ciphertext is wiped, the row stays so history (usage events) can name it."""
    extra = authorize(
        workspace=credential.workspace, acting_user=acting_user, perm=Perm.CREDENTIALS_MANAGE, operator=operator
    )
    if credential.removed_at is not None:
        return
    credential.removed_at = timezone.now()
    credential.secret_ciphertext = b""
    credential.save(update_fields=["removed_at", "secret_ciphertext"])
    audit(
        workspace=credential.workspace,
        actor=acting_user,
        action="credential.removed",
        target=credential,
        ip=ip,
        metadata=extra,
    )
    invalidate_workspace_on_commit(credential.workspace_id)


def provider_credential_secret(*, credential: ProviderCredential) -> str:
    """Decrypt a credential's secret. For the proxy's credential cache only; never render it."""
    if credential.removed_at is not None:
        raise ApplicationError("This credential has been removed.")
    return crypto.decrypt_secret(
        dek=_workspace_dek(credential.workspace),
        ciphertext=bytes(credential.secret_ciphertext),
        credential_public_id=str(credential.public_id),
    )
