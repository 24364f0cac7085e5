"""Provider secrets at rest: encrypted, bound to their row, tamper-evident, and the master key rotates
without losing a single secret."""

from __future__ import annotations

import base64
import io

import pytest
from django.core.management import CommandError, call_command

from contracts import crypto
from contracts.crypto import CryptoError
from tenants.keyring import keyring
from tenants.models import ProviderCredential, WorkspaceDataKey
from tenants.services import provider_credential_create, provider_credential_secret

SECRET = "sk-proj-Zq81hVx0sd9LmN2pQ7rT4uWy6Ab3Cd5Ef"
OTHER_SECRET = "sk-ant-api03-Yh7Gf6Ed5Cb4Ba3Zx2Wv1Ut0Sr"


def store(workspace, owner, secret=SECRET, label="OpenAI"):
    """A stored credential; the live check is skipped (these tests are about storage, not providers)."""
    return provider_credential_create(
        workspace=workspace, provider="openai", label=label, secret=secret, acting_user=owner, validate=False
    )


def reload(credential: ProviderCredential) -> ProviderCredential:
    return ProviderCredential.objects.select_related("workspace").get(pk=credential.pk)


# --- at rest ------------------------------------------------------------------------------------------


def test_stored_ciphertext_reveals_neither_the_secret_nor_an_encoding_of_it(workspace, owner):
    credential = reload(store(workspace, owner))
    blob = bytes(credential.secret_ciphertext)

    assert blob, "the secret must be stored"
    for needle in (
        SECRET.encode(),
        SECRET[:-4].encode(),  # the part that is never shown
        base64.b64encode(SECRET.encode()),
        base64.urlsafe_b64encode(SECRET.encode()),
        SECRET.encode().hex().encode(),
    ):
        assert needle not in blob
    assert SECRET not in blob.hex()
    # Only the last four characters are kept in the clear.
    assert credential.secret_last4 == SECRET[-4:]
    assert credential.masked_secret.endswith(SECRET[-4:]) and SECRET[:-4] not in credential.masked_secret
    # Same secret stored twice gives different ciphertexts (random nonce, per-row binding).
    again = reload(store(workspace, owner, label="OpenAI 2"))
    assert bytes(again.secret_ciphertext) != blob


def test_the_data_key_is_stored_only_wrapped(workspace):
    data_key = WorkspaceDataKey.objects.get(workspace=workspace)
    wrapped = bytes(data_key.wrapped_key)
    assert data_key.master_key_id == "test"
    # version byte + 12-byte nonce + 32-byte key + 16-byte tag: nothing but the wrapped key is stored
    assert len(wrapped) == 1 + 12 + 32 + 16
    active, _ = keyring()
    dek = crypto.unwrap_data_key(
        master_key_id=data_key.master_key_id,
        wrapped=wrapped,
        workspace_public_id=str(workspace.public_id),
        ring=keyring(),
    )
    assert len(dek) == 32 and dek not in wrapped and active.key not in wrapped


def test_secret_round_trips_through_the_decrypting_service(workspace, owner):
    first = store(workspace, owner)
    second = store(workspace, owner, secret=OTHER_SECRET, label="Anthropic")

    assert provider_credential_secret(credential=reload(first)) == SECRET
    assert provider_credential_secret(credential=reload(second)) == OTHER_SECRET


def test_each_workspace_has_its_own_data_key(make_workspace):
    a, b = make_workspace(), make_workspace()
    deks = [
        crypto.unwrap_data_key(
            master_key_id=row.master_key_id,
            wrapped=bytes(row.wrapped_key),
            workspace_public_id=str(ws.public_id),
            ring=keyring(),
        )
        for ws in (a, b)
        for row in [WorkspaceDataKey.objects.get(workspace=ws)]
    ]
    assert deks[0] != deks[1]


# --- bound to its row -----------------------------------------------------------------------------------


def test_ciphertext_copied_onto_another_credential_fails_instead_of_leaking(workspace, owner):
    victim = store(workspace, owner)
    thief = store(workspace, owner, secret=OTHER_SECRET, label="Mine")
    ProviderCredential.objects.filter(pk=thief.pk).update(secret_ciphertext=bytes(reload(victim).secret_ciphertext))

    with pytest.raises(CryptoError, match="failed authentication"):
        provider_credential_secret(credential=reload(thief))
    assert provider_credential_secret(credential=reload(victim)) == SECRET


def test_ciphertext_copied_into_another_workspace_fails_instead_of_leaking(make_workspace, make_user):
    alice, mallory = make_user(), make_user()
    ws_a, ws_b = make_workspace(owner=alice), make_workspace(owner=mallory)
    victim = store(ws_a, alice)
    thief = store(ws_b, mallory, secret=OTHER_SECRET)
    ProviderCredential.objects.filter(pk=thief.pk).update(secret_ciphertext=bytes(reload(victim).secret_ciphertext))

    with pytest.raises(CryptoError):
        provider_credential_secret(credential=reload(thief))


def test_wrapped_data_key_copied_onto_another_workspace_fails(make_workspace, make_user):
    alice, mallory = make_user(), make_user()
    ws_a, ws_b = make_workspace(owner=alice), make_workspace(owner=mallory)
    victim = store(ws_a, alice)
    store(ws_b, mallory, secret=OTHER_SECRET, label="Mallory")
    # Mallory's workspace gets Alice's wrapped data key and Alice's ciphertext is moved over too.
    a_key = WorkspaceDataKey.objects.get(workspace=ws_a)
    WorkspaceDataKey.objects.filter(workspace=ws_b).update(wrapped_key=bytes(a_key.wrapped_key))
    ProviderCredential.objects.filter(pk=victim.pk).update(workspace=ws_b)

    with pytest.raises(CryptoError, match="failed authentication"):
        provider_credential_secret(credential=reload(victim))


@pytest.mark.parametrize(
    "position", [0, 1, 12, 13, 20, -1], ids=["version", "nonce", "nonce-end", "body", "mid", "tag"]
)
def test_tampered_ciphertext_byte_is_detected(workspace, owner, position):
    credential = reload(store(workspace, owner))
    blob = bytearray(bytes(credential.secret_ciphertext))
    blob[position] ^= 0x01
    ProviderCredential.objects.filter(pk=credential.pk).update(secret_ciphertext=bytes(blob))

    with pytest.raises(CryptoError):
        provider_credential_secret(credential=reload(credential))


def test_truncated_ciphertext_is_detected(workspace, owner):
    credential = reload(store(workspace, owner))
    ProviderCredential.objects.filter(pk=credential.pk).update(
        secret_ciphertext=bytes(credential.secret_ciphertext)[:20]
    )
    with pytest.raises(CryptoError, match="malformed"):
        provider_credential_secret(credential=reload(credential))


def test_tampered_wrapped_data_key_is_detected(workspace, owner):
    credential = store(workspace, owner)
    row = WorkspaceDataKey.objects.get(workspace=workspace)
    wrapped = bytearray(bytes(row.wrapped_key))
    wrapped[-5] ^= 0x80
    WorkspaceDataKey.objects.filter(pk=row.pk).update(wrapped_key=bytes(wrapped))

    with pytest.raises(CryptoError, match="failed authentication"):
        provider_credential_secret(credential=reload(credential))


# --- master keys ---------------------------------------------------------------------------------------------


def test_master_key_rotation_rewraps_every_data_key_and_keeps_every_secret(make_workspace, make_user, settings):
    key_a = settings.TURNPIKE_MASTER_KEY
    stored = []
    for secret in (SECRET, OTHER_SECRET, "gsk_" + "q" * 40):
        user = make_user()
        ws = make_workspace(owner=user)
        stored.append((store(ws, user, secret=secret), secret))
    ciphertexts_before = {c.pk: bytes(reload(c).secret_ciphertext) for c, _ in stored}
    wrapped_before = {row.pk: bytes(row.wrapped_key) for row in WorkspaceDataKey.objects.all()}
    assert {row.master_key_id for row in WorkspaceDataKey.objects.all()} == {"test"}

    key_b = crypto.generate_master_key("b2025")
    settings.TURNPIKE_MASTER_KEY = key_b
    settings.TURNPIKE_MASTER_KEYS_RETIRED = [key_a]
    # During the deploy window (new key active, old one retired) everything still decrypts.
    for credential, secret in stored:
        assert provider_credential_secret(credential=reload(credential)) == secret

    out = io.StringIO()
    call_command("rotate_master_key", stdout=out)
    assert "re-wrapped 3 data key(s)" in out.getvalue()
    assert "'b2025'; 0 left" in out.getvalue()

    # The old key is gone from the environment entirely.
    settings.TURNPIKE_MASTER_KEYS_RETIRED = []
    for credential, secret in stored:
        assert provider_credential_secret(credential=reload(credential)) == secret
    rows = list(WorkspaceDataKey.objects.all())
    assert {row.master_key_id for row in rows} == {"b2025"}
    assert all(row.rotated_at is not None for row in rows)
    assert all(bytes(row.wrapped_key) != wrapped_before[row.pk] for row in rows)
    # Only the data keys were re-wrapped: provider secrets were not touched.
    assert {c.pk: bytes(reload(c).secret_ciphertext) for c, _ in stored} == ciphertexts_before

    # Running it again is a no-op.
    out = io.StringIO()
    call_command("rotate_master_key", stdout=out)
    assert "re-wrapped 0 data key(s)" in out.getvalue()


def test_workspaces_created_after_the_switch_use_the_new_master_key(make_workspace, make_user, settings):
    settings.TURNPIKE_MASTER_KEYS_RETIRED = [settings.TURNPIKE_MASTER_KEY]
    settings.TURNPIKE_MASTER_KEY = crypto.generate_master_key("next")
    user = make_user()
    ws = make_workspace(owner=user)
    credential = store(ws, user)
    assert WorkspaceDataKey.objects.get(workspace=ws).master_key_id == "next"
    settings.TURNPIKE_MASTER_KEYS_RETIRED = []
    assert provider_credential_secret(credential=reload(credential)) == SECRET


def test_data_key_wrapped_by_an_unknown_master_key_gives_a_clear_error(workspace, owner, settings):
    credential = store(workspace, owner)
    settings.TURNPIKE_MASTER_KEY = crypto.generate_master_key("fresh")
    settings.TURNPIKE_MASTER_KEYS_RETIRED = []  # the operator forgot to keep the old key

    with pytest.raises(CryptoError) as excinfo:
        provider_credential_secret(credential=reload(credential))
    message = str(excinfo.value)
    assert "'test'" in message and "TURNPIKE_MASTER_KEYS_RETIRED" in message

    with pytest.raises(CommandError, match="'test'"):
        call_command("rotate_master_key", stdout=io.StringIO())
    # Nothing was half-rotated.
    assert WorkspaceDataKey.objects.get(workspace=workspace).master_key_id == "test"


def test_generate_prints_a_usable_master_key(workspace, owner, settings):
    out = io.StringIO()
    call_command("rotate_master_key", "--generate", "k2026", stdout=out)
    printed = out.getvalue().strip()
    parsed = crypto.parse_master_key(printed)
    assert parsed.key_id == "k2026" and len(parsed.key) == 32
    assert printed.startswith("k2026:")

    second = io.StringIO()
    call_command("rotate_master_key", "--generate", "k2026", stdout=second)
    assert second.getvalue().strip() != printed, "every generated key must be random"

    # It works as the active key.
    credential = store(workspace, owner)
    settings.TURNPIKE_MASTER_KEYS_RETIRED = [settings.TURNPIKE_MASTER_KEY]
    settings.TURNPIKE_MASTER_KEY = printed
    call_command("rotate_master_key", stdout=io.StringIO())
    settings.TURNPIKE_MASTER_KEYS_RETIRED = []
    assert provider_credential_secret(credential=reload(credential)) == SECRET


@pytest.mark.parametrize("key_id", ["a:b", "", "   "])
def test_generate_refuses_a_bad_key_id(key_id, db):
    with pytest.raises(CommandError, match="key id"):
        call_command("rotate_master_key", "--generate", key_id, stdout=io.StringIO())


GOOD_MATERIAL = base64.urlsafe_b64encode(bytes(range(32))).decode()


@pytest.mark.parametrize(
    "value",
    [
        "",
        "no-separator",
        f":{GOOD_MATERIAL}",  # no key id
        "k1:",  # no key material
        "k1:%%%%",  # not base64
        "k1:abc",  # bad padding
        "k1:" + base64.urlsafe_b64encode(b"x" * 16).decode(),  # AES-128 sized
        "k1:" + base64.urlsafe_b64encode(b"x" * 33).decode(),
    ],
)
def test_malformed_master_keys_are_rejected(value):
    with pytest.raises(CryptoError):
        crypto.parse_master_key(value)


def test_malformed_configured_master_key_stops_encryption_without_echoing_material(make_user, settings):
    material = base64.urlsafe_b64encode(b"y" * 31).decode()
    settings.TURNPIKE_MASTER_KEY = f"short:{material}"
    user = make_user()
    from tenants.models import Workspace
    from tenants.services import workspace_create

    with pytest.raises(CryptoError) as excinfo:
        workspace_create(name="Never", acting_user=user)
    assert "32 bytes" in str(excinfo.value)
    assert material not in str(excinfo.value)
    assert not Workspace.objects.filter(name="Never").exists()


def test_master_key_repr_never_shows_key_material():
    key = crypto.parse_master_key(f"k1:{GOOD_MATERIAL}")
    text = repr(key) + str(key) + repr(crypto.keyring_from_values(f"k1:{GOOD_MATERIAL}"))
    assert GOOD_MATERIAL not in text
    assert repr(bytes(range(32))) not in text
    assert "k1" in text
