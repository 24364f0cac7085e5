"""The usage event: one per proxied request, the unit that analytics and billing are built from.

The proxy builds it when a request finishes (or the client goes away), and `contracts.balance` appends it
to the Redis stream `USAGE_STREAM` atomically with the workspace's pending-charge counter. The Celery
ingester (billing.ingest) turns it into a `billing.UsageEvent` row. Both sides use `to_fields` /
`from_fields` rather than building entries by hand.

Encoding: version 2 (written now) is four stream fields: `v=2`, `w=<workspace id>`, `c=<charge nano-USD>`
and `e=<the event as one JSON object>`: few arguments to pack instead of ~50, which matters on the proxy's
hot path. `w` and `c` repeat what `e` holds so that an entry whose `e` cannot be decoded can still have
its charge released from the workspace's pending total (billing.ingest dead-letters it). Still read:
version 2 without `w`/`c` (proxies before they were added) and version 1 (flat string fields, one per
attribute), so events spooled or streamed by an older proxy during a deploy are ingested.

Sanitizing (the boundary): `to_fields` and `from_fields` both run `UsageEvent.sanitize`, so no single
value that its column would refuse reaches the ingester, whoever wrote the entry: every string is valid
UTF-8 without NUL and at most its column's length; `metadata` is a JSON object without NUL, at most
`METADATA_MAX_BYTES` serialized and `METADATA_MAX_DEPTH` deep; `units` (billable unit counts, e.g.
`{"web_search": 2}`) keeps at most `MAX_UNIT_TYPES` names that match `UNIT_NAME` (others are dropped) with
counts clamped like token counts (0..MAX_TOKENS); every integer is clamped to its column's
range (negatives to 0; the status to 999, three digits; timestamps to what a Python datetime holds; the
charge to what the Lua scripts accept). What still fails in Postgres (a deleted gateway key, a sum that
overflows) is isolated by billing.ingest. An event that was altered has
`clamped = True` and the alteration is logged (field names only, never values). Values that cannot be
repaired without misattributing usage (a workspace or key id that is not a positive 64-bit integer, an
empty request id, a field of the wrong kind, `units` that is not an object) raise ValueError: the
ingester dead-letters such an entry.
Nothing needs fixing on the proxy's normal path, and the checks are then a few comparisons per field.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
from dataclasses import dataclass, field, fields
from typing import Any

import orjson

from contracts.balance import MAX_AMOUNT_NANOS

log = logging.getLogger("turnpike.events")

USAGE_STREAM = "tp:usage"
USAGE_GROUP = "ingest"
# Entries the ingester could not store (billing.deadletters): one stream entry per dead letter, fields
# `entry` (the usage stream entry id) and `letter` (JSON: workspace, charge, error, raw fields), trimmed to
# about 100,000 entries by contracts.balance.ACK; the Postgres table billing.UsageDeadLetter keeps all.
USAGE_DEAD_STREAM = "tp:usage:dead"
# Operational counters, a Redis hash of integers (HINCRBY): `ingest_dead_letters` = dead letters so far.
METRICS_KEY = "tp:metrics"
DEAD_LETTER_METRIC = "ingest_dead_letters"
EVENT_VERSION = "2"

MAX_BIGINT = 2**63 - 1  # Postgres bigint
MAX_INTEGER = 2**31 - 1  # Postgres integer (Django PositiveIntegerField)
# No request has a trillion tokens; the bound keeps sums (hourly rollups, per-batch totals) far from the
# bigint limit, so a customer's server reporting absurd counts cannot overflow its neighbours' rows.
MAX_TOKENS = 10**12
MAX_TIMESTAMP_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z, the last instant a Python datetime holds
METADATA_MAX_BYTES = 4096
METADATA_MAX_DEPTH = 8  # the tags object itself is depth 1
# `units`: billable unit counts keyed by the catalog's fee names (contracts.pricing: `web_search`, ...).
# An event without the field (a proxy of an earlier release) decodes with no units.
UNIT_NAME = re.compile(r"[a-z][a-z0-9_]{0,63}")
MAX_UNIT_TYPES = 16

# Column lengths of billing.UsageEvent (`user` is stored as `end_user`).
STRING_LIMITS: dict[str, int] = {
    "request_id": 64,
    "provider": 64,
    "credential_kind": 16,
    "model_requested": 200,
    "model_served": 200,
    "error_code": 64,
    "user": 256,
}
INT_LIMITS: dict[str, int] = {
    "status": 999,  # an HTTP status has three digits (the rollups' status class, "5xx", relies on it)
    "input_tokens": MAX_TOKENS,
    "cached_input_tokens": MAX_TOKENS,
    "cache_write_tokens": MAX_TOKENS,
    "output_tokens": MAX_TOKENS,
    "reasoning_tokens": MAX_TOKENS,
    "cost_nanos": MAX_AMOUNT_NANOS,
    "charge_nanos": MAX_AMOUNT_NANOS,  # it crosses into Lua (contracts.balance) as well as into Postgres
    "latency_ms": MAX_INTEGER,
    "ttfb_ms": MAX_INTEGER,
    "started_at_ms": MAX_TIMESTAMP_MS,
    "finished_at_ms": MAX_TIMESTAMP_MS,
}
_INT_CHECKS = tuple(INT_LIMITS.items())
_STRING_CHECKS = tuple(STRING_LIMITS.items())
_NULLABLE = frozenset({"cost_nanos", "ttfb_ms", "credential_id"})
_IDS = ("workspace_id", "key_id", "credential_id")
_BOOLS = ("priced", "estimated", "stream", "clamped")


@dataclass(slots=True)
class UsageEvent:
    request_id: str
    workspace_id: int
    key_id: int
    provider: str  # provider type (openai, anthropic, …)
    credential_id: int | None  # None when no credential was chosen (e.g. 404 unknown model)
    credential_kind: str  # "byok" | "managed" | ""
    model_requested: str
    model_served: str
    status: int  # HTTP status returned to the client
    error_code: str = ""
    input_tokens: int = 0
    cached_input_tokens: int = 0
    cache_write_tokens: int = 0
    output_tokens: int = 0
    reasoning_tokens: int = 0
    units: dict[str, int] = field(default_factory=dict)  # billable units, e.g. {"web_search": 2}
    cost_nanos: int | None = None  # provider cost; None = unpriced
    charge_nanos: int = 0  # what the balance is charged (0 when unpriced: flagged, never silent)
    priced: bool = True
    estimated: bool = False  # tokens counted locally (client disconnected, provider sent no usage)
    stream: bool = False
    latency_ms: int = 0
    ttfb_ms: int | None = None
    user: str = ""  # the OpenAI `user` field, if the client sent one
    metadata: dict[str, Any] = field(default_factory=dict)  # x-turnpike-metadata tags
    started_at_ms: int = 0  # unix milliseconds, set by the proxy
    finished_at_ms: int = 0
    clamped: bool = False  # a value was altered to fit its column (see `sanitize`)

    def sanitize(self) -> list[str]:
        """Make every value fit its column, in place. Returns the names of the fields altered (and sets
        `clamped` if there are any); raises ValueError for what cannot be repaired (see the module doc)."""
        altered: list[str] = []
        for name in _IDS:
            value = getattr(self, name)
            if type(value) is int and 0 < value <= MAX_BIGINT:
                continue
            if value is None and name in _NULLABLE:
                continue
            value = _as_int(name, value)
            if not 0 < value <= MAX_BIGINT:
                raise ValueError(f"{name} {value} is not a positive 64-bit integer")
            setattr(self, name, value)
        for name, limit in _INT_CHECKS:
            value = getattr(self, name)
            if type(value) is int and 0 <= value <= limit:
                continue
            if value is None and name in _NULLABLE:
                continue
            number = _as_int(name, value)
            fixed = min(max(number, 0), limit)
            setattr(self, name, fixed)
            if fixed != number:
                altered.append(name)
        for name, limit in _STRING_CHECKS:
            value = getattr(self, name)
            if type(value) is str and len(value) <= limit and value.isascii() and "\x00" not in value:
                continue
            fixed_text = _request_id(value) if name == "request_id" else _clean_text(value)[:limit]
            if fixed_text != value:
                setattr(self, name, fixed_text)
                altered.append(name)
        for name in _BOOLS:
            value = getattr(self, name)
            if type(value) is not bool:
                if type(value) is not int or value not in (0, 1):
                    raise ValueError(f"{name} is not a boolean")
                setattr(self, name, bool(value))
        units = self.units
        if type(units) is not dict or (units and not _units_fit(units)):
            fixed_units = {} if units is None else _clean_units(units)
            if units is not None and fixed_units != units:
                altered.append("units")
            self.units = fixed_units
        if not _metadata_fits(self.metadata):
            fixed_metadata = _clean_metadata(self.metadata)
            if fixed_metadata != self.metadata:
                self.metadata = fixed_metadata
                altered.append("metadata")
        if not self.request_id:
            raise ValueError("request_id is empty")
        if altered:
            self.clamped = True
        return altered

    def to_fields(self) -> dict[str, str]:
        """The stream entry (version 2). Sanitizes the event in place first, so `charge_nanos` read after
        this call is the `c` that was encoded (the proxy passes it to SETTLE_AND_EMIT)."""
        altered = self.sanitize()
        if altered:
            _log_altered(self, altered)
        return {
            "v": EVENT_VERSION,
            "w": str(self.workspace_id),
            "c": str(self.charge_nanos),
            "e": orjson.dumps(self).decode(),
        }

    def to_flat_fields(self) -> dict[str, str]:
        """Version 1: one string field per attribute (still accepted by `from_fields`)."""
        out: dict[str, str] = {"v": "1"}
        for name in _NAMES:
            value = getattr(self, name)
            if value is None:
                out[name] = ""
            elif isinstance(value, bool):
                out[name] = "1" if value else "0"
            elif isinstance(value, dict):
                out[name] = json.dumps(value, separators=(",", ":"), sort_keys=True)
            else:
                out[name] = str(value)
        return out

    @classmethod
    def from_fields(cls, raw: dict[str, str] | dict[bytes, bytes]) -> UsageEvent:
        """Decode and sanitize a stream entry or spool line of any version. Raises KeyError, TypeError or
        ValueError (UnicodeDecodeError and orjson.JSONDecodeError are ValueErrors) when it cannot."""
        data = {
            (k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
            for k, v in raw.items()
        }
        if "e" in data:
            values = orjson.loads(data["e"])
            if not isinstance(values, dict):
                raise ValueError("the event is not a JSON object")
            event = cls(**{name: values[name] for name in _NAMES if name in values})
        else:
            event = cls._from_flat(data)
        altered = event.sanitize()
        if altered:
            _log_altered(event, altered)
        return event

    @classmethod
    def _from_flat(cls, data: dict[str, str]) -> UsageEvent:
        kwargs: dict[str, Any] = {}
        for f in fields(cls):
            if f.name not in data:
                continue
            value = data[f.name]
            kind = str(f.type)
            if kind.startswith("int | None"):
                kwargs[f.name] = int(value) if value != "" else None
            elif kind == "int":
                kwargs[f.name] = int(value)
            elif kind == "bool":
                kwargs[f.name] = value == "1"
            elif kind.startswith("dict"):
                kwargs[f.name] = json.loads(value) if value else {}
            else:
                kwargs[f.name] = value
        return cls(**kwargs)


_NAMES = tuple(f.name for f in fields(UsageEvent))


def entry_workspace_and_charge(raw: dict[str, str]) -> tuple[int | None, int]:
    """Best effort for an entry `from_fields` refused: the workspace whose pending total holds its charge,
    and that charge (`w`/`c`, else the v1 fields, else the JSON `e` if it parses); (None, 0) if unknown."""
    workspace = raw.get("w", raw.get("workspace_id"))
    charge = raw.get("c", raw.get("charge_nanos"))
    if (workspace is None or charge is None) and "e" in raw:
        try:
            values = orjson.loads(raw["e"])
        except ValueError:
            values = None
        if isinstance(values, dict):
            workspace = values.get("workspace_id") if workspace is None else workspace
            charge = values.get("charge_nanos") if charge is None else charge
    workspace_id = _strict_int(workspace)
    charge_nanos = _strict_int(charge)
    if workspace_id is None or not 0 < workspace_id <= MAX_BIGINT:
        return None, 0
    if charge_nanos is None or not 0 <= charge_nanos <= MAX_AMOUNT_NANOS:
        return workspace_id, 0
    return workspace_id, charge_nanos


def _strict_int(value: Any) -> int | None:
    if type(value) is int:
        return value
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 19:
        return int(value)
    return None


def _as_int(name: str, value: Any) -> int:
    """An integer for a numeric field: ints as they are, finite floats truncated (orjson reads integers
    beyond 64 bits as floats), decimal strings parsed, infinities to the largest value; else ValueError."""
    if type(value) is int:
        return value
    if isinstance(value, float):
        if math.isnan(value):
            raise ValueError(f"{name} is NaN")
        if math.isinf(value):
            return MAX_BIGINT if value > 0 else 0
        return int(value)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    raise ValueError(f"{name} is not an integer")


def _clean_text(value: Any) -> str:
    """Valid UTF-8 (lone surrogates become '?'), without NUL; None becomes '', other scalars their text."""
    if value is None:
        return ""
    if isinstance(value, dict | list):
        raise ValueError("a text field holds a JSON container")
    text = value if isinstance(value, str) else str(value)
    if not text.isascii():
        text = text.encode("utf-8", "replace").decode("utf-8")
    return text.replace("\x00", "")


def _request_id(value: Any) -> str:
    """A request id that fits: as it is if it does; else a readable prefix plus a digest of the whole, so
    two different long ids never collide and the same one always maps to the same (re-delivery dedupes)."""
    text = _clean_text(value)
    if text == value and len(text) <= STRING_LIMITS["request_id"]:
        return text
    digest = hashlib.sha256(str(value).encode("utf-8", "surrogatepass")).hexdigest()[:23]
    return f"{text[:40]}~{digest}"


def _units_fit(value: Any) -> bool:
    """The fast check: a small object of valid unit names to ints in range."""
    if type(value) is not dict or len(value) > MAX_UNIT_TYPES:
        return False
    for name, count in value.items():
        if type(name) is not str or UNIT_NAME.fullmatch(name) is None:
            return False
        if type(count) is not int or not 0 <= count <= MAX_TOKENS:
            return False
    return True


def _clean_units(value: Any) -> dict[str, int]:
    """The unit counts as an object that fits: names that are not unit names are dropped, counts clamped to
    0..MAX_TOKENS (ints, floats and decimal strings accepted, as for tokens), at most MAX_UNIT_TYPES names
    (the first ones in name order). Not an object: ValueError."""
    if not isinstance(value, dict):
        raise ValueError("units is not an object")
    out: dict[str, int] = {}
    for name in sorted(k for k in value if isinstance(k, str) and UNIT_NAME.fullmatch(k)):
        if len(out) == MAX_UNIT_TYPES:
            break
        out[name] = min(max(_as_int(f"units.{name}", value[name]), 0), MAX_TOKENS)
    return out


def _metadata_fits(value: Any) -> bool:
    """The fast check: a JSON object, serializable, small, without NUL and (counting every bracket, which
    over-counts only when a string holds one) not too deep."""
    if type(value) is not dict:
        return False
    if not value:
        return True
    try:
        blob = orjson.dumps(value)  # refuses lone surrogates, non-str keys and ints beyond 64 bits
    except TypeError:
        return False
    return (
        len(blob) <= METADATA_MAX_BYTES
        and b"\\u0000" not in blob
        and blob.count(b"{") + blob.count(b"[") <= METADATA_MAX_DEPTH
    )


def _clean_metadata(value: Any) -> dict[str, Any]:
    """The tags as a JSON object that fits: cleaned recursively, containers beyond METADATA_MAX_DEPTH
    become null, and top-level tags that do not fit in METADATA_MAX_BYTES are dropped (`_truncated`)."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        return {"_invalid": _clean_text(repr(value))[:200]}
    cleaned = _clean_json(value, 1)
    assert isinstance(cleaned, dict)
    if len(orjson.dumps(cleaned)) <= METADATA_MAX_BYTES:
        return cleaned
    out: dict[str, Any] = {}
    budget = METADATA_MAX_BYTES - len(b'{"_truncated":true}')
    for key, item in cleaned.items():
        size = len(orjson.dumps({key: item})) - 1  # its "key":value plus a comma
        if size > budget:
            continue
        out[key] = item
        budget -= size
    out["_truncated"] = True
    return out


def _clean_json(value: Any, depth: int) -> Any:
    if isinstance(value, dict):
        if depth > METADATA_MAX_DEPTH:
            return None
        return {_clean_text(k): _clean_json(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple):
        if depth > METADATA_MAX_DEPTH:
            return None
        return [_clean_json(v, depth + 1) for v in value]
    if isinstance(value, str):
        return _clean_text(value)
    if value is None or isinstance(value, bool | float):
        return value
    if isinstance(value, int):
        return min(max(value, -(2**63)), 2**64 - 1)  # what orjson writes
    return _clean_text(str(value))


def _log_altered(event: UsageEvent, names: list[str]) -> None:
    log.warning(
        "usage event %s of workspace %s altered to fit its columns (clamped): %s",
        event.request_id,
        event.workspace_id,
        ", ".join(names),
    )
