"""POST /v1/chat/completions for OpenAI-format providers.

One request, start to finish: authenticate, validate, route, reserve balance, forward (an attempt
loop: today one attempt; fallbacks, retries and racing plug in as more entries in `attempts`),
stream or return the answer, then emit exactly one usage event in the background.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import orjson

from billing.pricing import Usage, charge_nanos, cost_nanos
from proxy.auth import KeyContext
from proxy.errors import ProxyError
from proxy.events import UsageEvent
from proxy.http import header
from proxy.providers import anthropic, openai_format
from proxy.providers.registry import get_spec
from proxy.routing import Route, resolve
from proxy.runtime import Runtime
from proxy.sse import UsageTap
from proxy.tokens import count_messages, count_text
from proxy.types import Receive, Scope, Send
from proxy.upstream import TransportError, UpstreamResponse

DEFAULT_MAX_OUTPUT_ESTIMATE = 4096  # output tokens assumed for the reservation when the client sets no cap
BYTES_PER_TOKEN_ESTIMATE = 3  # generous: reserving a little more than needed is the safe side
MAX_METADATA_BYTES = 4096


@dataclass(slots=True)
class Outcome:
    """What happened, for the usage event."""

    status: int = 0
    error_code: str = ""
    usage: Usage | None = None
    estimated: bool = False
    model_served: str = ""
    ttfb_ms: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def validate_chat_body(body: dict[str, Any]) -> None:
    model = body.get("model")
    if not isinstance(model, str) or not model.strip():
        raise ProxyError.invalid_request("`model` is required and must be a string.", param="model")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ProxyError.invalid_request("`messages` is required and must be a non-empty array.", param="messages")
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise ProxyError.invalid_request(
                f"`messages[{index}]` must be an object with a string `role`.", param=f"messages[{index}]"
            )
    if "stream" in body and not isinstance(body["stream"], bool):
        raise ProxyError.invalid_request("`stream` must be a boolean.", param="stream")
    for name in ("max_tokens", "max_completion_tokens", "n"):
        value = body.get(name)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            raise ProxyError.invalid_request(f"`{name}` must be a positive integer.", param=name)
    if "stream_options" in body and body["stream_options"] is not None and not isinstance(body["stream_options"], dict):
        raise ProxyError.invalid_request("`stream_options` must be an object.", param="stream_options")
    if "user" in body and body["user"] is not None and not isinstance(body["user"], str):
        raise ProxyError.invalid_request("`user` must be a string.", param="user")


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


def estimate_charge(route: Route, body: dict[str, Any], body_bytes: int, rate: Decimal) -> int:
    """An upper-ish bound of what this request may cost, reserved before forwarding."""
    if route.price is None:
        return 0
    cap = body.get("max_completion_tokens") or body.get("max_tokens") or DEFAULT_MAX_OUTPUT_ESTIMATE
    n = body.get("n") or 1
    usage = Usage(input=body_bytes // BYTES_PER_TOKEN_ESTIMATE + 1, output=int(cap) * int(n))
    return charge_nanos(cost_nanos(route.price, usage), rate=rate) or 0


class ChatCompletions:
    def __init__(self, runtime: Runtime) -> None:
        self.rt = runtime

    async def __call__(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        *,
        key: KeyContext,
        body_bytes: bytes,
        body: dict[str, Any],
        request_id: str,
        started: float,
        started_ms: int,
    ) -> None:
        outcome = Outcome()
        route: Route | None = None
        charge = 0
        cost: int | None = None
        metadata: dict[str, Any] = {}
        try:
            validate_chat_body(body)
            metadata = parse_metadata(scope)
            route = resolve(
                body["model"],
                workspace=key.workspace,
                catalog=self.rt.catalog,
                base_url_overrides=self.rt.config.provider_base_urls,
            )
            if not key.allows(
                body["model"], f"{route.provider}/{route.model}", f"{route.credential.slug}/{route.model}"
            ):
                raise ProxyError.forbidden(
                    f"This Turnpike key may not call `{body['model']}`; its allowed models are "
                    f"{', '.join(key.allowed_models)}.",
                    code="model_not_allowed",
                )
            spec = get_spec(route.provider)
            if spec.family not in ("openai", "anthropic"):
                raise ProxyError.invalid_request(
                    f"`{body['model']}` is served by {spec.label}, whose API is not available through "
                    "/v1/chat/completions yet; use an OpenAI-format provider.",
                    param="model",
                    code="unsupported_provider",
                )
            rate = key.workspace.charge_rate(route.credential)
            reservation = estimate_charge(route, body, len(body_bytes), rate)
            checked = await self.rt.gate.reserve(
                workspace_id=key.workspace_id, request_id=request_id, amount_nanos=reservation
            )
            if not checked.reserved:
                raise ProxyError.insufficient_balance()
            forward = self._forward_anthropic if spec.family == "anthropic" else self._forward
            await forward(
                scope, receive, send, route=route, body=body, request_id=request_id, started=started, outcome=outcome
            )
            if outcome.usage is None and outcome.status == 200:
                outcome.usage = self._count_locally(body, outcome)
                outcome.estimated = True
            if outcome.usage is not None:
                cost = cost_nanos(route.price, outcome.usage)
                charge = charge_nanos(cost, rate=rate) or 0
        except ProxyError as error:
            outcome.status = error.status
            outcome.error_code = error.code or error.type
            if not outcome.extra.get("response_started"):
                await self.rt.send_error(send, error, request_id=request_id)
        finally:
            self._emit(key, route, body, outcome, cost, charge, metadata, request_id, started, started_ms)

    # --- forwarding -----------------------------------------------------------------------------------

    async def _open_upstream(
        self, route: Route, attempts: list[tuple[str, dict[str, str]]], upstream_body: dict[str, Any]
    ) -> UpstreamResponse:
        """The attempt loop: the first attempt that answers 200 wins and its response is returned open.
        Today one attempt per request; fallbacks, retries and racing plug in as more entries."""
        content = orjson.dumps(upstream_body)
        last_error: ProxyError | None = None
        for url, headers in attempts:
            try:
                async with asyncio.timeout(self.rt.config.total_timeout):
                    response = await self.rt.http.request("POST", url, headers=headers, content=content)
            except TimeoutError:
                last_error = self.rt.transport_error(
                    TransportError("timeout", "total timeout"), provider=route.credential.label, url=url
                )
                continue
            except TransportError as exc:
                last_error = self.rt.transport_error(exc, provider=route.credential.label, url=url)
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
                response.status,
                detail,
                provider=route.credential.label,
                retry_after=response.headers.get("retry-after"),
            )
        assert last_error is not None
        raise last_error

    async def _read_json(self, response: UpstreamResponse, route: Route) -> Any:
        try:
            async with asyncio.timeout(self.rt.config.total_timeout):
                content = await response.read()
        except TimeoutError:
            raise ProxyError.timeout(f"{route.credential.label} did not answer in time.") from None
        except TransportError as exc:
            raise self.rt.transport_error(exc, provider=route.credential.label, url=response.url) from None
        try:
            return orjson.loads(content)
        except orjson.JSONDecodeError:
            raise ProxyError.bad_gateway(f"{route.credential.label} returned a body that is not JSON.") from None

    async def _send_completion(
        self, send: Send, payload: bytes, *, route: Route, usage: Usage | None, request_id: str
    ) -> None:
        headers = [(b"x-request-id", request_id.encode())]
        if usage is not None and route.price is not None:
            headers.append((b"x-turnpike-cost-usd", _usd(cost_nanos(route.price, usage))))
        await send(
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
        await send({"type": "http.response.body", "body": payload})

    async def _forward(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        *,
        route: Route,
        body: dict[str, Any],
        request_id: str,
        started: float,
        outcome: Outcome,
    ) -> None:
        """OpenAI-format upstreams: the body passes through (model name and usage option adjusted)."""
        upstream_body, client_wants_usage = openai_format.prepare_chat_body(body, upstream_model=route.model)
        headers = {"content-type": "application/json", **openai_format.auth_headers(route.credential.secret)}
        response = await self._open_upstream(route, [(openai_format.chat_url(route.base_url), headers)], upstream_body)
        try:
            if body.get("stream"):
                tap = UsageTap(keep_usage_chunk=client_wants_usage)
                await self._relay_stream(
                    receive, send, response, tap, request_id=request_id, started=started, outcome=outcome
                )
                if tap.usage is not None and not outcome.extra.get("client_disconnected"):
                    outcome.usage = openai_format.usage_from_openai(tap.usage)
                else:
                    outcome.extra["streamed_text"] = tap.streamed_text()
                return
            data = await self._read_json(response, route)
            usage = openai_format.usage_from_openai(data.get("usage") if isinstance(data, dict) else None)
            outcome.status, outcome.usage = 200, usage
            outcome.model_served = str(data.get("model") or route.model) if isinstance(data, dict) else route.model
            outcome.ttfb_ms = int((time.perf_counter() - started) * 1000)
            # the provider's bytes as they came: nothing re-serialised on the way through
            await self._send_completion(send, response.content, route=route, usage=usage, request_id=request_id)
        finally:
            response.close()

    async def _forward_anthropic(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        *,
        route: Route,
        body: dict[str, Any],
        request_id: str,
        started: float,
        outcome: Outcome,
    ) -> None:
        """Anthropic upstream, OpenAI client: translated both ways (proxy/providers/anthropic.py)."""
        upstream_body = anthropic.chat_to_messages(body, upstream_model=route.model)
        headers = {"content-type": "application/json", **anthropic.auth_headers(route.credential.secret)}
        response = await self._open_upstream(route, [(anthropic.messages_url(route.base_url), headers)], upstream_body)
        try:
            if body.get("stream"):
                options = body.get("stream_options") or {}
                translator = anthropic.StreamTranslator(include_usage=bool(options.get("include_usage")))
                tap = _TranslatingTap(translator)
                await self._relay_stream(
                    receive, send, response, tap, request_id=request_id, started=started, outcome=outcome
                )
                outcome.model_served = translator.model
                if translator.done and translator.usage is not None and not outcome.extra.get("client_disconnected"):
                    outcome.usage = translator.usage
                else:
                    outcome.extra["streamed_text"] = "".join(translator.text_parts)
                return
            message = await self._read_json(response, route)
            if not isinstance(message, dict):
                raise ProxyError.bad_gateway(f"{route.credential.label} returned an unexpected body.")
            chat, usage = anthropic.message_to_chat(message)
            outcome.status, outcome.usage = 200, usage
            outcome.model_served = str(message.get("model") or route.model)
            outcome.ttfb_ms = int((time.perf_counter() - started) * 1000)
            await self._send_completion(send, orjson.dumps(chat), route=route, usage=usage, request_id=request_id)
        finally:
            response.close()

    async def _relay_stream(
        self,
        receive: Receive,
        send: Send,
        response: UpstreamResponse,
        tap: UsageTap | _TranslatingTap,
        *,
        request_id: str,
        started: float,
        outcome: Outcome,
    ) -> None:
        """Send each complete upstream event on as soon as it arrives (through `tap`, which inspects or
        translates it). A client that hangs up stops the relay and closes the upstream request."""
        disconnected = asyncio.Event()

        async def watch() -> None:
            while True:
                if (await receive())["type"] == "http.disconnect":
                    disconnected.set()
                    return

        watcher = asyncio.create_task(watch())
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"text/event-stream; charset=utf-8"),
                    (b"cache-control", b"no-cache"),
                    (b"x-request-id", request_id.encode()),
                ],
            }
        )
        outcome.extra["response_started"] = True
        outcome.status = 200
        try:
            async with asyncio.timeout(self.rt.config.total_timeout):
                async for raw in response.iter_raw():
                    if disconnected.is_set():
                        break
                    chunk = tap.feed(raw)
                    if not chunk:
                        continue
                    if outcome.ttfb_ms is None:
                        outcome.ttfb_ms = int((time.perf_counter() - started) * 1000)
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
            if not disconnected.is_set():
                await send({"type": "http.response.body", "body": tap.flush(), "more_body": False})
        except (TransportError, TimeoutError, OSError):
            # Upstream broke or the client went away mid-stream: what was streamed is still recorded.
            outcome.extra["interrupted"] = True
            with contextlib.suppress(Exception):
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            watcher.cancel()
        if disconnected.is_set():
            outcome.extra["client_disconnected"] = True
            outcome.error_code = "client_disconnected"

    # --- accounting -------------------------------------------------------------------------------------

    def _count_locally(self, body: dict[str, Any], outcome: Outcome) -> Usage:
        model = str(body.get("model", ""))
        return Usage(
            input=count_messages(body.get("messages"), model=model),
            output=count_text(outcome.extra.get("streamed_text", ""), model=model),
        )

    def _emit(
        self,
        key: KeyContext,
        route: Route | None,
        body: dict[str, Any],
        outcome: Outcome,
        cost: int | None,
        charge: int,
        metadata: dict[str, Any],
        request_id: str,
        started: float,
        started_ms: int,
    ) -> None:
        usage = outcome.usage or Usage()
        priced = route is None or route.price is not None
        event = UsageEvent(
            request_id=request_id,
            workspace_id=key.workspace_id,
            key_id=key.key_id,
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
            priced=priced,
            estimated=outcome.estimated,
            stream=bool(body.get("stream")),
            latency_ms=int((time.perf_counter() - started) * 1000),
            ttfb_ms=outcome.ttfb_ms,
            user=str(body.get("user") or "")[:256],
            metadata=metadata,
            started_at_ms=started_ms,
            finished_at_ms=int(time.time() * 1000),
        )
        self.rt.emitter.emit(event)


def _usd(nanos: int | None) -> bytes:
    if nanos is None:
        return b"unpriced"
    return format(Decimal(nanos) / 1_000_000_000, "f").encode()


class _TranslatingTap:
    """Upstream SSE bytes in (another provider's events), OpenAI chunks out, for `_relay_stream`."""

    __slots__ = ("_buffer", "translator")

    def __init__(self, translator: anthropic.StreamTranslator) -> None:
        self.translator = translator
        self._buffer = b""

    def feed(self, data: bytes) -> bytes:
        events, self._buffer = anthropic.parse_sse(self._buffer + data)
        return b"".join(
            b"data: " + orjson.dumps(chunk) + b"\n\n"
            for kind, payload in events
            for chunk in self.translator.feed(kind, payload)
        )

    def flush(self) -> bytes:
        return b"data: [DONE]\n\n"
