"""The usage event table is partitioned by month: queries by time read only their months, the months
ahead are created before they are needed (moving any early arrivals out of the default partition),
retention drops whole months and nothing else, and a re-delivered event is still stored once."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime

import pytest
from django.db import connection

from billing import histogram
from billing.ingest import usage_ingest_batch
from billing.models import UsageEvent as StoredEvent
from billing.models import UsageRollup, UsageRollupDay
from billing.partitions import partitions_list, usage_partitions_drop_expired, usage_partitions_ensure
from contracts.events import UsageEvent
from tests.dashboard.conftest import World

pytestmark = pytest.mark.django_db


def event(world: World, *, at: datetime, latency: int = 100, ttfb: int | None = 40, status: int = 200) -> UsageEvent:
    ms = int(at.timestamp() * 1000)
    return UsageEvent(
        request_id=f"req_{uuid.uuid4().hex}",
        workspace_id=world.workspace.pk,
        key_id=world.key.pk,
        provider="openai",
        credential_id=world.credential.pk,
        credential_kind="byok",
        model_requested="openai/gpt-4o-mini",
        model_served="gpt-4o-mini",
        status=status,
        error_code="" if status == 200 else "rate_limited",
        input_tokens=10,
        output_tokens=5,
        cost_nanos=1000,
        charge_nanos=1000,
        latency_ms=latency,
        ttfb_ms=ttfb,
        stream=ttfb is not None,
        started_at_ms=ms,
        finished_at_ms=ms + latency,
    )


def partition_of(request_id: str) -> str:
    with connection.cursor() as cur:
        cur.execute("SELECT tableoid::regclass::text FROM billing_usageevent WHERE request_id = %s", [request_id])
        return cur.fetchone()[0]


def test_events_land_in_their_month_and_far_ones_in_the_default(world_a):
    now = datetime.now(tz=UTC)
    current, far = event(world_a, at=now), event(world_a, at=datetime(2041, 5, 3, tzinfo=UTC))
    usage_ingest_batch(events=[current, far])
    assert partition_of(current.request_id) == f"billing_usageevent_p{now:%Y%m}"
    assert partition_of(far.request_id) == "billing_usageevent_default"

    # the beat task reaches May 2041: the early arrival moves out of the default into its own month
    created = usage_partitions_ensure(now=datetime(2041, 5, 1, tzinfo=UTC), months_ahead=0)
    assert created == ["billing_usageevent_p204105"]
    assert partition_of(far.request_id) == "billing_usageevent_p204105"
    assert StoredEvent.objects.filter(request_id=far.request_id).count() == 1
    assert usage_partitions_ensure(now=datetime(2041, 5, 1, tzinfo=UTC), months_ahead=0) == []  # idempotent


def test_a_redelivered_event_is_stored_once(world_a):
    e = event(world_a, at=datetime.now(tz=UTC))
    first, _ = usage_ingest_batch(events=[e])
    again, _ = usage_ingest_batch(events=[e])
    assert first == {e.request_id} and again == set()
    assert StoredEvent.objects.filter(request_id=e.request_id).count() == 1
    assert UsageRollup.objects.get(workspace=world_a.workspace).requests == 1


def test_time_bounded_queries_read_only_their_months(world_a):
    now = datetime.now(tz=UTC)
    with connection.cursor() as cur:
        cur.execute(
            "EXPLAIN SELECT count(*) FROM billing_usageevent WHERE workspace_id = %s AND started_at >= %s "
            "AND started_at < %s",
            [world_a.workspace.pk, now.replace(day=1, hour=0, minute=0, second=0, microsecond=0), now],
        )
        plan = "\n".join(row[0] for row in cur.fetchall())
    assert f"billing_usageevent_p{now:%Y%m}" in plan
    assert "billing_usageevent_default" not in plan and "p2041" not in plan


def test_retention_drops_whole_months_and_keeps_the_rollups(world_a):
    old_month = datetime(2041, 1, 15, tzinfo=UTC)
    usage_partitions_ensure(now=old_month, months_ahead=1)  # January and February 2041
    old, newer = event(world_a, at=old_month), event(world_a, at=datetime(2041, 2, 10, tzinfo=UTC))
    usage_ingest_batch(events=[old, newer])

    # 400 days before 20 March 2042 is 13 February 2041: January 2041 had ended by then, February had not
    dropped = usage_partitions_drop_expired(now=datetime(2042, 3, 20, tzinfo=UTC), retention_days=400)
    assert "billing_usageevent_p204101" in dropped and "billing_usageevent_p204102" not in dropped
    assert not StoredEvent.objects.filter(request_id=old.request_id).exists()
    assert StoredEvent.objects.filter(request_id=newer.request_id).exists()
    assert "billing_usageevent_p204101" not in partitions_list()
    # the rollups are kept forever: January's totals are still there
    assert UsageRollupDay.objects.filter(workspace=world_a.workspace, day=old_month.date()).get().requests == 1
    assert usage_partitions_drop_expired(now=datetime(2042, 3, 20, tzinfo=UTC), retention_days=0) == []


def test_rollups_carry_latency_histograms_that_add_up(world_a):
    now = datetime.now(tz=UTC)
    latencies = [20, 95, 110, 480, 2600]
    usage_ingest_batch(events=[event(world_a, at=now, latency=ms, ttfb=ms // 2) for ms in latencies[:3]])
    usage_ingest_batch(
        events=[event(world_a, at=now, latency=ms, ttfb=None, status=429) for ms in latencies[3:]]
        + [event(world_a, at=now, latency=latencies[0], ttfb=10)]
    )
    hourly = list(UsageRollup.objects.filter(workspace=world_a.workspace))
    assert {(r.status_class, r.error_code, r.requests) for r in hourly} == {("2xx", "", 4), ("4xx", "rate_limited", 2)}
    merged = histogram.empty()
    ttfb = histogram.empty()
    for r in hourly:
        histogram.add(merged, r.latency_hist)
        histogram.add(ttfb, r.ttfb_hist)
    assert sum(merged) == 6 and sum(ttfb) == 4  # requests without a first byte are not in the ttfb histogram
    for ms in [*latencies, latencies[0]]:
        assert merged[histogram.bucket(ms)] >= 1
    p50 = histogram.percentile(merged, 0.5)
    assert p50 is not None and 90 <= p50 < 120  # the 3rd of 6 values is 95 ms, in the [90, 100) bucket
    assert histogram.percentile(merged, 1.0) == 3000  # the top of 2,600's [2500, 3000) bucket
    daily = UsageRollupDay.objects.filter(workspace=world_a.workspace)
    assert sum(d.requests for d in daily) == 6 and sum(d.stream_requests for d in daily) == 4


def test_percentiles_of_an_empty_histogram_are_none():
    assert histogram.percentile(histogram.empty(), 0.5) is None
    assert histogram.percentile([], 0.99) is None
    big = histogram.empty()
    big[-1] = 3
    assert histogram.percentile(big, 0.5) == histogram.BOUNDS_MS[-1]  # the open last bucket reads as its floor


def test_a_batch_spread_over_three_months_is_stored_in_one_transaction(world_a):
    # a batch spread over three months (a late spool replay) is stored in one transaction
    start = time.time()
    usage_ingest_batch(
        events=[event(world_a, at=datetime.fromtimestamp(start - d * 86400, tz=UTC)) for d in (0, 31, 62)]
    )
    assert StoredEvent.objects.filter(workspace=world_a.workspace).count() == 3
