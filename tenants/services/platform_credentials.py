"""Platform-managed credentials (operators, through Django admin): one active credential per provider,
its secret encrypted under its own data key, audited platform-wide (no workspace)."""

from __future__ import annotations

from django.db import transaction
from django.utils import timezone

from config.errors import ApplicationError
from contracts import crypto
from contracts.providers import get_spec
from tenants.cache import invalidate_all_workspaces_on_commit
from tenants.keyring import keyring
from tenants.models import PlatformCredential, ProviderType, User
from tenants.services.common import audit, audit_changes, operator_metadata
from tenants.services.credentials import _check_live, _clean_base_url, _clean_secret
from tenants.services.datakeys import platform_key_aad

_PLATFORM_AUDITED = ("provider", "label", "base_url", "is_active", "secret_last4")


@transaction.atomic
def platform_credential_save(
    *,
    credential: PlatformCredential,
    secret: str = "",
    validate: bool = True,
    acting_user: User | None = None,
    ip: str | None = None,
) -> PlatformCredential:
    """Create or update a managed credential (the instance carries the new provider, label, base URL
    and is_active). A new secret (required on creation) is checked live against the provider, then
    encrypted under the credential's own data key. Audited platform-wide (no workspace) as the
    operator, or as the system when `acting_user` is None (management commands, fixtures). Every
    proxy worker drops its cached workspaces, so the change applies within a second."""
    extra = operator_metadata(acting_user) if acting_user is not None else {"system": True}
    before = (
        PlatformCredential.objects.select_for_update().filter(pk=credential.pk).values(*_PLATFORM_AUDITED).first()
        if credential.pk is not None
        else None
    )
    if credential.provider not in ProviderType.values:
        raise ApplicationError(f"Unknown provider type {credential.provider!r}.", extra={"field": "provider"})
    credential.label = (credential.label or "").strip() or get_spec(credential.provider).label
    credential.base_url = _clean_base_url(provider=credential.provider, base_url=credential.base_url or "")
    if credential.pk is None and not secret:
        raise ApplicationError("A managed credential needs its API key.", extra={"field": "secret"})
    if secret:
        secret = _clean_secret(secret)
        if validate:
            _check_live(provider=credential.provider, base_url=credential.base_url, secret=secret)
        dek = crypto.new_data_key()
        aad = platform_key_aad(credential)
        credential.master_key_id, credential.wrapped_key = crypto.wrap_data_key(
            dek=dek, workspace_public_id=aad, ring=keyring()
        )
        credential.secret_ciphertext = crypto.encrypt_secret(
            dek=dek, secret=secret, credential_public_id=str(credential.public_id)
        )
        credential.secret_last4 = secret[-4:]
    if credential.is_active:
        clash = PlatformCredential.objects.filter(provider=credential.provider, is_active=True)
        if clash.exclude(pk=credential.pk).exists():
            raise ApplicationError(
                "Another active managed credential serves this provider; deactivate it first.",
                extra={"field": "is_active"},
            )
    credential.updated_at = timezone.now()
    credential.save()
    after = {name: getattr(credential, name) for name in _PLATFORM_AUDITED}
    changes = audit_changes(before or dict.fromkeys(_PLATFORM_AUDITED), after)
    audit(
        workspace=None,
        actor=acting_user,
        action="platform_credential.updated" if before is not None else "platform_credential.created",
        target=credential,
        ip=ip,
        metadata={"changes": changes, **extra},  # secret_last4 only: the key itself is never recorded
    )
    invalidate_all_workspaces_on_commit()
    return credential


def platform_credential_secret(*, credential: PlatformCredential) -> str:
    dek = crypto.unwrap_data_key(
        master_key_id=credential.master_key_id,
        wrapped=bytes(credential.wrapped_key),
        workspace_public_id=platform_key_aad(credential),
        ring=keyring(),
    )
    return crypto.decrypt_secret(
        dek=dek, ciphertext=bytes(credential.secret_ciphertext), credential_public_id=str(credential.public_id)
    )
