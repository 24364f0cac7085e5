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

import httpx
import orjson

from billing.pricing import Usage, charge_nanos, cost_nanos
from proxy.auth import KeyContext
from proxy.errors import ProxyError
from proxy.events import UsageEvent
from proxy.http import header
from proxy.providers import openai_format
from proxy.providers.registry import get_spec
from proxy.routing import Route, resolve
from proxy.runtime import Runtime
from proxy.sse import UsageTap
from proxy.tokens import count_messages, count_text
from proxy.types import Receive, Scope, Send

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
            if spec.family != "openai":
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
            await self._forward(
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
        upstream_body, client_wants_usage = openai_format.prepare_chat_body(body, upstream_model=route.model)
        url = openai_format.chat_url(route.base_url)
        headers = {"content-type": "application/json", **openai_format.auth_headers(route.credential.secret)}
        attempts = [(route, url, headers)]  # the attempt loop: fallbacks and retries add entries here
        last_error: ProxyError | None = None
        for _route, attempt_url, attempt_headers in attempts:
            request = self.rt.http.build_request(
                "POST", attempt_url, content=orjson.dumps(upstream_body), headers=attempt_headers
            )
            try:
                async with asyncio.timeout(self.rt.config.total_timeout):
                    response = await self.rt.http.send(request, stream=True)
            except (httpx.HTTPError, TimeoutError, OSError) as exc:
                last_error = self.rt.transport_error(exc, provider=route.credential.label, url=attempt_url)
                continue
            try:
                if response.status_code != 200:
                    content = await response.aread()
                    last_error = self.rt.upstream_error(
                        response.status_code,
                        content,
                        provider=route.credential.label,
                        retry_after=response.headers.get("retry-after"),
                    )
                    break  # the provider answered: retrying the same target would not change that
                if body.get("stream"):
                    await self._stream(
                        receive,
                        send,
                        response,
                        request_id=request_id,
                        started=started,
                        outcome=outcome,
                        keep_usage_chunk=client_wants_usage,
                    )
                else:
                    await self._complete(
                        send, response, route=route, request_id=request_id, started=started, outcome=outcome
                    )
                return
            finally:
                await response.aclose()
        assert last_error is not None
        raise last_error

    async def _complete(
        self,
        send: Send,
        response: httpx.Response,
        *,
        route: Route,
        request_id: str,
        started: float,
        outcome: Outcome,
    ) -> None:
        try:
            async with asyncio.timeout(self.rt.config.total_timeout):
                content = await response.aread()
        except (httpx.HTTPError, TimeoutError) as exc:
            raise self.rt.transport_error(exc, provider=route.credential.label, url=str(response.url)) from None
        try:
            data = orjson.loads(content)
        except orjson.JSONDecodeError:
            raise ProxyError.bad_gateway(f"{route.credential.label} returned a body that is not JSON.") from None
        usage = openai_format.usage_from_openai(data.get("usage") if isinstance(data, dict) else None)
        outcome.status = 200
        outcome.usage = usage
        outcome.model_served = str(data.get("model") or route.model) if isinstance(data, dict) else route.model
        outcome.ttfb_ms = int((time.perf_counter() - started) * 1000)
        headers = [(b"x-request-id", request_id.encode())]
        if usage is not None and route.price is not None:
            cost = cost_nanos(route.price, usage)
            headers.append((b"x-turnpike-cost-usd", _usd(cost)))
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(content)).encode()),
                    *headers,
                ],
            }
        )
        await send({"type": "http.response.body", "body": content})

    async def _stream(
        self,
        receive: Receive,
        send: Send,
        response: httpx.Response,
        *,
        request_id: str,
        started: float,
        outcome: Outcome,
        keep_usage_chunk: bool,
    ) -> None:
        tap = UsageTap(keep_usage_chunk=keep_usage_chunk)
        disconnected = asyncio.Event()

        async def watch() -> None:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
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
        outcome.model_served = outcome.model_served or ""
        try:
            async with asyncio.timeout(self.rt.config.total_timeout):
                async for raw in response.aiter_raw():
                    if disconnected.is_set():
                        break
                    chunk = tap.feed(raw)
                    if not chunk:
                        continue
                    if outcome.ttfb_ms is None:
                        outcome.ttfb_ms = int((time.perf_counter() - started) * 1000)
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
            tail = tap.flush()
            if not disconnected.is_set():
                await send({"type": "http.response.body", "body": tail, "more_body": False})
        except (httpx.HTTPError, TimeoutError, OSError):
            # Upstream broke or the client went away mid-stream: what was streamed is still recorded.
            outcome.extra["interrupted"] = True
            with contextlib.suppress(Exception):
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            watcher.cancel()
        if disconnected.is_set():
            outcome.extra["client_disconnected"] = True
            outcome.error_code = "client_disconnected"
        if tap.usage is not None and not disconnected.is_set():
            outcome.usage = openai_format.usage_from_openai(tap.usage)
        else:
            outcome.extra["streamed_text"] = tap.streamed_text()

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
