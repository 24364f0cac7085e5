"""The usage pipeline's accounting, against real Redis and Postgres: events emitted the way the proxy
emits them (proxy.balance Lua) are ingested exactly once, rollups equal the events, the ledger is
debited by the sum of charges, and the Redis balance stays equal to ledger - pending - inflight."""

from __future__ import annotations

import time
import uuid

import pytest
from django.db.models import Sum

from billing.ingest import claim_stale, ensure_group, process_entries, read_new, run_ingest
from billing.models import LedgerEntry, UsageEvent, UsageRollup
from billing.selectors import ledger_balance_nanos, workspace_balance
from billing.services import ledger_grant_post
from contracts import balance
from contracts.events import USAGE_GROUP, USAGE_STREAM
from contracts.events import UsageEvent as Event
from tenants.models import GatewayKey, User
from tenants.services import gateway_key_create, workspace_create

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def workspace(r):
    owner = User.objects.create_user(email=f"{uuid.uuid4().hex[:8]}@example.com", password="x" * 12)
    ws = workspace_create(name="Acme", acting_user=owner)
    ledger_grant_post(workspace=ws, amount_usd="10", idempotency_key=f"grant-{ws.pk}")
    key, _ = gateway_key_create(workspace=ws, name="k", acting_user=owner)
    ws.test_key = key
    for name in (balance.bal_key(ws.pk), *balance.inflight_keys(ws.pk)):
        r.delete(name)
    yield ws
    for name in (balance.bal_key(ws.pk), *balance.inflight_keys(ws.pk)):
        r.delete(name)


def make_event(ws, key: GatewayKey, *, charge: int, status: int = 200, request_id: str | None = None) -> Event:
    now_ms = int(time.time() * 1000)
    return Event(
        request_id=request_id or f"req_{uuid.uuid4().hex}",
        workspace_id=ws.pk,
        key_id=key.pk,
        provider="openai",
        credential_id=None,
        credential_kind="byok",
        model_requested="openai/gpt-4o-mini",
        model_served="gpt-4o-mini",
        status=status,
        input_tokens=10,
        output_tokens=5,
        cost_nanos=charge,
        charge_nanos=charge,
        latency_ms=12,
        started_at_ms=now_ms,
        finished_at_ms=now_ms + 12,
    )


def reserve(r, ws, request_id: str, amount: int) -> list[int]:
    keys = [balance.bal_key(ws.pk), *balance.inflight_keys(ws.pk)]
    return r.eval(balance.RESERVE, 3, *keys, request_id, amount, int(time.time() * 1000), 60_000)


def fill(r, ws) -> None:
    ledger, version = workspace_balance(workspace_id=ws.pk)
    r.eval(balance.FILL, 1, balance.bal_key(ws.pk), ledger, version)


def emit(r, event: Event) -> None:
    keys = [balance.bal_key(event.workspace_id), *balance.inflight_keys(event.workspace_id), USAGE_STREAM]
    args: list = [event.request_id, event.charge_nanos]
    for name, value in event.to_fields().items():
        args.extend((name, value))
    r.eval(balance.SETTLE_AND_EMIT, len(keys), *keys, *args)


def available(r, ws) -> int:
    ledger, pending, inflight = r.hmget(balance.bal_key(ws.pk), "ledger", "pending", "inflight")
    return int(ledger) - int(pending or 0) - int(inflight or 0)


def test_reserve_misses_until_filled_then_tracks_pending(r, workspace):
    assert reserve(r, workspace, "a", 100)[0] == -1
    fill(r, workspace)
    status, avail = reserve(r, workspace, "a", 100)
    assert (status, avail) == (1, 10_000_000_000)
    assert available(r, workspace) == 10_000_000_000 - 100  # reserved
    emit(r, make_event(workspace, workspace.test_key, charge=40, request_id="a"))
    assert available(r, workspace) == 10_000_000_000 - 40  # reservation released, real charge pending


def test_ingest_stores_once_rolls_up_and_debits_the_ledger(r, workspace):
    fill(r, workspace)
    events = [make_event(workspace, workspace.test_key, charge=1_000 * (i + 1)) for i in range(5)]
    events.append(make_event(workspace, workspace.test_key, charge=0, status=502))
    for e in events:
        emit(r, e)
    before = available(r, workspace)

    result = run_ingest(claim_idle_ms=60_000)

    assert result.inserted == 6 and result.acked == 6
    assert UsageEvent.objects.filter(workspace=workspace).count() == 6
    total = sum(e.charge_nanos for e in events)
    assert ledger_balance_nanos(workspace=workspace) == 10_000_000_000 - total
    usage_entries = LedgerEntry.objects.filter(workspace=workspace, kind=LedgerEntry.Kind.USAGE)
    assert usage_entries.count() == 1 and usage_entries.get().amount_nanos == -total
    rollups = UsageRollup.objects.filter(workspace=workspace)
    assert rollups.aggregate(n=Sum("requests"))["n"] == 6
    assert rollups.get(status_class="5xx").requests == 1
    assert rollups.aggregate(c=Sum("charge_nanos"))["c"] == total
    # the Redis view did not move: the charge went from "pending" into the ledger
    assert available(r, workspace) == before
    assert int(r.hget(balance.bal_key(workspace.pk), "pending")) == 0
    assert int(r.hget(balance.bal_key(workspace.pk), "ledger")) == 10_000_000_000 - total
    workspace.test_key.refresh_from_db()
    assert workspace.test_key.last_used_at is not None


def test_a_consumer_that_dies_after_commit_does_not_double_count(r, workspace):
    """The consumer commits to Postgres and dies before acknowledging: another consumer reclaims the
    entries, finds them stored, debits nothing more, and removes the pending charge exactly once."""
    fill(r, workspace)
    events = [make_event(workspace, workspace.test_key, charge=500) for _ in range(3)]
    for e in events:
        emit(r, e)
    ensure_group(r)
    entries = read_new(r, consumer="dies", count=10, block_ms=None)
    from billing.ingest import usage_ingest_batch

    usage_ingest_batch(events=[e.event for e in entries])  # committed, never acknowledged

    reclaimed = claim_stale(r, consumer="survivor", idle_ms=0, count=10)
    assert len(reclaimed) == 3
    result = process_entries(r, reclaimed)

    assert result.inserted == 0 and result.acked == 3
    assert UsageEvent.objects.filter(workspace=workspace).count() == 3
    assert ledger_balance_nanos(workspace=workspace) == 10_000_000_000 - 1_500
    assert int(r.hget(balance.bal_key(workspace.pk), "pending")) == 0
    assert available(r, workspace) == 10_000_000_000 - 1_500
    assert r.xpending(USAGE_STREAM, USAGE_GROUP)["pending"] == 0


def test_same_event_emitted_twice_is_stored_and_charged_once(r, workspace):
    fill(r, workspace)
    event = make_event(workspace, workspace.test_key, charge=700)
    emit(r, event)
    emit(r, event)  # e.g. a spool replayed after a crash
    assert int(r.hget(balance.bal_key(workspace.pk), "pending")) == 1_400
    run_ingest(claim_idle_ms=60_000)
    assert UsageEvent.objects.filter(request_id=event.request_id).count() == 1
    assert ledger_balance_nanos(workspace=workspace) == 10_000_000_000 - 700
    assert int(r.hget(balance.bal_key(workspace.pk), "pending")) == 0
    assert available(r, workspace) == 10_000_000_000 - 700


def test_zero_balance_is_refused_and_expired_reservations_are_released(r, workspace):
    fill(r, workspace)
    keys = [balance.bal_key(workspace.pk), *balance.inflight_keys(workspace.pk)]
    now = int(time.time() * 1000)
    assert r.eval(balance.RESERVE, 3, *keys, "big", 10_000_000_000, now, 1)[0] == 1
    assert r.eval(balance.RESERVE, 3, *keys, "next", 1, now, 60_000)[0] == 0  # nothing available
    # the first reservation expires (its worker died): it is released on the next check
    assert r.eval(balance.RESERVE, 3, *keys, "later", 1, now + 10, 60_000)[0] == 1


def test_fill_only_moves_forward(r, workspace):
    fill(r, workspace)
    ledger, version = workspace_balance(workspace_id=workspace.pk)
    assert r.eval(balance.FILL, 1, balance.bal_key(workspace.pk), 1, version - 1) == 0
    assert int(r.hget(balance.bal_key(workspace.pk), "ledger")) == ledger


def test_events_in_the_old_flat_encoding_are_still_ingested(r, workspace):
    """An event streamed by a proxy of the previous version (one field per attribute) during a deploy."""
    fill(r, workspace)
    event = make_event(workspace, workspace.test_key, charge=900)
    keys = [balance.bal_key(workspace.pk), *balance.inflight_keys(workspace.pk), USAGE_STREAM]
    args: list = [event.request_id, event.charge_nanos]
    for name, value in event.to_flat_fields().items():
        args.extend((name, value))
    r.eval(balance.SETTLE_AND_EMIT, len(keys), *keys, *args)
    run_ingest(claim_idle_ms=60_000)
    stored = UsageEvent.objects.get(request_id=event.request_id)
    assert (stored.charge_nanos, stored.input_tokens, stored.output_tokens) == (900, 10, 5)
    assert ledger_balance_nanos(workspace=workspace) == 10_000_000_000 - 900
