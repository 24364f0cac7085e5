"""The life of one model request, shared by every model endpoint (/v1/chat/completions, /v1/messages,
/v1/responses, /v1/embeddings).

    authenticate (proxy.app) → validate → route → key policy → reserve balance → forward → answer
    → price → emit exactly one usage event (in the background)

Only a request that can cost the workspace money reserves its balance (`can_cost_money`): one served
with the workspace's own key on a plan without a BYOK fee (charge rate 0), or on a model that is unpriced
or free, goes on whatever the balance, without the Redis round trip, and is settled with charge 0.
Answers tell their cost (proxy.costs): the `x-turnpike-cost-usd` header and `usage.cost`, priced once
(`Exchange.price`) so that the cost the client reads is the charge its usage event records.

An endpoint subclasses `ModelEndpoint` and supplies what differs: how its body is validated, which
provider families it can reach, what it reserves, how it forwards (`forward`), how it counts tokens
when the provider reported none, and which error envelope its clients expect. Forwarding is an
attempt loop (`open_upstream`): today one attempt; fallbacks, retries and racing plug in there.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Protocol

import orjson

from contracts import bodies
from contracts.balance import clamp_amount
from contracts.events import UsageEvent
from contracts.pricing import WEB_SEARCH, Price, Tier, Usage, charge_nanos, cost_nanos
from contracts.providers import ProviderSpec, get_spec
from proxy.auth import KeyContext
from proxy.costs import Priced, add_cost, cost_members, splice_cost
from proxy.errors import ProxyError
from proxy.http import header
from proxy.routing import Route, resolve
from proxy.runtime import Runtime
from proxy.types import Receive, Scope, Send
from proxy.upstream import TransportError, UpstreamResponse

MAX_METADATA_BYTES = 4096
DEFAULT_MAX_OUTPUT_ESTIMATE = 4096  # output tokens assumed for the reservation when the client sets no cap
BYTES_PER_TOKEN_ESTIMATE = 3  # generous: reserving a little more than needed is the safe side
# Documented bounds on what one request may ask for (docs/proxy.md); above them the request is a 400 naming
# the field, before anything is routed or reserved. No model produces more output in one answer; OpenAI
# itself caps `n` at 128.
MAX_OUTPUT_TOKENS = 1_000_000
MAX_CHOICES = 128
# Web searches assumed for the reservation when a request offers a web search tool without a limit on its uses
# (Anthropic's `max_uses`, the Responses API's `max_tool_calls`); a search costs ~$0.01.
DEFAULT_WEB_SEARCH_ESTIMATE = 5
MAX_WEB_SEARCH_ESTIMATE = 1000  # a larger limit is reserved as this many (the balance caps reservations anyway)
OUTPUT_CAP_FIELDS = ("max_tokens", "max_completion_tokens", "max_output_tokens")

log = logging.getLogger("turnpike.proxy.gateway")


@dataclass(slots=True)
class Outcome:
    """What happened, for the usage event."""

    status: int = 0
    error_code: str = ""
    usage: Usage | None = None
    estimated: bool = False
    model_served: str = ""
    ttfb_ms: int | None = None
    response_started: bool = False
    client_disconnected: bool = False
    streamed_text: str = ""
    partial_usage: Usage | None = None  # what the provider reported before its stream stopped short
    priced: Priced | None = None  # what the client was told it cost (header, usage.cost); reused by _price
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class Exchange:
    """One request in flight: what came in, where it goes, what happened."""

    scope: Scope
    receive: Receive
    send: Send
    key: KeyContext
    body: dict[str, Any]
    body_bytes: bytes
    request_id: str
    started: float
    started_ms: int
    route: Route | None = None
    spec: ProviderSpec | None = None
    rate: Decimal | None = None  # provider cost -> charge multiplier of the route's credential
    outcome: Outcome = field(default_factory=Outcome)
    recorder: bodies.Recorder | None = None  # set when the bodies are to be stored (contracts.bodies)

    @property
    def stream(self) -> bool:
        return bool(self.body.get("stream"))

    def price(self, usage: Usage) -> Priced:
        """Price `usage` now, for the cost the client reads; the usage event records these same numbers
        (ModelEndpoint._price reuses them while the usage and the price are unchanged)."""
        assert self.route is not None and self.rate is not None
        price = self.route.price
        cost = cost_nanos(price, usage)
        priced = Priced(usage, price, cost, clamp_amount(charge_nanos(cost, rate=self.rate) or 0))
        self.outcome.priced = priced
        return priced

    def cost_members(self, usage: Usage) -> dict[str, Any]:
        """`usage.cost` and `usage.cost_details` for an answer (or stream event) reporting `usage`."""
        return cost_members(self.price(usage))

    def mark_first_byte(self) -> None:
        if self.outcome.ttfb_ms is None:
            self.outcome.ttfb_ms = int((time.perf_counter() - self.started) * 1000)


class StreamTap(Protocol):
    """Upstream stream bytes in, client bytes out (inspected or translated on the way)."""

    def feed(self, data: bytes) -> bytes: ...

    def flush(self) -> bytes: ...


def parse_metadata(scope: Scope) -> dict[str, Any]:
    raw = header(scope, b"x-turnpike-metadata")
    if raw is None:
        return {}
    if len(raw) > MAX_METADATA_BYTES:
        raise ProxyError.invalid_request(f"x-turnpike-metadata is larger than {MAX_METADATA_BYTES} bytes.")
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise ProxyError.invalid_request("x-turnpike-metadata must be a JSON object of tags.") from None
    if not isinstance(data, dict):
        raise ProxyError.invalid_request("x-turnpike-metadata must be a JSON object of tags.")
    return data


def check_bounds(body: dict[str, Any]) -> None:
    """Output caps and `n` within MAX_OUTPUT_TOKENS / MAX_CHOICES; the endpoints' own validators already
    require them to be positive integers where present."""
    for name in OUTPUT_CAP_FIELDS:
        value = body.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value > MAX_OUTPUT_TOKENS:
            raise ProxyError.invalid_request(
                f"`{name}` must be at most {MAX_OUTPUT_TOKENS:,} (Turnpike's limit for one request).", param=name
            )
    n = body.get("n")
    if isinstance(n, int) and not isinstance(n, bool) and n > MAX_CHOICES:
        raise ProxyError.invalid_request(f"`n` must be at most {MAX_CHOICES}.", param="n")


def can_cost_money(price: Price | None, rate: Decimal) -> bool:
    """Whether a request at this price and charge rate may be charged anything (BRIEF: only those need a
    balance). Not for the workspace's own key on a zero-fee plan (rate 0), an unpriced model (never charged;
    platform-managed keys refuse those earlier) or a model whose every price is 0."""
    if rate == 0 or price is None:
        return False
    rates: list[Price | Tier] = [price, *price.tiers]
    if any(any((r.input, r.output, r.cached_input, r.cache_write, r.reasoning)) for r in rates):
        return True
    return bool(price.request_fee) or any(amount for _, amount in price.fees)


def search_estimate(limit: Any) -> int:
    """Web searches to reserve for a request that offers a web search tool: its limit on their uses when it
    is a positive int (at most MAX_WEB_SEARCH_ESTIMATE), else DEFAULT_WEB_SEARCH_ESTIMATE."""
    if isinstance(limit, int) and not isinstance(limit, bool) and limit > 0:
        return min(limit, MAX_WEB_SEARCH_ESTIMATE)
    return DEFAULT_WEB_SEARCH_ESTIMATE


def find_tool(tools: Any, type_prefix: str) -> dict[str, Any] | None:
    """The first tool of a request's `tools` whose `type` starts with `type_prefix`."""
    if not isinstance(tools, list):
        return None
    for tool in tools:
        if isinstance(tool, dict) and isinstance(tool.get("type"), str) and tool["type"].startswith(type_prefix):
            return tool
    return None


def usd(nanos: int | None) -> bytes:
    """The `x-turnpike-cost-usd` header value: exact decimal dollars, or `unpriced`."""
    if nanos is None:
        return b"unpriced"
    return format(Decimal(nanos) / 1_000_000_000, "f").encode()


class ModelEndpoint:
    """Base of the model endpoints; see the module docstring."""

    path = ""
    families: frozenset[str] = frozenset()  # provider families this endpoint can reach
    anthropic_errors = False  # render errors in Anthropic's envelope (/v1/messages)

    def __init__(self, runtime: Runtime) -> None:
        self.rt = runtime

    # --- what an endpoint supplies -----------------------------------------------------------------------

    def validate(self, body: dict[str, Any]) -> None:
        raise NotImplementedError

    def unsupported(self, spec: ProviderSpec, model: str) -> ProxyError:
        return ProxyError.invalid_request(
            f"`{model}` is served by {spec.label}, which {self.path} does not reach. "
            "See docs/providers.md for what each endpoint supports.",
            param="model",
            code="unsupported_provider",
        )

    def reservation(self, route: Route, body: dict[str, Any], body_bytes: int, rate: Decimal) -> int:
        """An upper-ish bound of what this request may cost, reserved before forwarding."""
        if route.price is None:
            return 0
        cap = body.get("max_completion_tokens") or body.get("max_tokens") or body.get("max_output_tokens")
        if not isinstance(cap, int) or isinstance(cap, bool) or cap < 1:
            cap = DEFAULT_MAX_OUTPUT_ESTIMATE
        model_max = self.rt.catalog.max_output_tokens(route.provider, route.model)
        if model_max is not None:
            cap = min(cap, model_max)  # the model cannot produce more, whatever the client allows
        n = body.get("n")
        choices = n if isinstance(n, int) and not isinstance(n, bool) and n > 1 else 1
        searches = self.web_searches_estimate(route, body) if route.price.fees else 0
        usage = Usage(
            input=body_bytes // BYTES_PER_TOKEN_ESTIMATE + 1,
            output=cap * choices,
            units=((WEB_SEARCH, searches),) if searches else (),
        )
        return charge_nanos(cost_nanos(route.price, usage), rate=rate) or 0

    def web_searches_estimate(self, route: Route, body: dict[str, Any]) -> int:
        """Server-side web searches this request may make, for its reservation (endpoints whose requests
        can search say how many: `search_estimate`)."""
        return 0

    def may_charge(self, route: Route, rate: Decimal) -> bool:
        """Whether this request can cost the workspace money, so that it needs a balance."""
        return can_cost_money(route.price, rate)

    async def forward(self, x: Exchange) -> None:
        raise NotImplementedError

    def count_locally(self, x: Exchange) -> Usage:
        """Tokens of a request whose provider never reported usage (client went away mid-stream)."""
        raise NotImplementedError

    # --- the lifecycle -----------------------------------------------------------------------------------

    async def __call__(self, x: Exchange) -> None:
        key, body, send, request_id = x.key, x.body, x.send, x.request_id
        outcome = x.outcome
        rate: Decimal | None = None
        reservation = 0
        metadata: dict[str, Any] = {}
        try:
            self.validate(body)
            check_bounds(body)
            metadata = parse_metadata(x.scope)
            route, _ = self.route(x)
            x.rate = rate = key.workspace.charge_rate(route.credential)
            if self.may_charge(route, rate):
                reservation = self.reservation(route, body, len(x.body_bytes), rate)
                checked = await self.rt.gate.reserve(
                    workspace_id=key.workspace_id, request_id=request_id, amount_nanos=reservation
                )
                if not checked.reserved:
                    raise ProxyError.insufficient_balance(
                        available_nanos=checked.available_nanos,
                        estimate_nanos=reservation,
                        billing_url=self.billing_url(key),
                    )
            await self.forward(x)
        except ProxyError as error:
            outcome.status = error.status
            outcome.error_code = error.code or error.type
            if not outcome.response_started:
                await self.rt.send_error(send, error, request_id=request_id, anthropic=self.anthropic_errors)
        except Exception:
            # A fault of ours. What the provider already served is still priced and charged below.
            log.exception("internal error in %s (%s)", self.path, request_id)
            outcome.error_code = "internal_error"
            if not outcome.response_started:
                outcome.status = 500
                internal = ProxyError(500, "Internal error in the gateway.", type="api_error", code="internal_error")
                with contextlib.suppress(Exception):
                    await self.rt.send_error(send, internal, request_id=request_id, anthropic=self.anthropic_errors)
        finally:
            cost, charge = self._price(x, rate, reservation)
            self._emit(x, cost, charge, metadata)

    def _price(self, x: Exchange, rate: Decimal | None, reservation: int) -> tuple[int | None, int]:
        """(provider cost, charge) of what was served. Never raises: a request that reached the provider is
        never recorded as free because something failed here; if pricing itself fails, the reservation (the
        request's estimated maximum) is charged and the event flagged estimated."""
        outcome, route = x.outcome, x.route
        if route is None or rate is None or (not outcome.response_started and outcome.status != 200):
            return None, 0  # nothing was served
        try:
            if outcome.usage is None:
                outcome.usage = estimate(self.count_locally(x), outcome.partial_usage)
                outcome.estimated = True
            priced = outcome.priced
            if priced is not None and priced.usage == outcome.usage and priced.price == route.price:
                return priced.cost_nanos, priced.charge_nanos  # what the client was told
            cost = cost_nanos(route.price, outcome.usage)
            return cost, clamp_amount(charge_nanos(cost, rate=rate) or 0)
        except Exception:
            log.exception("pricing failed for %s; charging its reservation", x.request_id)
            outcome.estimated = True
            return None, reservation

    def billing_url(self, key: KeyContext) -> str:
        """The workspace's billing page in the dashboard, where credit is added."""
        base = self.rt.config.dashboard_url.rstrip("/")
        slug = key.workspace.slug
        return f"{base}/w/{slug}/billing/" if slug else f"{base}/"

    def route(self, x: Exchange) -> tuple[Route, ProviderSpec]:
        """Where the body's model goes, refused if the key may not call it or this endpoint cannot."""
        model, key = x.body["model"], x.key
        overrides = self.rt.config.provider_base_urls
        x.route = route = resolve(model, workspace=key.workspace, catalog=self.rt.catalog, base_url_overrides=overrides)
        if route.credential.kind == "managed" and route.price is None:
            # the platform would pay the provider for it and could not charge: never served unpriced
            raise ProxyError.model_not_found(
                f"`{model}` is not in Turnpike's price catalog, so it cannot be served with a platform-managed "
                f"{route.credential.label} key. Add your own {route.credential.label} key under Provider "
                "credentials to use it.",
                code="model_not_priced",
            )
        if not key.allows(model, f"{route.provider}/{route.model}", f"{route.credential.slug}/{route.model}"):
            raise ProxyError.forbidden(
                f"This Turnpike key may not call `{model}`; its allowed models are {', '.join(key.allowed_models)}.",
                code="model_not_allowed",
            )
        x.spec = spec = get_spec(route.provider)
        if not self.supports(spec):
            raise self.unsupported(spec, model)
        return route, spec

    def supports(self, spec: ProviderSpec) -> bool:
        return spec.family in self.families

    # --- forwarding helpers ------------------------------------------------------------------------------

    async def open_upstream(
        self, x: Exchange, attempts: list[tuple[str, dict[str, str]]], upstream_body: dict[str, Any]
    ) -> UpstreamResponse:
        """The attempt loop: the first attempt that answers 200 wins and its response is returned open.
        Today one attempt per request; fallbacks, retries and racing plug in as more entries."""
        assert x.route is not None
        label = x.route.credential.label
        content = orjson.dumps(upstream_body)
        last_error: ProxyError | None = None
        for url, headers in attempts:
            try:
                async with asyncio.timeout(self.rt.config.total_timeout):
                    response = await self.rt.http.request(
                        "POST", url, headers={"content-type": "application/json", **headers}, content=content
                    )
            except TimeoutError:
                timed_out = TransportError("timeout", "total timeout")
                last_error = self.rt.transport_error(timed_out, provider=label, url=url)
                continue
            except TransportError as exc:
                last_error = self.rt.transport_error(exc, provider=label, url=url)
                continue
            if response.status == 200:
                return response
            try:
                detail = await response.read()
            except TransportError:
                detail = b""
            finally:
                response.close()
            # the provider answered: retrying the same target would not change that
            raise self.rt.upstream_error(
                response.status, detail, provider=label, retry_after=response.headers.get("retry-after")
            )
        assert last_error is not None
        raise last_error

    async def read_json(self, x: Exchange, response: UpstreamResponse) -> dict[str, Any]:
        assert x.route is not None
        label = x.route.credential.label
        try:
            async with asyncio.timeout(self.rt.config.total_timeout):
                content = await response.read()
        except TimeoutError:
            raise ProxyError.timeout(f"{label} did not answer in time.") from None
        except TransportError as exc:
            raise self.rt.transport_error(exc, provider=label, url=response.url) from None
        try:
            data = orjson.loads(content)
        except orjson.JSONDecodeError:
            raise ProxyError.bad_gateway(f"{label} returned a body that is not JSON.") from None
        if not isinstance(data, dict):
            raise ProxyError.bad_gateway(f"{label} returned an unexpected body.")
        return data

    async def send_json(
        self, x: Exchange, body: dict[str, Any], *, usage: Usage | None, raw: bytes | None = None
    ) -> None:
        """The whole answer at once, with the request id and its cost: the provider's cost in the
        `x-turnpike-cost-usd` header, the charge (and the provider's cost) in `usage` (proxy.costs).
        `raw` is the provider's own bytes of `body`, passed on with the cost spliced in; without it, `body`
        (built by a translation) is serialized."""
        assert x.route is not None
        x.outcome.status, x.outcome.usage = 200, usage
        x.mark_first_byte()
        headers = [(b"x-request-id", x.request_id.encode())]
        if usage is not None:
            priced = x.price(usage)
            headers.append((b"x-turnpike-cost-usd", usd(priced.cost_nanos)))
            payload = splice_cost(raw, body, priced) if raw is not None else orjson.dumps(add_cost(body, priced))
        else:
            payload = raw if raw is not None else orjson.dumps(body)
        await x.send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(payload)).encode()),
                    *headers,
                ],
            }
        )
        await x.send({"type": "http.response.body", "body": payload})

    def stream_finished(
        self, x: Exchange, *, usage: Usage | None, partial: Usage | None, text: Callable[[], str]
    ) -> None:
        """After `relay_stream`: the provider's own usage when the stream delivered it (also after the client
        left: the relay read on for it); otherwise what the provider reported before the stream stopped
        short, and the text streamed, for the estimate (`estimate`)."""
        if usage is not None:
            x.outcome.usage = usage
        else:
            x.outcome.partial_usage = partial
            x.outcome.streamed_text = text()

    async def relay_stream(self, x: Exchange, response: UpstreamResponse, tap: StreamTap) -> None:
        """Send each complete upstream event on as soon as it arrives (through `tap`, which inspects or
        translates it). A client that hangs up stops the sending, not the reading: the upstream stream is
        read on, for at most `disconnect_usage_wait` seconds (config), so the provider's exact usage (its last frames)
        is what gets charged rather than an estimate."""
        outcome = x.outcome
        loop = asyncio.get_running_loop()
        disconnected = asyncio.Event()
        deadline = asyncio.timeout(self.rt.config.total_timeout)

        def client_left() -> None:
            if not disconnected.is_set():
                disconnected.set()
                limit = loop.time() + self.rt.config.disconnect_usage_wait
                current = deadline.when()
                deadline.reschedule(limit if current is None else min(current, limit))

        async def watch() -> None:
            while (await x.receive())["type"] != "http.disconnect":
                pass
            client_left()

        watcher = asyncio.create_task(watch())
        await x.send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"text/event-stream; charset=utf-8"),
                    (b"cache-control", b"no-cache"),
                    (b"x-request-id", x.request_id.encode()),
                ],
            }
        )
        outcome.response_started = True
        outcome.status = 200
        try:
            async with deadline:
                async for raw in response.iter_raw():
                    chunk = tap.feed(raw)
                    if not chunk or disconnected.is_set():
                        continue
                    x.mark_first_byte()
                    try:
                        await x.send({"type": "http.response.body", "body": chunk, "more_body": True})
                    except OSError:
                        client_left()
                tail = tap.flush()
            if not disconnected.is_set():
                await x.send({"type": "http.response.body", "body": tail, "more_body": False})
        except (TransportError, TimeoutError, OSError):
            # Upstream broke, or the client left and the provider did not finish in time: what was
            # streamed (and any usage the provider reported so far) is still recorded and charged.
            if not disconnected.is_set():
                outcome.extra["interrupted"] = True
                with contextlib.suppress(Exception):
                    await x.send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            watcher.cancel()
        if disconnected.is_set():
            outcome.client_disconnected = True
            outcome.error_code = "client_disconnected"

    # --- accounting --------------------------------------------------------------------------------------

    def _emit(self, x: Exchange, cost: int | None, charge: int, metadata: dict[str, Any]) -> None:
        route, outcome, body = x.route, x.outcome, x.body
        usage = outcome.usage or Usage()
        event = UsageEvent(
            request_id=x.request_id,
            workspace_id=x.key.workspace_id,
            key_id=x.key.key_id,
            provider=route.provider if route else "",
            credential_id=route.credential.id if route and route.credential.kind == "byok" else None,
            credential_kind=route.credential.kind if route else "",
            model_requested=str(body.get("model", ""))[:200],
            model_served=(outcome.model_served or (route.model if route else ""))[:200],
            status=outcome.status or 500,
            error_code=outcome.error_code,
            input_tokens=usage.input,
            cached_input_tokens=usage.cached_input,
            cache_write_tokens=usage.cache_write,
            output_tokens=usage.output,
            reasoning_tokens=usage.reasoning,
            units=dict(usage.units),
            cost_nanos=cost,
            charge_nanos=charge,
            priced=route is None or route.price is not None,
            estimated=outcome.estimated,
            stream=x.stream,
            latency_ms=int((time.perf_counter() - x.started) * 1000),
            ttfb_ms=outcome.ttfb_ms,
            user=_user_of(body)[:256],
            metadata=metadata,
            started_at_ms=x.started_ms,
            finished_at_ms=int(time.time() * 1000),
        )
        recorder = x.recorder
        if recorder is None:
            self.rt.emitter.emit(event)
            return
        request, request_cut = bodies.cut(x.body_bytes)
        kept = bodies.Bodies(request, recorder.body(), request_cut, recorder.truncated)
        self.rt.emitter.emit(event, kept)


def estimate(counted: Usage, partial: Usage | None) -> Usage:
    """A stream's usage when the provider never sent its final count: the provider's own figures where it
    gave them before stopping (input, cached and cache-write tokens arrive first; output and reasoning
    so far), and our count of the text where it is larger or the provider said nothing. Billable units the
    provider reported (web searches already made) are kept."""
    if partial is None:
        return counted
    return Usage(
        input=partial.input or counted.input,
        cached_input=partial.cached_input,
        cache_write=partial.cache_write,
        output=max(partial.output, counted.output - partial.reasoning, 0),
        reasoning=partial.reasoning,
        units=partial.units,
    )


def _user_of(body: dict[str, Any]) -> str:
    """The end user the client named: OpenAI's `user`, or Anthropic's `metadata.user_id`."""
    user = body.get("user")
    if isinstance(user, str):
        return user
    metadata = body.get("metadata")
    if isinstance(metadata, dict) and isinstance(metadata.get("user_id"), str):
        return str(metadata["user_id"])
    return ""
