"""How the web app and the proxy name what they share in Redis for authentication, and how a key is hashed.

    tp:key:<sha256 of the gateway key>   the key's document (workspace, expiry, revoked, allowed models)
    tp:ws:<workspace id>                 the workspace's document (credentials as ciphertext, prices, rates)
    tp:invalidate                        pub/sub channel: "key:<hash>", "ws:<id>" or "all"

The proxy fills documents on a miss; the web app replaces them with a tombstone after a change commits
(proxy/auth.py explains why that makes revocation race-free).
"""

from __future__ import annotations

import hashlib

INVALIDATION_CHANNEL = "tp:invalidate"


def hash_token(token: str) -> str:
    """SHA-256 hex of a high-entropy token (gateway keys, invitation tokens). A slow password hash is
    not needed: the token carries 256 random bits, and the proxy must verify it in microseconds."""
    return hashlib.sha256(token.encode()).hexdigest()


def key_doc_key(key_hash: str) -> str:
    return f"tp:key:{key_hash}"


def workspace_doc_key(workspace_id: int) -> str:
    return f"tp:ws:{workspace_id}"
