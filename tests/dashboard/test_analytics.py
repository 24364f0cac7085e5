"""The analytics page: totals, charts' tables, percentiles, comparison with the previous period, ranges, filters
and breakdowns, from usage ingested by the real pipeline code; never another workspace's usage."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta
from html import unescape

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from billing import histogram
from billing.ingest import usage_ingest_batch
from contracts.events import UsageEvent
from tenants.roles import Role
from tests.dashboard.conftest import client_for

pytestmark = pytest.mark.django_db


def ev(world, at: datetime, **fields) -> UsageEvent:
    ms = int(at.timestamp() * 1000)
    values = {
        "request_id": f"req_{uuid.uuid4().hex}",
        "workspace_id": world.workspace.pk,
        "key_id": world.key.pk,
        "provider": "openai",
        "credential_id": world.credential.pk,
        "credential_kind": "byok",
        "model_requested": "gpt-4o-mini",
        "model_served": "gpt-4o-mini",
        "status": 200,
        "input_tokens": 100,
        "output_tokens": 10,
        "cost_nanos": 1_000_000,
        "charge_nanos": 1_000_000,
        "latency_ms": 100,
        "ttfb_ms": 40,
        "started_at_ms": ms,
        "finished_at_ms": ms + fields.get("latency_ms", 100),
    }
    values.update(fields)
    return UsageEvent(**values)


def now() -> datetime:
    return datetime.now(tz=UTC)


def get(world, query: str = "", user=None):
    response = client_for(user or world.owner).get(f"/w/{world.workspace.slug}/analytics/{query}")
    return response, unescape(response.content.decode())


def total(page: str, name: str) -> tuple[str, str, str]:
    """(this period, previous period, change) of one row of the totals table."""
    row = re.search(rf'<tr id="total-{name}">(.*?)</tr>', page, re.S)
    assert row, f"no total {name}"
    cells = re.findall(r"<td[^>]*>(.*?)</td>", row.group(1), re.S)
    return cells[0].strip(), cells[1].strip(), cells[2].strip()


def table(page: str, table_id: str) -> str:
    found = re.search(rf'<table id="{table_id}">(.*?)</table>', page, re.S)
    assert found, f"no table {table_id}"
    return found.group(1)


def foot(page: str, table_id: str) -> list[str]:
    cells = re.search(r"<tfoot>(.*?)</tfoot>", table(page, table_id), re.S)
    assert cells
    return [c.strip() for c in re.findall(r"<td[^>]*>(.*?)</td>", cells.group(1), re.S)]


def test_totals_tokens_errors_and_spend_of_the_last_24_hours(world_a, world_b):
    t = now() - timedelta(hours=2)
    usage_ingest_batch(
        events=[
            ev(
                world_a,
                t,
                input_tokens=1000,
                cached_input_tokens=200,
                cache_write_tokens=30,
                output_tokens=400,
                reasoning_tokens=50,
                cost_nanos=2_500_000_000,
                charge_nanos=3_000_000_000,
            ),
            ev(
                world_a,
                t,
                status=429,
                error_code="rate_limited",
                input_tokens=0,
                output_tokens=0,
                cost_nanos=0,
                charge_nanos=0,
            ),
            ev(
                world_a,
                t,
                status=502,
                error_code="upstream_error",
                input_tokens=0,
                output_tokens=0,
                cost_nanos=0,
                charge_nanos=0,
            ),
            ev(
                world_a,
                t,
                status=429,
                error_code="rate_limited",
                input_tokens=0,
                output_tokens=0,
                cost_nanos=0,
                charge_nanos=0,
            ),
            ev(world_b, t, model_served="bravo-secret-model", charge_nanos=7_000_000_000, cost_nanos=7_000_000_000),
        ]
    )
    response, page = get(world_a)
    assert response.status_code == 200
    assert total(page, "requests")[0] == "4"
    assert total(page, "charged")[0] == "$3.00"
    assert total(page, "provider-cost")[0] == "$2.50"
    assert total(page, "tokens")[0] == "1,680"
    assert total(page, "error-rate")[0] == "75.0%"
    # the tables under the charts carry the same numbers
    assert foot(page, "table-tokens") == ["1,000", "200", "30", "400", "50"]
    assert foot(page, "table-requests") == ["1", "2", "1", "4"]
    assert foot(page, "table-errors") == ["50.0%", "25.0%"]
    assert foot(page, "table-spend") == ["$3.00", "$2.50"]
    codes = table(page, "error-codes")
    assert "rate_limited" in codes and "50.0%" in codes and "upstream_error" in codes
    # another workspace's usage is nowhere
    assert "bravo-secret-model" not in page and "$7.00" not in page and "$10.00" not in page


def test_percentiles_come_from_the_histograms_within_their_bucket(world_a):
    t = now() - timedelta(hours=1)
    latencies = [10 * i for i in range(1, 101)]  # 10 .. 1000 ms: exact p50 = 500, p95 = 950
    usage_ingest_batch(events=[ev(world_a, t, latency_ms=ms, ttfb_ms=ms // 2) for ms in latencies])
    hist = histogram.empty()
    for ms in latencies:
        hist[histogram.bucket(ms)] += 1
    p50, p95 = histogram.percentile(hist, 0.5), histogram.percentile(hist, 0.95)
    assert p50 is not None and p95 is not None and 500 <= p50 < 600 and 900 <= p95 < 1000
    _, page = get(world_a, "?range=7d")
    assert total(page, "latency-p50")[0] == f"{p50:,} ms"
    assert total(page, "latency-p95")[0] == f"{p95:,} ms"
    latency_foot = foot(page, "table-latency")
    assert latency_foot[:2] == [f"{p50:,} ms", f"{p95:,} ms"]
    ttfb_p50 = foot(page, "table-ttfb")[0]
    assert 250 <= int(ttfb_p50.removesuffix(" ms").replace(",", "")) < 300


def test_comparison_with_the_previous_period(world_a):
    usage_ingest_batch(
        events=[
            *[ev(world_a, now() - timedelta(hours=3)) for _ in range(3)],
            ev(world_a, now() - timedelta(hours=30), charge_nanos=4_000_000, cost_nanos=4_000_000),
            ev(world_a, now() - timedelta(hours=30), status=500, error_code="upstream_error", charge_nanos=0),
            ev(world_a, now() - timedelta(days=5)),  # before the previous 24 hours: in neither
        ]
    )
    _, page = get(world_a, "?range=24h")
    assert total(page, "requests") == ("3", "2", "+50.0%")
    assert total(page, "charged") == ("$0.003", "$0.004", "-25.0%")
    assert total(page, "error-rate") == ("0.0%", "50.0%", "-100.0%")


@pytest.mark.parametrize("range_key", ["1h", "24h", "7d", "30d"])
def test_each_range_counts_what_falls_in_it(world_a, range_key):
    ages = {"1h": timedelta(minutes=50), "24h": timedelta(hours=20), "7d": timedelta(days=6), "30d": timedelta(days=28)}
    inside = [ev(world_a, now() - ages[range_key], model_served="inside-model")]
    outside = [ev(world_a, now() - timedelta(days=70), model_served="outside-model")]
    if range_key == "1h":
        outside.append(ev(world_a, now() - timedelta(hours=3), model_served="outside-model"))
    usage_ingest_batch(events=inside + outside)
    response, page = get(world_a, f"?range={range_key}")
    assert response.status_code == 200
    assert total(page, "requests")[0] == "1"
    assert "inside-model" in table(page, "breakdown-table") and "outside-model" not in page


def test_last_hour_comes_from_events_by_minute_with_exact_percentiles(world_a):
    t = now() - timedelta(minutes=10)
    usage_ingest_batch(events=[ev(world_a, t, latency_ms=ms) for ms in (100, 200, 300)])
    _, page = get(world_a, "?range=1h")
    assert total(page, "latency-p50")[0] == "200 ms"
    rows = re.findall(r"<tr><th scope=\"row\">(\d\d:\d\d)</th>", table(page, "table-requests"))
    assert len(rows) >= 60 and f"{t:%H:%M}" in rows


def test_custom_range_by_day_and_a_single_day(world_a):
    day = (now() - timedelta(days=10)).replace(hour=12, minute=0, second=0, microsecond=0)
    usage_ingest_batch(
        events=[
            ev(world_a, day, charge_nanos=5_000_000_000),
            ev(world_a, day + timedelta(days=1), charge_nanos=1_000_000_000),
            ev(world_a, day - timedelta(days=3)),
        ]
    )
    _, page = get(world_a, f"?range=custom&from={day:%Y-%m-%d}&to={day + timedelta(days=2):%Y-%m-%d}")
    assert total(page, "requests")[0] == "2" and total(page, "charged")[0] == "$6.00"
    assert f"{day:%Y-%m-%d}" in table(page, "table-spend")  # one row per day
    _, page = get(world_a, f"?range=custom&from={day:%Y-%m-%d}&to={day:%Y-%m-%d}")
    assert total(page, "requests")[0] == "1" and total(page, "charged")[0] == "$5.00"
    assert f"{day:%m-%d} 12:00" in table(page, "table-spend")  # one day: by hour


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("?range=custom&from=2026-05-10&to=2026-05-01", "The to date is before the from date."),
        ("?range=custom&from=yesterday&to=2026-05-01", "is not a date"),
        ("?range=custom", "needs both a from and a to date"),
        ("?range=forever", "Unknown range"),
    ],
)
def test_a_bad_range_says_why_and_shows_the_default(world_a, query, message):
    response, page = get(world_a, query)
    assert response.status_code == 400
    assert message in page and 'role="alert"' in page
    assert "Last 24 hours" in page


def test_filters_narrow_every_number(world_a):
    t = now() - timedelta(hours=1)
    usage_ingest_batch(
        events=[
            ev(world_a, t, model_served="gpt-4o", charge_nanos=2_000_000_000),
            ev(world_a, t, model_served="gpt-4o", status=503, error_code="upstream_unavailable", charge_nanos=0),
            ev(world_a, t, provider="anthropic", model_served="claude-haiku-4-5", charge_nanos=1_000_000_000),
        ]
    )
    _, page = get(world_a, "?model=gpt-4o")
    assert total(page, "requests")[0] == "2" and total(page, "charged")[0] == "$2.00"
    _, page = get(world_a, "?provider=anthropic")
    assert total(page, "requests")[0] == "1" and "claude-haiku-4-5" in page
    _, page = get(world_a, "?status=5xx")
    assert total(page, "requests")[0] == "1" and total(page, "error-rate")[0] == "100.0%"
    _, page = get(world_a, f"?key={world_a.key.public_id}")
    assert total(page, "requests")[0] == "3"
    response, page = get(world_a, "?status=503")
    assert response.status_code == 200 and total(page, "requests")[0] == "1"
    assert "showing every 5xx request, not only 503" in page
    response, page = get(world_a, f"?key={uuid.uuid4()}")
    assert response.status_code == 400 and "not in this workspace" in page


def test_breakdown_rows_link_to_the_request_log_with_the_range_and_the_filter(world_a):
    t = now() - timedelta(hours=1)
    usage_ingest_batch(
        events=[
            ev(world_a, t, model_served="gpt-4o-mini", charge_nanos=1_000_000_000),
            ev(world_a, t, model_served="o3", charge_nanos=9_000_000_000),
        ]
    )
    slug = world_a.workspace.slug
    _, page = get(world_a, "?range=7d&provider=openai")
    rows = table(page, "breakdown-table")
    assert rows.index(">o3<") < rows.index(">gpt-4o-mini<")  # by spend
    assert f'href="/w/{slug}/requests/?range=7d&provider=openai&model=o3"' in page
    _, page = get(world_a, "?range=7d&sort=name")
    rows = table(page, "breakdown-table")
    assert rows.index(">gpt-4o-mini<") < rows.index(">o3<")
    assert 'aria-sort="ascending"' in rows
    _, page = get(world_a, "?range=7d&breakdown=key")
    assert world_a.key.name in table(page, "breakdown-table") and world_a.key.prefix in page
    assert f"/w/{slug}/requests/?range=7d&key={world_a.key.public_id}" in page
    assert world_a.key_plaintext not in page


def test_breakdown_by_end_user_and_by_tag(world_a, world_b):
    t = now() - timedelta(hours=1)
    usage_ingest_batch(
        events=[
            ev(world_a, t, user="alice", metadata={"team": "search"}, charge_nanos=3_000_000_000),
            ev(world_a, t, user="alice", metadata={"team": "search"}, charge_nanos=1_000_000_000),
            ev(world_a, t, user="bob", metadata={"team": "ads"}, charge_nanos=1_000_000_000),
            ev(world_a, t, metadata={"env": "prod"}),
            ev(world_b, t, user="mallory", metadata={"team": "intruders"}),
        ]
    )
    slug = world_a.workspace.slug
    _, page = get(world_a, "?range=24h&breakdown=user")
    rows = table(page, "breakdown-table")
    assert "alice" in rows and "bob" in rows and "mallory" not in page
    assert "$4.00" in rows
    assert f"/w/{slug}/requests/?range=24h&user=alice" in page
    _, page = get(world_a, "?range=7d&breakdown=tag&tag_key=team")
    rows = table(page, "breakdown-table")
    assert "search" in rows and "ads" in rows and "intruders" not in page and "prod" not in rows
    assert f"/w/{slug}/requests/?range=7d&tag=team%3Dsearch" in page
    response, page = get(world_a, "?breakdown=tag")
    assert response.status_code == 400 and "Choose the tag" in page


def test_the_default_page_for_weeks_reads_rollups_only(world_a):
    usage_ingest_batch(events=[ev(world_a, now() - timedelta(days=2))])
    client = client_for(world_a.owner)
    for range_key in ("24h", "7d", "30d"):
        for breakdown in ("model", "provider", "key"):
            with CaptureQueriesContext(connection) as queries:
                response = client.get(f"/w/{world_a.workspace.slug}/analytics/?range={range_key}&breakdown={breakdown}")
            assert response.status_code == 200
            assert not [q["sql"] for q in queries if "billing_usageevent" in q["sql"]], (range_key, breakdown)


def test_every_role_may_see_analytics_finance_included(world_a, member_client):
    usage_ingest_batch(events=[ev(world_a, now() - timedelta(hours=1))])
    for role in (Role.FINANCE, Role.VIEWER):
        client, _ = member_client(role)
        response = client.get(f"/w/{world_a.workspace.slug}/analytics/")
        assert response.status_code == 200
        assert total(unescape(response.content.decode()), "requests")[0] == "1"


def test_an_empty_workspace_shows_zeroes_not_errors(world_a):
    response, page = get(world_a, "?range=30d")
    assert response.status_code == 200
    assert total(page, "requests") == ("0", "0", "—")
    assert total(page, "latency-p50")[0] == "—"
    assert 'id="analytics-data"' in page and "vendor/chartjs/chart.umd.min.js" in page


def test_a_long_breakdown_shows_the_top_50_by_spend_and_says_so(world_a):
    t = now() - timedelta(hours=1)
    usage_ingest_batch(
        events=[ev(world_a, t, user=f"user-{i:02d}", charge_nanos=1_000_000 * (i + 1)) for i in range(55)]
    )
    _, page = get(world_a, "?breakdown=user")
    rows = table(page, "breakdown-table")
    assert "Top 50 of 55 by spend." in page
    assert rows.count("<tr>") == 51  # the header and 50 rows
    assert "user-54" in rows and "user-05" in rows and "user-04" not in rows  # the 5 smallest spenders are left out


@pytest.mark.parametrize(
    "query",
    [
        "?model=gpt%004o",
        "?provider=" + "x" * 10_000,
        "?key=not-a-key",
        "?key=00000000-0000-4000-8000-000000000000",
        "?status=999",
        "?range=custom&from=9999-99-99&to=0000-01-01",
        "?range=custom&from=0001-01-01&to=9999-12-31",
        "?range=custom&from=0001-01-01&to=0001-01-05",
        "?range=custom&from=9999-12-27&to=9999-12-31",
        "?breakdown=password",
        "?breakdown=tag&tag_key=%00%00",
        "?breakdown=tag&tag_key=" + "k" * 5_000,
        "?sort=-%00",
    ],
)
def test_hostile_query_strings_get_a_page_not_a_500(world_a, query):
    usage_ingest_batch(events=[ev(world_a, now() - timedelta(minutes=5))])
    response, page = get(world_a, query)
    assert response.status_code in (200, 400), query
    assert "Analytics" in page
