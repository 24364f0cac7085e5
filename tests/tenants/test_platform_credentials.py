"""Managed (platform) credentials as operators handle them: added in Django admin with a live check,
encrypted under their own data key, re-wrapped by master key rotation, never shown again."""

from __future__ import annotations

import io

import pytest
from django.core.management import call_command

from contracts import crypto
from tenants.models import PlatformCredential, User
from tenants.services import platform_credential_save, platform_credential_secret

SECRET = "fake-managed-secret-key-9876"


@pytest.fixture
def operator(db) -> User:
    return User.objects.create_superuser(email="ops@turnpike.test", password="operator-password-1")


def test_admin_adds_a_managed_credential_after_a_live_check(client, operator, fake_provider_url):
    client.force_login(operator)
    url = "/admin/tenants/platformcredential/add/"
    form = {"provider": "openai", "label": "Platform OpenAI", "base_url": f"{fake_provider_url}/v1", "is_active": "on"}

    rejected = client.post(url, {**form, "secret": "sk-not-accepted"})
    assert rejected.status_code == 200
    errors = rejected.context["adminform"].form.errors
    assert "secret" in errors  # the provider's refusal, shown on the key field
    assert not PlatformCredential.objects.exists()

    accepted = client.post(url, {**form, "secret": SECRET})
    assert accepted.status_code == 302
    credential = PlatformCredential.objects.get()
    assert credential.secret_last4 == SECRET[-4:]
    assert SECRET.encode() not in bytes(credential.secret_ciphertext)
    assert platform_credential_secret(credential=credential) == SECRET

    page = client.get(f"/admin/tenants/platformcredential/{credential.pk}/change/").content.decode()
    assert SECRET not in page


def test_one_active_managed_credential_per_provider(db, fake_provider_url):
    platform_credential_save(
        credential=PlatformCredential(provider="openai", base_url=f"{fake_provider_url}/v1"), secret=SECRET
    )
    from config.errors import ApplicationError

    with pytest.raises(ApplicationError):
        platform_credential_save(
            credential=PlatformCredential(provider="openai", base_url=f"{fake_provider_url}/v1"), secret=SECRET
        )


def test_master_key_rotation_rewraps_managed_credentials(db, fake_provider_url, settings):
    credential = platform_credential_save(
        credential=PlatformCredential(provider="openai", base_url=f"{fake_provider_url}/v1"), secret=SECRET
    )
    old = settings.TURNPIKE_MASTER_KEY
    settings.TURNPIKE_MASTER_KEY = crypto.generate_master_key("k2")
    settings.TURNPIKE_MASTER_KEYS_RETIRED = [old]
    call_command("rotate_master_key", stdout=io.StringIO())
    credential.refresh_from_db()
    assert credential.master_key_id == "k2"

    settings.TURNPIKE_MASTER_KEYS_RETIRED = []  # the old key is gone for good
    assert platform_credential_secret(credential=credential) == SECRET
