"""The proxy: a raw ASGI app (no framework on the hot path), served by gunicorn + uvicorn workers.

Routes:
    POST /v1/chat/completions         OpenAI chat, streaming and not, to every provider (proxy.chat)
    POST /v1/messages                 Anthropic Messages, to every provider (proxy.messages)
    POST /v1/messages/count_tokens    token counting: Anthropic's, or a local estimate (proxy.messages)
    POST /v1/responses                OpenAI Responses, OpenAI and compatible (proxy.responses)
    POST /v1/embeddings               embeddings, OpenAI-format, Azure, Gemini (proxy.embeddings)
    GET  /v1/models                   the models this key may call
    GET  /v1/generation?id=req_…      one request's status, tokens, cost and charge (proxy.generation)
    GET  /healthz               the process is up
    GET  /readyz                Redis answers and the configuration loaded
Every response carries `x-request-id`. Errors on /v1/messages* use Anthropic's envelope, elsewhere
OpenAI's.
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any

import orjson
from redis.exceptions import RedisError

from contracts import bodies
from contracts.cachekeys import GATEWAY_KEY_PREFIX, looks_like_gateway_key
from proxy import generation
from proxy.auth import AuthBusy, KeyContext
from proxy.chat import ChatCompletions
from proxy.config import ProxyConfig
from proxy.embeddings import Embeddings
from proxy.errors import ProxyError
from proxy.gateway import Exchange, ModelEndpoint
from proxy.http import api_key, header, parse_json_object, read_body, send_bytes, send_error
from proxy.messages import CountTokens, Messages
from proxy.responses import Responses
from proxy.runtime import Runtime
from proxy.types import Receive, Scope, Send
from proxy.upstream import TransportError

log = logging.getLogger("turnpike.proxy")

DISCOVERY_TTL = 300.0
_OPT_OUT = frozenset({"off", "false", "0", "no"})  # x-turnpike-log-bodies values that opt a request out


def new_request_id() -> str:
    return f"req_{uuid.uuid4().hex}"


class ProxyApp:
    def __init__(self, config: ProxyConfig | None = None) -> None:
        self._config = config
        self.rt: Runtime | None = None
        self._endpoints: dict[str, ModelEndpoint] = {}
        self._discovered: dict[int, tuple[float, list[str]]] = {}
        self.active_requests = 0  # HTTP requests being handled now (graceful shutdown, tests)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        request_id = new_request_id()
        method, path = scope["method"], scope["path"]
        self.active_requests += 1
        try:
            endpoint = self._endpoints.get(path)
            if endpoint is not None and method == "POST":
                await self._model_request(endpoint, scope, receive, send, request_id)
            elif path == "/v1/models" and method == "GET":
                await self._models(scope, send, request_id)
            elif path == generation.PATH and method == "GET":
                await self._generation(scope, send, request_id)
            elif path == "/healthz":
                await send_bytes(send, 200, b'{"status":"ok"}', headers=[(b"x-request-id", request_id.encode())])
            elif path == "/readyz":
                await self._ready(send, request_id)
            else:
                raise ProxyError(404, f"Unknown path {method} {path}.", type="invalid_request_error", code="not_found")
        except ProxyError as error:
            await send_error(send, error, request_id=request_id, anthropic=path.startswith("/v1/messages"))
        except ConnectionResetError:
            return
        except Exception:
            log.exception("unhandled error in %s %s (%s)", method, path, request_id)
            await send_error(
                send,
                ProxyError(500, "Internal error in the gateway.", type="api_error", code="internal_error"),
                request_id=request_id,
            )
        finally:
            self.active_requests -= 1

    # --- lifespan ------------------------------------------------------------------------------------

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.startup()
                except Exception as exc:
                    log.exception("proxy startup failed")
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def startup(self) -> None:
        self.rt = Runtime(self._config or ProxyConfig.from_env())
        self._endpoints = {
            endpoint.path: endpoint
            for endpoint in (
                ChatCompletions(self.rt),
                Messages(self.rt),
                CountTokens(self.rt),
                Responses(self.rt),
                Embeddings(self.rt),
            )
        }
        await self.rt.start()

    async def shutdown(self) -> None:
        if self.rt is not None:
            await self.rt.stop()

    # --- handlers -----------------------------------------------------------------------------------------

    async def _authenticate(self, scope: Scope) -> KeyContext:
        assert self.rt is not None
        key = api_key(scope)
        if key is None:
            raise ProxyError.unauthorized(
                "Missing API key. Send your Turnpike key as `Authorization: Bearer tpk_…` or `x-api-key`."
            )
        if not looks_like_gateway_key(key):  # refused before any cache, Redis or Postgres work
            raise ProxyError.unauthorized(
                f"Invalid API key: not a Turnpike key (they look like `{GATEWAY_KEY_PREFIX}…`)."
            )
        try:
            context = await self.rt.resolver.resolve(key)
        except AuthBusy:
            raise ProxyError.unavailable(
                "Too many unknown API keys are being checked right now; retry shortly.", retry_after="1"
            ) from None
        if context is None:
            raise ProxyError.unauthorized("Invalid, revoked or expired API key.")
        return context

    async def _model_request(
        self, endpoint: ModelEndpoint, scope: Scope, receive: Receive, send: Send, request_id: str
    ) -> None:
        assert self.rt is not None
        started, started_ms = time.perf_counter(), int(time.time() * 1000)
        key = await self._authenticate(scope)
        body_bytes = await read_body(receive, limit=self.rt.config.max_body_bytes)
        body = parse_json_object(body_bytes)
        recorder = None
        if key.logs_bodies and (header(scope, bodies.OPT_OUT_HEADER) or "").strip().lower() not in _OPT_OUT:
            send = recorder = bodies.Recorder(send)
        await endpoint(
            Exchange(scope, receive, send, key, body, body_bytes, request_id, started, started_ms, recorder=recorder)
        )

    async def _models(self, scope: Scope, send: Send, request_id: str) -> None:
        assert self.rt is not None
        key = await self._authenticate(scope)
        ids: list[tuple[str, str]] = []
        seen_types: set[str] = set()
        for credential in key.workspace.credentials:
            if credential.provider == "openai_compatible":
                for model in await self._discover(credential.id, credential.base_url, credential.secret):
                    ids.append((f"{credential.slug}/{model}", credential.slug))
            elif credential.provider not in seen_types:
                seen_types.add(credential.provider)
                for model in self.rt.catalog.models_by_provider.get(credential.provider, []):
                    ids.append((f"{credential.provider}/{model}", credential.provider))
        for provider, model in sorted(key.workspace.prices):
            if (f"{provider}/{model}", provider) not in ids:
                ids.append((f"{provider}/{model}", provider))
        body: dict[str, Any] = {
            "object": "list",
            "data": [
                {"id": model_id, "object": "model", "created": 0, "owned_by": owner}
                for model_id, owner in ids
                if key.allows(model_id)
            ],
        }
        await send_bytes(send, 200, orjson.dumps(body), headers=[(b"x-request-id", request_id.encode())])

    async def _generation(self, scope: Scope, send: Send, request_id: str) -> None:
        assert self.rt is not None
        key = await self._authenticate(scope)
        body = await generation.lookup(self.rt, key=key, query_string=scope.get("query_string", b""))
        headers = [(b"x-request-id", request_id.encode()), (b"cache-control", b"no-store")]
        await send_bytes(send, 200, body, headers=headers)

    async def _discover(self, credential_id: int, base_url: str, secret: str) -> list[str]:
        """Models an OpenAI-compatible server lists at /models, cached for DISCOVERY_TTL."""
        assert self.rt is not None
        cached = self._discovered.get(credential_id)
        if cached and cached[0] > time.monotonic():
            return cached[1]
        models: list[str] = []
        try:
            response = await self.rt.http.request(
                "GET", base_url.rstrip("/") + "/models", headers={"authorization": f"Bearer {secret}"}, timeout=5.0
            )
            try:
                status, content = response.status, await response.read()
            finally:
                response.close()
            if status == 200:
                data = orjson.loads(content)
                models = sorted(str(m["id"]) for m in data.get("data", []) if isinstance(m, dict) and "id" in m)
        except (TransportError, ValueError) as exc:
            log.warning("model discovery failed for credential %s: %s", credential_id, exc)
        self._discovered[credential_id] = (time.monotonic() + (DISCOVERY_TTL if models else 10.0), models)
        return models

    async def _ready(self, send: Send, request_id: str) -> None:
        assert self.rt is not None
        checks: dict[str, str] = {"config": "ok"}
        try:
            await self.rt.redis.ping()
            checks["redis"] = "ok"
        except (RedisError, OSError) as exc:
            checks["redis"] = f"error: {type(exc).__name__}"
        checks["catalog"] = f"{len(self.rt.catalog.prices)} prices" if self.rt.catalog.prices else "not loaded"
        ok = checks["redis"] == "ok"
        body = orjson.dumps({"status": "ready" if ok else "not ready", "checks": checks})
        await send_bytes(send, 200 if ok else 503, body, headers=[(b"x-request-id", request_id.encode())])


def create_app(config: ProxyConfig | None = None) -> ProxyApp:
    return ProxyApp(config)


__all__ = ["ProxyApp", "create_app"]
