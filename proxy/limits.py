"""Enforcement before forwarding: the prepaid balance (budgets and rate limits join here later).

Checks are single Lua calls (contracts.balance), atomic across every proxy worker. When Redis is
unreachable the proxy keeps serving a workspace whose last known available balance was positive
(so an outage never blocks a funded workspace) and refuses one it last saw at or below zero.
"""

from __future__ import annotations

import logging
import time

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from contracts import balance
from proxy.store import Store

log = logging.getLogger("turnpike.proxy.limits")


class BalanceGate:
    def __init__(self, *, redis: aioredis.Redis, store: Store) -> None:
        self._redis = redis
        self._store = store
        self._reserve = redis.register_script(balance.RESERVE)
        self._fill = redis.register_script(balance.FILL)
        self._last_available: dict[int, int] = {}

    async def reserve(self, *, workspace_id: int, request_id: str, amount_nanos: int) -> balance.ReserveResult:
        """Reserve `amount_nanos` for this request, or say why not. Never raises for Redis trouble."""
        keys = [balance.bal_key(workspace_id), *balance.inflight_keys(workspace_id)]
        try:
            for _ in range(2):
                now_ms = int(time.time() * 1000)
                status, available = await self._reserve(
                    keys=keys, args=[request_id, max(amount_nanos, 0), now_ms, balance.RESERVATION_TTL_MS]
                )
                result = balance.ReserveResult(status=int(status), available_nanos=int(available))
                if not result.miss:
                    self._last_available[workspace_id] = result.available_nanos
                    return result
                await self.fill(workspace_id)
            return result
        except (RedisError, OSError) as exc:
            last = self._last_available.get(workspace_id)
            log.warning("balance check without Redis for workspace %s (%s); last known %s", workspace_id, exc, last)
            if last is None:
                last = (await self._store.balance(workspace_id))[0]
                self._last_available[workspace_id] = last
            return balance.ReserveResult(status=1 if last > 0 else 0, available_nanos=last)

    async def fill(self, workspace_id: int) -> None:
        """Load the ledger balance from Postgres into Redis (only moves Redis forward)."""
        ledger, version = await self._store.balance(workspace_id)
        await self._fill(keys=[balance.bal_key(workspace_id)], args=[ledger, version])
