"""Usage time ranges, shared by the analytics page, the request log and its exports: the presets (last hour,
24 hours, 7 and 30 days) aligned to their chart buckets, and custom ranges of whole UTC days."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

# Dates a range may name: far enough from datetime's limits that a range, the period before it and a day
# added to its end can always be computed (year 1 minus a day, or 9999-12-31 plus one, would raise).
EARLIEST = date(2000, 1, 1)
LATEST = date(2999, 12, 31)


def days_between(query: Mapping[str, str]) -> tuple[dict[str, datetime], list[str]]:
    """`from` and `to` (UTC days, inclusive) as {"since", "before"}; problems as sentences for the page."""
    bounds: dict[str, datetime] = {}
    problems: list[str] = []
    for name, end in (("from", False), ("to", True)):
        text = query.get(name, "")
        if not text:
            continue
        try:
            day = datetime.strptime(text, "%Y-%m-%d").date()
        except ValueError:
            problems.append(f"“{text[:20]}” is not a date (YYYY-MM-DD).")
            continue
        if not EARLIEST <= day <= LATEST:
            problems.append(f"{day:%Y-%m-%d} is out of range ({EARLIEST:%Y} to {LATEST:%Y}).")
            continue
        moment = datetime.combine(day, time.min, tzinfo=UTC)
        bounds["before" if end else "since"] = moment + timedelta(days=1) if end else moment
    return bounds, problems


RANGES: dict[str, timedelta] = {
    "1h": timedelta(hours=1),
    "24h": timedelta(hours=24),
    "7d": timedelta(days=7),
    "30d": timedelta(days=30),
}
RANGE_LABELS = {
    "1h": "Last hour",
    "24h": "Last 24 hours",
    "7d": "Last 7 days",
    "30d": "Last 30 days",
    "custom": "Custom",
}
DEFAULT_RANGE = "24h"
MAX_CUSTOM_DAYS = 400


@dataclass(frozen=True)
class TimeRange:
    """[start, end) in UTC, as chosen by `range` (1h, 24h, 7d, 30d) or `range=custom` with `from`/`to`
    (UTC days, inclusive). `step` is the chart granularity: 1 minute up to about an hour, 1 hour up to
    2 days, 1 day beyond; `previous` is the period just before (for period-over-period comparison)."""

    key: str
    start: datetime
    end: datetime

    @property
    def span(self) -> timedelta:
        return self.end - self.start

    @property
    def step(self) -> timedelta:
        if self.span <= timedelta(minutes=61):
            return timedelta(minutes=1)
        if self.span <= timedelta(days=2):
            return timedelta(hours=1)
        return timedelta(days=1)

    @property
    def buckets(self) -> int:
        """How many chart buckets the range has (the last one may be partial: it ends now)."""
        return -(-self.span // self.step)

    @property
    def previous(self) -> TimeRange:
        """The same number of whole buckets just before `start` (so rollups add up exactly; the current
        range's last bucket may still be filling, so a comparison early in an hour or day leans low)."""
        return TimeRange(self.key, self.start - self.buckets * self.step, self.start)

    @property
    def label(self) -> str:
        if self.key != "custom":
            return RANGE_LABELS[self.key]
        last = self.end - timedelta(days=1)
        return (
            f"{self.start:%Y-%m-%d} to {last:%Y-%m-%d}"
            if last.date() != self.start.date()
            else f"{self.start:%Y-%m-%d}"
        )

    def query(self) -> dict[str, str]:
        """The query-string parameters that choose this range (to carry it into links)."""
        if self.key != "custom":
            return {"range": self.key}
        return {"range": "custom", "from": f"{self.start:%Y-%m-%d}", "to": f"{self.end - timedelta(days=1):%Y-%m-%d}"}


def time_range(query: Mapping[str, str], *, now: datetime | None = None) -> tuple[TimeRange, list[str]]:
    """The range the query string asks for, or the last 24 hours; problems as sentences for the page.

    Ranges are aligned to their chart buckets so that every bucket is whole and rollups add up exactly:
    the last hour is the last 60 whole minutes plus the current one; the last 24 hours are the current UTC
    hour and the 23 before it; 7 and 30 days are today (UTC) and the 6 or 29 days before. All end now."""
    now = now or datetime.now(tz=UTC)
    key = query.get("range", "") or DEFAULT_RANGE
    if key in RANGES:
        return preset_range(key, now), []
    if key != "custom":
        return preset_range(DEFAULT_RANGE, now), [f"Unknown range “{key[:20]}”."]
    bounds, problems = days_between(query)
    start = bounds.get("since")
    end = bounds.get("before")
    if start is None or end is None:
        problems.append("A custom range needs both a from and a to date.")
    elif end <= start:
        problems.append("The to date is before the from date.")
    elif end - start > timedelta(days=MAX_CUSTOM_DAYS):
        problems.append(f"A custom range is at most {MAX_CUSTOM_DAYS} days.")
    else:
        return TimeRange("custom", start, end), problems
    return preset_range(DEFAULT_RANGE, now), problems


def preset_range(key: str, now: datetime) -> TimeRange:
    if key == "1h":
        start = now.replace(second=0, microsecond=0) - timedelta(minutes=60)
    elif key == "24h":
        start = now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=23)
    else:
        days = RANGES[key].days
        start = now.replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=days - 1)
    return TimeRange(key, start, now)
