"""The master keyring configured in Django settings (the proxy builds its own from its environment)."""

from __future__ import annotations

from django.conf import settings

from contracts.crypto import Keyring, keyring_from_values


def keyring() -> Keyring:
    return keyring_from_values(settings.TURNPIKE_MASTER_KEY, tuple(settings.TURNPIKE_MASTER_KEYS_RETIRED))
