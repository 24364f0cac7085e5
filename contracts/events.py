"""The usage event: one per proxied request, the unit that analytics and billing are built from.

The proxy builds it when a request finishes (or the client goes away), and `contracts.balance` appends it
to the Redis stream `USAGE_STREAM` atomically with the workspace's pending-charge counter. The Celery
ingester (billing.ingest) turns it into a `billing.UsageEvent` row. Both sides use `to_fields` /
`from_fields` rather than building entries by hand.

Encoding: version 2 (written now) is two stream fields, `v=2` and `e=<the event as one JSON object>`:
one argument to pack instead of ~50, which matters on the proxy's hot path. Version 1 (flat string
fields, one per attribute) is still read, so events spooled or streamed by an older proxy during a
deploy are ingested.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from typing import Any

import orjson

USAGE_STREAM = "tp:usage"
USAGE_GROUP = "ingest"
EVENT_VERSION = "2"


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

    def to_fields(self) -> dict[str, str]:
        return {"v": EVENT_VERSION, "e": orjson.dumps({name: getattr(self, name) for name in _NAMES}).decode()}

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
        data = {
            (k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
            for k, v in raw.items()
        }
        if "e" in data:
            values = orjson.loads(data["e"])
            return cls(**{name: values[name] for name in _NAMES if name in values})
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
