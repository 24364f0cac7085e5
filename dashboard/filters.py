"""Query-string filters shared by the list pages (ledger history, audit log, request log, analytics) and their
CSV exports."""

from __future__ import annotations

from datetime import datetime

from django.http import HttpRequest

from billing.timerange import RANGE_LABELS, RANGES, TimeRange, days_between
from billing.timerange import time_range as usage_time_range

__all__ = ["RANGES", "RANGE_LABELS", "Echo", "TimeRange", "csv_safe", "day_range", "time_range"]


def day_range(request: HttpRequest) -> tuple[dict[str, datetime], list[str]]:
    """`from` and `to` (UTC days, inclusive) as {"since", "before"}; problems as sentences for the page."""
    return days_between(request.GET)


def time_range(request: HttpRequest, *, now: datetime | None = None) -> tuple[TimeRange, list[str]]:
    """The usage time range the query string asks for (billing.timerange.time_range)."""
    return usage_time_range(request.GET, now=now)


class Echo:
    """A file-like object for csv.writer that hands each row back, for streamed responses."""

    def write(self, value: str) -> str:
        return value


def csv_safe(text: str) -> str:
    """No formula injection when a CSV is opened in a spreadsheet."""
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text
