"""GET /v1/generation?id=req_…: what one request did and cost, for the workspace that made it.

Authenticated like the model endpoints (a Turnpike key, Bearer or x-api-key); a request id of another
workspace is a 404, exactly like an unknown one. Where the answer comes from:

1. an emission of this request still under way in this worker is awaited first (a client that asks
   right after its response can be faster than the background settle call);
2. Redis `tp:gen:{W}:<request id>`: the usage event as the settle script stored it, in the same step as
   the stream entry (contracts.balance), kept `TURNPIKE_PROXY_GENERATION_TTL` seconds, so the answer
   exists as soon as the response is complete, before the Celery ingester has stored the event;
3. Postgres `billing_usageevent` (proxy.store.Store.usage_event), once ingested.

The tokens, billable units (`units`: web searches, `{"web_search": 2}`), total provider cost and charge
are the event's own. The cost per token type (and the request fee) and the cost per unit type (each
unit's count × its fee, `{"web_search": 0.02}`) are computed at lookup from the price the proxy holds
now (the workspace's own price for the model, else the catalog's), unrounded, so they can differ from
the recorded total by the rounding to a nano-USD and by any price change since; together they add up to
the provider cost before that rounding.
"""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs

import orjson
from psycopg import Error as PostgresError
from psycopg_pool import PoolTimeout
from redis.exceptions import RedisError

from contracts.balance import generation_key
from contracts.events import UsageEvent
from contracts.pricing import FEE_PREFIX, Price, Usage, cost_breakdown_usd
from proxy.auth import KeyContext
from proxy.catalog import Catalog
from proxy.costs import decimal_number, usd_number
from proxy.errors import ProxyError
from proxy.runtime import Runtime

log = logging.getLogger("turnpike.proxy.generation")

PATH = "/v1/generation"
REQUEST_ID = re.compile(r"req_[0-9a-f]{32}")  # what proxy.app.new_request_id makes


def requested_id(query_string: bytes) -> str:
    """The `id` query parameter, checked; 400 when it is missing or cannot be a Turnpike request id."""
    values = parse_qs(query_string.decode("latin-1"), keep_blank_values=True).get("id") or [""]
    value = values[0].strip()
    if not value:
        raise ProxyError.invalid_request(
            "`id` is required: the request's id, as returned in its `x-request-id` header (req_…).", param="id"
        )
    if REQUEST_ID.fullmatch(value) is None:
        raise ProxyError.invalid_request(
            "`id` must be a Turnpike request id: `req_` and 32 hexadecimal digits, as in `x-request-id`.",
            param="id",
        )
    return value


async def find(rt: Runtime, *, key: KeyContext, request_id: str) -> UsageEvent | None:
    """The request's usage event if it is this key's workspace's (Redis record, else Postgres)."""
    await rt.emitter.settled(request_id)
    try:
        raw = await rt.redis.get(generation_key(key.workspace_id, request_id))
    except (RedisError, OSError) as exc:
        log.warning("generation record unavailable in Redis (%s); reading Postgres", exc)
        raw = None
    if raw is not None:
        try:
            event = UsageEvent.from_fields({"v": "2", "e": raw.decode() if isinstance(raw, bytes) else str(raw)})
        except (KeyError, TypeError, ValueError):
            log.error("unreadable generation record for %s; reading Postgres", request_id)
        else:
            if event.workspace_id == key.workspace_id and event.request_id == request_id:
                return event
    try:
        return await rt.store.usage_event(workspace_id=key.workspace_id, request_id=request_id)
    except (PostgresError, PoolTimeout, OSError) as exc:
        log.warning("usage event lookup failed for %s: %s", request_id, exc)
        raise ProxyError.unavailable(
            "The request's record cannot be read right now; retry shortly.", retry_after="1"
        ) from None


def price_of(event: UsageEvent, key: KeyContext, catalog: Catalog) -> Price | None:
    """The price the proxy holds now for the event's model: the workspace's own, else the catalog's (by
    the name requested, then by the model the provider says served it)."""
    if not event.priced or not event.provider:
        return None
    prices, provider, requested = key.workspace.prices, event.provider, event.model_requested
    prefix, slash, rest = requested.partition("/")
    candidates: list[tuple[dict[tuple[str, str], Price], str, str]] = []
    if slash and rest:
        candidates += [(prices, prefix, rest), (prices, provider, rest), (catalog.prices, provider, rest)]
    candidates += [(prices, provider, requested), (catalog.prices, provider, requested)]
    if event.model_served:
        candidates.append((catalog.prices, provider, event.model_served))
        if provider == "azure_openai":  # a deployment is priced as the OpenAI model it served
            candidates.append((catalog.prices, "openai", event.model_served))
    for table, name, model in candidates:
        price = table.get((name, model))
        if price is not None:
            return price
    return None


def render(event: UsageEvent, price: Price | None) -> bytes:
    """The answer: `{"data": {…}}` (OpenRouter's envelope), money as exact decimal JSON numbers of USD."""
    usage = Usage(
        input=event.input_tokens,
        cached_input=event.cached_input_tokens,
        cache_write=event.cache_write_tokens,
        output=event.output_tokens,
        reasoning=event.reasoning_tokens,
        units=tuple(event.units.items()),
    )
    per_type: dict[str, Any] | None = None
    per_unit: dict[str, Any] | None = None
    if price is not None:
        per_type, per_unit = {}, {}
        for name, amount in cost_breakdown_usd(price, usage).items():
            if name.startswith(FEE_PREFIX):
                per_unit[name.removeprefix(FEE_PREFIX)] = orjson.Fragment(decimal_number(amount))
            else:
                per_type[name] = orjson.Fragment(decimal_number(amount))
        for name, _ in usage.units:  # a unit the price has no fee for costs nothing
            per_unit.setdefault(name, 0)
    data = {
        "id": event.request_id,
        "status": event.status,
        "error_code": event.error_code or None,
        "model": event.model_requested,
        "model_served": event.model_served or None,
        "provider": event.provider or None,
        "credential": event.credential_kind or None,
        "streamed": event.stream,
        "estimated": event.estimated,
        "priced": event.priced,
        "tokens": {
            "input": usage.input,
            "cached_input": usage.cached_input,
            "cache_write": usage.cache_write,
            "output": usage.output,
            "reasoning": usage.reasoning,
        },
        "units": dict(usage.units),
        "cost_per_token_type": per_type,
        "cost_per_unit_type": per_unit,
        "total_cost": None if event.cost_nanos is None else orjson.Fragment(usd_number(event.cost_nanos)),
        "charge": orjson.Fragment(usd_number(event.charge_nanos)),
        "cost_nanos": event.cost_nanos,
        "charge_nanos": event.charge_nanos,
        "latency_ms": event.latency_ms,
        "ttfb_ms": event.ttfb_ms,
        "created_at": datetime.fromtimestamp(event.started_at_ms / 1000, tz=UTC).isoformat(timespec="milliseconds"),
    }
    return orjson.dumps({"data": data})


async def lookup(rt: Runtime, *, key: KeyContext, query_string: bytes) -> bytes:
    """The JSON body for GET /v1/generation, or a ProxyError (400 bad id, 404 unknown, 503 store down)."""
    request_id = requested_id(query_string)
    event = await find(rt, key=key, request_id=request_id)
    if event is None:
        raise ProxyError(
            404,
            f"No request `{request_id}` in this workspace. A request's record is available as soon as its "
            "response is complete; ids of other workspaces are not found.",
            type="invalid_request_error",
            code="not_found",
            param="id",
        )
    return render(event, price_of(event, key, rt.catalog))
