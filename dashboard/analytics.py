"""The workspace analytics page: charts, totals, comparison with the previous period and breakdowns.

Everything is rendered on the server (totals, a table for every chart, breakdown tables), so the page works
with JavaScript off; static/analytics.js draws the charts (Chart.js, served from our static files) from the
same numbers, handed over as a JSON blob (`json_script`). The numbers come from billing.analytics."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any
from urllib.parse import urlencode

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse

from billing.analytics import (
    DIMENSIONS,
    STATUS_CLASSES,
    TOP_ROWS,
    BreakdownRow,
    Change,
    Series,
    UsageFilters,
    comparison,
    usage_breakdown,
    usage_series,
    usage_totals,
)
from contracts.money import nanos_to_usd
from dashboard.access import page_context, workspace_view
from dashboard.filters import RANGE_LABELS, time_range
from dashboard.templatetags.money import usd_cents
from tenants.models import GatewayKey, Workspace
from tenants.roles import Perm

DIMENSION_LABELS = {"model": "Model", "provider": "Provider", "key": "Gateway key", "user": "End user", "tag": "Tag"}
# breakdown columns that sort (?sort=<name>, ?sort=-<name> for descending)
SORTS: dict[str, Callable[[BreakdownRow], Any]] = {
    "name": lambda r: r.label.lower(),
    "requests": lambda r: r.sums.requests,
    "errors": lambda r: r.sums.error_rate or Decimal(0),
    "tokens": lambda r: r.sums.tokens,
    "cost": lambda r: r.sums.cost_nanos,
    "charge": lambda r: r.sums.charge_nanos,
    "p50": lambda r: r.latency.p50 if r.latency.p50 is not None else -1,
    "p95": lambda r: r.latency.p95 if r.latency.p95 is not None else -1,
}
SORT_LABELS = {
    "name": "",
    "requests": "Requests",
    "errors": "Error rate",
    "tokens": "Tokens",
    "cost": "Provider cost",
    "charge": "Charged",
    "p50": "Latency p50",
    "p95": "Latency p95",
}
DEFAULT_SORT = "-charge"
MAX_TEXT = 200


@dataclass(frozen=True)
class Chart:
    """One chart and its table: `columns` name the series; `rows` are (bucket label, shown cells); `data` is
    what the chart draws (numbers, or dollar amounts as exact decimal strings)."""

    id: str
    title: str
    unit: str  # "$", "requests", "tokens", "%", "ms"
    columns: list[str]
    rows: list[tuple[str, list[str]]]
    totals: list[str] | None
    data: dict[str, list[Any]]
    stacked: bool = False
    kind: str = "line"


@workspace_view(Perm.USAGE_VIEW)
def analytics(request: HttpRequest, slug: str) -> HttpResponse:
    workspace: Workspace = request.workspace  # type: ignore[attr-defined]
    tr, problems = time_range(request)
    filters, selected, filter_problems, notes = _filters(request, workspace)
    problems += filter_problems
    dimension = request.GET.get("breakdown", "") or "model"
    if dimension not in DIMENSIONS:
        problems.append(f"Unknown breakdown “{dimension[:20]}”: showing by model.")
        dimension = "model"
    tag_key = request.GET.get("tag_key", "").replace("\x00", "").strip()[:100]
    if dimension == "tag" and not tag_key:
        problems.append("Choose the tag to break down by (the metadata key, e.g. team).")
    sort = request.GET.get("sort", "") or DEFAULT_SORT
    if sort.lstrip("-") not in SORTS:
        sort = DEFAULT_SORT

    ws, step = workspace.pk, tr.step
    series = usage_series(workspace_id=ws, start=tr.start, end=tr.end, step=step, filters=filters)
    previous_range = tr.previous
    previous = usage_totals(
        workspace_id=ws, start=previous_range.start, end=previous_range.end, step=step, filters=filters
    )
    breakdown = None
    if dimension != "tag" or tag_key:
        breakdown = usage_breakdown(
            workspace_id=ws,
            start=tr.start,
            end=tr.end,
            step=step,
            filters=filters,
            dimension=dimension,
            tag_key=tag_key,
        )
        rows = sorted(breakdown.rows, key=SORTS[sort.lstrip("-")], reverse=sort.startswith("-"))
    else:
        rows = []

    base_query = {**tr.query(), **{k: v for k, v in selected.items() if v}}
    page_query = {
        **base_query,
        **({"breakdown": dimension} if dimension != "model" else {}),
        **({"tag_key": tag_key} if tag_key else {}),
        **({"sort": sort} if sort != DEFAULT_SORT else {}),
    }
    charts = _charts(series)
    requests_url = reverse("dashboard:requests", kwargs={"slug": slug})
    context = page_context(
        request,
        "analytics",
        range=tr,
        range_links=[
            (key, label, "?" + urlencode({**_without(page_query, "range", "from", "to"), "range": key}))
            for key, label in RANGE_LABELS.items()
            if key != "custom"
        ],
        custom_from=_clean(request.GET.get("from", ""))[:10],
        custom_to=_clean(request.GET.get("to", ""))[:10],
        range_labels=RANGE_LABELS,
        selected=selected,
        keys=GatewayKey.objects.filter(workspace=workspace).order_by("name"),
        status_classes=STATUS_CLASSES,
        dimension=dimension,
        dimension_label=DIMENSION_LABELS[dimension],
        dimensions=DIMENSION_LABELS,
        breakdown_links=[
            (
                key,
                label,
                "?"
                + urlencode({**base_query, "breakdown": key, **({"tag_key": tag_key} if tag_key else {})})
                + "#breakdown",
            )
            for key, label in DIMENSION_LABELS.items()
        ],
        tag_key=tag_key,
        problems=problems,
        notes=notes,
        series=series,
        previous_range=previous_range,
        changes=[_change_row(c) for c in comparison(series.totals, previous)],
        totals=series.totals,
        charts=charts,
        chart_data={
            "charts": [
                {
                    "id": c.id,
                    "title": c.title,
                    "unit": c.unit,
                    "columns": c.columns,
                    "labels": [label for label, _ in c.rows],
                    "data": c.data,
                    "stacked": c.stacked,
                    "kind": c.kind,
                }
                for c in charts
            ]
        },
        breakdown=breakdown,
        breakdown_rows=[(row, _row_link(requests_url, base_query, dimension, tag_key, row)) for row in rows],
        top_rows=TOP_ROWS,
        sort_headers=_sort_headers(base_query, dimension, tag_key, sort),
        requests_url=requests_url + "?" + urlencode(base_query),
        error_codes=series.error_codes,
    )
    return render(request, "dashboard/analytics.html", context, status=400 if problems else 200)


def _shown(kind: str, value: int | Decimal | None) -> str:
    if value is None:
        return "—"
    if kind == "money":
        return usd_cents(int(value))
    if kind == "percent":
        return f"{value}%"
    if kind == "ms":
        return f"{int(value):,} ms"
    return f"{int(value):,}"


def _change_row(change: Change) -> dict[str, str]:
    pct = change.change_pct
    return {
        "name": change.name,
        "id": change.name.lower().replace(" ", "-"),
        "current": _shown(change.kind, change.current),
        "previous": _shown(change.kind, change.previous),
        "change": "—" if pct is None else f"{'+' if pct > 0 else ''}{pct}%",
    }


def _without(query: dict[str, str], *names: str) -> dict[str, str]:
    return {k: v for k, v in query.items() if k not in names}


def _clean(text: str) -> str:
    return text.replace("\x00", "").strip()[:MAX_TEXT]


def _filters(request: HttpRequest, workspace: Workspace) -> tuple[UsageFilters, dict[str, str], list[str], list[str]]:
    """key (public id), provider, model, status (a class, or an exact code: its class); then what is wrong with
    them (problems), and what the page did with them (notes)."""
    problems: list[str] = []
    notes: list[str] = []
    selected = {name: _clean(request.GET.get(name, "")) for name in ("key", "provider", "model", "status")}
    key_id = None
    if selected["key"]:
        public_id = _uuid(selected["key"])
        key = GatewayKey.objects.filter(workspace=workspace, public_id=public_id).first() if public_id else None
        if key is None:
            problems.append("That gateway key is not in this workspace.")
            selected["key"] = ""
        else:
            key_id = key.pk
    status = selected["status"]
    status_class = ""
    if status in STATUS_CLASSES:
        status_class = status
    elif status.isdigit() and len(status) == 3 and f"{status[0]}xx" in STATUS_CLASSES:
        status_class = f"{status[0]}xx"
        notes.append(f"Analytics counts by status class: showing every {status_class} request, not only {status}.")
        selected["status"] = status_class
    elif status:
        problems.append(f"Unknown status “{status[:10]}”: use 2xx, 4xx or 5xx.")
        selected["status"] = ""
    return (
        UsageFilters(key_id=key_id, provider=selected["provider"], model=selected["model"], status_class=status_class),
        selected,
        problems,
        notes,
    )


def _uuid(text: str) -> str | None:
    try:
        return str(uuid.UUID(text))
    except ValueError:
        return None


def _row_link(url: str, base: dict[str, str], dimension: str, tag_key: str, row: BreakdownRow) -> str:
    """The request log for the same range and filters, narrowed to this row."""
    if not row.value:
        return ""
    name, value = {
        "model": ("model", row.value),
        "provider": ("provider", row.value),
        "key": ("key", row.value),
        "user": ("user", row.value),
        "tag": ("tag", f"{tag_key}={row.value}"),
    }[dimension]
    return url + "?" + urlencode({**base, name: value})


def _sort_headers(base: dict[str, str], dimension: str, tag_key: str, sort: str) -> list[dict[str, str]]:
    headers = []
    current, descending = sort.lstrip("-"), sort.startswith("-")
    for name, label in SORT_LABELS.items():
        label = label or DIMENSION_LABELS[dimension]
        active = name == current
        # first click: names ascending, numbers largest first; a second click reverses
        next_sort = (name if descending else f"-{name}") if active else (name if name == "name" else f"-{name}")
        query = {**base, "breakdown": dimension, "sort": next_sort}
        if tag_key:
            query["tag_key"] = tag_key
        headers.append(
            {
                "label": label,
                "href": "?" + urlencode(query) + "#breakdown",
                "aria_sort": ("descending" if descending else "ascending") if active else "",
                "arrow": ("↓" if descending else "↑") if active else "",
                "numeric": "" if name == "name" else "num",
            }
        )
    return headers


# --- charts ----------------------------------------------------------------------------------------------------


def _bucket_label(moment: datetime, step: timedelta) -> str:
    if step >= timedelta(days=1):
        return f"{moment:%Y-%m-%d}"
    if step >= timedelta(hours=1):
        return f"{moment:%m-%d %H:00}"
    return f"{moment:%H:%M}"


def _dollars(nanos: int) -> str:
    return str(nanos_to_usd(nanos).normalize()) if nanos else "0"


def _pct(value: Decimal | None) -> str:
    return "—" if value is None else f"{value}%"


def _ms(value: int | None) -> str:
    return "—" if value is None else f"{value:,} ms"


def _pct_of(count: int, requests: int) -> Decimal | None:
    if not requests:
        return None
    return (Decimal(100 * count) / requests).quantize(Decimal("0.1"), rounding=ROUND_HALF_UP)


def _charts(series: Series) -> list[Chart]:
    points = series.points
    labels = [_bucket_label(p.start, series.step) for p in points]
    t = series.totals.sums

    def rows(cells: Callable[[Any], list[str]]) -> list[tuple[str, list[str]]]:
        return [(label, cells(p)) for label, p in zip(labels, points, strict=True)]

    token_types = [
        ("Input", "input_tokens"),
        ("Cached input", "cached_input_tokens"),
        ("Cache write", "cache_write_tokens"),
        ("Output", "output_tokens"),
        ("Reasoning", "reasoning_tokens"),
    ]
    codes = series.charted_codes
    charted = set(codes)
    other = [sum(n for c, n in p.errors_by_code.items() if c not in charted) for p in points]
    code_columns = codes + (["Other codes"] if any(other) else [])

    def code_counts(i: int) -> list[int]:
        p = points[i]
        counts = [p.errors_by_code.get(c, 0) for c in codes]
        return counts + ([other[i]] if any(other) else [])

    def num(value: Decimal | None) -> float | None:
        return None if value is None else float(value)

    return [
        Chart(
            id="spend",
            title="Spend",
            unit="$",
            columns=["Charged", "Provider cost"],
            rows=rows(lambda p: [usd_cents(p.sums.charge_nanos), usd_cents(p.sums.cost_nanos)]),
            totals=[usd_cents(t.charge_nanos), usd_cents(t.cost_nanos)],
            data={
                "Charged": [_dollars(p.sums.charge_nanos) for p in points],
                "Provider cost": [_dollars(p.sums.cost_nanos) for p in points],
            },
        ),
        Chart(
            id="requests",
            title="Requests",
            unit="requests",
            columns=["Succeeded (2xx)", "Client errors (4xx)", "Server errors (5xx)", "All"],
            rows=rows(
                lambda p: [f"{p.sums.ok:,}", f"{p.sums.errors_4xx:,}", f"{p.sums.errors_5xx:,}", f"{p.sums.requests:,}"]
            ),
            totals=[f"{t.ok:,}", f"{t.errors_4xx:,}", f"{t.errors_5xx:,}", f"{t.requests:,}"],
            data={
                "Succeeded (2xx)": [p.sums.ok for p in points],
                "Client errors (4xx)": [p.sums.errors_4xx for p in points],
                "Server errors (5xx)": [p.sums.errors_5xx for p in points],
            },
            stacked=True,
            kind="bar",
        ),
        Chart(
            id="tokens",
            title="Tokens by type",
            unit="tokens",
            columns=[name for name, _ in token_types],
            rows=rows(lambda p: [f"{getattr(p.sums, attr):,}" for _, attr in token_types]),
            totals=[f"{getattr(t, attr):,}" for _, attr in token_types],
            data={name: [getattr(p.sums, attr) for p in points] for name, attr in token_types},
            stacked=True,
            kind="bar",
        ),
        Chart(
            id="errors",
            title="Error rate by status class",
            unit="%",
            columns=["4xx", "5xx"],
            rows=rows(lambda p: [_pct(p.sums.rate_4xx), _pct(p.sums.rate_5xx)]),
            totals=[_pct(t.rate_4xx), _pct(t.rate_5xx)],
            data={
                "4xx": [num(p.sums.rate_4xx) for p in points],
                "5xx": [num(p.sums.rate_5xx) for p in points],
            },
        ),
        Chart(
            id="error-codes",
            title="Error rate by error code",
            unit="%",
            columns=code_columns,
            rows=[
                (label, [_pct(_pct_of(n, p.sums.requests)) for n in code_counts(i)])
                for i, (label, p) in enumerate(zip(labels, points, strict=True))
            ],
            totals=[_pct(e.share) for e in series.error_codes if e.code in charted]
            + ([_pct(_pct_of(sum(other), t.requests))] if any(other) else []),
            data={
                column: [num(_pct_of(code_counts(i)[j], p.sums.requests)) for i, p in enumerate(points)]
                for j, column in enumerate(code_columns)
            },
        ),
        Chart(
            id="latency",
            title="Latency",
            unit="ms",
            columns=["p50", "p95", "p99"],
            rows=rows(lambda p: [_ms(p.latency.p50), _ms(p.latency.p95), _ms(p.latency.p99)]),
            totals=[_ms(series.totals.latency.p50), _ms(series.totals.latency.p95), _ms(series.totals.latency.p99)],
            data={
                "p50": [p.latency.p50 for p in points],
                "p95": [p.latency.p95 for p in points],
                "p99": [p.latency.p99 for p in points],
            },
        ),
        Chart(
            id="ttfb",
            title="Time to first byte",
            unit="ms",
            columns=["p50", "p95"],
            rows=rows(lambda p: [_ms(p.latency.ttfb_p50), _ms(p.latency.ttfb_p95)]),
            totals=[_ms(series.totals.latency.ttfb_p50), _ms(series.totals.latency.ttfb_p95)],
            data={
                "p50": [p.latency.ttfb_p50 for p in points],
                "p95": [p.latency.ttfb_p95 for p in points],
            },
        ),
    ]
