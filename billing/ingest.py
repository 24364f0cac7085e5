"""Usage ingestion: Redis stream -> Postgres events, hourly rollups and ledger debits, exactly once.

One batch is one Postgres transaction:
  1. insert the events, skipping request ids already stored (a re-delivered entry is a no-op);
  2. add the newly inserted events to their hourly rollups;
  3. post one usage debit per workspace (the sum of the new events' charges) to the ledger;
  4. move gateway keys' last_used_at forward.
Only after it commits are the entries acknowledged, by one Lua call that also removes their charges
from the workspaces' pending totals and moves the Redis balance to the committed ledger version
(contracts.balance.ACK). A consumer that dies before acknowledging leaves its entries pending in the
group; `claim_stale` hands them to a live consumer after `claim_idle_ms`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import redis
from django.conf import settings
from django.db import connection, transaction

from billing.models import LedgerEntry
from billing.selectors import workspace_balance
from billing.services import ledger_post
from contracts import balance
from contracts.events import USAGE_GROUP, USAGE_STREAM, UsageEvent

log = logging.getLogger("turnpike.billing.ingest")

DEFAULT_BATCH_SIZE = 500
EVENT_COLUMNS = (
    "request_id, workspace_id, key_id, credential_id, provider, credential_kind, model_requested, model_served, "
    "status, error_code, input_tokens, cached_input_tokens, cache_write_tokens, output_tokens, reasoning_tokens, "
    "cost_nanos, charge_nanos, priced, estimated, stream, latency_ms, ttfb_ms, end_user, metadata, "
    "started_at, finished_at, ingested_at"
)
ROLLUP_SUMS = (
    "requests",
    "unpriced_requests",
    "estimated_requests",
    "input_tokens",
    "cached_input_tokens",
    "cache_write_tokens",
    "output_tokens",
    "reasoning_tokens",
    "cost_nanos",
    "charge_nanos",
    "latency_ms_total",
)


@dataclass
class BatchResult:
    read: int = 0
    inserted: int = 0
    acked: int = 0


def consumer_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


def _client() -> redis.Redis:
    return redis.Redis.from_url(settings.REDIS_URL, socket_timeout=10, socket_connect_timeout=5)


def _ts(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def ensure_group(client: redis.Redis) -> None:
    """Create the consumer group reading from the start of the stream (never skip events)."""
    try:
        client.xgroup_create(USAGE_STREAM, USAGE_GROUP, id="0", mkstream=True)
    except redis.ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


def _insert_events(events: list[UsageEvent]) -> set[str]:
    """Insert, skipping known request ids; returns the ids inserted now."""
    if not events:
        return set()
    now = datetime.now(tz=UTC)
    rows: list[Any] = []
    for e in events:
        rows.extend(
            [
                e.request_id,
                e.workspace_id,
                e.key_id,
                e.credential_id,
                e.provider,
                e.credential_kind,
                e.model_requested,
                e.model_served,
                e.status,
                e.error_code,
                e.input_tokens,
                e.cached_input_tokens,
                e.cache_write_tokens,
                e.output_tokens,
                e.reasoning_tokens,
                e.cost_nanos,
                e.charge_nanos,
                e.priced,
                e.estimated,
                e.stream,
                e.latency_ms,
                e.ttfb_ms,
                e.user[:256],
                _json(e.metadata),
                _ts(e.started_at_ms),
                _ts(e.finished_at_ms),
                now,
            ]
        )
    placeholders = ", ".join(["(" + ", ".join(["%s"] * 27) + ")"] * len(events))
    sql = (
        f"INSERT INTO billing_usageevent ({EVENT_COLUMNS}) VALUES {placeholders} "  # noqa: S608 (fixed columns)
        "ON CONFLICT (request_id) DO NOTHING RETURNING request_id"
    )
    with connection.cursor() as cur:
        cur.execute(sql, rows)
        return {row[0] for row in cur.fetchall()}


def _json(value: dict[str, Any]) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


def _status_class(status: int) -> str:
    return f"{status // 100}xx"


def _update_rollups(events: list[UsageEvent]) -> None:
    totals: dict[tuple[Any, ...], list[int]] = defaultdict(lambda: [0] * len(ROLLUP_SUMS))
    for e in events:
        hour = _ts(e.started_at_ms).replace(minute=0, second=0, microsecond=0)
        key = (e.workspace_id, e.key_id, e.provider, e.model_served or e.model_requested, _status_class(e.status), hour)
        t = totals[key]
        for i, value in enumerate(
            (
                1,
                0 if e.priced else 1,
                1 if e.estimated else 0,
                e.input_tokens,
                e.cached_input_tokens,
                e.cache_write_tokens,
                e.output_tokens,
                e.reasoning_tokens,
                e.cost_nanos or 0,
                e.charge_nanos,
                e.latency_ms,
            )
        ):
            t[i] += value
    if not totals:
        return
    columns = "workspace_id, key_id, provider, model, status_class, hour, " + ", ".join(ROLLUP_SUMS)
    updates = ", ".join(f"{c} = billing_usagerollup.{c} + EXCLUDED.{c}" for c in ROLLUP_SUMS)
    placeholders = ", ".join(["(" + ", ".join(["%s"] * (6 + len(ROLLUP_SUMS))) + ")"] * len(totals))
    params: list[Any] = []
    for key, sums in sorted(totals.items(), key=lambda kv: repr(kv[0])):  # stable order: no deadlocks
        params.extend([*key, *sums])
    sql = (
        f"INSERT INTO billing_usagerollup ({columns}) VALUES {placeholders} "  # noqa: S608 (fixed columns)
        "ON CONFLICT (workspace_id, key_id, provider, model, status_class, hour) "
        f"DO UPDATE SET {updates}"
    )
    with connection.cursor() as cur:
        cur.execute(sql, params)


def _post_debits(events: list[UsageEvent]) -> None:
    by_workspace: dict[int, list[UsageEvent]] = defaultdict(list)
    for e in events:
        by_workspace[e.workspace_id].append(e)
    for workspace_id in sorted(by_workspace):  # stable lock order across concurrent batches
        batch = by_workspace[workspace_id]
        total = sum(e.charge_nanos for e in batch)
        if total == 0:
            continue
        digest = hashlib.sha256("\n".join(sorted(e.request_id for e in batch)).encode()).hexdigest()[:40]
        ledger_post(
            workspace_id=workspace_id,
            kind=LedgerEntry.Kind.USAGE,
            amount_nanos=-total,
            idempotency_key=f"usage:{workspace_id}:{digest}",
            memo=f"usage of {len(batch)} request(s)",
        )


def _touch_keys(events: list[UsageEvent]) -> None:
    last: dict[int, int] = {}
    for e in events:
        last[e.key_id] = max(last.get(e.key_id, 0), e.finished_at_ms)
    with connection.cursor() as cur:
        for key_id, ms in sorted(last.items()):
            cur.execute(
                "UPDATE tenants_gatewaykey SET last_used_at = %s WHERE id = %s "
                "AND (last_used_at IS NULL OR last_used_at < %s)",
                [_ts(ms), key_id, _ts(ms)],
            )


def usage_ingest_batch(*, events: list[UsageEvent]) -> tuple[set[str], dict[int, tuple[int, int]]]:
    """Store a batch in one transaction. Returns (request ids inserted now, {workspace: (balance, version)})."""
    unique: dict[str, UsageEvent] = {}
    for e in events:
        unique.setdefault(e.request_id, e)
    with transaction.atomic():
        inserted = _insert_events(list(unique.values()))
        fresh = [e for e in unique.values() if e.request_id in inserted]
        _update_rollups(fresh)
        _post_debits(fresh)
        _touch_keys(fresh)
        balances = {ws: workspace_balance(workspace_id=ws) for ws in sorted({e.workspace_id for e in events})}
    return inserted, balances


def _ack(
    client: redis.Redis, entries: list[tuple[str, UsageEvent | None]], balances: dict[int, tuple[int, int]]
) -> int:
    workspaces = sorted({e.workspace_id for _, e in entries if e is not None} | set(balances))
    index = {ws: i + 2 for i, ws in enumerate(workspaces)}  # KEYS[1] is the stream
    keys = [USAGE_STREAM, *(balance.bal_key(ws) for ws in workspaces)]
    if not workspaces:
        keys.append(balance.bal_key(0))  # keeps the script's key list valid; index 2 is never used
    args: list[Any] = [USAGE_GROUP, len(entries)]
    for entry_id, event in entries:
        if event is None:
            args.extend([entry_id, 2, 0])
        else:
            args.extend([entry_id, index[event.workspace_id], event.charge_nanos])
    for ws in workspaces:
        ledger_version = balances.get(ws)
        args.extend(["", ""] if ledger_version is None else list(ledger_version))
    return int(client.eval(balance.ACK, len(keys), *keys, *args))


def _decode_entries(raw: list[Any]) -> list[tuple[str, UsageEvent | None]]:
    out: list[tuple[str, UsageEvent | None]] = []
    for entry_id, fields in raw:
        entry_id = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
        if not fields:  # deleted from the stream while pending: nothing to store, just acknowledge
            out.append((entry_id, None))
            continue
        try:
            out.append((entry_id, UsageEvent.from_fields(fields)))
        except (KeyError, TypeError, ValueError):
            log.exception("unreadable usage entry %s left pending for inspection", entry_id)
    return out


def process_entries(client: redis.Redis, entries: list[tuple[str, UsageEvent | None]]) -> BatchResult:
    events = [e for _, e in entries if e is not None]
    inserted, balances = usage_ingest_batch(events=events)
    acked = _ack(client, entries, balances)
    return BatchResult(read=len(entries), inserted=len(inserted), acked=acked)


def claim_stale(client: redis.Redis, *, consumer: str, idle_ms: int, count: int) -> list[tuple[str, UsageEvent | None]]:
    """Take over entries another consumer read but never acknowledged (it died)."""
    _, claimed, *_ = client.xautoclaim(USAGE_STREAM, USAGE_GROUP, consumer, min_idle_time=idle_ms, count=count)
    return _decode_entries([(entry_id, fields or {}) for entry_id, fields in claimed])


def read_new(
    client: redis.Redis, *, consumer: str, count: int, block_ms: int | None
) -> list[tuple[str, UsageEvent | None]]:
    response: Any = client.xreadgroup(USAGE_GROUP, consumer, {USAGE_STREAM: ">"}, count=count, block=block_ms)
    if not response:
        return []
    return _decode_entries(response[0][1])


def run_ingest(
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    max_batches: int = 50,
    claim_idle_ms: int | None = None,
    block_ms: int | None = None,
    consumer: str | None = None,
) -> BatchResult:
    """Drain the stream: reclaim stale entries, then read new ones, batch by batch, until empty."""
    client = _client()
    consumer = consumer or consumer_name()
    idle = settings.TURNPIKE_INGEST_CLAIM_IDLE_MS if claim_idle_ms is None else claim_idle_ms
    total = BatchResult()
    try:
        ensure_group(client)
        for _ in range(max_batches):
            entries = claim_stale(client, consumer=consumer, idle_ms=idle, count=batch_size)
            if not entries:
                entries = read_new(client, consumer=consumer, count=batch_size, block_ms=block_ms)
            if not entries:
                break
            result = process_entries(client, entries)
            total.read += result.read
            total.inserted += result.inserted
            total.acked += result.acked
    finally:
        client.close()
    return total
