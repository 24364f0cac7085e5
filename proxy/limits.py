"""Enforcement before forwarding: the prepaid balance (budgets and rate limits join here later).

Checks are single Lua calls (contracts.balance), atomic across every proxy worker. A request is
refused when the workspace's available balance is at or below zero or below the request's estimated
maximum cost. When Redis is unreachable the proxy applies the same rule to the last available balance
it saw, decremented by what it serves meanwhile (so an outage never blocks a funded workspace, and
never lets one spend beyond what it had).
"""

from __future__ import annotations

import logging
import time

import redis.asyncio as aioredis
from redis.exceptions import MaxConnectionsError, RedisError

from contracts import balance
from proxy.errors import ProxyError
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
        amount = balance.clamp_amount(amount_nanos)
        keys = [balance.bal_key(workspace_id), *balance.inflight_keys(workspace_id)]
        try:
            for _ in range(2):
                now_ms = int(time.time() * 1000)
                status, available = await self._reserve(
                    keys=keys, args=[request_id, amount, now_ms, balance.RESERVATION_TTL_MS]
                )
                result = balance.ReserveResult(status=int(status), available_nanos=int(available))
                if result.status == -2:
                    raise ValueError(f"the reserve script refused its arguments ({amount}, {now_ms})")
                if not result.miss:
                    self._last_available[workspace_id] = result.available_nanos
                    return result
                await self.fill(workspace_id)
            return result
        except MaxConnectionsError:
            # every connection of this worker is in use: Redis is up, so deciding without it would use a
            # stale balance; ask the client to come back instead
            raise ProxyError.unavailable("The gateway is busy; retry in a second.", retry_after="1") from None
        except (RedisError, OSError) as exc:
            return await self._without_redis(workspace_id, amount, exc)

    async def _without_redis(self, workspace_id: int, amount: int, exc: Exception) -> balance.ReserveResult:
        """Redis is unreachable: decide from the last available balance this process saw (Postgres if it saw
        none), by the same rule as the script, and count each request served against it, so an outage lets
        a funded workspace go on without letting it spend more than it had."""
        last = self._last_available.get(workspace_id)
        log.warning("balance check without Redis for workspace %s (%s); last known %s", workspace_id, exc, last)
        if last is None:
            last = (await self._store.balance(workspace_id))[0]
        if last <= 0 or amount > last:
            self._last_available[workspace_id] = last
            return balance.ReserveResult(status=0, available_nanos=last)
        self._last_available[workspace_id] = last - amount
        return balance.ReserveResult(status=1, available_nanos=last)

    async def fill(self, workspace_id: int) -> None:
        """Load the ledger balance from Postgres into Redis (only moves Redis forward)."""
        ledger, version = await self._store.balance(workspace_id)
        await self._fill(keys=[balance.bal_key(workspace_id)], args=[ledger, version])
