"""How the web app and the proxy name what they share in Redis for authentication, how a gateway key
looks, and how it is hashed.

    tp:key:<sha256 of the gateway key>   the key's document (workspace, expiry, revoked, allowed models),
                                         `{"missing":true}` for a key Postgres does not know (short TTL),
                                         or TOMBSTONE
    tp:ws:<workspace id>                 the workspace's document (credentials as ciphertext, prices, rates,
                                         slug), or TOMBSTONE; `"v"` is WORKSPACE_DOC_VERSION
    tp:ws-epoch                          integer, bumped by every platform-wide workspace invalidation
                                         (deliberately outside the `tp:ws:*` pattern the web app scans)
    tp:invalidate                        pub/sub channel: "key:<hash>", "ws:<id>" or "all"

The proxy fills documents on a miss with `SET … NX` only; the web app replaces them with a tombstone
after a change commits. proxy/auth.py states the protocol and why it makes revocation race-free.
"""

from __future__ import annotations

import hashlib
import re

INVALIDATION_CHANNEL = "tp:invalidate"
# The shape of a workspace document. A proxy that finds a document of another version (written by a
# proxy of an earlier release, during a deploy) reads Postgres instead and leaves Redis alone; the old
# document expires by its TTL. Version 2 added the workspace slug (the 402's link to the billing page).
WORKSPACE_DOC_VERSION = 2
WORKSPACE_EPOCH_KEY = "tp:ws-epoch"

# What the web app writes over a document after a change commits: "this changed; read Postgres, and
# don't fill Redis until I expire". Not JSON, so no document can be mistaken for it.
TOMBSTONE = b"!tombstone"
TOMBSTONE_TTL = 10  # seconds; the proxy never fills from a Postgres read older than half of this

# A gateway key is GATEWAY_KEY_PREFIX + secrets.token_urlsafe(GATEWAY_KEY_RANDOM_BYTES): 32 random bytes
# in unpadded base64url are 43 characters of [A-Za-z0-9_-]. tenants.services.gateway_key_create makes
# them; the proxy refuses anything else before it spends a cache entry, Redis or Postgres on it.
GATEWAY_KEY_PREFIX = "tpk_live_"
GATEWAY_KEY_RANDOM_BYTES = 32
GATEWAY_KEY_LENGTH = len(GATEWAY_KEY_PREFIX) + 43
_GATEWAY_KEY = re.compile(re.escape(GATEWAY_KEY_PREFIX) + r"[A-Za-z0-9_-]{43}")


def looks_like_gateway_key(token: str) -> bool:
    """Whether `token` has the shape of a key gateway_key_create makes (says nothing of whether it exists)."""
    return len(token) == GATEWAY_KEY_LENGTH and _GATEWAY_KEY.fullmatch(token) is not None


def hash_token(token: str) -> str:
    """SHA-256 hex of a high-entropy token (gateway keys, invitation tokens). A slow password hash is
    not needed: the token carries 256 random bits, and the proxy must verify it in microseconds."""
    return hashlib.sha256(token.encode()).hexdigest()


def key_doc_key(key_hash: str) -> str:
    return f"tp:key:{key_hash}"


def workspace_doc_key(workspace_id: int) -> str:
    return f"tp:ws:{workspace_id}"


WORKSPACE_DOC_PATTERN = "tp:ws:*"  # every workspace document (SCAN MATCH); excludes WORKSPACE_EPOCH_KEY
