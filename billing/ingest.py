"""Usage ingestion: Redis stream -> Postgres events, hourly rollups and ledger debits, exactly once, and no
single bad entry can stop it.

One batch is one Postgres transaction (`usage_ingest_batch`):
  1. insert the events, skipping request ids already stored (a re-delivered entry is a no-op);
  2. add the newly inserted events to their hourly and daily rollups (sums and latency histograms);
  3. post one usage debit per workspace (the sum of the new events' charges) to the ledger;
  4. move gateway keys' last_used_at forward.
Only after it commits are the entries acknowledged, by one Lua call that also removes their charges
from the workspaces' pending totals and moves the Redis balance to the committed ledger version
(contracts.balance.ACK). A consumer that dies before acknowledging leaves its entries pending in the
group; `claim_stale` hands them to a live consumer after `claim_idle_ms`.

Bad entries (`process_entries`): every event is sanitized when decoded (contracts.events), so values that
merely do not fit a column are stored clamped. What is still refused is isolated, never retried forever:
  - an entry that cannot be decoded is a dead letter at once (its workspace and charge come from the
    entry's `w`/`c` fields when it has them);
  - a batch whose transaction fails with a *data* error (DATA_ERRORS: a value Postgres refuses, a foreign
    key to a deleted gateway key, an overflowing sum) is split in halves, recursively, until the entry
    that fails is alone; every other entry is stored; the lone failure is a dead letter;
  - an entry delivered more than MAX_DELIVERIES times without a verdict (it crashed the worker, or a
    statement timed out on it each time) is a dead letter without being tried again, unless it is already
    stored (a consumer committed it and died before acknowledging: then it is simply acknowledged). So
    that innocent neighbours are not dragged along, an entry delivered twice is reclaimed alone.
Dead letters are recorded in Postgres first (billing.deadletters, its own transaction), then acknowledged
by the same ACK call as the stored entries: their charge leaves `pending` without a debit, they go to the
`tp:usage:dead` stream and the `ingest_dead_letters` counter.
An *outage* (Postgres unreachable or restarting, the connection lost: OperationalError, InterfaceError)
dead-letters nothing: it propagates and every entry of the batch stays pending, retried on the next run.
Its delivery is handed back (XCLAIM RETRYCOUNT) when the failure is a connection-level one (`is_outage`),
so a long outage does not spend the entries' MAX_DELIVERIES. Entries a sub-batch committed before the
outage are re-delivered and found stored (no double count).
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
import redis
from django.conf import settings
from django.db import DataError, IntegrityError, InterfaceError, OperationalError, connection, transaction

from billing import histogram
from billing.deadletters import DeadLetter, dead_letters_record, error_text, raw_fields_text
from billing.models import LedgerEntry
from billing.models import UsageEvent as UsageEventRow
from billing.selectors import workspace_balance
from billing.services import ledger_post
from billing.services.topups import after_usage_posted
from contracts import balance, bodies
from contracts.bodies import FIELD as BODIES_FIELD
from contracts.bodies import Bodies
from contracts.events import (
    DEAD_LETTER_METRIC,
    MAX_BIGINT,
    METRICS_KEY,
    USAGE_DEAD_STREAM,
    USAGE_GROUP,
    USAGE_STREAM,
    UsageEvent,
    entry_workspace_and_charge,
)

log = logging.getLogger("turnpike.billing.ingest")

DEFAULT_BATCH_SIZE = 500
MAX_DELIVERIES = 5  # deliveries without a verdict before an entry is dead-lettered untried
# Per-row failures: retrying the same rows can never succeed, so they are isolated and dead-lettered.
DATA_ERRORS: tuple[type[Exception], ...] = (DataError, IntegrityError)
# Failures of the database rather than of the rows: never dead-letter, the entries stay pending.
OUTAGE_ERRORS: tuple[type[Exception], ...] = (OperationalError, InterfaceError)
# SQLSTATE classes of an OperationalError that say nothing about the rows: connection exception (08),
# insufficient resources (53), operator intervention (57: shutdown, restart; except 57014, a statement
# timeout, which a row can cause), transaction rollback (40: deadlock, serialization).
_OUTAGE_SQLSTATE_CLASSES = frozenset({"08", "40", "53", "57"})
EVENT_COLUMNS = (
    "request_id, workspace_id, key_id, credential_id, provider, credential_kind, model_requested, model_served, "
    "status, error_code, input_tokens, cached_input_tokens, cache_write_tokens, output_tokens, reasoning_tokens, "
    "cost_nanos, charge_nanos, priced, estimated, stream, latency_ms, ttfb_ms, end_user, metadata, "
    "started_at, finished_at, ingested_at, clamped, units"
)
_N_COLUMNS = EVENT_COLUMNS.count(",") + 1
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
    "stream_requests",
)
ROLLUP_DIMENSIONS = ("workspace_id", "key_id", "provider", "model", "status_class", "error_code", "hour")


@dataclass(slots=True)
class Rollup:
    """One rollup row's increments: ROLLUP_SUMS in order, and the two histograms."""

    sums: list[int] = field(default_factory=lambda: [0] * len(ROLLUP_SUMS))
    latency: list[int] = field(default_factory=histogram.empty)
    ttfb: list[int] = field(default_factory=histogram.empty)

    def add(self, other: Rollup) -> None:
        for i, n in enumerate(other.sums):
            self.sums[i] += n
        histogram.add(self.latency, other.latency)
        histogram.add(self.ttfb, other.ttfb)


def rollups_merge(into: dict[tuple[Any, ...], Rollup], more: dict[tuple[Any, ...], Rollup]) -> None:
    """Add the increments `more` into `into`, key by key (`into` takes ownership of new ones)."""
    for key, r in more.items():
        t = into.get(key)
        if t is None:
            into[key] = r
        else:
            t.add(r)


@dataclass
class BatchResult:
    read: int = 0
    inserted: int = 0
    acked: int = 0
    dead: int = 0


@dataclass(slots=True)
class Entry:
    """One stream entry as read: its event if it decodes, else why not (`error`)."""

    entry_id: str
    event: UsageEvent | None  # None: deleted from the stream while pending (nothing to store), or undecodable
    raw: dict[Any, Any] = field(default_factory=dict)  # the stream fields as read (kept for a dead letter)
    workspace_id: int | None = None  # whose `pending` holds its charge, if known
    charge_nanos: int = 0  # what acknowledging it releases from that `pending`
    deliveries: int = 1  # times delivered, this delivery included
    error: str = ""  # set: a dead letter
    kept: Bodies | None = None  # the request's bodies, when it was to store them (contracts.bodies)


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


def is_outage(exc: BaseException) -> bool:
    """True when `exc` says Postgres is unreachable, restarting or lost the connection: nothing about the
    rows, so their delivery should not count against MAX_DELIVERIES."""
    if isinstance(exc, InterfaceError):
        return True
    if not isinstance(exc, OperationalError):
        return False
    sqlstate = getattr(exc.__cause__, "sqlstate", None)
    if not sqlstate:
        return True  # no server answer at all: connection refused or lost
    return sqlstate[:2] in _OUTAGE_SQLSTATE_CLASSES and sqlstate != "57014"


def _insert_events(events: list[UsageEvent], *, now: datetime) -> set[str]:
    """Insert, skipping known request ids; returns the ids inserted now."""
    if not events:
        return set()
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
                e.user,
                _json(e.metadata),
                _ts(e.started_at_ms),
                _ts(e.finished_at_ms),
                now,
                e.clamped,
                _json(e.units),
            ]
        )
    placeholders = ", ".join(["(" + ", ".join(["%s"] * _N_COLUMNS) + ")"] * len(events))
    sql = (
        f"INSERT INTO billing_usageevent ({EVENT_COLUMNS}) VALUES {placeholders} "  # noqa: S608 (fixed columns)
        # (request_id, started_at): the partitioned table's unique key (billing.models.UsageEvent)
        "ON CONFLICT (request_id, started_at) DO NOTHING RETURNING request_id"
    )
    with connection.cursor() as cur:
        cur.execute(sql, rows)
        return {row[0] for row in cur.fetchall()}


def _json(value: dict[str, Any]) -> str:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()  # NaN/Infinity as null: jsonb refuses them


def _status_class(status: int) -> str:
    return f"{status // 100}xx"


def rollup_totals(events: Iterable[UsageEvent]) -> dict[tuple[Any, ...], Rollup]:
    """The events' contribution to their hourly rollups, by rollup key (ROLLUP_DIMENSIONS)."""
    totals: dict[tuple[Any, ...], Rollup] = {}
    for e in events:
        hour = _ts(e.started_at_ms).replace(minute=0, second=0, microsecond=0)
        key = (
            e.workspace_id,
            e.key_id,
            e.provider,
            e.model_served or e.model_requested,
            _status_class(e.status),
            e.error_code,
            hour,
        )
        t = totals.get(key)
        if t is None:
            t = totals[key] = Rollup()
        sums = t.sums
        sums[0] += 1
        sums[1] += 0 if e.priced else 1
        sums[2] += 1 if e.estimated else 0
        sums[3] += e.input_tokens
        sums[4] += e.cached_input_tokens
        sums[5] += e.cache_write_tokens
        sums[6] += e.output_tokens
        sums[7] += e.reasoning_tokens
        sums[8] += e.cost_nanos or 0
        sums[9] += e.charge_nanos
        sums[10] += e.latency_ms
        sums[11] += 1 if e.stream else 0
        t.latency[histogram.bucket(e.latency_ms)] += 1
        if e.ttfb_ms is not None:
            t.ttfb[histogram.bucket(e.ttfb_ms)] += 1
    return totals


# Element-wise sum of two histograms (an existing row's may be shorter or empty: rows of an older release).
_HIST_ADD = (
    "ARRAY(SELECT COALESCE(a, 0) + COALESCE(b, 0) "
    "FROM unnest({t}.{c}, EXCLUDED.{c}) WITH ORDINALITY AS t(a, b, i) ORDER BY i)"
)


def daily(totals: dict[tuple[Any, ...], Rollup]) -> dict[tuple[Any, ...], Rollup]:
    """Hourly totals folded into daily ones (the last dimension, the hour, becomes its UTC date)."""
    days: dict[tuple[Any, ...], Rollup] = {}
    for key, t in totals.items():
        day_key = (*key[:-1], key[-1].date())
        d = days.get(day_key)
        if d is None:
            days[day_key] = Rollup(list(t.sums), list(t.latency), list(t.ttfb))
        else:
            d.add(t)
    return days


def rollups_upsert(totals: dict[tuple[Any, ...], Rollup]) -> None:
    """Add hourly `totals` to the hourly and the daily rollup rows (creating the missing ones)."""
    _upsert("billing_usagerollup", "hour", totals)
    _upsert("billing_usagerollupday", "day", daily(totals))


def _upsert(table: str, period: str, totals: dict[tuple[Any, ...], Rollup]) -> None:
    if not totals:
        return
    dimensions = (*ROLLUP_DIMENSIONS[:-1], period)
    columns = ", ".join(dimensions) + ", " + ", ".join(ROLLUP_SUMS) + ", latency_hist, ttfb_hist"
    # Saturating sums: a total pinned at the bigint maximum is wrong but visible; an overflow would fail
    # every later event of the same hour, key and model.
    updates = ", ".join(f"{c} = LEAST({table}.{c}::numeric + EXCLUDED.{c}, {MAX_BIGINT})::bigint" for c in ROLLUP_SUMS)
    updates += ", " + ", ".join(f"{c} = {_HIST_ADD.format(t=table, c=c)}" for c in ("latency_hist", "ttfb_hist"))
    width = len(ROLLUP_DIMENSIONS) + len(ROLLUP_SUMS) + 2
    placeholders = ", ".join(["(" + ", ".join(["%s"] * width) + ")"] * len(totals))
    params: list[Any] = []
    for key, t in sorted(totals.items(), key=lambda kv: repr(kv[0])):  # stable order: no deadlocks
        params.extend([*key, *t.sums, t.latency, t.ttfb])
    sql = (
        f"INSERT INTO {table} ({columns}) VALUES {placeholders} "  # noqa: S608 (fixed names)
        f"ON CONFLICT ({', '.join(dimensions)}) DO UPDATE SET {updates}"
    )
    with connection.cursor() as cur:
        cur.execute(sql, params)


def _post_debits(events: list[UsageEvent], *, now: datetime) -> None:
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
            created_at=now,  # == the events' ingested_at: statements find a debit's events by it
        )


def _insert_bodies(events: list[UsageEvent], kept: dict[str, Bodies]) -> None:
    if not events:
        return
    rows: list[Any] = []
    for e in events:
        b = kept[e.request_id]
        started = _ts(e.started_at_ms)
        rows.extend([e.request_id, e.workspace_id, started, b.request, b.response, b.request_truncated])
        rows.append(b.response_truncated)
    placeholders = ", ".join(["(%s, %s, %s, %s, %s, %s, %s, now())"] * len(events))
    with connection.cursor() as cur:
        cur.execute(
            "INSERT INTO billing_requestbody (request_id, workspace_id, started_at, request, response, "  # noqa: S608
            f"request_truncated, response_truncated, created_at) VALUES {placeholders} "
            "ON CONFLICT (request_id) DO NOTHING",
            rows,
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


def usage_ingest_batch(
    *, events: list[UsageEvent], kept: dict[str, Bodies] | None = None
) -> tuple[set[str], dict[int, tuple[int, int]]]:
    """Store a batch in one transaction (with the bodies in `kept`, by request id, of the requests that
    were to store them). Returns (request ids inserted now, {workspace: (balance, version)})."""
    unique: dict[str, UsageEvent] = {}
    for e in events:
        unique.setdefault(e.request_id, e)
    now = datetime.now(tz=UTC)
    with transaction.atomic():
        inserted = _insert_events(list(unique.values()), now=now)
        fresh = [e for e in unique.values() if e.request_id in inserted]
        rollups_upsert(rollup_totals(fresh))
        _post_debits(fresh, now=now)
        _touch_keys(fresh)
        if kept:
            _insert_bodies([e for e in fresh if e.request_id in kept], kept)
        balances = {ws: workspace_balance(workspace_id=ws) for ws in sorted({e.workspace_id for e in events})}
    return inserted, balances


@dataclass
class _Stored:
    inserted: set[str] = field(default_factory=set)
    balances: dict[int, tuple[int, int]] = field(default_factory=dict)


def _store_isolating(entries: list[Entry], into: _Stored, *, top: bool = True) -> None:
    """Store `entries`; on a data error split the batch in halves until the failing entries are alone and
    mark those (`error`). Anything else (an outage, a bug) propagates with nothing marked."""
    if not entries:
        return
    try:
        inserted, balances = usage_ingest_batch(
            events=[e.event for e in entries if e.event is not None],
            kept={e.event.request_id: e.kept for e in entries if e.event is not None and e.kept is not None},
        )
    except DATA_ERRORS as exc:
        if len(entries) == 1:
            entries[0].error = error_text(exc)
            return
        if top:
            log.warning("a usage batch of %d entries was refused (%s); isolating the bad entries", len(entries), exc)
        middle = len(entries) // 2
        _store_isolating(entries[:middle], into, top=False)
        _store_isolating(entries[middle:], into, top=False)
        return
    into.inserted |= inserted
    for ws, (bal, version) in balances.items():
        if ws not in into.balances or version > into.balances[ws][1]:
            into.balances[ws] = (bal, version)


def _ack(
    client: redis.Redis, entries: list[Entry], balances: dict[int, tuple[int, int]], letters: dict[str, DeadLetter]
) -> int:
    workspaces = sorted({e.workspace_id for e in entries if e.workspace_id is not None} | set(balances))
    index = {ws: i + 4 for i, ws in enumerate(workspaces)}  # KEYS[1..3]: stream, dead stream, metrics
    keys = [USAGE_STREAM, USAGE_DEAD_STREAM, METRICS_KEY, *(balance.bal_key(ws) for ws in workspaces)]
    if not workspaces:
        keys.append(balance.bal_key(0))  # keeps the script's key list valid; only charges of 0 point at it
    args: list[Any] = [USAGE_GROUP, DEAD_LETTER_METRIC, len(entries)]
    for entry in entries:
        letter = letters[entry.entry_id].letter() if entry.entry_id in letters else ""
        if entry.workspace_id is None:
            args.extend([entry.entry_id, 4, 0, letter])
        else:
            args.extend([entry.entry_id, index[entry.workspace_id], entry.charge_nanos, letter])
    for ws in workspaces:
        ledger_version = balances.get(ws)
        args.extend(["", ""] if ledger_version is None else list(ledger_version))
    return int(client.eval(balance.ACK, len(keys), *keys, *args))


def _dead_letter(entry: Entry) -> DeadLetter:
    return DeadLetter(
        entry_id=entry.entry_id,
        workspace_id=entry.workspace_id,
        charge_nanos=entry.charge_nanos,
        error=entry.error,
        raw_fields=raw_fields_text(entry.raw),
        request_id=entry.event.request_id if entry.event is not None else "",
        deliveries=entry.deliveries,
    )


def _decode(entry_id: Any, fields: dict[Any, Any] | None, deliveries: int) -> Entry:
    entry_id = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
    if not fields:  # deleted from the stream while pending: nothing to store, just acknowledge
        return Entry(entry_id, None, deliveries=deliveries)
    text = {_text(k): _text(v) for k, v in fields.items()}
    try:
        event = UsageEvent.from_fields(fields)
    except (KeyError, TypeError, ValueError) as exc:
        workspace_id, charge = entry_workspace_and_charge(text)
        return Entry(entry_id, None, fields, workspace_id, charge, deliveries, f"undecodable: {error_text(exc)}")
    workspace_id, charge = event.workspace_id, event.charge_nanos
    if "w" in text and "c" in text:  # what the proxy added to `pending`, exactly
        workspace_id, charge = entry_workspace_and_charge(text)
    kept = None
    if BODIES_FIELD in text:
        kept = bodies.decode(text[BODIES_FIELD])
        if kept is None:
            log.warning("the bodies of %s do not decode; its usage is stored without them", event.request_id)
    return Entry(entry_id, event, fields, workspace_id, charge, deliveries, kept=kept)


def _text(value: Any) -> str:
    return value.decode("utf-8", "backslashreplace") if isinstance(value, bytes) else str(value)


def process_entries(client: redis.Redis, entries: list[Entry]) -> BatchResult:
    """Store what can be stored, dead-letter the rest, acknowledge all (see the module doc)."""
    over = [e for e in entries if not e.error and e.event is not None and e.deliveries > MAX_DELIVERIES]
    if over:
        stored = set(
            UsageEventRow.objects.filter(request_id__in=[e.event.request_id for e in over if e.event]).values_list(
                "request_id", flat=True
            )
        )
        for e in over:
            if e.event is not None and e.event.request_id not in stored:
                e.error = f"delivered {e.deliveries} times without being stored (it may crash the ingester)"
    storable = [e for e in entries if not e.error and e.event is not None and e.deliveries <= MAX_DELIVERIES]
    result = _Stored()
    _store_isolating(storable, result)
    letters = {e.entry_id: _dead_letter(e) for e in entries if e.error}
    dead_letters_record(letters=list(letters.values()))
    acked = _ack(client, entries, result.balances, letters)
    after_usage_posted(balances=result.balances)  # auto-recharge and low-balance alerts; never raises
    return BatchResult(read=len(entries), inserted=len(result.inserted), acked=acked, dead=len(letters))


def claim_stale(client: redis.Redis, *, consumer: str, idle_ms: int, count: int) -> list[Entry]:
    """Take over entries another consumer read but never acknowledged (it died, or its batch failed).
    An entry already delivered twice or more is taken alone: if it is what kills the consumer, only it is
    re-delivered until MAX_DELIVERIES, and the entries behind it are stored meanwhile."""
    pending: list[dict[str, Any]] = list(
        client.xpending_range(USAGE_STREAM, USAGE_GROUP, min="-", max="+", count=count, idle=idle_ms)
    )
    if not pending:
        return []
    suspects = [p for p in pending if int(p["times_delivered"]) >= 2]
    chosen = suspects[:1] or pending
    delivered = {_text(p["message_id"]): int(p["times_delivered"]) for p in chosen}
    claimed: Any = client.xclaim(
        USAGE_STREAM, USAGE_GROUP, consumer, min_idle_time=idle_ms, message_ids=[p["message_id"] for p in chosen]
    )
    entries = []
    for entry_id, fields in claimed:
        entries.append(_decode(entry_id, fields, delivered.get(_text(entry_id), 0) + 1))
    return entries


def read_new(client: redis.Redis, *, consumer: str, count: int, block_ms: int | None) -> list[Entry]:
    response: Any = client.xreadgroup(USAGE_GROUP, consumer, {USAGE_STREAM: ">"}, count=count, block=block_ms)
    if not response:
        return []
    return [_decode(entry_id, fields, 1) for entry_id, fields in response[0][1]]


def _hand_back(client: redis.Redis, *, consumer: str, entries: list[Entry]) -> None:
    """Undo this delivery in the entries' delivery counts (an outage is not their fault)."""
    by_count: dict[int, list[Any]] = defaultdict(list)
    for e in entries:
        by_count[max(e.deliveries - 1, 0)].append(e.entry_id)
    try:
        for retry_count, ids in by_count.items():
            client.xclaim(
                USAGE_STREAM,
                USAGE_GROUP,
                consumer,
                min_idle_time=0,
                message_ids=ids,
                retrycount=retry_count,
                justid=True,
            )
    except redis.RedisError:
        log.warning("could not hand back the delivery of %d usage entries", len(entries), exc_info=True)


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
            try:
                result = process_entries(client, entries)
            except OUTAGE_ERRORS as exc:
                if is_outage(exc):
                    _hand_back(client, consumer=consumer, entries=entries)
                log.warning("usage ingestion stopped by a database error; %d entries stay pending", len(entries))
                raise
            total.read += result.read
            total.inserted += result.inserted
            total.acked += result.acked
            total.dead += result.dead
    finally:
        client.close()
    return total
