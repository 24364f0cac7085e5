"""Reads behind the workspace analytics page: totals, time series and breakdowns of usage over a time range.

Where each number comes from (the page's budget is ~300 ms for 30 days of a busy workspace):
  - step 1 day / 1 hour: the daily (billing_usagerollupday) or hourly (billing_usagerollup) rollups ONLY.
    One grouped query per section (series, previous period, breakdown) returns the sums and, in the same
    pass, the latency (and for the series, time-to-first-byte) histograms added bucket by bucket in SQL
    (`sum(latency_hist[i])` for each i); percentiles are read off the summed histograms in Python
    (billing.histogram.percentile: interpolated inside a bucket). Measured on 120,000 daily rollup rows
    (one workspace's 30 days, 2 cores): bucket-by-bucket sums ~1.0 s, `unnest(...) WITH ORDINALITY` grouped by
    bucket index ~2.6 s, fetching the arrays to add them in Python slower still; JIT off (see _fetch).
  - step 1 minute (the last hour): the events themselves, bounded by (workspace, started_at) so at most an
    hour of one workspace's partition is read; percentiles there are exact (percentile_cont).
  - breakdowns by model, provider and gateway key: the same source as the series. By end user and by a
    metadata tag (high cardinality, not in the rollups): an event query bounded by the range, run only when
    the page asks for that breakdown.
The range's start must be aligned to its step (dashboard.filters.time_range does that) so that rollup
buckets add up exactly; a start that is not is floored to its bucket.

Money is nano-USD `int` throughout; nothing here is float except latency percentiles and error rates.
Every query is scoped to one workspace.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from django.db import connection, transaction

from billing import histogram
from tenants.models import GatewayKey

MINUTE = timedelta(minutes=1)
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
TOP_ROWS = 50  # breakdown rows shown (by spend)
TOP_ERROR_CODES = 6  # error codes charted one by one; the rest are "other"
STATUS_CLASSES = ("2xx", "4xx", "5xx")
DIMENSIONS = ("model", "provider", "key", "user", "tag")
ROLLUP_DIMENSIONS = ("model", "provider", "key")
NO_CODE = "(no code)"

# (column in the rollups, expression over an event row)
_EVENT_MODEL = "COALESCE(NULLIF(e.model_served, ''), e.model_requested)"
_EVENT_CLASS = "((e.status / 100)::text || 'xx')"


@dataclass(frozen=True)
class UsageFilters:
    """What the page is narrowed to (each applies to the rollups and to the events alike)."""

    key_id: int | None = None
    provider: str = ""
    model: str = ""
    status_class: str = ""  # "2xx" | "4xx" | "5xx" | ""


@dataclass
class Sums:
    """Additive totals of a set of requests."""

    requests: int = 0
    ok: int = 0  # 2xx
    errors_4xx: int = 0
    errors_5xx: int = 0
    unpriced: int = 0
    estimated: int = 0
    input_tokens: int = 0
    cached_input_tokens: int = 0
    cache_write_tokens: int = 0
    output_tokens: int = 0
    reasoning_tokens: int = 0
    cost_nanos: int = 0
    charge_nanos: int = 0

    def add_row(self, status_class: str, values: Sequence[Any]) -> None:
        """Add one SQL row of _SUM_COLUMNS (in that order) of requests of `status_class`."""
        n = int(values[0] or 0)
        self.requests += n
        if status_class == "2xx":
            self.ok += n
        elif status_class == "4xx":
            self.errors_4xx += n
        elif status_class == "5xx":
            self.errors_5xx += n
        self.unpriced += int(values[1] or 0)
        self.estimated += int(values[2] or 0)
        self.input_tokens += int(values[3] or 0)
        self.cached_input_tokens += int(values[4] or 0)
        self.cache_write_tokens += int(values[5] or 0)
        self.output_tokens += int(values[6] or 0)
        self.reasoning_tokens += int(values[7] or 0)
        self.cost_nanos += int(values[8] or 0)
        self.charge_nanos += int(values[9] or 0)

    @property
    def errors(self) -> int:
        """Every request that did not succeed (not 2xx)."""
        return self.requests - self.ok

    @property
    def tokens(self) -> int:
        return (
            self.input_tokens
            + self.cached_input_tokens
            + self.cache_write_tokens
            + self.output_tokens
            + self.reasoning_tokens
        )

    def rate(self, count: int) -> Decimal | None:
        """`count` as a percentage of the requests (one decimal); None without requests."""
        if not self.requests:
            return None
        return (Decimal(100 * count) / self.requests).quantize(Decimal("0.1"), rounding=ROUND_HALF_UP)

    @property
    def error_rate(self) -> Decimal | None:
        return self.rate(self.errors)

    @property
    def rate_4xx(self) -> Decimal | None:
        return self.rate(self.errors_4xx)

    @property
    def rate_5xx(self) -> Decimal | None:
        return self.rate(self.errors_5xx)


@dataclass(frozen=True)
class Latency:
    """Percentiles in ms (None: no data)."""

    p50: int | None = None
    p95: int | None = None
    p99: int | None = None
    ttfb_p50: int | None = None
    ttfb_p95: int | None = None

    @classmethod
    def from_histograms(cls, latency: Sequence[int], ttfb: Sequence[int]) -> Latency:
        return cls(
            p50=histogram.percentile(latency, 0.5),
            p95=histogram.percentile(latency, 0.95),
            p99=histogram.percentile(latency, 0.99),
            ttfb_p50=histogram.percentile(ttfb, 0.5),
            ttfb_p95=histogram.percentile(ttfb, 0.95),
        )


@dataclass(frozen=True)
class Point:
    """One chart bucket [start, start + step)."""

    start: datetime
    sums: Sums
    latency: Latency
    errors_by_code: dict[str, int]


@dataclass(frozen=True)
class Totals:
    sums: Sums
    latency: Latency


@dataclass(frozen=True)
class ErrorCode:
    code: str
    requests: int
    share: Decimal | None  # % of all requests


@dataclass(frozen=True)
class Series:
    """The range's buckets (every bucket, empty ones included), totals and errors by code."""

    start: datetime
    end: datetime
    step: timedelta
    source: str  # "events" | "hourly rollups" | "daily rollups"
    points: list[Point]
    totals: Totals
    error_codes: list[ErrorCode]  # by requests, largest first
    charted_codes: list[str]  # the codes with a series of their own (the rest is "other")


@dataclass(frozen=True)
class BreakdownRow:
    value: str  # what the request log filter takes (model, provider, key public id, user, tag value)
    label: str
    detail: str  # key prefix, for keys
    sums: Sums
    latency: Latency


@dataclass(frozen=True)
class Breakdown:
    dimension: str
    tag_key: str
    rows: list[BreakdownRow]  # top TOP_ROWS by spend
    total_rows: int  # how many groups there are in all


# --- SQL building ---------------------------------------------------------------------------------------------

_SUM_COLUMNS = (
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
)
_EVENT_SUMS = (
    "count(*)",
    "count(*) FILTER (WHERE NOT e.priced)",
    "count(*) FILTER (WHERE e.estimated)",
    "sum(e.input_tokens)",
    "sum(e.cached_input_tokens)",
    "sum(e.cache_write_tokens)",
    "sum(e.output_tokens)",
    "sum(e.reasoning_tokens)",
    "sum(COALESCE(e.cost_nanos, 0))",
    "sum(e.charge_nanos)",
)


@dataclass(frozen=True)
class _Source:
    """One place the numbers are read from, and how its rows are named."""

    name: str
    table: str
    period: str  # the bucket expression
    model: str
    status_class: str
    sums: tuple[str, ...]
    events: bool

    def where(self, *, workspace_id: int, start: Any, end: Any, filters: UsageFilters) -> tuple[str, list[Any]]:
        time_col = "e.started_at" if self.events else f"r.{self.period_column}"
        sql = [f"{self.alias}.workspace_id = %s", f"{time_col} >= %s", f"{time_col} < %s"]
        params: list[Any] = [workspace_id, start, end]
        if filters.key_id is not None:
            sql.append(f"{self.alias}.key_id = %s")
            params.append(filters.key_id)
        if filters.provider:
            sql.append(f"{self.alias}.provider = %s")
            params.append(filters.provider)
        if filters.model:
            sql.append(f"{self.model} = %s")
            params.append(filters.model)
        if filters.status_class:
            if self.events:  # a range on the status column, so no expression is evaluated per row
                low = int(filters.status_class[0]) * 100
                sql.append("e.status >= %s AND e.status < %s")
                params += [low, low + 100]
            else:
                sql.append("r.status_class = %s")
                params.append(filters.status_class)
        return " AND ".join(sql), params

    @property
    def alias(self) -> str:
        return "e" if self.events else "r"

    @property
    def period_column(self) -> str:
        return "day" if self.table.endswith("day") else "hour"


_EVENTS = _Source(
    name="events",
    table="billing_usageevent",
    period="date_trunc('minute', e.started_at)",
    model=_EVENT_MODEL,
    status_class=_EVENT_CLASS,
    sums=_EVENT_SUMS,
    events=True,
)
_HOURLY = _Source(
    name="hourly rollups",
    table="billing_usagerollup",
    period="r.hour",
    model="r.model",
    status_class="r.status_class",
    sums=tuple(f"sum(r.{c})" for c in _SUM_COLUMNS),
    events=False,
)
_DAILY = _Source(
    name="daily rollups",
    table="billing_usagerollupday",
    period="r.day",
    model="r.model",
    status_class="r.status_class",
    sums=tuple(f"sum(r.{c})" for c in _SUM_COLUMNS),
    events=False,
)


def _source_for(step: timedelta) -> _Source:
    if step < HOUR:
        return _EVENTS
    return _HOURLY if step < DAY else _DAILY


def _floor(moment: datetime, step: timedelta) -> datetime:
    moment = moment.astimezone(UTC)
    if step >= DAY:
        return datetime.combine(moment.date(), time.min, tzinfo=UTC)
    if step >= HOUR:
        return moment.replace(minute=0, second=0, microsecond=0)
    return moment.replace(second=0, microsecond=0)


def _bounds(source: _Source, start: datetime, end: datetime, step: timedelta) -> tuple[Any, Any]:
    """The WHERE bounds for `source`: exact times for events; whole buckets for rollups (the bucket that
    holds `end` is included when `end` is inside it: that is everything up to now)."""
    if source.events:
        return start, end
    first = _floor(start, step)
    last = _floor(end, step)
    stop = last if last == end else last + step
    if source is _DAILY:
        return first.date(), stop.date()
    return first, stop


# These are few, short, wide aggregations: JIT compiling them costs more than it saves (measured: 1.4 s of
# a 2.2 s query over 120,000 daily rows), and summing 148 histogram buckets per group must not spill its
# sort to disk under the default work_mem.
_QUERY_SETTINGS = "SET LOCAL jit = off; SET LOCAL work_mem = '32MB'"


def _fetch(sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(_QUERY_SETTINGS)
        cursor.execute(sql, params)
        return cursor.fetchall()


def _as_datetime(value: datetime | date) -> datetime:
    if isinstance(value, datetime):
        return value.astimezone(UTC)
    return datetime.combine(value, time.min, tzinfo=UTC)


# --- selectors ---------------------------------------------------------------------------------------------------


def usage_series(
    *, workspace_id: int, start: datetime, end: datetime, step: timedelta, filters: UsageFilters
) -> Series:
    """Every bucket of [start, end) with its sums, percentiles and errors by code, and the range's totals."""
    source = _source_for(step)
    low, high = _bounds(source, start, end, step)
    where, params = source.where(workspace_id=workspace_id, start=low, end=high, filters=filters)
    a = source.alias
    rows = _fetch(
        f"SELECT {source.period}, {source.status_class}, {a}.error_code, {_select(source)} "  # noqa: S608 (fixed names; values are parameters)
        f"FROM {source.table} {a} WHERE {where} GROUP BY 1, 2, 3",
        params,
    )
    width = len(source.sums)
    by_period: dict[datetime, Sums] = {}
    hists: dict[datetime, tuple[list[int], list[int]]] = {}
    codes_by_period: dict[datetime, dict[str, int]] = {}
    totals = Sums()
    total_hists = (histogram.empty(), histogram.empty())
    code_totals: dict[str, int] = {}
    for period, status_class, code, *values in rows:
        moment = _as_datetime(period)
        by_period.setdefault(moment, Sums()).add_row(status_class, values)
        totals.add_row(status_class, values)
        if not source.events:
            pair = hists.setdefault(moment, (histogram.empty(), histogram.empty()))
            _add_hists(pair, values[width:])
            _add_hists(total_hists, values[width:])
        if status_class != "2xx":
            name = code or NO_CODE
            n = int(values[0] or 0)
            bucket_codes = codes_by_period.setdefault(moment, {})
            bucket_codes[name] = bucket_codes.get(name, 0) + n
            code_totals[name] = code_totals.get(name, 0) + n

    if source.events:
        latency_rows = _fetch(
            f"SELECT {source.period}, {_EVENT_PERCENTILES} FROM {source.table} e WHERE {where} GROUP BY 1",  # noqa: S608 (fixed names; values are parameters)
            params,
        )
        latencies = {_as_datetime(r[0]): _latency_of(r[1], r[2]) for r in latency_rows}
        total_latency = _event_latency(source, where, params)
    else:
        latencies = {moment: Latency.from_histograms(*pair) for moment, pair in hists.items()}
        total_latency = Latency.from_histograms(*total_hists)
    points = []
    moment = _floor(start, step)
    while moment < end:
        points.append(
            Point(
                start=moment,
                sums=by_period.get(moment, Sums()),
                latency=latencies.get(moment, Latency()),
                errors_by_code=codes_by_period.get(moment, {}),
            )
        )
        moment += step
    ranked = sorted(code_totals.items(), key=lambda item: (-item[1], item[0]))
    return Series(
        start=start,
        end=end,
        step=step,
        source=source.name,
        points=points,
        totals=Totals(totals, total_latency),
        error_codes=[ErrorCode(code, n, totals.rate(n)) for code, n in ranked],
        charted_codes=[code for code, _ in ranked[:TOP_ERROR_CODES]],
    )


# Histograms are added in SQL one bucket at a time (sum(latency_hist[i]) for every i): one pass over the
# rollup rows with no row explosion. Measured against unnest(...) WITH ORDINALITY grouped by the bucket
# index, on 120,000 daily rollup rows: ~0.5 s against ~4 s (see the module doc). An empty histogram (a row
# with no data) reads as NULLs, which sum() skips.
_LATENCY_SUMS = ", ".join(f"sum(r.latency_hist[{i}])" for i in range(1, histogram.NBUCKETS + 1))
_TTFB_SUMS = ", ".join(f"sum(r.ttfb_hist[{i}])" for i in range(1, histogram.NBUCKETS + 1))


def _select(source: _Source, *, ttfb: bool = True) -> str:
    """The sums, and for rollups the histograms' buckets after them (latency, then time to first byte unless
    `ttfb` is False: the comparison and the breakdowns show latency percentiles only, at half the cost)."""
    if source.events:
        return ", ".join(source.sums)
    return ", ".join([*source.sums, _LATENCY_SUMS, *([_TTFB_SUMS] if ttfb else [])])


def _add_hists(into: tuple[list[int], list[int]], values: Sequence[Any]) -> None:
    """Add the bucket columns of one row (latency, then ttfb if there) to (latency, ttfb) histograms."""
    n = histogram.NBUCKETS
    latency, ttfb = into
    for i in range(n):
        latency[i] += int(values[i] or 0)
    if len(values) >= 2 * n:
        for i in range(n):
            ttfb[i] += int(values[n + i] or 0)


_EVENT_PERCENTILES = (
    "percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP (ORDER BY e.latency_ms), "
    "percentile_cont(ARRAY[0.5, 0.95]) WITHIN GROUP (ORDER BY e.ttfb_ms)"
)


def _latency_of(latency: Sequence[float] | None, ttfb: Sequence[float] | None) -> Latency:
    def ms(values: Sequence[float] | None, i: int) -> int | None:
        return None if values is None or values[i] is None else round(values[i])

    return Latency(
        p50=ms(latency, 0), p95=ms(latency, 1), p99=ms(latency, 2), ttfb_p50=ms(ttfb, 0), ttfb_p95=ms(ttfb, 1)
    )


def _event_latency(source: _Source, where: str, params: list[Any]) -> Latency:
    whole = _fetch(f"SELECT {_EVENT_PERCENTILES} FROM {source.table} e WHERE {where}", params)[0]  # noqa: S608 (fixed names; values are parameters)
    return _latency_of(whole[0], whole[1])


def usage_totals(
    *, workspace_id: int, start: datetime, end: datetime, step: timedelta, filters: UsageFilters
) -> Totals:
    """The sums and latency percentiles (not time to first byte) of [start, end): the previous period."""
    source = _source_for(step)
    low, high = _bounds(source, start, end, step)
    where, params = source.where(workspace_id=workspace_id, start=low, end=high, filters=filters)
    rows = _fetch(
        f"SELECT {source.status_class}, {_select(source, ttfb=False)} FROM {source.table} {source.alias} "  # noqa: S608 (fixed names; values are parameters)
        f"WHERE {where} GROUP BY 1",
        params,
    )
    sums = Sums()
    hists = (histogram.empty(), histogram.empty())
    for status_class, *values in rows:
        sums.add_row(status_class, values)
        if not source.events:
            _add_hists(hists, values[len(source.sums) :])
    if source.events:
        return Totals(sums, _event_latency(source, where, params))
    return Totals(sums, Latency.from_histograms(*hists))


def usage_breakdown(
    *,
    workspace_id: int,
    start: datetime,
    end: datetime,
    step: timedelta,
    filters: UsageFilters,
    dimension: str,
    tag_key: str = "",
    limit: int = TOP_ROWS,
) -> Breakdown:
    """The top `limit` groups by spend (charge, then requests) of `dimension`, with per-group p50/p95.

    model, provider, key: from the series' own source (rollups beyond an hour), histograms included in the
    one grouped query. user and tag: from the events of the range (bounded by workspace and started_at;
    exact percentiles for the top groups only)."""
    if dimension not in DIMENSIONS:
        raise ValueError(f"unknown breakdown {dimension!r}")
    source = _source_for(step) if dimension in ROLLUP_DIMENSIONS else _EVENTS
    low, high = _bounds(source, start, end, step)
    where, params = source.where(workspace_id=workspace_id, start=low, end=high, filters=filters)
    a = source.alias
    group = {
        "model": source.model,
        "provider": f"{a}.provider",
        "key": f"{a}.key_id",
        "user": "e.end_user",
        "tag": "e.metadata ->> %s",
    }[dimension]
    group_params: list[Any] = []
    if dimension == "user":
        where += " AND e.end_user <> ''"
    elif dimension == "tag":
        where += " AND e.metadata ? %s"
        params = [*params, tag_key]
        group_params = [tag_key]
    rows = _fetch(
        f"SELECT {group}, {source.status_class}, {_select(source, ttfb=False)} "  # noqa: S608 (fixed names; values are parameters)
        f"FROM {source.table} {a} WHERE {where} GROUP BY 1, 2",
        [*group_params, *params],
    )
    groups: dict[Any, Sums] = {}
    hists: dict[Any, tuple[list[int], list[int]]] = {}
    for value, status_class, *values in rows:
        groups.setdefault(value, Sums()).add_row(status_class, values)
        if not source.events:
            _add_hists(hists.setdefault(value, (histogram.empty(), histogram.empty())), values[len(source.sums) :])
    ranked = sorted(groups.items(), key=lambda item: (-item[1].charge_nanos, -item[1].requests, str(item[0])))
    top = ranked[:limit]
    top_values = [value for value, _ in top]
    if source.events and top_values:
        latency_rows = _fetch(
            f"SELECT {group}, {_EVENT_PERCENTILES} FROM {source.table} e WHERE {where} AND {group} = ANY(%s) "  # noqa: S608 (fixed names; values are parameters)
            "GROUP BY 1",
            [*group_params, *params, *group_params, top_values],
        )
        latencies = {r[0]: _latency_of(r[1], r[2]) for r in latency_rows}
    else:
        latencies = {value: Latency.from_histograms(*hists[value]) for value in top_values}
    keys: dict[int, GatewayKey] = {}
    if dimension == "key":
        keys = {k.pk: k for k in GatewayKey.objects.filter(workspace_id=workspace_id, pk__in=top_values)}
    out = []
    for value, sums in top:
        label, detail, link = str(value), "", str(value)
        if dimension == "key":
            k = keys.get(value)
            label, detail, link = (k.name, k.prefix, str(k.public_id)) if k else (f"key #{value}", "", "")
        out.append(
            BreakdownRow(value=link, label=label, detail=detail, sums=sums, latency=latencies.get(value, Latency()))
        )
    return Breakdown(dimension=dimension, tag_key=tag_key, rows=out, total_rows=len(groups))


@dataclass(frozen=True)
class Change:
    """One total of the comparison with the previous period."""

    name: str
    kind: str  # "count" | "money" | "tokens" | "percent" | "ms"
    current: int | Decimal | None
    previous: int | Decimal | None
    change_pct: Decimal | None = field(default=None)


def comparison(current: Totals, previous: Totals) -> list[Change]:
    """Requests, spend, tokens, error rate, p50 and p95 latency, with the change in % (None when the previous
    value is 0 or unknown)."""

    def change(name: str, kind: str, now: int | Decimal | None, before: int | Decimal | None) -> Change:
        pct = None
        if now is not None and before:
            pct = (Decimal(now - before) * 100 / Decimal(before)).quantize(Decimal("0.1"), rounding=ROUND_HALF_UP)
        return Change(name, kind, now, before, pct)

    c, p = current, previous
    return [
        change("Requests", "count", c.sums.requests, p.sums.requests),
        change("Charged", "money", c.sums.charge_nanos, p.sums.charge_nanos),
        change("Provider cost", "money", c.sums.cost_nanos, p.sums.cost_nanos),
        change("Tokens", "tokens", c.sums.tokens, p.sums.tokens),
        change("Error rate", "percent", c.sums.error_rate, p.sums.error_rate),
        change("Latency p50", "ms", c.latency.p50, p.latency.p50),
        change("Latency p95", "ms", c.latency.p95, p.latency.p95),
    ]
