"""Emitting usage events without making the client wait, and without losing them.

`UsageEmitter.emit` runs after the response is complete, as a background task: one Lua call
releases the request's reservation, adds its charge to the workspace's pending total and appends the
event to the stream (contracts.balance.SETTLE_AND_EMIT). If Redis is unreachable the event goes to a
local spool file (one JSON line per event, per worker process); a background loop replays spool
files once Redis answers again. Replaying a line twice (a crash mid-replay) is harmless: the stream
then holds the event twice, each copy's pending charge is added once and removed once when acked,
and the ingester inserts it once (unique request id).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
from pathlib import Path

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from contracts import balance
from contracts.events import USAGE_STREAM, UsageEvent

log = logging.getLogger("turnpike.proxy.usage")

REPLAY_INTERVAL = 1.0


class UsageEmitter:
    def __init__(self, *, redis: aioredis.Redis, spool_dir: Path) -> None:
        self._redis = redis
        self._settle = redis.register_script(balance.SETTLE_AND_EMIT)
        self._spool_dir = spool_dir
        self._spool_path = spool_dir / f"usage-{os.getpid()}.jsonl"
        self._tasks: set[asyncio.Task[None]] = set()

    def emit(self, event: UsageEvent) -> None:
        """Schedule the emission; returns at once."""
        task = asyncio.get_running_loop().create_task(self._emit(event))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def drain(self) -> None:
        """Wait for scheduled emissions (shutdown, tests)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def _emit(self, event: UsageEvent) -> None:
        fields = event.to_fields()
        try:
            await self._send(event.workspace_id, event.request_id, event.charge_nanos, fields)
        except (RedisError, OSError) as exc:
            log.warning("usage stream unavailable (%s); spooling %s", exc, event.request_id)
            self._spool(fields)

    async def _send(self, workspace_id: int, request_id: str, charge: int, fields: dict[str, str]) -> None:
        keys = [balance.bal_key(workspace_id), *balance.inflight_keys(workspace_id), USAGE_STREAM]
        args: list[str | int] = [request_id, charge]
        for name, value in fields.items():
            args.extend((name, value))
        await self._settle(keys=keys, args=args)

    def _spool(self, fields: dict[str, str]) -> None:
        """Append under an exclusive lock; if a replayer renamed the file while we waited for the
        lock, reopen, so the line never lands in a file that is being (or was) replayed."""
        self._spool_dir.mkdir(parents=True, exist_ok=True)
        line = json.dumps(fields, separators=(",", ":")) + "\n"
        while True:
            with open(self._spool_path, "a", encoding="utf-8") as fh:
                fcntl.flock(fh, fcntl.LOCK_EX)
                try:
                    current = os.stat(self._spool_path)
                except FileNotFoundError:
                    continue
                if os.fstat(fh.fileno()).st_ino != current.st_ino:
                    continue
                fh.write(line)
                fh.flush()
                os.fsync(fh.fileno())
                return

    # --- replay ---------------------------------------------------------------------------------------

    async def replay_forever(self) -> None:
        while True:
            await asyncio.sleep(REPLAY_INTERVAL)
            with contextlib.suppress(RedisError, OSError):
                await self.replay_once()

    async def replay_once(self) -> int:
        """Replay every spool file this process can lock (its own, and those of dead workers)."""
        if not self._spool_dir.is_dir():
            return 0
        sent = 0
        for path in sorted(self._spool_dir.glob("usage-*.jsonl")):
            sent += await self._replay_file(path)
        return sent

    async def _replay_file(self, path: Path) -> int:
        replaying = path.with_suffix(".replaying")
        with open(path, "a+", encoding="utf-8") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return 0  # another worker is on it
            if not replaying.exists():
                if path.stat().st_size == 0:
                    return 0
                path.rename(replaying)  # new spooling goes to a fresh file
            sent = 0
            with open(replaying, encoding="utf-8") as fh:
                for line in fh:
                    if not line.strip():
                        continue
                    fields = json.loads(line)
                    event = UsageEvent.from_fields(fields)
                    await self._send(event.workspace_id, event.request_id, event.charge_nanos, fields)
                    sent += 1
            replaying.unlink()
            if sent:
                log.info("replayed %d spooled usage event(s) from %s", sent, path.name)
            return sent
