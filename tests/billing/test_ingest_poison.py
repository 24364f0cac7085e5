"""No single bad usage entry can jam ingestion, against real Redis and Postgres.

Each poison input is emitted by one workspace (the way the proxy emits: contracts.balance.SETTLE_AND_EMIT,
or the way an older proxy or a spool file would) in the same batch as another workspace's normal events.
Then: the other workspace's events are stored, rolled up and debited; the poisoned one is either stored
sanitized (flagged `clamped`) or dead-lettered (raw fields and error kept, its charge released from
`pending`, visible to an operator); `pending` of both workspaces is back to 0; running ingest again does
nothing more. Postgres being unreachable, on the other hand, dead-letters nothing.
"""

from __future__ import annotations

import json
import logging
import uuid

import psycopg
import pytest
import redis
from django.db import connection
from django.db.models import Sum

from billing.ingest import MAX_DELIVERIES, claim_stale, ensure_group, is_outage, process_entries, read_new, run_ingest
from billing.models import LedgerEntry, UsageDeadLetter, UsageEvent, UsageRollup
from billing.selectors import ledger_balance_nanos
from billing.services import ledger_grant_post
from contracts import balance
from contracts.events import (
    DEAD_LETTER_METRIC,
    MAX_BIGINT,
    MAX_TOKENS,
    METRICS_KEY,
    USAGE_DEAD_STREAM,
    USAGE_GROUP,
    USAGE_STREAM,
)
from contracts.events import UsageEvent as Event
from tenants.models import GatewayKey, User
from tenants.services import gateway_key_create, workspace_create
from tests.billing.test_ingest import emit, fill, make_event
from tests.proxy.conftest import running_database_url

pytestmark = pytest.mark.django_db(transaction=True)

GRANT = 10_000_000_000


@pytest.fixture
def make_ws(r):
    made = []

    def make(name: str):
        owner = User.objects.create_user(email=f"{uuid.uuid4().hex[:8]}@example.com", password="x" * 12)
        ws = workspace_create(name=name, acting_user=owner)
        ledger_grant_post(workspace=ws, amount_usd="10", idempotency_key=f"grant-{ws.pk}")
        ws.test_key, _ = gateway_key_create(workspace=ws, name="k", acting_user=owner)
        ws.owner = owner
        for key in (balance.bal_key(ws.pk), *balance.inflight_keys(ws.pk)):
            r.delete(key)
        fill(r, ws)
        made.append(ws)
        return ws

    yield make
    for ws in made:
        for key in (balance.bal_key(ws.pk), *balance.inflight_keys(ws.pk)):
            r.delete(key)


def pending(r, ws) -> int:
    return int(r.hget(balance.bal_key(ws.pk), "pending") or 0)


def dead_letters_in_redis(r, entry_ids: set[str]) -> list[dict]:
    found = []
    for _, fields in r.xrange(USAGE_DEAD_STREAM):
        if fields[b"entry"].decode() in entry_ids:
            found.append(json.loads(fields[b"letter"]))
    return found


def emit_fields(r, *, workspace_id: int, request_id: str, charge: int, fields: dict[str, str]) -> str:
    """XADD through SETTLE_AND_EMIT exactly as the proxy does, with fields built by hand."""
    keys = [balance.bal_key(workspace_id), *balance.inflight_keys(workspace_id), USAGE_STREAM]
    args: list = [request_id, charge]
    for name, value in fields.items():
        args.extend((name, value))
    return r.eval(balance.SETTLE_AND_EMIT, len(keys), *keys, *args).decode()


def emit_legacy(r, event: Event) -> str:
    """As a proxy before this change wrote it: version 2 without `w`/`c`, the JSON not sanitized (stdlib
    json, because orjson refuses integers beyond 64 bits)."""
    values = {name: getattr(event, name) for name in Event.__dataclass_fields__ if name != "clamped"}
    fields = {"v": "2", "e": json.dumps(values)}
    return emit_fields(
        r, workspace_id=event.workspace_id, request_id=event.request_id, charge=event.charge_nanos, fields=fields
    )


def emit_flat(r, event: Event) -> str:
    """Version 1 (one field per attribute), not sanitized either: a spool file of an old proxy."""
    return emit_fields(
        r,
        workspace_id=event.workspace_id,
        request_id=event.request_id,
        charge=event.charge_nanos,
        fields=event.to_flat_fields(),
    )


EMITTERS = {"proxy": lambda r, e: emit(r, e), "legacy-v2": emit_legacy, "v1": emit_flat}


def normal_events(r, ws, n: int = 4) -> list[Event]:
    events = [make_event(ws, ws.test_key, charge=1_000 * (i + 1)) for i in range(n)]
    for e in events:
        emit(r, e)
    return events


def assert_other_workspace_ingested(ws, events: list[Event]) -> None:
    stored = set(UsageEvent.objects.filter(workspace=ws).values_list("request_id", flat=True))
    assert stored == {e.request_id for e in events}
    total = sum(e.charge_nanos for e in events)
    assert UsageRollup.objects.filter(workspace=ws).aggregate(n=Sum("requests"))["n"] == len(events)
    assert ledger_balance_nanos(workspace=ws) == GRANT - total


def assert_nothing_more_to_do(r, *workspaces) -> None:
    for ws in workspaces:
        assert pending(r, ws) == 0
    assert r.xpending(USAGE_STREAM, USAGE_GROUP)["pending"] == 0
    counts = (UsageEvent.objects.count(), UsageDeadLetter.objects.count(), LedgerEntry.objects.count())
    again = run_ingest(claim_idle_ms=0)
    assert (again.read, again.inserted, again.acked, again.dead) == (0, 0, 0, 0)
    assert (UsageEvent.objects.count(), UsageDeadLetter.objects.count(), LedgerEntry.objects.count()) == counts


# --- poison that is stored sanitized -------------------------------------------------------------------------


POISON_STORED = {
    "nul-in-user": lambda ws: {"user": "x\x00y"},
    "nul-in-metadata": lambda ws: {"metadata": {"team\x00": "a\x00b", "nested": {"k": "v\x00"}}},
    "tokens-above-2^63": lambda ws: {"input_tokens": 2**64 + 5, "output_tokens": 2**70, "cost_nanos": None},
    "negative-and-huge-latency": lambda ws: {"latency_ms": 2**40, "ttfb_ms": -3, "status": 70_000},
    "overlong-strings": lambda ws: {"model_served": "m" * 1000, "error_code": "e" * 100, "user": "u" * 5000},
}


@pytest.mark.parametrize("how", list(EMITTERS))
@pytest.mark.parametrize("poison", list(POISON_STORED))
def test_poison_that_fits_once_sanitized_is_stored_clamped_and_others_are_unaffected(r, make_ws, poison, how, caplog):
    poisoned, other = make_ws("Poisoned"), make_ws("Other")
    good = normal_events(r, other, 2)
    bad = make_event(poisoned, poisoned.test_key, charge=300)
    for name, value in POISON_STORED[poison](poisoned).items():
        setattr(bad, name, value)
    request_id = bad.request_id
    with caplog.at_level(logging.WARNING, logger="turnpike.events"):
        EMITTERS[how](r, bad)
    good += normal_events(r, other, 2)

    with caplog.at_level(logging.WARNING, logger="turnpike.events"):
        result = run_ingest(claim_idle_ms=60_000)

    assert result.dead == 0 and result.read == 5 and result.inserted == 5
    assert_other_workspace_ingested(other, good)
    row = UsageEvent.objects.get(workspace=poisoned)
    assert row.request_id == request_id
    assert row.clamped is True
    assert "\x00" not in row.end_user and "\x00" not in json.dumps(row.metadata)
    assert len(row.model_served) <= 200 and len(row.end_user) <= 256 and len(row.error_code) <= 64
    assert 0 <= row.input_tokens <= MAX_TOKENS and 0 <= row.output_tokens <= MAX_TOKENS
    assert 0 <= row.latency_ms < 2**31 and (row.ttfb_ms or 0) >= 0 and row.status <= 999
    if poison == "nul-in-user":
        assert row.end_user == "xy"
    if poison == "nul-in-metadata":
        assert row.metadata == {"team": "ab", "nested": {"k": "v"}}
    if poison == "tokens-above-2^63":
        assert row.input_tokens == row.output_tokens == MAX_TOKENS
    assert ledger_balance_nanos(workspace=poisoned) == GRANT - 300  # the request is still charged
    assert any("clamped" in rec.getMessage() and request_id in rec.getMessage() for rec in caplog.records)
    assert_nothing_more_to_do(r, poisoned, other)


# --- poison that Postgres refuses even sanitized: isolated and dead-lettered ------------------------------------


def test_an_event_whose_gateway_key_was_deleted_is_dead_lettered_alone(r, make_ws, caplog):
    poisoned, other = make_ws("Poisoned"), make_ws("Other")
    doomed, _ = gateway_key_create(workspace=poisoned, name="doomed", acting_user=poisoned.owner)
    good = normal_events(r, other, 3)
    bad = make_event(poisoned, doomed, charge=700)
    ok = make_event(poisoned, poisoned.test_key, charge=50)  # the same workspace's good events still count
    emit(r, bad)
    emit(r, ok)
    good += normal_events(r, other, 3)
    GatewayKey.objects.filter(pk=doomed.pk).delete()  # e.g. an operator removed the row in admin
    metric_before = int(r.hget(METRICS_KEY, DEAD_LETTER_METRIC) or 0)

    with caplog.at_level(logging.ERROR, logger="turnpike.billing.ingest"):
        result = run_ingest(claim_idle_ms=60_000)

    assert (result.read, result.inserted, result.dead) == (8, 7, 1)
    assert_other_workspace_ingested(other, good)
    assert list(UsageEvent.objects.filter(workspace=poisoned).values_list("request_id", flat=True)) == [ok.request_id]
    assert ledger_balance_nanos(workspace=poisoned) == GRANT - 50  # the dead letter's 700 is not debited...
    assert pending(r, poisoned) == 0  # ...and not held either
    letter = UsageDeadLetter.objects.get()
    assert (letter.workspace_id, letter.request_id, letter.charge_nanos) == (poisoned.pk, bad.request_id, 700)
    assert "IntegrityError" in letter.error and "key_id" in letter.error
    assert bad.request_id in letter.raw_fields  # the raw entry is kept
    in_redis = dead_letters_in_redis(r, {letter.entry_id})
    assert len(in_redis) == 1 and in_redis[0]["request_id"] == bad.request_id
    assert int(r.hget(METRICS_KEY, DEAD_LETTER_METRIC)) == metric_before + 1
    lines = [rec.getMessage() for rec in caplog.records if rec.levelno == logging.ERROR]
    assert len(lines) == 1 and letter.entry_id in lines[0] and str(poisoned.pk) in lines[0]
    assert "IntegrityError" in lines[0]
    assert_nothing_more_to_do(r, poisoned, other)


def test_absurd_counts_cannot_overflow_their_hourly_rollup(r, make_ws):
    """Token counts are clamped per event far below the bigint limit, and rollup sums saturate instead of
    overflowing: a rollup row already near the limit (years of absurd counts) still takes every new event,
    and no later event of that hour, key and model is refused."""
    poisoned, other = make_ws("Poisoned"), make_ws("Other")
    first = make_event(poisoned, poisoned.test_key, charge=10)
    second = make_event(poisoned, poisoned.test_key, charge=20)
    first.input_tokens = second.input_tokens = 2**64
    good = normal_events(r, other, 5)
    emit(r, first)
    good += normal_events(r, other, 5)
    assert run_ingest(claim_idle_ms=60_000).inserted == 11
    rollup = UsageRollup.objects.get(workspace=poisoned)
    assert rollup.input_tokens == MAX_TOKENS
    UsageRollup.objects.filter(pk=rollup.pk).update(input_tokens=MAX_BIGINT - 5)

    emit(r, second)
    good += normal_events(r, other, 5)
    result = run_ingest(claim_idle_ms=60_000)

    assert (result.read, result.inserted, result.dead) == (6, 6, 0)
    assert_other_workspace_ingested(other, good)
    assert UsageEvent.objects.filter(workspace=poisoned).count() == 2
    assert UsageRollup.objects.get(pk=rollup.pk).input_tokens == MAX_BIGINT  # pinned, not overflowed
    assert UsageRollup.objects.get(pk=rollup.pk).requests == 2
    assert ledger_balance_nanos(workspace=poisoned) == GRANT - 30
    assert_nothing_more_to_do(r, poisoned, other)


# --- entries that cannot be decoded, or that never get a verdict ------------------------------------------------


@pytest.mark.parametrize(
    "garbage",
    [
        {"e": "{not json", "extra": "\x00"},
        {"e": json.dumps({"request_id": "r", "workspace_id": "not a number"})},
        {"e": "[1, 2, 3]"},
    ],
    ids=["broken-json", "wrong-types", "not-an-object"],
)
def test_an_undecodable_entry_is_dead_lettered_and_its_charge_released(r, make_ws, garbage):
    poisoned, other = make_ws("Poisoned"), make_ws("Other")
    good = normal_events(r, other, 2)
    fields = {"v": "2", "w": str(poisoned.pk), "c": "4321", **garbage}
    entry_id = emit_fields(r, workspace_id=poisoned.pk, request_id="req_garbage", charge=4321, fields=fields)
    good += normal_events(r, other, 2)
    assert pending(r, poisoned) == 4321

    result = run_ingest(claim_idle_ms=60_000)

    assert (result.read, result.inserted, result.dead) == (5, 4, 1)
    assert_other_workspace_ingested(other, good)
    letter = UsageDeadLetter.objects.get(entry_id=entry_id)
    assert (letter.workspace_id, letter.charge_nanos) == (poisoned.pk, 4321)
    assert letter.error.startswith("undecodable")
    assert json.loads(letter.raw_fields)["w"] == str(poisoned.pk)
    assert ledger_balance_nanos(workspace=poisoned) == GRANT  # released, not debited
    assert_nothing_more_to_do(r, poisoned, other)


def test_raw_garbage_without_workspace_is_dead_lettered_and_acknowledged(r, make_ws):
    other = make_ws("Other")
    good = normal_events(r, other, 2)
    entry_id = r.xadd(USAGE_STREAM, {b"\xff\xfe": b"\x00\xc3\x28 binary"}).decode()

    result = run_ingest(claim_idle_ms=60_000)

    assert (result.read, result.dead) == (3, 1)
    assert_other_workspace_ingested(other, good)
    letter = UsageDeadLetter.objects.get(entry_id=entry_id)
    assert letter.workspace_id is None and letter.charge_nanos == 0
    assert "\\u0000" in letter.raw_fields  # kept, escaped, so Postgres accepts it
    assert_nothing_more_to_do(r, other)


def test_an_entry_over_the_delivery_limit_is_dead_lettered_untried(r, make_ws):
    """What a worker that crashes on an entry leaves behind: the entry pending, delivered again and again.
    Past MAX_DELIVERIES it is dead-lettered without being tried, and the others are stored."""
    poisoned, other = make_ws("Poisoned"), make_ws("Other")
    crasher = make_event(poisoned, poisoned.test_key, charge=900)
    emit(r, crasher)
    good = normal_events(r, other, 3)
    ensure_group(r)
    first = read_new(r, consumer="crashed", count=1, block_ms=None)
    assert [e.event.request_id for e in first] == [crasher.request_id]
    # it was claimed by one dying consumer after another
    r.xclaim(USAGE_STREAM, USAGE_GROUP, "crashed", 0, [first[0].entry_id], retrycount=MAX_DELIVERIES)

    result = run_ingest(claim_idle_ms=0)

    assert result.dead == 1 and result.inserted == 3
    assert_other_workspace_ingested(other, good)
    letter = UsageDeadLetter.objects.get()
    assert letter.request_id == crasher.request_id and letter.deliveries == MAX_DELIVERIES + 1
    assert "delivered" in letter.error
    assert not UsageEvent.objects.filter(workspace=poisoned).exists()
    assert ledger_balance_nanos(workspace=poisoned) == GRANT
    assert_nothing_more_to_do(r, poisoned, other)


def test_an_entry_over_the_limit_that_was_already_stored_is_just_acknowledged(r, make_ws):
    """A consumer committed it and died before acknowledging, every time: it is not a dead letter."""
    ws = make_ws("Acme")
    event = make_event(ws, ws.test_key, charge=800)
    emit(r, event)
    ensure_group(r)
    from billing.ingest import usage_ingest_batch

    entries = read_new(r, consumer="crashed", count=1, block_ms=None)
    usage_ingest_batch(events=[entries[0].event])
    r.xclaim(USAGE_STREAM, USAGE_GROUP, "crashed", 0, [entries[0].entry_id], retrycount=MAX_DELIVERIES + 3)

    result = run_ingest(claim_idle_ms=0)

    assert (result.dead, result.acked) == (0, 1)
    assert not UsageDeadLetter.objects.exists()
    assert ledger_balance_nanos(workspace=ws) == GRANT - 800
    assert_nothing_more_to_do(r, ws)


def test_an_entry_delivered_twice_is_reclaimed_alone(r, make_ws):
    """So that an entry that kills the worker is retried without dragging the entries behind it along."""
    ws = make_ws("Acme")
    events = normal_events(r, ws, 3)
    ensure_group(r)
    entries = read_new(r, consumer="crashed", count=10, block_ms=None)
    r.xclaim(USAGE_STREAM, USAGE_GROUP, "crashed", 0, [entries[1].entry_id], retrycount=2)

    alone = claim_stale(r, consumer="survivor", idle_ms=0, count=10)

    assert [e.entry_id for e in alone] == [entries[1].entry_id] and alone[0].deliveries == 3
    process_entries(r, alone)
    rest = claim_stale(r, consumer="survivor", idle_ms=0, count=10)
    assert [e.entry_id for e in rest] == [entries[0].entry_id, entries[2].entry_id]
    process_entries(r, rest)
    assert_other_workspace_ingested(ws, events)
    assert_nothing_more_to_do(r, ws)


# --- an outage is not a bad entry ------------------------------------------------------------------------------


def _kill_our_connection() -> None:
    connection.ensure_connection()
    pid = connection.connection.info.backend_pid
    with psycopg.connect(running_database_url(), autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", [pid])


def test_postgres_going_away_dead_letters_nothing_and_keeps_the_entries_pending(r, make_ws):
    ws = make_ws("Acme")
    events = normal_events(r, ws, 3)
    _kill_our_connection()

    with pytest.raises(Exception) as raised:
        run_ingest(claim_idle_ms=60_000)

    assert is_outage(raised.value), raised.value
    connection.close()  # what Celery does after a failed task; the next run connects afresh
    assert not UsageDeadLetter.objects.exists() and not UsageEvent.objects.exists()
    assert pending(r, ws) == sum(e.charge_nanos for e in events)
    still = r.xpending_range(USAGE_STREAM, USAGE_GROUP, min="-", max="+", count=10)
    assert len(still) == 3
    assert all(p["times_delivered"] == 0 for p in still)  # the failed delivery was handed back

    result = run_ingest(claim_idle_ms=0)  # Postgres is back

    assert (result.inserted, result.dead) == (3, 0)
    assert_other_workspace_ingested(ws, events)
    assert_nothing_more_to_do(r, ws)


def test_only_connection_failures_count_as_outages():
    """A statement timeout can be caused by a row (it is retried up to MAX_DELIVERIES, then dead-lettered);
    a terminated connection cannot; a data error is about the rows."""
    from django.db import DataError, OperationalError

    with connection.cursor() as cur:
        cur.execute("SET statement_timeout = 50")
        with pytest.raises(OperationalError) as timeout:
            cur.execute("SELECT pg_sleep(2)")
        cur.execute("SET statement_timeout = 0")
        with pytest.raises(DataError) as data:
            cur.execute("SELECT 1 / 0")
    assert not is_outage(timeout.value)
    assert not is_outage(data.value)
    _kill_our_connection()
    with pytest.raises(OperationalError) as gone, connection.cursor() as cur:
        cur.execute("SELECT 1")
    assert is_outage(gone.value)
    connection.close()


# --- what an operator sees ------------------------------------------------------------------------------------


def test_dead_letters_are_listed_in_django_admin(r, make_ws, client):
    ws = make_ws("Acme")
    entry_id = emit_fields(
        r, workspace_id=ws.pk, request_id="req_x", charge=5, fields={"v": "2", "w": str(ws.pk), "c": "5", "e": "!"}
    )
    run_ingest(claim_idle_ms=60_000)
    admin_user = User.objects.create_superuser(email="ops@example.com", password="x" * 12)
    client.force_login(admin_user)

    listing = client.get("/admin/billing/usagedeadletter/")
    assert listing.status_code == 200 and entry_id in listing.content.decode()
    found = client.get("/admin/billing/usagedeadletter/", {"q": entry_id})
    assert found.status_code == 200 and "undecodable" in found.content.decode()
    assert client.get("/admin/billing/usagedeadletter/", {"q": "no such thing"}).status_code == 200
    letter = UsageDeadLetter.objects.get(entry_id=entry_id)
    detail = client.get(f"/admin/billing/usagedeadletter/{letter.pk}/change/")
    assert detail.status_code == 200 and "undecodable" in detail.content.decode()
    assert client.get("/admin/billing/usagedeadletter/add/").status_code == 403


# --- the ACK script ------------------------------------------------------------------------------------------


def _ack(r, ws_id: int, entry_id: str, charge, ledger="", version=""):
    keys = [USAGE_STREAM, USAGE_DEAD_STREAM, METRICS_KEY, balance.bal_key(ws_id)]
    return r.eval(
        balance.ACK, len(keys), *keys, USAGE_GROUP, DEAD_LETTER_METRIC, 1, entry_id, 4, charge, "", ledger, version
    )


def test_ack_never_drives_pending_of_a_lost_balance_negative(r, make_ws):
    ws = make_ws("Acme")
    event = make_event(ws, ws.test_key, charge=600)
    emit(r, event)
    ensure_group(r)
    [entry] = read_new(r, consumer="c", count=1, block_ms=None)
    r.delete(balance.bal_key(ws.pk))  # evicted, or Redis lost it

    assert _ack(r, ws.pk, entry.entry_id, 600) == 1

    assert r.hget(balance.bal_key(ws.pk), "pending") is None  # no fresh hash with pending = -600


def test_ack_refuses_malformed_amounts_and_writes_nothing(r, make_ws):
    ws = make_ws("Acme")
    emit(r, make_event(ws, ws.test_key, charge=600))
    ensure_group(r)
    [entry] = read_new(r, consumer="c", count=1, block_ms=None)
    for charge in ("1e+17", "-5", "12.5", "99999999999999999999", ""):
        with pytest.raises(redis.ResponseError):
            _ack(r, ws.pk, entry.entry_id, charge)
    with pytest.raises(redis.ResponseError):
        _ack(r, ws.pk, entry.entry_id, 600, ledger="1e9", version="3")
    assert r.xpending(USAGE_STREAM, USAGE_GROUP)["pending"] == 1  # not acknowledged
    assert pending(r, ws) == 600
    assert _ack(r, ws.pk, entry.entry_id, "600") == 1
    assert pending(r, ws) == 0
