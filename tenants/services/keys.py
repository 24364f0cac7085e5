"""Gateway keys: create (the plaintext is returned once; only its hash is stored), rename / change
expiry / allowed models, revoke; each change drops the proxy's cached answer for that key's hash."""

from __future__ import annotations

import re
import secrets
from datetime import datetime

from django.db import transaction
from django.utils import timezone

from config.errors import ApplicationError
from contracts.cachekeys import GATEWAY_KEY_PREFIX, GATEWAY_KEY_RANDOM_BYTES, hash_token
from tenants.cache import invalidate_key_on_commit
from tenants.models import GatewayKey, User, Workspace
from tenants.roles import Perm
from tenants.services.common import audit, audit_changes, authorize, require_permission

GATEWAY_KEY_DISPLAY_CHARS = 8  # random characters kept after the prefix for recognition


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
