"""Telling the proxy that a key or a workspace's credentials changed.

After the change commits (never before: a proxy reading Postgres in between would see the old row):
1. the Redis document the proxy caches is overwritten with a tombstone (`SET <doc> TOMBSTONE EX
   TOMBSTONE_TTL`), not deleted: the proxy fills documents with `SET … NX`, so a proxy that read the old
   row before the commit cannot write it back over the tombstone; a proxy that reads the tombstone
   loads from Postgres and leaves Redis alone;
2. a message goes out on the invalidation channel; every proxy worker drops its in-process copy and
   refuses to store any load that was already under way (proxy/auth.py states the whole protocol).
A platform-wide change bumps `WORKSPACE_EPOCH_KEY` first (a proxy fill that read the epoch before the
bump is refused by its script), then tombstones every workspace document it finds, then publishes "all".

If Redis is unreachable the change still stands: proxy workers that cannot reach Redis either read
Postgres after their in-process TTL; see proxy/auth.py for the one case that waits for the Redis TTL.
"""

from __future__ import annotations

import logging
from functools import lru_cache

import redis
from django.conf import settings
from django.db import transaction

from contracts import balance
from contracts.cachekeys import (
    INVALIDATION_CHANNEL,
    TOMBSTONE,
    TOMBSTONE_TTL,
    WORKSPACE_DOC_PATTERN,
    WORKSPACE_EPOCH_KEY,
    key_doc_key,
    workspace_doc_key,
)

__all__ = [
    "invalidate_all_workspaces_on_commit",
    "invalidate_key_on_commit",
    "invalidate_workspace_on_commit",
    "key_doc_key",
    "publish_balance_on_commit",
    "workspace_doc_key",
]

log = logging.getLogger("turnpike.tenants.cache")

_SCAN_BATCH = 500


@lru_cache(maxsize=1)
def _client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)


def _publish(doc_key: str, message: str) -> None:
    try:
        client = _client(settings.REDIS_URL)
        pipe = client.pipeline(transaction=False)
        pipe.set(doc_key, TOMBSTONE, ex=TOMBSTONE_TTL)  # before the message: a listener re-reads after it
        pipe.publish(INVALIDATION_CHANNEL, message)
        pipe.execute()
    except redis.RedisError as exc:
        log.warning("could not publish invalidation %s: %s (proxy entries expire by TTL)", message, exc)


def invalidate_key_on_commit(key_hash: str) -> None:
    transaction.on_commit(lambda: _publish(key_doc_key(key_hash), f"key:{key_hash}"))


def invalidate_workspace_on_commit(workspace_id: int) -> None:
    transaction.on_commit(lambda: _publish(workspace_doc_key(workspace_id), f"ws:{workspace_id}"))


def publish_balance_on_commit(workspace_id: int, balance_nanos: int, version: int) -> None:
    """After the posting commits, move the proxy's view of the ledger balance forward (versioned: an
    older value never overwrites a newer one). If Redis is unreachable, the proxy fills from Postgres
    the next time it finds no balance there."""

    def push() -> None:
        try:
            _client(settings.REDIS_URL).eval(balance.FILL, 1, balance.bal_key(workspace_id), balance_nanos, version)
        except redis.RedisError as exc:
            log.warning("could not publish the balance of workspace %s: %s", workspace_id, exc)

    transaction.on_commit(push)


def invalidate_all_workspaces_on_commit() -> None:
    """After a platform-wide change (a plan's rates, a managed credential): refuse every workspace fill
    already under way, tombstone every cached workspace document, and tell every proxy worker to drop
    its in-process entries. Tombstones found by the scan are renewed, so a recent per-workspace
    invalidation keeps its protection."""

    def drop() -> None:
        try:
            client = _client(settings.REDIS_URL)
            client.incr(WORKSPACE_EPOCH_KEY)  # first: a fill that read the old epoch now fails its check
            batch: list[bytes] = []
            for name in client.scan_iter(match=WORKSPACE_DOC_PATTERN, count=1000):
                batch.append(name)
                if len(batch) >= _SCAN_BATCH:
                    _tombstone(client, batch)
                    batch.clear()
            if batch:
                _tombstone(client, batch)
            client.publish(INVALIDATION_CHANNEL, "all")
        except redis.RedisError as exc:
            log.warning("could not invalidate workspace documents: %s (proxy entries expire by TTL)", exc)

    transaction.on_commit(drop)


def _tombstone(client: redis.Redis, names: list[bytes]) -> None:
    pipe = client.pipeline(transaction=False)
    for name in names:
        pipe.set(name, TOMBSTONE, ex=TOMBSTONE_TTL)
    pipe.execute()
