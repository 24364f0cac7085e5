"""Writes for tenants. Every function is keyword-only, checks what it must, writes an audit row in the
same transaction as the change, and leaves side effects (emails, cache invalidation) to on_commit.

Authorisation (may this member do this?) is checked here, not only in views, so the API, the
dashboard, Django admin and management commands share one rule set.

Operators (platform staff in Django admin) are not members of the workspaces they fix. Services they
use take `operator=True`: the role check is replaced by "the acting user is active staff", and the
audit row, still written in the workspace's log under the operator's email, carries
`{"operator": true}`. Platform-wide changes (managed credentials here, plans in billing.services)
are audited with no workspace.
"""

from __future__ import annotations

import re
import secrets
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.core.mail import send_mail
from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.text import slugify

from config.errors import ApplicationError, PermissionDenied
from contracts import crypto
from contracts.cachekeys import GATEWAY_KEY_PREFIX, GATEWAY_KEY_RANDOM_BYTES, hash_token
from contracts.netguard import validate_base_url
from contracts.providers import get_spec
from tenants.cache import (
    invalidate_all_workspaces_on_commit,
    invalidate_key_on_commit,
    invalidate_workspace_on_commit,
)
from tenants.credential_check import check_credential
from tenants.keyring import keyring
from tenants.models import (
    AuditLog,
    GatewayKey,
    Invitation,
    Membership,
    PlatformCredential,
    ProviderCredential,
    ProviderType,
    User,
    Workspace,
    WorkspaceDataKey,
)
from tenants.roles import Perm, Role, role_allows

GATEWAY_KEY_DISPLAY_CHARS = 8  # random characters kept after the prefix for recognition


# --- helpers -----------------------------------------------------------------------------------------


def audit(
    *,
    workspace: Workspace | None,
    actor: User | None,
    action: str,
    target: Any = None,
    ip: str | None = None,
    metadata: dict[str, Any] | None = None,
) -> AuditLog:
    """Record a sensitive mutation. Call inside the transaction that makes the change. `workspace` is
    None only for platform-wide changes (plans, managed credentials)."""
    return AuditLog.objects.create(
        workspace=workspace,
        actor=actor,
        actor_email=getattr(actor, "email", "") or "",
        action=action,
        target_type=type(target).__name__ if target is not None else "",
        target_id=str(getattr(target, "public_id", getattr(target, "pk", ""))) if target is not None else "",
        target_repr=str(target)[:200] if target is not None else "",
        ip_address=ip or None,
        metadata=metadata or {},
    )


def require_permission(*, workspace: Workspace, user: User, perm: str) -> Membership:
    """The acting user's membership, if their role allows `perm` in this workspace."""
    membership = Membership.objects.filter(workspace=workspace, user=user).first()
    if membership is None or not role_allows(membership.role, perm):
        raise PermissionDenied("You do not have permission to do that in this workspace.")
    return membership


def operator_metadata(acting_user: User) -> dict[str, Any]:
    """The operator path: only active platform staff may take it; returns what the audit row adds."""
    if not (acting_user.is_active and acting_user.is_staff):
        raise PermissionDenied("Only platform operators can do that.")
    return {"operator": True}


def authorize(*, workspace: Workspace, acting_user: User, perm: str, operator: bool = False) -> dict[str, Any]:
    """A member whose role allows `perm`, or (operator=True) platform staff. Returns audit metadata."""
    if operator:
        return operator_metadata(acting_user)
    require_permission(workspace=workspace, user=acting_user, perm=perm)
    return {}


def audit_changes(before: dict[str, Any], after: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """{field: {"from": old, "to": new}} for the fields whose value differs (values as JSON-safe text)."""

    def shown(value: Any) -> Any:
        if isinstance(value, datetime):
            return value.isoformat()
        return value if value is None or isinstance(value, bool | int | str | list) else str(value)

    return {
        name: {"from": shown(before[name]), "to": shown(after[name])} for name in after if before[name] != after[name]
    }


def _unique_slug(base: str, taken: Any, *, max_length: int = 50) -> str:
    root = (slugify(base) or "workspace")[:max_length]
    candidate, n = root, 1
    while taken(candidate):
        n += 1
        candidate = f"{root[: max_length - len(str(n)) - 1]}-{n}"
    return candidate


# --- workspaces ----------------------------------------------------------------------------------------


@transaction.atomic
def workspace_create(*, name: str, acting_user: User, ip: str | None = None) -> Workspace:
    name = name.strip()
    if not name:
        raise ApplicationError("A workspace needs a name.")
    if len(name) > 100:
        raise ApplicationError("A workspace name can be at most 100 characters.")
    slug = _unique_slug(name, lambda s: Workspace.objects.filter(slug=s).exists())
    workspace = Workspace.objects.create(name=name, slug=slug, created_by=acting_user)
    Membership.objects.create(workspace=workspace, user=acting_user, role=Role.OWNER)
    key_id, wrapped = crypto.wrap_data_key(
        dek=crypto.new_data_key(), workspace_public_id=str(workspace.public_id), ring=keyring()
    )
    WorkspaceDataKey.objects.create(workspace=workspace, master_key_id=key_id, wrapped_key=wrapped)
    audit(workspace=workspace, actor=acting_user, action="workspace.created", target=workspace, ip=ip)
    return workspace


@transaction.atomic
def workspace_update(
    *, workspace: Workspace, name: str, acting_user: User, operator: bool = False, ip: str | None = None
) -> Workspace:
    extra = authorize(workspace=workspace, acting_user=acting_user, perm=Perm.WORKSPACE_MANAGE, operator=operator)
    name = name.strip()
    if not name or len(name) > 100:
        raise ApplicationError("A workspace name must be 1 to 100 characters.")
    old = workspace.name
    workspace.name = name
    workspace.save(update_fields=["name"])
    audit(
        workspace=workspace,
        actor=acting_user,
        action="workspace.updated",
        target=workspace,
        ip=ip,
        metadata={"name": {"from": old, "to": name}, **extra},
    )
    return workspace


def _workspace_dek(workspace: Workspace) -> bytes:
    data_key = WorkspaceDataKey.objects.get(workspace=workspace)
    return crypto.unwrap_data_key(
        master_key_id=data_key.master_key_id,
        wrapped=bytes(data_key.wrapped_key),
        workspace_public_id=str(workspace.public_id),
        ring=keyring(),
    )


def master_key_rotate(*, batch_size: int = 500) -> int:
    """Re-wrap every data key (workspaces' and platform credentials') not wrapped by the active master
    key. Idempotent and resumable: each row is re-wrapped in its own short transaction under a row lock."""
    active, _ = keyring()
    rewrapped = 0
    for pk in PlatformCredential.objects.exclude(master_key_id=active.key_id).values_list("pk", flat=True):
        with transaction.atomic():
            platform = PlatformCredential.objects.select_for_update().get(pk=pk)
            if platform.master_key_id == active.key_id:
                continue
            aad = platform_key_aad(platform)
            dek = crypto.unwrap_data_key(
                master_key_id=platform.master_key_id,
                wrapped=bytes(platform.wrapped_key),
                workspace_public_id=aad,
                ring=keyring(),
            )
            platform.master_key_id, platform.wrapped_key = crypto.wrap_data_key(
                dek=dek, workspace_public_id=aad, ring=keyring()
            )
            platform.save(update_fields=["master_key_id", "wrapped_key"])
            rewrapped += 1
    while True:
        ids = list(
            WorkspaceDataKey.objects.exclude(master_key_id=active.key_id).values_list("pk", flat=True)[:batch_size]
        )
        if not ids:
            return rewrapped
        for pk in ids:
            with transaction.atomic():
                row = WorkspaceDataKey.objects.select_for_update().select_related("workspace").get(pk=pk)
                if row.master_key_id == active.key_id:
                    continue
                public_id = str(row.workspace.public_id)
                dek = crypto.unwrap_data_key(
                    master_key_id=row.master_key_id,
                    wrapped=bytes(row.wrapped_key),
                    workspace_public_id=public_id,
                    ring=keyring(),
                )
                row.master_key_id, row.wrapped_key = crypto.wrap_data_key(
                    dek=dek, workspace_public_id=public_id, ring=keyring()
                )
                row.rotated_at = timezone.now()
                row.save(update_fields=["master_key_id", "wrapped_key", "rotated_at"])
                rewrapped += 1


# --- provider credentials --------------------------------------------------------------------------------


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


# --- platform-managed credentials (operators, through Django admin) -----------------------------------------


def platform_key_aad(credential: PlatformCredential) -> str:
    """What a platform credential's data key is bound to (never the same as any workspace's)."""
    return f"platform:{credential.public_id}"


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


_BILLING_FIELDS = ("plan", "managed_access")


@transaction.atomic
def workspace_billing_update(
    *,
    workspace: Workspace,
    fields: list[str],
    acting_user: User | None = None,
    ip: str | None = None,
) -> Workspace:
    """Save an operator's change to a workspace's plan or managed access (set on the instance, named in
    `fields`), audit it (as the system when `acting_user` is None: management commands), and re-read
    it in the proxy."""
    unknown = set(fields) - set(_BILLING_FIELDS)
    if unknown or not fields:
        raise ApplicationError(f"Only {', '.join(_BILLING_FIELDS)} are billing settings, not {sorted(unknown)}.")
    extra = operator_metadata(acting_user) if acting_user is not None else {"system": True}
    row = Workspace.objects.select_for_update().get(pk=workspace.pk)

    def shown(ws: Workspace) -> dict[str, Any]:
        return {"plan": ws.plan.code if ws.plan else None, "managed_access": ws.managed_access}

    changes = audit_changes(shown(row), shown(workspace))
    workspace.save(update_fields=fields)
    if changes:
        audit(
            workspace=workspace,
            actor=acting_user,
            action="workspace.billing_updated",
            target=workspace,
            ip=ip,
            metadata={"changes": changes, **extra},
        )
    invalidate_workspace_on_commit(workspace.pk)
    return workspace


def plans_changed() -> None:
    """A plan's rates changed (operators): every workspace's cached charge rates are stale."""
    invalidate_all_workspaces_on_commit()


# --- gateway keys -------------------------------------------------------------------------------------------


MAX_MODEL_PATTERNS = 100
_MODEL_PATTERN = re.compile(r"^[A-Za-z0-9*?._:@/-]{1,200}$")


def clean_model_patterns(patterns: list[str]) -> list[str]:
    """Model ids or glob patterns, deduplicated in order; a clear error names the first bad one."""
    cleaned: list[str] = []
    for raw in patterns:
        pattern = str(raw).strip()
        if not pattern:
            continue
        if not _MODEL_PATTERN.match(pattern):
            raise ApplicationError(
                f"{pattern[:60]!r} is not a model id or pattern (letters, digits, . _ - : @ / and the wildcards * ?).",
                extra={"field": "allowed_models"},
            )
        if pattern not in cleaned:
            cleaned.append(pattern)
    if len(cleaned) > MAX_MODEL_PATTERNS:
        raise ApplicationError(
            f"A key can list at most {MAX_MODEL_PATTERNS} models or patterns.", extra={"field": "allowed_models"}
        )
    return cleaned


@transaction.atomic
def gateway_key_create(
    *,
    workspace: Workspace,
    name: str,
    acting_user: User,
    expires_at: datetime | None = None,
    allowed_models: list[str] | None = None,
    ip: str | None = None,
) -> tuple[GatewayKey, str]:
    """Create a key; returns (row, plaintext). The plaintext is never stored and cannot be shown again.
    `allowed_models` restricts the key to these model ids / glob patterns (empty: any model)."""
    require_permission(workspace=workspace, user=acting_user, perm=Perm.KEYS_MANAGE)
    name = (name or "").strip()
    if not name or len(name) > 100:
        raise ApplicationError("A key name must be 1 to 100 characters.", extra={"field": "name"})
    patterns = clean_model_patterns(allowed_models or [])
    if expires_at is not None and expires_at <= timezone.now():
        raise ApplicationError("The expiry must be in the future.", extra={"field": "expires_at"})
    plaintext = GATEWAY_KEY_PREFIX + secrets.token_urlsafe(GATEWAY_KEY_RANDOM_BYTES)
    key = GatewayKey.objects.create(
        workspace=workspace,
        name=name,
        prefix=plaintext[: len(GATEWAY_KEY_PREFIX) + GATEWAY_KEY_DISPLAY_CHARS],
        key_hash=hash_token(plaintext),
        created_by=acting_user,
        expires_at=expires_at,
        allowed_models=patterns,
    )
    audit(
        workspace=workspace,
        actor=acting_user,
        action="key.created",
        target=key,
        ip=ip,
        metadata={"expires_at": expires_at.isoformat() if expires_at else None, "allowed_models": patterns},
    )
    invalidate_key_on_commit(key.key_hash)  # drops a cached "unknown key" answer for this hash
    return key, plaintext


@transaction.atomic
def gateway_key_update(
    *,
    key: GatewayKey,
    name: str,
    expires_at: datetime | None,
    allowed_models: list[str],
    acting_user: User,
    operator: bool = False,
    ip: str | None = None,
) -> GatewayKey:
    """Rename a key, change its expiry or its allowed models. A revoked key cannot be changed; a new
    expiry must be in the future (an unchanged past one is left alone)."""
    extra = authorize(workspace=key.workspace, acting_user=acting_user, perm=Perm.KEYS_MANAGE, operator=operator)
    row = GatewayKey.objects.select_for_update().get(pk=key.pk)
    if row.revoked_at is not None:
        raise ApplicationError("This key has been revoked; create a new one instead.")
    name = (name or "").strip()
    if not name or len(name) > 100:
        raise ApplicationError("A key name must be 1 to 100 characters.", extra={"field": "name"})
    if not isinstance(allowed_models, list):
        raise ApplicationError(
            "Allowed models must be a list of model ids or patterns.", extra={"field": "allowed_models"}
        )
    if expires_at is not None and expires_at != row.expires_at and expires_at <= timezone.now():
        raise ApplicationError("The expiry must be in the future.", extra={"field": "expires_at"})
    patterns = clean_model_patterns(allowed_models)
    changes = audit_changes(
        {"name": row.name, "expires_at": row.expires_at, "allowed_models": row.allowed_models},
        {"name": name, "expires_at": expires_at, "allowed_models": patterns},
    )
    if not changes:
        return row
    row.name, row.expires_at, row.allowed_models = name, expires_at, patterns
    row.save(update_fields=["name", "expires_at", "allowed_models"])
    audit(
        workspace=row.workspace,
        actor=acting_user,
        action="key.updated",
        target=row,
        ip=ip,
        metadata={"changes": changes, **extra},
    )
    invalidate_key_on_commit(row.key_hash)
    return row


@transaction.atomic
def gateway_key_revoke(
    *, key: GatewayKey, acting_user: User, operator: bool = False, ip: str | None = None
) -> GatewayKey:
    extra = authorize(workspace=key.workspace, acting_user=acting_user, perm=Perm.KEYS_MANAGE, operator=operator)
    if key.revoked_at is not None:
        return key
    key.revoked_at = timezone.now()
    key.revoked_by = acting_user
    key.save(update_fields=["revoked_at", "revoked_by"])
    audit(workspace=key.workspace, actor=acting_user, action="key.revoked", target=key, ip=ip, metadata=extra)
    invalidate_key_on_commit(key.key_hash)
    return key


# --- members and invitations ----------------------------------------------------------------------------------


def _guard_owner_rules(*, actor: Membership, target_role: str, new_role: str | None = None) -> None:
    """Only owners may grant, change or remove the owner role."""
    touches_owner = target_role == Role.OWNER or new_role == Role.OWNER
    if touches_owner and actor.role != Role.OWNER:
        raise PermissionDenied("Only an owner can change an owner or make someone an owner.")


def _ensure_another_owner(membership: Membership) -> None:
    if membership.role != Role.OWNER:
        return
    # Lock the owner rows (Django drops FOR UPDATE from .count(), so fetch them): two owners leaving or
    # demoting each other at once then serialise, and the second sees only one owner left.
    owners = list(
        Membership.objects.select_for_update()
        .filter(workspace_id=membership.workspace_id, role=Role.OWNER)
        .values_list("pk", flat=True)
    )
    if len(owners) <= 1:
        raise ApplicationError("A workspace must keep at least one owner.")


@transaction.atomic
def invitation_create(
    *, workspace: Workspace, email: str, role: str, acting_user: User, ip: str | None = None
) -> tuple[Invitation, str]:
    """Invite an email address; returns (invitation, token). The token goes out by email only."""
    actor = require_permission(workspace=workspace, user=acting_user, perm=Perm.MEMBERS_MANAGE)
    email = User.objects.normalize_email((email or "").strip()).lower()
    if "@" not in email or len(email) > 254:
        raise ApplicationError("Enter a valid email address.", extra={"field": "email"})
    if role not in Role.values:
        raise ApplicationError(f"Unknown role {role!r}.", extra={"field": "role"})
    _guard_owner_rules(actor=actor, target_role=role)
    if Membership.objects.filter(workspace=workspace, user__email__iexact=email).exists():
        raise ApplicationError(f"{email} is already a member of this workspace.", extra={"field": "email"})
    now = timezone.now()
    # A new invitation replaces any pending one for the same address.
    Invitation.objects.filter(
        workspace=workspace, email__iexact=email, accepted_at__isnull=True, revoked_at__isnull=True
    ).update(revoked_at=now)
    token = secrets.token_urlsafe(32)
    invitation = Invitation.objects.create(
        workspace=workspace,
        email=email,
        role=role,
        token_hash=hash_token(token),
        invited_by=acting_user,
        expires_at=now + timedelta(days=settings.TURNPIKE_INVITATION_TTL_DAYS),
    )
    audit(
        workspace=workspace,
        actor=acting_user,
        action="member.invited",
        target=invitation,
        ip=ip,
        metadata={"email": email, "role": role},
    )
    accept_url = f"{settings.TURNPIKE_DASHBOARD_URL.rstrip('/')}/invitations/{token}/"
    transaction.on_commit(
        lambda: send_mail(
            subject=f"[Turnpike] {acting_user.email} invited you to {workspace.name}",
            message=(
                f"{acting_user.email} invited you to join the workspace {workspace.name!r} on Turnpike "
                f"as {Role(role).label}.\n\nAccept the invitation: {accept_url}\n\n"
                f"The link expires on {invitation.expires_at:%Y-%m-%d %H:%M} UTC."
            ),
            from_email=None,
            recipient_list=[email],
        )
    )
    return invitation, token


def invitation_for_token(*, token: str) -> Invitation | None:
    return Invitation.objects.select_related("workspace").filter(token_hash=hash_token(token or "")).first()


@transaction.atomic
def invitation_accept(*, token: str, user: User, ip: str | None = None) -> Membership:
    invitation = (
        Invitation.objects.select_for_update().select_related("workspace").filter(token_hash=hash_token(token)).first()
    )
    if invitation is None or not invitation.is_pending:
        raise ApplicationError("This invitation is invalid, expired or already used.")
    if invitation.email.lower() != user.email.lower():
        raise PermissionDenied(f"This invitation was sent to {invitation.email}; log in with that address.")
    try:
        with transaction.atomic():
            membership = Membership.objects.create(workspace=invitation.workspace, user=user, role=invitation.role)
    except IntegrityError:
        membership = Membership.objects.get(workspace=invitation.workspace, user=user)
    invitation.accepted_at = timezone.now()
    invitation.accepted_by = user
    invitation.save(update_fields=["accepted_at", "accepted_by"])
    audit(
        workspace=invitation.workspace,
        actor=user,
        action="member.joined",
        target=membership,
        ip=ip,
        metadata={"role": membership.role},
    )
    return membership


@transaction.atomic
def invitation_revoke(*, invitation: Invitation, acting_user: User, ip: str | None = None) -> None:
    require_permission(workspace=invitation.workspace, user=acting_user, perm=Perm.MEMBERS_MANAGE)
    if invitation.accepted_at is not None or invitation.revoked_at is not None:
        return
    invitation.revoked_at = timezone.now()
    invitation.save(update_fields=["revoked_at"])
    audit(
        workspace=invitation.workspace,
        actor=acting_user,
        action="member.invitation_revoked",
        target=invitation,
        ip=ip,
        metadata={"email": invitation.email},
    )


@transaction.atomic
def membership_change_role(
    *, membership: Membership, role: str, acting_user: User, ip: str | None = None
) -> Membership:
    actor = require_permission(workspace=membership.workspace, user=acting_user, perm=Perm.MEMBERS_MANAGE)
    if role not in Role.values:
        raise ApplicationError(f"Unknown role {role!r}.", extra={"field": "role"})
    if membership.role == role:
        return membership
    _guard_owner_rules(actor=actor, target_role=membership.role, new_role=role)
    if membership.role == Role.OWNER:
        _ensure_another_owner(membership)
    old = membership.role
    membership.role = role
    membership.save(update_fields=["role"])
    audit(
        workspace=membership.workspace,
        actor=acting_user,
        action="member.role_changed",
        target=membership,
        ip=ip,
        metadata={"email": membership.user.email, "from": old, "to": role},
    )
    return membership


@transaction.atomic
def membership_remove(*, membership: Membership, acting_user: User, ip: str | None = None) -> None:
    """Remove a member. Anyone may leave a workspace themselves (unless they are its last owner)."""
    if membership.user_id != acting_user.pk:
        actor = require_permission(workspace=membership.workspace, user=acting_user, perm=Perm.MEMBERS_MANAGE)
        _guard_owner_rules(actor=actor, target_role=membership.role)
    _ensure_another_owner(membership)
    audit(
        workspace=membership.workspace,
        actor=acting_user,
        action="member.removed",
        target=membership,
        ip=ip,
        metadata={"email": membership.user.email, "role": membership.role},
    )
    membership.delete()
