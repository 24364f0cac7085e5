"""Envelope encryption for provider secrets.

Each workspace has a random 256-bit data key (DEK). Provider secrets are AES-256-GCM encrypted with
the DEK; the DEK itself is stored only wrapped (AES-256-GCM) by a master key (KEK) that comes from
the environment (`TURNPIKE_MASTER_KEY`, "<key-id>:<urlsafe base64 of 32 bytes>"). Rotating the master
key re-wraps the DEKs (`manage.py rotate_master_key`); secrets are never re-encrypted for that.

Binary layout (versioned so the format can evolve):
    wrapped DEK  = b"\x01" + nonce(12) + AESGCM(KEK).encrypt(nonce, dek, aad=b"dek:" + workspace public id)
    secret       = b"\x01" + nonce(12) + AESGCM(DEK).encrypt(nonce, secret, aad=b"secret:" + credential public id)
The associated data binds a ciphertext to its row, so a ciphertext copied onto another workspace or
credential fails to decrypt instead of leaking.

Django-free (contracts): the proxy builds its keyring from its own environment with
`keyring_from_values`; Django code passes the settings-backed `tenants.keyring.keyring()`.
"""

from __future__ import annotations

import base64
import binascii
import os
from dataclasses import dataclass
from functools import lru_cache

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

FORMAT_VERSION = b"\x01"
NONCE_BYTES = 12
KEY_BYTES = 32


class CryptoError(Exception):
    """A key is malformed, unknown, or a ciphertext does not authenticate."""


@dataclass(frozen=True)
class MasterKey:
    key_id: str
    key: bytes = b""

    def __repr__(self) -> str:  # never print key material
        return f"MasterKey(key_id={self.key_id!r})"


def parse_master_key(value: str) -> MasterKey:
    key_id, sep, encoded = value.strip().partition(":")
    if not sep or not key_id or not encoded:
        raise CryptoError("a master key must look like '<key-id>:<urlsafe base64 of 32 bytes>'")
    try:
        raw = base64.urlsafe_b64decode(encoded.encode())
    except (binascii.Error, ValueError) as exc:
        raise CryptoError(f"master key {key_id!r} is not valid base64") from exc
    if len(raw) != KEY_BYTES:
        raise CryptoError(f"master key {key_id!r} must decode to {KEY_BYTES} bytes, got {len(raw)}")
    return MasterKey(key_id=key_id, key=raw)


def generate_master_key(key_id: str) -> str:
    """A new master key in the environment-variable format."""
    return f"{key_id}:{base64.urlsafe_b64encode(os.urandom(KEY_BYTES)).decode()}"


Keyring = tuple[MasterKey, dict[str, MasterKey]]


@lru_cache(maxsize=8)
def keyring_from_values(current: str, retired: tuple[str, ...] = ()) -> Keyring:
    """(active master key, every known master key by id) from the environment-variable values."""
    active = parse_master_key(current)
    ring = {active.key_id: active}
    for value in retired:
        key = parse_master_key(value)
        ring.setdefault(key.key_id, key)
    return active, ring


def _seal(key: bytes, plaintext: bytes, aad: bytes) -> bytes:
    nonce = os.urandom(NONCE_BYTES)
    return FORMAT_VERSION + nonce + AESGCM(key).encrypt(nonce, plaintext, aad)


def _open(key: bytes, blob: bytes, aad: bytes) -> bytes:
    blob = bytes(blob)
    if len(blob) < 1 + NONCE_BYTES + 16 or blob[:1] != FORMAT_VERSION:
        raise CryptoError("ciphertext is malformed or of an unknown format version")
    nonce, body = blob[1 : 1 + NONCE_BYTES], blob[1 + NONCE_BYTES :]
    try:
        return AESGCM(key).decrypt(nonce, body, aad)
    except InvalidTag as exc:
        raise CryptoError("ciphertext failed authentication (wrong key or tampered data)") from exc


def new_data_key() -> bytes:
    return AESGCM.generate_key(bit_length=KEY_BYTES * 8)


def wrap_data_key(*, dek: bytes, workspace_public_id: str, ring: Keyring) -> tuple[str, bytes]:
    """Wrap a DEK with the active master key; returns (master key id, wrapped bytes)."""
    active, _ = ring
    return active.key_id, _seal(active.key, dek, b"dek:" + workspace_public_id.encode())


def unwrap_data_key(*, master_key_id: str, wrapped: bytes, workspace_public_id: str, ring: Keyring) -> bytes:
    _, ring_by_id = ring
    master = ring_by_id.get(master_key_id)
    if master is None:
        raise CryptoError(
            f"data key is wrapped by master key {master_key_id!r}, which is not configured "
            "(set it in TURNPIKE_MASTER_KEY or TURNPIKE_MASTER_KEYS_RETIRED)"
        )
    return _open(master.key, wrapped, b"dek:" + workspace_public_id.encode())


def encrypt_secret(*, dek: bytes, secret: str, credential_public_id: str) -> bytes:
    return _seal(dek, secret.encode(), b"secret:" + credential_public_id.encode())


def decrypt_secret(*, dek: bytes, ciphertext: bytes, credential_public_id: str) -> str:
    return _open(dek, ciphertext, b"secret:" + credential_public_id.encode()).decode()
