"""Telling the proxy that a key or a workspace's credentials changed.

After the change commits, the Redis document the proxy caches is deleted and a message goes out on
the invalidation channel; every proxy worker drops its in-process copy (proxy/auth.py). If Redis is
unreachable the change still stands: proxy entries expire within their TTL anyway."""

from __future__ import annotations

import logging
from functools import lru_cache

import redis
from django.conf import settings
from django.db import transaction

from contracts import balance
from contracts.cachekeys import INVALIDATION_CHANNEL, key_doc_key, workspace_doc_key

log = logging.getLogger("turnpike.tenants.cache")


@lru_cache(maxsize=1)
def _client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)


def _publish(doc_key: str, message: str) -> None:
    try:
        client = _client(settings.REDIS_URL)
        pipe = client.pipeline(transaction=False)
        pipe.delete(doc_key)
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
    """After a platform-wide change (a plan's rates, a managed credential): drop every cached
    workspace document and tell every proxy worker to drop its in-process entries."""

    def drop() -> None:
        try:
            client = _client(settings.REDIS_URL)
            batch: list[bytes] = []
            for name in client.scan_iter(match=workspace_doc_key(0)[:-1] + "*", count=1000):
                batch.append(name)
                if len(batch) >= 500:
                    client.delete(*batch)
                    batch.clear()
            if batch:
                client.delete(*batch)
            client.publish(INVALIDATION_CHANNEL, "all")
        except redis.RedisError as exc:
            log.warning("could not invalidate workspace documents: %s (proxy entries expire by TTL)", exc)

    transaction.on_commit(drop)
