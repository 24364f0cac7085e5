"""Provider credentials are checked live against the provider (here: the bundled fake provider over a real
socket) before they are stored; base URLs are validated; rotation and removal behave."""

from __future__ import annotations

import httpx
import pytest

from config.errors import ApplicationError
from tenants.models import AuditLog, ProviderCredential
from tenants.selectors import provider_credential_get, provider_credentials_list
from tenants.services import (
    provider_credential_create,
    provider_credential_remove,
    provider_credential_rotate,
    provider_credential_secret,
)
from tests.servers import free_port

GOOD_KEY = "fake-good-key-0000-A1b2"
NEXT_KEY = "fake-next-key-1111-Z9y8"
BAD_KEY = "sk-not-accepted-by-fake-3c4D"


def create(workspace, owner, *, secret=GOOD_KEY, provider="openai_compatible", base_url="", label="Local", **kw):
    return provider_credential_create(
        workspace=workspace,
        provider=provider,
        label=label,
        secret=secret,
        base_url=base_url,
        acting_user=owner,
        **kw,
    )


@pytest.fixture
def base_url(fake_provider_url):
    return f"{fake_provider_url}/v1"


def provider_error_message(base_url: str, secret: str) -> str:
    """What the provider itself says about a key, asked directly."""
    response = httpx.get(f"{base_url}/models", headers={"Authorization": f"Bearer {secret}"}, timeout=10)
    assert response.status_code == 401
    return response.json()["error"]["message"]


# --- create ------------------------------------------------------------------------------------------------------


def test_valid_key_is_checked_and_stored(workspace, owner, base_url):
    credential = create(workspace, owner, base_url=base_url)

    stored = ProviderCredential.objects.get(pk=credential.pk)
    assert stored.secret_last4 == GOOD_KEY[-4:] == "A1b2"
    assert stored.last_validated_at is not None
    assert stored.base_url.rstrip("/") == base_url.rstrip("/")
    assert stored.provider == "openai_compatible" and stored.label == "Local" and stored.slug == "local"
    assert provider_credential_secret(credential=stored) == GOOD_KEY
    assert list(provider_credentials_list(workspace=workspace)) == [stored]
    assert provider_credential_get(workspace=workspace, public_id=str(stored.public_id)) == stored


def test_openai_type_accepts_a_base_url_override(workspace, owner, base_url):
    credential = create(workspace, owner, provider="openai", label="", base_url=base_url)
    assert credential.label == "OpenAI"  # defaults to the provider's name
    assert credential.secret_last4 == GOOD_KEY[-4:]


def test_rejected_key_is_not_stored_and_the_providers_message_is_shown(workspace, owner, base_url):
    said = provider_error_message(base_url, BAD_KEY)

    with pytest.raises(ApplicationError) as excinfo:
        create(workspace, owner, secret=BAD_KEY, base_url=base_url)

    assert said and said in excinfo.value.message
    assert excinfo.value.extra.get("field") == "secret"
    assert BAD_KEY not in excinfo.value.message and BAD_KEY[:-4] not in excinfo.value.message
    assert not ProviderCredential.objects.exists()
    assert not AuditLog.objects.filter(action__startswith="credential.").exists()


def test_unreachable_provider_gives_a_clear_error(workspace, owner):
    port = free_port()
    with pytest.raises(ApplicationError) as excinfo:
        create(workspace, owner, base_url=f"http://127.0.0.1:{port}/v1")
    message = excinfo.value.message
    assert message and GOOD_KEY not in message
    assert any(word in message.lower() for word in ("connect", "reach", "unreachable", "refused")), message
    assert not ProviderCredential.objects.exists()


def test_the_same_label_twice_gets_distinct_slugs(workspace, owner, base_url):
    first = create(workspace, owner, base_url=base_url)
    second = create(workspace, owner, base_url=base_url, secret=NEXT_KEY)
    assert first.slug == "local" and second.slug == "local-2"


@pytest.mark.parametrize("provider", ["azure_openai", "openai_compatible"])
def test_providers_without_a_default_endpoint_need_a_base_url(workspace, owner, provider):
    with pytest.raises(ApplicationError, match="base URL") as excinfo:
        create(workspace, owner, provider=provider, base_url="   ")
    assert excinfo.value.extra.get("field") == "base_url"
    assert not ProviderCredential.objects.exists()


def test_unknown_provider_type_is_refused(workspace, owner):
    with pytest.raises(ApplicationError, match="Unknown provider"):
        create(workspace, owner, provider="acme-llm", base_url="https://llm.example.com/v1", validate=False)


@pytest.mark.parametrize("secret", ["", "short", "has a space in it", "x" * 5000])
def test_implausible_secrets_are_refused_before_any_call(workspace, owner, secret):
    with pytest.raises(ApplicationError) as excinfo:
        create(workspace, owner, secret=secret, base_url="http://127.0.0.1:9/v1")
    assert excinfo.value.extra.get("field") == "secret"
    assert not ProviderCredential.objects.exists()


# --- base URL policy -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8090/v1",
        "http://localhost:8090/v1",
        "http://10.1.2.3/v1",
        "http://192.168.0.10/v1",
        "http://169.254.169.254/latest/meta-data",  # cloud metadata endpoint
        "http://[::1]:8090/v1",
    ],
)
def test_private_addresses_are_refused_unless_allowed(workspace, owner, settings, url):
    settings.TURNPIKE_ALLOW_PRIVATE_PROVIDER_URLS = False
    settings.TURNPIKE_REQUIRE_HTTPS_PROVIDER_URLS = False
    with pytest.raises(ApplicationError) as excinfo:
        create(workspace, owner, base_url=url, validate=False)
    assert excinfo.value.extra.get("field") == "base_url"
    assert not ProviderCredential.objects.exists()


def test_private_address_is_accepted_when_allowed(workspace, owner, settings, base_url):
    settings.TURNPIKE_ALLOW_PRIVATE_PROVIDER_URLS = True
    settings.TURNPIKE_REQUIRE_HTTPS_PROVIDER_URLS = False
    assert create(workspace, owner, base_url=base_url).pk


def test_plain_http_is_refused_when_https_is_required(workspace, owner, settings):
    settings.TURNPIKE_ALLOW_PRIVATE_PROVIDER_URLS = True
    settings.TURNPIKE_REQUIRE_HTTPS_PROVIDER_URLS = True
    with pytest.raises(ApplicationError, match=r"(?i)https") as excinfo:
        create(workspace, owner, base_url="http://llm.example.com/v1", validate=False)
    assert excinfo.value.extra.get("field") == "base_url"
    assert not ProviderCredential.objects.exists()


@pytest.mark.parametrize("url", ["not a url", "ftp://llm.example.com/v1", "javascript:alert(1)", "http://"])
def test_nonsense_base_urls_are_refused(workspace, owner, url):
    with pytest.raises(ApplicationError) as excinfo:
        create(workspace, owner, base_url=url, validate=False)
    assert excinfo.value.extra.get("field") == "base_url"


# --- rotate and remove -----------------------------------------------------------------------------------------------


def test_rotate_replaces_the_secret_after_checking_it(workspace, owner, base_url):
    credential = create(workspace, owner, base_url=base_url)
    ciphertext = bytes(ProviderCredential.objects.get(pk=credential.pk).secret_ciphertext)

    provider_credential_rotate(credential=credential, secret=NEXT_KEY, acting_user=owner)

    stored = ProviderCredential.objects.get(pk=credential.pk)
    assert stored.secret_last4 == "Z9y8"
    assert bytes(stored.secret_ciphertext) != ciphertext
    assert provider_credential_secret(credential=stored) == NEXT_KEY
    assert stored.slug == credential.slug and stored.public_id == credential.public_id


def test_rotating_to_a_rejected_key_keeps_the_old_one(workspace, owner, base_url):
    credential = create(workspace, owner, base_url=base_url)
    with pytest.raises(ApplicationError):
        provider_credential_rotate(credential=credential, secret=BAD_KEY, acting_user=owner)
    stored = ProviderCredential.objects.get(pk=credential.pk)
    assert stored.secret_last4 == GOOD_KEY[-4:]
    assert provider_credential_secret(credential=stored) == GOOD_KEY


def test_remove_wipes_the_secret_and_hides_the_credential(workspace, owner, base_url):
    credential = create(workspace, owner, base_url=base_url)

    provider_credential_remove(credential=credential, acting_user=owner)

    stored = ProviderCredential.objects.get(pk=credential.pk)
    assert stored.removed_at is not None
    assert bytes(stored.secret_ciphertext) == b""
    assert stored not in provider_credentials_list(workspace=workspace)
    with pytest.raises(ApplicationError, match="removed"):
        provider_credential_secret(credential=stored)
    with pytest.raises(ApplicationError, match="removed"):
        provider_credential_rotate(credential=stored, secret=NEXT_KEY, acting_user=owner)
    # The slug is free again for a new credential.
    assert create(workspace, owner, base_url=base_url, secret=NEXT_KEY).slug == credential.slug
