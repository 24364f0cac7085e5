"""The cost of a request, written into the answer the client reads (as OpenRouter does).

Every priced answer's `usage` object gains two members:

    "cost": 0.000123                                   what Turnpike charges the balance (USD)
    "cost_details": {"upstream_inference_cost": 0.0001} what the provider charges for it (USD; null
                                                        when the model is unpriced)

Both are JSON numbers written as the exact decimal of an integer nano-USD amount (never through a
float), and `cost` is the very `charge_nanos` of the request's usage event. The official SDKs keep
unknown members (`completion.usage.model_extra["cost"]` with `openai`, `message.usage.model_extra`
with `anthropic`).

Non-streaming pass-through bodies (the provider's bytes) are not re-serialized: the members are
spliced in right after the `{` of the top-level `usage` object when that position is certain
(`splice_cost`); otherwise (a body with a \\u00XX escape, or that names `usage` twice, or whose usage
already has a `cost`) the parsed body is serialized again with orjson, with the provider's `cost`
replaced by ours. Streams get the members on the event that carries the final usage (proxy.sse,
proxy.streams), which is parsed and re-serialized once.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import orjson

from contracts.pricing import Price, Usage

_USAGE_KEY = b'"usage"'
_OBJECT_START = re.compile(rb"[ \t\r\n]*:[ \t\r\n]*\{")
# With no \u00XX escape in a body, its top-level `usage` key appears literally (no escape spells a letter of
# it). A body that escapes other Latin-1 characters this way is re-serialized: correct, a little slower.
_LATIN_ESCAPE = b"\\u00"
NANOS_PER_USD = 1_000_000_000


@dataclass(frozen=True, slots=True)
class Priced:
    """A request's usage as priced: provider cost (None = unpriced) and the charge to the balance."""

    usage: Usage
    price: Price | None
    cost_nanos: int | None
    charge_nanos: int


def decimal_number(value: Decimal) -> bytes:
    """A Decimal as the exact text of a JSON number: Decimal("1.50E-7") -> 0.00000015, 0 -> 0."""
    if not value:
        return b"0"
    return format(value.normalize(), "f").encode()


def usd_number(nanos: int) -> bytes:
    """An integer nano-USD amount (>= 0) as a JSON number of USD, exactly: 123 -> 0.000000123, 0 -> 0."""
    whole, fraction = divmod(nanos, NANOS_PER_USD)
    if not fraction:
        return b"%d" % whole
    return (b"%d.%09d" % (whole, fraction)).rstrip(b"0")


def cost_members(priced: Priced) -> dict[str, Any]:
    """The members added to a `usage` object (orjson writes the Fragments verbatim)."""
    upstream = None if priced.cost_nanos is None else orjson.Fragment(usd_number(priced.cost_nanos))
    return {
        "cost": orjson.Fragment(usd_number(priced.charge_nanos)),
        "cost_details": {"upstream_inference_cost": upstream},
    }


def cost_member_bytes(priced: Priced) -> bytes:
    """The members as JSON text, without braces: `"cost":…,"cost_details":{…}`."""
    upstream = b"null" if priced.cost_nanos is None else usd_number(priced.cost_nanos)
    return b'"cost":%s,"cost_details":{"upstream_inference_cost":%s}' % (usd_number(priced.charge_nanos), upstream)


def with_cost(usage: dict[str, Any], priced: Priced) -> dict[str, Any]:
    """A copy of `usage` with our cost members (replacing any the provider sent)."""
    return {**usage, **cost_members(priced)}


def add_cost(body: dict[str, Any], priced: Priced) -> dict[str, Any]:
    """`body` with the cost members in its top-level `usage` object, when it has one (in place)."""
    usage = body.get("usage")
    if isinstance(usage, dict):
        body["usage"] = with_cost(usage, priced)
    return body


def splice_cost(raw: bytes, body: dict[str, Any], priced: Priced) -> bytes:
    """The provider's JSON bytes `raw` (parsed: `body`) with the cost members in the top-level `usage`.

    Spliced without re-serializing when the position is certain: `raw` is valid JSON (it parsed), so an
    unescaped `"usage"` followed by `:` and `{` is a key named exactly `usage` whose value is an object;
    if it occurs once in the body and no \\u escape could spell that key elsewhere, it is the top-level
    one. Otherwise the parsed body is serialized again. A body without a `usage` object is returned as is."""
    usage = body.get("usage")
    if not isinstance(usage, dict):
        return raw
    if "cost" not in usage and "cost_details" not in usage:
        at = raw.find(_USAGE_KEY)
        if at != -1 and raw.find(_USAGE_KEY, at + len(_USAGE_KEY)) == -1 and _LATIN_ESCAPE not in raw:
            start = _OBJECT_START.match(raw, at + len(_USAGE_KEY))
            if start is not None:
                end = start.end()
                members = cost_member_bytes(priced) + (b"," if usage else b"")
                return b"".join((raw[:end], members, raw[end:]))
    return orjson.dumps(add_cost(body, priced))
