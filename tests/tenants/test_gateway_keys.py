"""Gateway keys: shown once, stored only as a hash, revocable, expiring."""

from __future__ import annotations

import base64
import hashlib
from datetime import timedelta

import pytest
from django.utils import timezone

from config.errors import ApplicationError
from tenants.models import AuditLog, GatewayKey
from tenants.selectors import gateway_keys_list
from tenants.services import gateway_key_create, gateway_key_revoke

PREFIX = "tpk_live_"


def field_values(row) -> list[str]:
    return [str(getattr(row, field.attname)) for field in row._meta.concrete_fields]


def test_new_key_is_long_random_and_recognisable(workspace, owner):
    key, plaintext = gateway_key_create(workspace=workspace, name="prod", acting_user=owner)

    assert plaintext.startswith(PREFIX)
    random_part = plaintext[len(PREFIX) :]
    # token_urlsafe(32): 32 random bytes, 43 url-safe characters
    assert len(random_part) >= 43
    assert len(base64.urlsafe_b64decode(random_part + "=" * (-len(random_part) % 4))) >= 32
    assert plaintext.isascii() and not any(ch.isspace() for ch in plaintext)
    # The prefix shown in lists identifies the key without revealing it.
    assert plaintext.startswith(key.prefix)
    assert len(key.prefix) <= len(PREFIX) + 8
    assert key.name == "prod" and key.workspace == workspace and key.created_by == owner


def test_only_the_sha256_of_the_key_is_stored(workspace, owner):
    key, plaintext = gateway_key_create(workspace=workspace, name="prod", acting_user=owner)
    row = GatewayKey.objects.get(pk=key.pk)

    assert row.key_hash == hashlib.sha256(plaintext.encode()).hexdigest()
    secret_part = plaintext[len(row.prefix) :]
    for value in field_values(row):
        assert plaintext not in value
        assert secret_part not in value
    # Nor in the audit trail.
    for entry in AuditLog.objects.filter(workspace=workspace):
        assert secret_part not in str(field_values(entry)) + str(entry.metadata)


def test_two_keys_never_collide(workspace, owner):
    first, first_plain = gateway_key_create(workspace=workspace, name="a", acting_user=owner)
    second, second_plain = gateway_key_create(workspace=workspace, name="a", acting_user=owner)
    assert first_plain != second_plain
    assert first.key_hash != second.key_hash
    assert first.public_id != second.public_id


def test_revoking_deactivates_the_key_once(workspace, owner, add_member):
    key, _ = gateway_key_create(workspace=workspace, name="ci", acting_user=owner)
    assert key.is_active
    developer = add_member(workspace, "developer").user

    gateway_key_revoke(key=key, acting_user=developer)

    row = GatewayKey.objects.get(pk=key.pk)
    assert row.revoked_at is not None and row.revoked_by == developer
    assert not row.is_active
    revoked_at = row.revoked_at
    # Revoking again changes nothing and is not audited twice.
    gateway_key_revoke(key=row, acting_user=owner)
    row.refresh_from_db()
    assert row.revoked_at == revoked_at and row.revoked_by == developer
    assert AuditLog.objects.filter(action="key.revoked", target_id=str(key.public_id)).count() == 1
    # Lists still show it (history), but the active-only list does not.
    assert key in gateway_keys_list(workspace=workspace)
    assert key not in gateway_keys_list(workspace=workspace, include_revoked=False)


def test_key_with_future_expiry_is_active_until_it_expires(workspace, owner):
    key, _ = gateway_key_create(
        workspace=workspace, name="temp", acting_user=owner, expires_at=timezone.now() + timedelta(hours=1)
    )
    assert GatewayKey.objects.get(pk=key.pk).is_active

    GatewayKey.objects.filter(pk=key.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert not GatewayKey.objects.get(pk=key.pk).is_active


@pytest.mark.parametrize("delta", [timedelta(0), timedelta(seconds=-1), timedelta(days=-30)])
def test_expiry_in_the_past_is_refused(workspace, owner, delta):
    with pytest.raises(ApplicationError, match="future"):
        gateway_key_create(workspace=workspace, name="late", acting_user=owner, expires_at=timezone.now() + delta)
    assert not GatewayKey.objects.filter(workspace=workspace).exists()
    assert not AuditLog.objects.filter(workspace=workspace, action="key.created").exists()


@pytest.mark.parametrize("name", ["", "   ", "x" * 101])
def test_key_needs_a_sensible_name(workspace, owner, name):
    with pytest.raises(ApplicationError, match="name"):
        gateway_key_create(workspace=workspace, name=name, acting_user=owner)
    assert not GatewayKey.objects.exists()


def test_allowed_models_are_cleaned_and_audited(workspace, owner):
    key, _ = gateway_key_create(
        workspace=workspace,
        name="scoped",
        allowed_models=[" openai/* ", "", "anthropic/claude-*", "openai/*"],
        acting_user=owner,
    )
    assert key.allowed_models == ["openai/*", "anthropic/claude-*"]
    assert AuditLog.objects.get(action="key.created", target_id=str(key.public_id)).metadata["allowed_models"] == [
        "openai/*",
        "anthropic/claude-*",
    ]


@pytest.mark.parametrize("bad", ["openai/gpt 4o", "x" * 201, "<script>"])
def test_bad_model_patterns_are_refused_with_nothing_created(workspace, owner, bad):
    with pytest.raises(ApplicationError) as caught:
        gateway_key_create(workspace=workspace, name="scoped", allowed_models=[bad], acting_user=owner)
    assert caught.value.extra["field"] == "allowed_models"
    assert not GatewayKey.objects.filter(name="scoped").exists()
