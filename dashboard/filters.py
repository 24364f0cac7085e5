"""Query-string filters shared by the list pages (ledger history, audit log) and their CSV exports."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta

from django.http import HttpRequest


def day_range(request: HttpRequest) -> tuple[dict[str, datetime], list[str]]:
    """`from` and `to` (UTC days, inclusive) as {"since", "before"}; problems as sentences for the page."""
    bounds: dict[str, datetime] = {}
    problems: list[str] = []
    for name, end in (("from", False), ("to", True)):
        text = request.GET.get(name, "")
        if not text:
            continue
        try:
            day = datetime.strptime(text, "%Y-%m-%d").date()
        except ValueError:
            problems.append(f"“{text[:20]}” is not a date (YYYY-MM-DD).")
            continue
        moment = datetime.combine(day, time.min, tzinfo=UTC)
        bounds["before" if end else "since"] = moment + timedelta(days=1) if end else moment
    return bounds, problems


class Echo:
    """A file-like object for csv.writer that hands each row back, for streamed responses."""

    def write(self, value: str) -> str:
        return value


def csv_safe(text: str) -> str:
    """No formula injection when a CSV is opened in a spreadsheet."""
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text
