"""Everything a proxy worker holds for its lifetime, built at startup and closed at shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import redis.asyncio as aioredis
from redis.exceptions import RedisError, ResponseError

from contracts import crypto, redisconfig
from proxy import upstream
from proxy.auth import KeyResolver
from proxy.catalog import Catalog
from proxy.config import ProxyConfig
from proxy.http import send_error
from proxy.limits import BalanceGate
from proxy.store import Store
from proxy.usage import UsageEmitter

log = logging.getLogger("turnpike.proxy")

CATALOG_REFRESH_SECONDS = 60.0
REDIS_CHECK_RETRY_SECONDS = 5.0


class Runtime:
    def __init__(self, config: ProxyConfig) -> None:
        self.config = config
        # redis-py caps a pool at 100 connections by default and raises past it, which at 100+ concurrent
        # requests per worker made the balance gate serve on a stale balance. The cap is ours now, far above
        # what a worker reaches, and a full pool is refused as "busy" (proxy.limits), never taken for an
        # outage. (A blocking pool would wait instead, but costs ~10 µs per call on the hot path.)
        pool = aioredis.ConnectionPool.from_url(
            config.redis_url,
            max_connections=config.redis_max_connections,
            socket_timeout=2.0,
            socket_connect_timeout=1.0,
            health_check_interval=30,
        )
        self.redis = aioredis.Redis.from_pool(pool)  # owns the pool: aclose() closes it
        self.store = Store(config.database_url)
        self.resolver = KeyResolver(
            redis=self.redis,
            store=self.store,
            keyring=crypto.keyring_from_values(config.master_key, config.retired_master_keys),
            auth_ttl=config.auth_ttl,
            negative_ttl=config.negative_ttl,
            redis_doc_ttl=config.redis_doc_ttl,
            key_cache_size=config.key_cache_size,
            workspace_cache_size=config.workspace_cache_size,
            negative_cache_size=config.negative_cache_size,
            max_pending_key_loads=config.max_pending_key_loads,
        )
        self.gate = BalanceGate(redis=self.redis, store=self.store)
        self.emitter = UsageEmitter(redis=self.redis, spool_dir=config.spool_dir, generation_ttl=config.generation_ttl)
        self.http: upstream.UpstreamClient = upstream.make_client(config)
        self.catalog = Catalog()
        self.send_error = send_error
        self.upstream_error = upstream.upstream_error
        self.transport_error = upstream.transport_error
        self._tasks: list[asyncio.Task[None]] = []
        self.listener_ready = asyncio.Event()

    async def start(self) -> None:
        try:
            await self.refresh_catalog()
        except Exception:  # Postgres may still be starting; the refresher keeps trying
            log.exception("price catalog not loaded at startup; retrying in the background")
        self._tasks = [
            asyncio.create_task(self.resolver.listen_for_invalidations(on_ready=self.listener_ready.set)),
            asyncio.create_task(self.emitter.replay_forever()),
            asyncio.create_task(self._refresh_catalog_forever()),
            asyncio.create_task(self._check_redis_requirements()),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self.emitter.drain()
        await self.http.aclose()
        await self.store.close()
        await self.redis.aclose()

    async def refresh_catalog(self) -> None:
        self.catalog = Catalog.from_rows(await self.store.catalog())

    async def _refresh_catalog_forever(self) -> None:
        while True:
            await asyncio.sleep(CATALOG_REFRESH_SECONDS if self.catalog.prices else 2.0)
            try:
                await self.refresh_catalog()
            except Exception as exc:  # keep serving with the catalog we have
                log.warning("price catalog refresh failed: %s", exc)

    async def _check_redis_requirements(self) -> None:
        """Warn when the Redis server's settings put usage at risk (contracts.redisconfig). Redis may
        still be starting: ask until it answers once, off the request path."""
        while True:
            try:
                values: dict[str, str] = {}
                for name in redisconfig.CHECKED_PARAMETERS:
                    values.update(redisconfig.decode_config(await self.redis.config_get(name)))
            except ResponseError as exc:  # CONFIG disabled or renamed (managed Redis), or no permission
                warnings = [redisconfig.unchecked_warning(f"CONFIG GET refused: {exc}")]
            except (RedisError, OSError):
                await asyncio.sleep(REDIS_CHECK_RETRY_SECONDS)
                continue
            else:
                warnings = redisconfig.requirement_warnings(values)
            for warning in warnings:
                log.warning(warning)
            return
