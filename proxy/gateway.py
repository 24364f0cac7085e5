"""The life of one model request, shared by every model endpoint (/v1/chat/completions, /v1/messages,
/v1/responses, /v1/embeddings).

    authenticate (proxy.app) → validate → route → key policy → reserve balance → forward → answer
    → price → emit exactly one usage event (in the background)

An endpoint subclasses `ModelEndpoint` and supplies what differs: how its body is validated, which
provider families it can reach, what it reserves, how it forwards (`forward`), how it counts tokens
when the provider reported none, and which error envelope its clients expect. Forwarding is an
attempt loop (`open_upstream`): today one attempt; fallbacks, retries and racing plug in there.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Protocol

import orjson

from contracts.events import UsageEvent
from contracts.pricing import Usage, charge_nanos, cost_nanos
from contracts.providers import ProviderSpec, get_spec
from proxy.auth import KeyContext
from proxy.errors import ProxyError
from proxy.http import header
from proxy.routing import Route, resolve
from proxy.runtime import Runtime
from proxy.types import Receive, Scope, Send
from proxy.upstream import TransportError, UpstreamResponse

MAX_METADATA_BYTES = 4096
DEFAULT_MAX_OUTPUT_ESTIMATE = 4096  # output tokens assumed for the reservation when the client sets no cap
BYTES_PER_TOKEN_ESTIMATE = 3  # generous: reserving a little more than needed is the safe side


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
    priced: tuple[Usage, int | None] | None = None  # (usage, cost) already computed for the cost header
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
    outcome: Outcome = field(default_factory=Outcome)

    @property
    def stream(self) -> bool:
        return bool(self.body.get("stream"))

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
        n = body.get("n")
        choices = n if isinstance(n, int) and not isinstance(n, bool) and n > 1 else 1
        usage = Usage(input=body_bytes // BYTES_PER_TOKEN_ESTIMATE + 1, output=cap * choices)
        return charge_nanos(cost_nanos(route.price, usage), rate=rate) or 0

    async def forward(self, x: Exchange) -> None:
        raise NotImplementedError

    def count_locally(self, x: Exchange) -> Usage:
        """Tokens of a request whose provider never reported usage (client went away mid-stream)."""
        raise NotImplementedError

    # --- the lifecycle -----------------------------------------------------------------------------------

    async def __call__(self, x: Exchange) -> None:
        key, body, send, request_id = x.key, x.body, x.send, x.request_id
        outcome = x.outcome
        charge = 0
        cost: int | None = None
        metadata: dict[str, Any] = {}
        try:
            self.validate(body)
            metadata = parse_metadata(x.scope)
            route, _ = self.route(x)
            rate = key.workspace.charge_rate(route.credential)
            reservation = self.reservation(route, body, len(x.body_bytes), rate)
            checked = await self.rt.gate.reserve(
                workspace_id=key.workspace_id, request_id=request_id, amount_nanos=reservation
            )
            if not checked.reserved:
                raise ProxyError.insufficient_balance()
            await self.forward(x)
            assert x.route is not None
            route = x.route  # forwarding may have refined the price (e.g. by the model actually served)
            if outcome.usage is None and outcome.status == 200:
                outcome.usage = self.count_locally(x)
                outcome.estimated = True
            if outcome.usage is not None:
                if outcome.priced is not None and outcome.priced[0] is outcome.usage:
                    cost = outcome.priced[1]
                else:
                    cost = cost_nanos(route.price, outcome.usage)
                charge = charge_nanos(cost, rate=rate) or 0
        except ProxyError as error:
            outcome.status = error.status
            outcome.error_code = error.code or error.type
            if not outcome.response_started:
                await self.rt.send_error(send, error, request_id=request_id, anthropic=self.anthropic_errors)
        finally:
            self._emit(x, cost, charge, metadata)

    def route(self, x: Exchange) -> tuple[Route, ProviderSpec]:
        """Where the body's model goes, refused if the key may not call it or this endpoint cannot."""
        model, key = x.body["model"], x.key
        overrides = self.rt.config.provider_base_urls
        x.route = route = resolve(model, workspace=key.workspace, catalog=self.rt.catalog, base_url_overrides=overrides)
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

    async def send_json(self, x: Exchange, payload: bytes, *, usage: Usage | None) -> None:
        """The whole answer at once, with the request id and Turnpike's cost of it."""
        assert x.route is not None
        x.outcome.status, x.outcome.usage = 200, usage
        x.mark_first_byte()
        headers = [(b"x-request-id", x.request_id.encode())]
        if usage is not None:
            cost = cost_nanos(x.route.price, usage)
            x.outcome.priced = (usage, cost)
            headers.append((b"x-turnpike-cost-usd", usd(cost)))
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

    async def relay_stream(self, x: Exchange, response: UpstreamResponse, tap: StreamTap) -> None:
        """Send each complete upstream event on as soon as it arrives (through `tap`, which inspects or
        translates it). A client that hangs up stops the relay and closes the upstream request."""
        outcome = x.outcome
        disconnected = asyncio.Event()

        async def watch() -> None:
            while True:
                if (await x.receive())["type"] == "http.disconnect":
                    disconnected.set()
                    return

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
            async with asyncio.timeout(self.rt.config.total_timeout):
                async for raw in response.iter_raw():
                    if disconnected.is_set():
                        break
                    chunk = tap.feed(raw)
                    if not chunk:
                        continue
                    x.mark_first_byte()
                    await x.send({"type": "http.response.body", "body": chunk, "more_body": True})
            if not disconnected.is_set():
                await x.send({"type": "http.response.body", "body": tap.flush(), "more_body": False})
        except (TransportError, TimeoutError, OSError):
            # Upstream broke or the client went away mid-stream: what was streamed is still recorded.
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
        self.rt.emitter.emit(event)


def _user_of(body: dict[str, Any]) -> str:
    """The end user the client named: OpenAI's `user`, or Anthropic's `metadata.user_id`."""
    user = body.get("user")
    if isinstance(user, str):
        return user
    metadata = body.get("metadata")
    if isinstance(metadata, dict) and isinstance(metadata.get("user_id"), str):
        return str(metadata["user_id"])
    return ""
