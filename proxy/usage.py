"""Emitting usage events without making the client wait, and without losing them.

`UsageEmitter.emit` runs after the response is complete, as a background task: one Lua call
releases the request's reservation, adds its charge to the workspace's pending total, appends the
event to the stream and keeps a copy for `GET /v1/generation` under `tp:gen:{W}:<request id>` for
`generation_ttl` seconds (contracts.balance.SETTLE_AND_EMIT; 0 keeps no copy). If Redis is unreachable
the event goes to a local spool file, one JSON line per event, in TURNPIKE_PROXY_SPOOL_DIR (a persistent
volume in deploy/); its copy is written when the line is replayed.

Spool layout, per worker process start (`usage-<pid>-<random>`, so a restarted process never appends
to a file whose last line a killed predecessor left torn):
    <stem>.jsonl        the live file the worker appends to (under an exclusive flock)
    <stem>.replaying    the live file renamed by a replayer; nobody appends to it any more
    <stem>.offset       "<inode> <byte offset>": how far <stem>.replaying has been sent
    <stem>.dead.jsonl   lines that can never be sent, one JSON object each: reason, source, raw line
    <stem>.lock         flocked by the worker replaying the stem (writers never wait for it)

Replay (`replay_forever`, every REPLAY_INTERVAL, in every worker, for every stem whose lock it gets,
dead workers' stems included): rename the live file to `.replaying` (under the writer's lock) unless
one is still there, then send the `.replaying` lines from the recorded offset:
  - a line that is not a decodable event (torn by a process killed mid-write, or garbled) is moved to
    the dead-letter file and logged; if a complete event follows the torn part on the same line, that
    event is still sent;
  - a line Redis refuses with a ResponseError (the script rejected it: a bad value, a key of the wrong
    type) is dead-lettered the same way, and replay goes on with the next line;
  - a connection error, or a refusal that says "not now" (OOM, READONLY, LOADING, ...), ends the pass:
    the offset is recorded and the next pass resumes there;
  - at the end the offset file, the `.replaying` file and the lock file are removed, in that order.
The offset is recorded every PROGRESS_EVERY lines, so a crash re-sends at most that many lines.
Re-sending is harmless: the stream then holds the event twice, each copy's pending charge is added once
and removed once when acked, and the ingester inserts it once (unique request id). An offset file is
removed before its `.replaying` file and carries that file's inode, so it can never skip lines of
another file.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import logging
import os
import secrets
from datetime import UTC, datetime
from enum import Enum
from pathlib import Path
from typing import IO, Any

import redis.asyncio as aioredis
from redis import exceptions as redis_errors
from redis.exceptions import RedisError, ResponseError

from contracts import balance
from contracts.bodies import FIELD as BODIES_FIELD
from contracts.bodies import Bodies
from contracts.events import USAGE_STREAM, UsageEvent

log = logging.getLogger("turnpike.proxy.usage")

REPLAY_INTERVAL = 1.0
PROGRESS_EVERY = 100  # lines between offset records while replaying
DEAD_SUFFIX = ".dead.jsonl"
# Refusals that are about the server's state, not about the line: retried on a later pass.
TRANSIENT_REFUSALS: tuple[type[ResponseError], ...] = (
    redis_errors.OutOfMemoryError,
    redis_errors.ReadOnlyError,
    redis_errors.NoPermissionError,
)
TRANSIENT_PREFIXES = ("BUSY", "LOADING", "MASTERDOWN", "MISCONF", "NOREPLICAS", "TRYAGAIN", "CLUSTERDOWN", "OOM")


class _Line(Enum):
    SENT = "sent"
    DEAD = "dead"
    SKIPPED = "skipped"
    STOP = "stop"


class UsageEmitter:
    def __init__(
        self, *, redis: aioredis.Redis, spool_dir: Path, generation_ttl: int = balance.GENERATION_TTL_SECONDS
    ) -> None:
        self._redis = redis
        self._keep_generation = generation_ttl > 0
        script = balance.settle_and_emit_script(generation_ttl) if self._keep_generation else balance.SETTLE_AND_EMIT
        self._settle = redis.register_script(script)
        self._spool_dir = spool_dir
        self._spool_path = spool_dir / f"usage-{os.getpid()}-{secrets.token_hex(4)}.jsonl"
        self._tasks: set[asyncio.Task[None]] = set()
        self._by_request: dict[str, asyncio.Task[None]] = {}  # emissions under way, by request id

    def emit(self, event: UsageEvent, kept: Bodies | None = None) -> None:
        """Schedule the emission (with the request's bodies, if they are to be stored); returns at once."""
        task = asyncio.get_running_loop().create_task(self._emit(event, kept))
        self._tasks.add(task)
        request_id = event.request_id
        self._by_request[request_id] = task

        def done(finished: asyncio.Task[None]) -> None:
            self._tasks.discard(finished)
            if self._by_request.get(request_id) is finished:
                del self._by_request[request_id]

        task.add_done_callback(done)

    async def settled(self, request_id: str) -> None:
        """Wait until this worker's emission of `request_id`, if one is under way, has finished (so that a
        generation lookup right after the response finds its record)."""
        task = self._by_request.get(request_id)
        if task is not None:
            await asyncio.wait({task})

    async def drain(self) -> None:
        """Wait for scheduled emissions (shutdown, tests)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def _emit(self, event: UsageEvent, kept: Bodies | None = None) -> None:
        fields = event.to_fields()
        if kept is not None:
            fields[BODIES_FIELD] = kept.encode()
        try:
            await self._send(event.workspace_id, event.request_id, event.charge_nanos, fields)
        except (RedisError, OSError) as exc:
            log.warning("usage stream unavailable (%s); spooling %s", exc, event.request_id)
            self._spool(fields)

    async def _send(self, workspace_id: int, request_id: str, charge: int, fields: dict[str, str]) -> None:
        keys = [balance.bal_key(workspace_id), *balance.inflight_keys(workspace_id), USAGE_STREAM]
        if self._keep_generation:
            keys.append(balance.generation_key(workspace_id, request_id))
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
            try:
                await self.replay_once()
            except Exception:  # a bug or a disk error must not end replay for the life of the worker
                log.exception("usage spool replay pass failed; retrying")

    async def replay_once(self) -> int:
        """One pass over every spool this process can lock (its own, and those of dead workers).
        Returns the number of events sent; stops early (quietly) when Redis is unreachable."""
        if not self._spool_dir.is_dir():
            return 0
        stems = set()
        for suffix in (".jsonl", ".replaying", ".lock"):
            stems |= {p.name.removesuffix(suffix) for p in self._spool_dir.glob(f"usage-*{suffix}")}
        sent = 0
        for stem in sorted(s for s in stems if not s.endswith(".dead")):
            count, stopped = await self._replay_stem(stem)
            sent += count
            if stopped:
                break
        return sent

    async def _replay_stem(self, stem: str) -> tuple[int, bool]:
        """Under the stem's replay lock: rotate its live file, then send <stem>.replaying from the
        recorded offset. Returns (events sent, stopped because Redis is unavailable)."""
        lock_path = self._spool_dir / f"{stem}.lock"
        lock = _try_lock(lock_path)
        if lock is None:
            return 0, False  # another worker is on it
        with lock:
            self._rotate(stem)
            replaying = self._spool_dir / f"{stem}.replaying"
            try:
                fh = open(replaying, "rb")  # noqa: SIM115 (closed below)
            except FileNotFoundError:
                lock_path.unlink()
                return 0, False
            with fh:
                inode = os.fstat(fh.fileno()).st_ino
                offset = self._read_offset(stem, inode)
                fh.seek(offset)
                sent = dead = done = 0
                while raw := fh.readline():
                    outcome = await self._replay_line(stem, raw)
                    if outcome is _Line.STOP:
                        self._write_offset(stem, inode, offset)
                        if sent:
                            log.info("replayed %d spooled usage event(s) from %s before Redis went away", sent, stem)
                        return sent, True
                    offset += len(raw)
                    sent += outcome is _Line.SENT
                    dead += outcome is _Line.DEAD
                    done += 1
                    if done % PROGRESS_EVERY == 0:
                        self._write_offset(stem, inode, offset)
            (self._spool_dir / f"{stem}.offset").unlink(missing_ok=True)  # before the file it describes
            replaying.unlink()
            lock_path.unlink()
        if sent:
            log.info("replayed %d spooled usage event(s) from %s", sent, stem)
        if dead:
            log.error("%d spooled line(s) of %s could not be sent; see %s%s", dead, stem, stem, DEAD_SUFFIX)
        return sent, False

    def _rotate(self, stem: str) -> None:
        """Rename <stem>.jsonl to <stem>.replaying (unless the last one is not done), under the writer's
        lock: later spooling goes to a fresh file. An empty live file is removed."""
        live = self._spool_dir / f"{stem}.jsonl"
        replaying = self._spool_dir / f"{stem}.replaying"
        if replaying.exists():
            return
        try:
            fh = open(live, "rb+")  # noqa: SIM115 (closed below; never creates the file)
        except FileNotFoundError:
            return
        with fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return  # its writer is appending: rotated on a later pass
            try:
                current = os.stat(live)
            except FileNotFoundError:
                return
            if current.st_ino != os.fstat(fh.fileno()).st_ino:
                return
            if current.st_size == 0:
                live.unlink()  # a writer waiting for the lock sees the file gone and reopens
            else:
                live.rename(replaying)

    async def _replay_line(self, stem: str, raw: bytes) -> _Line:
        text = raw.decode("utf-8", "surrogateescape").strip()
        if not text:
            return _Line.SKIPPED
        torn: tuple[str, str] | None = None
        try:
            event = _decode_line(text)
        except (KeyError, TypeError, ValueError) as exc:
            tail = _complete_event_after_tear(text)
            if tail is None:
                self._dead_letter(stem, text, f"undecodable line: {exc}")
                return _Line.DEAD
            torn = (text[: len(text) - len(tail)], f"torn line: {exc}")
            text, event = tail, _decode_line(tail)
        outcome = await self._replay_event(stem, text, event)
        if torn is not None and outcome is not _Line.STOP:  # on STOP the next pass sees the line again
            self._dead_letter(stem, *torn)
        return outcome

    async def _replay_event(self, stem: str, text: str, event: UsageEvent) -> _Line:
        fields = event.to_fields()
        kept = _bodies_of_line(text)
        if kept:
            fields[BODIES_FIELD] = kept
        try:
            await self._send(event.workspace_id, event.request_id, event.charge_nanos, fields)
        except (ResponseError, redis_errors.DataError) as exc:
            if isinstance(exc, TRANSIENT_REFUSALS) or str(exc).startswith(TRANSIENT_PREFIXES):
                log.warning("Redis refused spooled usage for now (%s); replay resumes on a later pass", exc)
                return _Line.STOP
            self._dead_letter(stem, text, f"refused by Redis: {exc}", request_id=event.request_id)
            return _Line.DEAD
        except (RedisError, OSError):
            return _Line.STOP
        return _Line.SENT

    def _dead_letter(self, stem: str, text: str, reason: str, *, request_id: str = "") -> None:
        path = self._spool_dir / f"{stem}{DEAD_SUFFIX}"
        record = {
            "dead_at": datetime.now(tz=UTC).isoformat(),
            "source": f"{stem}.jsonl",
            "request_id": request_id,
            "reason": reason,
            "line": text,  # surrogate-escaped bytes of a torn line survive as \udcXX escapes
        }
        with open(path, "a", encoding="ascii") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            fh.write(json.dumps(record, separators=(",", ":")) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        log.error("spooled usage line dead-lettered to %s (request %s): %s", path.name, request_id or "unknown", reason)

    def _read_offset(self, stem: str, inode: int) -> int:
        try:
            recorded_inode, offset = (self._spool_dir / f"{stem}.offset").read_text().split()
            return int(offset) if int(recorded_inode) == inode else 0
        except (FileNotFoundError, ValueError):
            return 0

    def _write_offset(self, stem: str, inode: int, offset: int) -> None:
        path = self._spool_dir / f"{stem}.offset"
        tmp = path.with_suffix(".offset.tmp")
        tmp.write_text(f"{inode} {offset}\n")
        os.replace(tmp, path)  # a crash leaves the old record or the new one, never half of one


def _try_lock(path: Path) -> IO[bytes] | None:
    """An exclusive flock on `path` (created if missing), or None if another process holds it. A lock
    file is removed by its holder when done: a lock taken on a file that was removed meanwhile is no
    lock at all, hence the inode check."""
    fh = open(path, "ab")  # noqa: SIM115 (returned open, or closed here)
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        if os.stat(path).st_ino == os.fstat(fh.fileno()).st_ino:
            return fh
    except (BlockingIOError, FileNotFoundError):
        pass
    fh.close()
    return None


def _bodies_of_line(text: str) -> str:
    """The spooled line's bodies field (contracts.bodies), passed on as it was; "" if none."""
    try:
        value = json.loads(text).get(BODIES_FIELD, "")
    except (ValueError, AttributeError):
        return ""
    return value if isinstance(value, str) else ""


def _decode_line(text: str) -> UsageEvent:
    fields: Any = json.loads(text)
    if not isinstance(fields, dict):
        raise ValueError("not a JSON object")
    return UsageEvent.from_fields(fields)


def _complete_event_after_tear(text: str) -> str | None:
    """The complete event that follows a torn one on the same line, if there is one: spooled lines are
    JSON objects whose string values escape their quotes, so `{"` occurs only where an object starts."""
    start = text.find('{"', 1)
    while start != -1:
        try:
            _decode_line(text[start:])
        except (KeyError, TypeError, ValueError):
            start = text.find('{"', start + 1)
            continue
        return text[start:]
    return None
