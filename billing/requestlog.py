"""The request log's filter: one parsed, validated query (`UsageFilter`) that the page, its CSV export and the
background export (billing.exports) all run, so the three always match the same rows.

- `UsageFilter.parse(querydict)` reads the query-string names shared with analytics (range, from, to, key,
  provider, model, status, error, user, tag, request, min_cost, min_latency, stream, estimated) and returns
  the filter plus problems as sentences for the page. A bad value (a NUL byte, an over-long text, "abc" as
  a number, an out-of-range number) is reported and that one filter is ignored; parsing never raises.
- `queryset(workspace)` is always bounded by the workspace AND [start, end) of `started_at`, so Postgres
  prunes the monthly partitions and the (workspace, started_at, id) index serves the order.
- `page(workspace, after=..., before=...)`: keyset pagination, newest first, by (started_at, id): never
  OFFSET. A cursor is opaque text (`encode_cursor` / `decode_cursor`).
- `query()` rebuilds the query string (for links that keep the filter); `to_json()` / `from_json()` store
  it with the absolute time range an export was asked for.
- `csv_chunks(workspace)`: the CSV (every event field, money as exact USD decimal strings from nanos),
  written by Postgres (COPY) in keyset slices; `count_upto` counts matches cheaply (LIMIT in a subquery).
"""

from __future__ import annotations

import base64
import binascii
import csv
import io
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import urlencode

from django.db import connection
from django.db.models import Case, F, Q, QuerySet, TextField, Value, When
from django.db.models.expressions import RawSQL
from django.db.models.functions import Cast, Concat

from billing.models import UsageEvent
from billing.timerange import TimeRange, time_range
from contracts.money import usd_to_nanos
from tenants.models import Workspace

PAGE_SIZE = 50
MAX_TEXT = 256  # the longest text column filtered on (end_user)
MAX_MIN_COST_USD = Decimal(1_000_000)
MAX_LATENCY_MS = 2**31 - 1
CSV_CHUNK_BYTES = 256 * 1024
CSV_SLICE_ROWS = 50_000  # rows per COPY (about 15 MB of CSV held at once)
YES_NO = {"yes": True, "no": False}

FILTER_LABELS = {
    "key": "Key",
    "provider": "Provider",
    "model": "Model",
    "status": "Status",
    "error": "Error code",
    "user": "End user",
    "tag": "Tag",
    "request": "Request id",
    "min_cost": "Minimum cost",
    "min_latency": "Minimum latency",
    "stream": "Streamed",
    "estimated": "Estimated",
}

CSV_COLUMNS = (
    "request_id",
    "started_at_utc",
    "finished_at_utc",
    "ingested_at_utc",
    "key_id",
    "key_name",
    "provider",
    "credential_id",
    "credential_kind",
    "model_requested",
    "model_served",
    "status",
    "error_code",
    "input_tokens",
    "cached_input_tokens",
    "cache_write_tokens",
    "output_tokens",
    "reasoning_tokens",
    "units",
    "cost_usd",
    "charge_usd",
    "priced",
    "estimated",
    "stream",
    "latency_ms",
    "ttfb_ms",
    "end_user",
    "metadata",
    "clamped",
)


_FORMULA_START = "('=', '+', '-', '@', chr(9), chr(13))"
_BASE = '"billing_usageevent".'


def _safe_sql(column: str) -> str:
    """SQL for a text value a spreadsheet will not run as a formula (as dashboard.filters.csv_safe)."""
    return f"CASE WHEN left({column}, 1) IN {_FORMULA_START} THEN '''' || {column} ELSE {column} END"


def _csv_expressions() -> list[Any]:
    """One expression per CSV_COLUMNS entry, each text (or NULL: an empty cell)."""

    def col(name: str) -> str:
        return f'{_BASE}"{name}"'

    def raw(sql: str) -> RawSQL:
        return RawSQL(sql, ())  # noqa: S611 (fixed column names and SQL, no input)

    def when(name: str) -> RawSQL:
        return raw(f"to_char({col(name)} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')")

    def usd(name: str) -> RawSQL:
        return raw(f"round({col(name)}::numeric / 1000000000, 9)::text")

    def yes(name: str) -> RawSQL:
        return raw(f"CASE WHEN {col(name)} THEN 'yes' ELSE 'no' END")

    def safe(name: str) -> RawSQL:
        return raw(_safe_sql(col(name)))

    def jsonb(name: str) -> RawSQL:
        return raw(f"CASE WHEN {col(name)} = '{{}}'::jsonb THEN NULL ELSE {_safe_sql(col(name) + '::text')} END")

    key_name = Case(
        When(key__name__regex=r"^[-=+@\t\r]", then=Concat(Value("'"), F("key__name"))), default=F("key__name")
    )
    return [
        safe("request_id"),
        when("started_at"),
        when("finished_at"),
        when("ingested_at"),
        Cast(F("key__public_id"), TextField()),
        key_name,
        safe("provider"),
        Cast(F("credential__public_id"), TextField()),
        safe("credential_kind"),
        safe("model_requested"),
        safe("model_served"),
        raw(col("status")),
        safe("error_code"),
        raw(col("input_tokens")),
        raw(col("cached_input_tokens")),
        raw(col("cache_write_tokens")),
        raw(col("output_tokens")),
        raw(col("reasoning_tokens")),
        jsonb("units"),
        usd("cost_nanos"),
        usd("charge_nanos"),
        yes("priced"),
        yes("estimated"),
        yes("stream"),
        raw(col("latency_ms")),
        raw(col("ttfb_ms")),
        safe("end_user"),
        jsonb("metadata"),
        yes("clamped"),
    ]


def _older_than(qs: QuerySet[UsageEvent], cursor: tuple[datetime, int] | None) -> QuerySet[UsageEvent]:
    """Rows strictly after `cursor` in newest-first order: (started_at, id) < cursor."""
    if cursor is None:
        return qs
    ts, pk = cursor
    return qs.filter(started_at__lte=ts).filter(Q(started_at__lt=ts) | Q(started_at=ts, id__lt=pk))


class CursorError(ValueError):
    """A pagination cursor that this code did not write."""


def encode_cursor(started_at: datetime, pk: int) -> str:
    micros = int(started_at.timestamp()) * 1_000_000 + started_at.microsecond
    return base64.urlsafe_b64encode(f"{micros}.{pk}".encode()).decode().rstrip("=")


def decode_cursor(text: str) -> tuple[datetime, int]:
    if not text or len(text) > 64:
        raise CursorError("bad cursor")
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode("ascii")
        micros_text, pk_text = raw.split(".")
        micros, pk = int(micros_text), int(pk_text)
        if not (0 <= micros < 253_402_300_800 * 1_000_000 and 0 < pk < 2**63):
            raise ValueError("out of range")
        seconds, rest = divmod(micros, 1_000_000)
        return datetime.fromtimestamp(seconds, tz=UTC).replace(microsecond=rest), pk
    except (ValueError, UnicodeDecodeError, binascii.Error, OverflowError, OSError) as exc:
        raise CursorError("bad cursor") from exc


def usd_exact(nanos: int | None) -> str:
    """nano-USD as an exact USD decimal string (`0.001250000`); empty for None (unpriced)."""
    if nanos is None:
        return ""
    sign = "-" if nanos < 0 else ""
    whole, part = divmod(abs(nanos), 1_000_000_000)
    return f"{sign}{whole}.{part:09d}"


def _clean_text(name: str, value: str, problems: list[str], *, limit: int = MAX_TEXT) -> str:
    """The value, or "" (and a problem) if Postgres would refuse it or it cannot match anything."""
    label = FILTER_LABELS.get(name, name)
    if "\x00" in value:
        problems.append(f"{label}: a NUL byte is not allowed; this filter was ignored.")
        return ""
    value = value.strip()
    if len(value) > limit:
        problems.append(f"{label}: at most {limit} characters; this filter was ignored.")
        return ""
    return value


@dataclass(frozen=True)
class UsageFilter:
    """What the request log shows: a time range (always) and optional narrowing filters."""

    range: TimeRange
    key: str = ""  # GatewayKey.public_id (canonical uuid text)
    provider: str = ""
    model: str = ""  # served or requested
    status: str = ""  # "2xx" / "4xx" / "5xx", or an exact code
    error: str = ""
    user: str = ""
    tag: tuple[str, str] | None = None
    request: str = ""
    min_cost: str = ""  # USD as typed (normalized); `min_cost_nanos` is what filters
    min_cost_nanos: int | None = None
    min_latency: int | None = None
    stream: bool | None = None
    estimated: bool | None = None

    # --- parsing ------------------------------------------------------------------------------------------

    @classmethod
    def parse(cls, query: Mapping[str, Any], *, now: datetime | None = None) -> tuple[UsageFilter, list[str]]:
        """The filter the query string (a QueryDict or a plain mapping) asks for; problems for the page."""

        def get(name: str) -> str:
            value = query.get(name, "")
            return value if isinstance(value, str) else ""

        problems: list[str] = []
        span, range_problems = time_range(query, now=now)
        problems += range_problems
        values: dict[str, Any] = {}

        key = _clean_text("key", get("key"), problems)
        if key:
            try:
                values["key"] = str(uuid.UUID(key))
            except ValueError:
                problems.append("Key: not a key of this workspace; this filter was ignored.")
        for name in ("provider", "model", "error", "user"):
            limit = 200 if name == "model" else 64 if name in ("provider", "error") else MAX_TEXT
            text = _clean_text(name, get(name), problems, limit=limit)
            if text:
                values[name] = text

        status = _clean_text("status", get("status"), problems, limit=8).lower()
        if status:
            if status in ("1xx", "2xx", "3xx", "4xx", "5xx") or (status.isdigit() and 100 <= int(status) <= 999):
                values["status"] = status
            else:
                problems.append("Status: use 2xx, 4xx, 5xx or a code such as 429; this filter was ignored.")

        tag = _clean_text("tag", get("tag"), problems)
        if tag:
            name, sep, value = tag.partition("=")
            if not sep or not name.strip():
                problems.append("Tag: write it as name=value; this filter was ignored.")
            else:
                values["tag"] = (name.strip(), value.strip())

        request = _clean_text("request", get("request"), problems, limit=64)
        if request:
            values["request"] = request

        min_cost = _clean_text("min_cost", get("min_cost"), problems, limit=32).lstrip("$").strip()
        if min_cost:
            try:
                amount = Decimal(min_cost)
                if not amount.is_finite() or amount < 0 or amount > MAX_MIN_COST_USD:
                    raise ValueError("out of range")
                nanos = usd_to_nanos(amount)
            except (InvalidOperation, ValueError):
                problems.append(
                    "Minimum cost: a USD amount between 0 and 1000000 (at most 9 decimals); this filter was ignored."
                )
            else:
                values["min_cost"], values["min_cost_nanos"] = min_cost, nanos

        latency = _clean_text("min_latency", get("min_latency"), problems, limit=16)
        if latency:
            if latency.isdigit() and int(latency) <= MAX_LATENCY_MS:
                values["min_latency"] = int(latency)
            else:
                problems.append("Minimum latency: a whole number of milliseconds; this filter was ignored.")

        for name in ("stream", "estimated"):
            flag = _clean_text(name, get(name), problems, limit=8).lower()
            if flag:
                if flag in YES_NO:
                    values[name] = YES_NO[flag]
                else:
                    problems.append(f"{FILTER_LABELS[name]}: yes or no; this filter was ignored.")
        return cls(range=span, **values), problems

    # --- querying -----------------------------------------------------------------------------------------

    def queryset(self, workspace: Workspace | int) -> QuerySet[UsageEvent]:
        """The matching events of `workspace`, bounded by the time range (partition pruning); unordered."""
        workspace_id = workspace if isinstance(workspace, int) else workspace.pk
        qs = UsageEvent.objects.filter(
            workspace_id=workspace_id, started_at__gte=self.range.start, started_at__lt=self.range.end
        )
        if self.key:
            qs = qs.filter(key__public_id=self.key, key__workspace_id=workspace_id)
        if self.provider:
            qs = qs.filter(provider=self.provider)
        if self.model:
            qs = qs.filter(Q(model_served=self.model) | Q(model_requested=self.model))
        if self.status:
            if self.status.endswith("xx"):
                low = int(self.status[0]) * 100
                qs = qs.filter(status__gte=low, status__lt=low + 100)
            else:
                qs = qs.filter(status=int(self.status))
        if self.error:
            qs = qs.filter(error_code=self.error)
        if self.user:
            qs = qs.filter(end_user=self.user)
        if self.tag is not None:
            qs = qs.filter(metadata__contains={self.tag[0]: self.tag[1]})  # `@>`: the GIN index serves it
        if self.request:
            qs = qs.filter(request_id=self.request)
        if self.min_cost_nanos is not None:
            qs = qs.filter(cost_nanos__gte=self.min_cost_nanos)
        if self.min_latency is not None:
            qs = qs.filter(latency_ms__gte=self.min_latency)
        if self.stream is not None:
            qs = qs.filter(stream=self.stream)
        if self.estimated is not None:
            qs = qs.filter(estimated=self.estimated)
        return qs

    def page(
        self,
        workspace: Workspace | int,
        *,
        after: tuple[datetime, int] | None = None,
        before: tuple[datetime, int] | None = None,
        size: int = PAGE_SIZE,
    ) -> tuple[list[UsageEvent], bool, bool]:
        """One page, newest first: (rows, has_newer, has_older). `after`: rows older than that cursor;
        `before`: rows newer than it (the "Newer" link); neither: the newest rows."""
        qs = self.queryset(workspace).select_related("key")
        if before is not None:
            ts, pk = before
            rows = list(
                qs.filter(Q(started_at__gt=ts) | Q(started_at=ts, id__gt=pk)).order_by("started_at", "id")[: size + 1]
            )
            has_newer = len(rows) > size
            rows = rows[:size][::-1]
            return rows, has_newer, True
        qs = _older_than(qs, after)
        rows = list(qs.order_by("-started_at", "-id")[: size + 1])
        return rows[:size], after is not None, len(rows) > size

    # --- links and storage --------------------------------------------------------------------------------

    def params(self) -> dict[str, str]:
        """Query-string parameters, range first; only the filters that are set."""
        out = dict(self.range.query())
        for name in ("key", "provider", "model", "status", "error", "user", "request", "min_cost"):
            value = getattr(self, name)
            if value:
                out[name] = value
        if self.tag is not None:
            out["tag"] = f"{self.tag[0]}={self.tag[1]}"
        if self.min_latency is not None:
            out["min_latency"] = str(self.min_latency)
        for name in ("stream", "estimated"):
            flag = getattr(self, name)
            if flag is not None:
                out[name] = "yes" if flag else "no"
        return out

    def query(self, **overrides: str) -> str:
        """The query string that selects this filter (for links), with `overrides` added or replaced."""
        params = self.params()
        params.update({k: v for k, v in overrides.items() if v})
        return urlencode(params)

    @property
    def narrowing(self) -> bool:
        """Whether any filter besides the time range is set."""
        return len(self.params()) > len(self.range.query())

    def to_json(self) -> dict[str, Any]:
        """What an export stores: the parameters plus the absolute [start, end) it was asked for."""
        return {**self.params(), "start": self.range.start.isoformat(), "end": self.range.end.isoformat()}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> UsageFilter:
        parsed, _ = cls.parse({k: v for k, v in data.items() if isinstance(v, str)})
        start = datetime.fromisoformat(str(data["start"]))
        end = datetime.fromisoformat(str(data["end"]))
        return replace(parsed, range=TimeRange(parsed.range.key, start, end))

    def describe(self) -> str:
        """One line for lists of exports: "Last 24 hours · model gpt-4o · status 5xx"."""
        parts = [f"{self.range.start:%Y-%m-%d %H:%M} to {self.range.end:%Y-%m-%d %H:%M} UTC"]
        for name, value in self.params().items():
            if name in FILTER_LABELS:
                parts.append(f"{FILTER_LABELS[name].lower()} {value}")
        return " · ".join(parts)

    # --- CSV ----------------------------------------------------------------------------------------------

    def csv_chunks(
        self,
        workspace: Workspace | int,
        *,
        chunk_bytes: int = CSV_CHUNK_BYTES,
        slice_rows: int = CSV_SLICE_ROWS,
        counts: dict[str, int] | None = None,
    ) -> Iterator[bytes]:
        """The CSV (header first) as UTF-8 chunks of about `chunk_bytes`, newest first.

        Postgres writes the rows itself (`COPY (<this filter's query>) TO STDOUT (FORMAT csv)`): no model
        instances and no per-row Python, so it streams well above 50,000 rows/s. Text a client supplied is
        formula-safe, money is exact USD from nanos, times are UTC ISO 8601, an empty cell is an empty value.
        The rows are copied in keyset slices of `slice_rows` (the slice's last row found first on the
        (workspace, started_at, id) index), each read completely before its chunks are yielded: no COPY is
        ever open while the consumer runs, so it may use the connection (the export writes its parts) or
        stop early, and memory stays bounded by one slice. `counts["rows"]` (if given) counts the rows."""
        workspace_id = workspace if isinstance(workspace, int) else workspace.pk
        header = io.StringIO()
        csv.writer(header).writerow(CSV_COLUMNS)
        yield header.getvalue().encode()
        columns = {f"c{i:02d}": expression for i, expression in enumerate(_csv_expressions())}
        after: tuple[datetime, int] | None = None
        while True:
            qs = _older_than(self.queryset(workspace_id), after).order_by("-started_at", "-id")
            edge = list(qs.values_list("started_at", "id")[slice_rows - 1 : slice_rows])
            if edge:
                ts, pk = edge[0]
                qs = qs.filter(started_at__gte=ts).filter(Q(started_at__gt=ts) | Q(started_at=ts, id__gte=pk))
            sql, params = qs.values(**columns).query.sql_with_params()
            data = bytearray()
            with (
                connection.cursor() as cursor,
                cursor.cursor.copy(f"COPY ({sql}) TO STDOUT (FORMAT csv)", params) as copy,
            ):
                rows = 0
                for block in copy:  # one CopyData message per row (the protocol's rule for COPY TO)
                    data += block
                    rows += 1
            if counts is not None:
                counts["rows"] = counts.get("rows", 0) + rows
            view = memoryview(data)
            for start in range(0, len(data), chunk_bytes):
                yield bytes(view[start : start + chunk_bytes])
            if not edge:
                return
            after = edge[0]

    def count_upto(self, workspace: Workspace | int, limit: int) -> int:
        """How many rows match, counting at most `limit` (LIMIT in a subquery: cheap however many match)."""
        return self.queryset(workspace).values("id")[:limit].count()
