"""The fake provider's ASGI app (see the package docstring for what it serves and its controls)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import struct
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs

import orjson

from proxy.fake_provider import gemini as fake_gemini
from proxy.types import Receive, Scope, Send

CREATED = 1_700_000_000
OPENAI_MODELS = ["gpt-4o-mini", "gpt-4o", "gpt-4.1-mini", "o4-mini", "text-embedding-3-small"]
ANTHROPIC_MODELS = ["claude-sonnet-4-5", "claude-haiku-4-5", "claude-opus-4-1"]
GEMINI_MODELS = ["gemini-2.5-flash", "gemini-2.5-pro", "gemini-2.0-flash"]
WORDS = (
    "the quick brown fox jumps over the lazy dog while a gateway counts every token twice checked once "
    "billed exactly and streamed back without delay"
).split()


class Controls:
    """Test controls from `x-fake-*` headers and `@k=v;k=v` model-name suffixes."""

    def __init__(self, headers: dict[str, str], model: str | None) -> None:
        values: dict[str, str] = {}
        for name, value in headers.items():
            if name.startswith("x-fake-"):
                values[name[len("x-fake-") :].replace("-ms", "").replace("-", "_")] = value
        self.model = model
        if model and "@" in model:
            self.model, _, suffix = model.partition("@")
            for part in suffix.split(";"):
                k, _, v = part.partition("=")
                if k:
                    values[k.strip()] = v.strip()
        self.values = values

    def num(self, name: str, default: int = 0) -> int:
        try:
            return int(self.values.get(name, default))
        except ValueError:
            return default

    def flag(self, name: str) -> bool:
        return self.values.get(name, "") not in ("", "0", "false")


def _tokens(text: str) -> int:
    return max(1, (len(text) + 3) // 4) if text else 0


def _digest(*parts: object) -> str:
    return hashlib.sha256(orjson.dumps([str(p) for p in parts])).hexdigest()[:24]


# --- error envelopes ---------------------------------------------------------------------------------------

_OPENAI_ERROR_TYPES = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("invalid_request_error", "unsupported_country_region_territory"),
    404: ("invalid_request_error", "model_not_found"),
    429: ("requests", "rate_limit_exceeded"),
    500: ("server_error", None),
    503: ("server_error", None),
}


def openai_error(status: int, message: str) -> dict[str, Any]:
    kind, code = _OPENAI_ERROR_TYPES.get(status, ("server_error", None))
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


def anthropic_error(status: int, message: str) -> dict[str, Any]:
    kind = {
        400: "invalid_request_error",
        401: "authentication_error",
        403: "permission_error",
        404: "not_found_error",
        429: "rate_limit_error",
        529: "overloaded_error",
    }.get(status, "api_error")
    return {"type": "error", "error": {"type": kind, "message": message}}


def google_error(status: int, message: str) -> dict[str, Any]:
    label = {
        400: "INVALID_ARGUMENT",
        401: "UNAUTHENTICATED",
        403: "PERMISSION_DENIED",
        404: "NOT_FOUND",
        429: "RESOURCE_EXHAUSTED",
        503: "UNAVAILABLE",
    }.get(status, "INTERNAL")
    return {"error": {"code": status, "message": message, "status": label}}


def _forced(controls: Controls, family: str) -> tuple[int, dict[str, str], Any] | None:
    status = controls.num("status")
    if not status or status == 200:
        return None
    headers: dict[str, str] = {}
    if status in (429, 503, 529):
        headers["retry-after"] = str(controls.num("retry_after", 1))
    message = f"Forced status {status} by the fake provider."
    if status == 429:
        message = "Rate limit reached for requests. Please try again in 1s."
    envelope = {"anthropic": anthropic_error, "google": google_error}.get(family, openai_error)
    return status, headers, envelope(status, message)


# --- OpenAI format -----------------------------------------------------------------------------------------------


def _last_user_text(messages: list[Any]) -> str:
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, str):
                return content
            if isinstance(content, list):
                return " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


def _prompt_text(messages: list[Any]) -> str:
    parts = []
    for message in messages:
        if isinstance(message, dict):
            content = message.get("content")
            if isinstance(content, str):
                parts.append(content)
            elif isinstance(content, list):
                parts.extend(p.get("text", "") for p in content if isinstance(p, dict))
    return " ".join(parts)


def _answer(messages: list[Any], words: int) -> str:
    seed = int(_digest(_last_user_text(messages)), 16)
    picked = [WORDS[(seed + i * 7) % len(WORDS)] for i in range(max(words, 1))]
    return " ".join(picked).capitalize() + "."


def _example_value(schema: Any) -> Any:
    if not isinstance(schema, dict):
        return "example"
    kind = schema.get("type")
    if schema.get("enum"):
        return schema["enum"][0]
    if kind == "object":
        return {name: _example_value(sub) for name, sub in (schema.get("properties") or {}).items()}
    if kind == "array":
        return [_example_value(schema.get("items"))]
    if kind == "integer":
        return 1
    if kind == "number":
        return 1.5
    if kind == "boolean":
        return True
    return "example"


def _tool_call(tools: list[Any], messages: list[Any]) -> dict[str, Any] | None:
    if not tools or not messages or not isinstance(messages[-1], dict) or messages[-1].get("role") != "user":
        return None
    function = tools[0].get("function", {}) if isinstance(tools[0], dict) else {}
    name = function.get("name", "tool")
    arguments = orjson.dumps(_example_value(function.get("parameters", {"type": "object"}))).decode()
    return {
        "id": f"call_{_digest(name, arguments)[:20]}",
        "type": "function",
        "function": {"name": name, "arguments": arguments},
    }


def _usage(prompt: int, completion: int, controls: Controls) -> dict[str, Any]:
    # a misbehaving OpenAI-compatible server may report any count at all (tests: `usage_tokens=N`)
    prompt = controls.num("usage_tokens", prompt)
    completion = controls.num("usage_tokens", completion)
    cached = min(controls.num("cached"), prompt)
    reasoning = min(controls.num("reasoning"), completion)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": min(prompt + completion, 2**64 - 1),  # JSON numbers past 64 bits break most parsers
        "prompt_tokens_details": {"cached_tokens": cached, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": reasoning,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


class FakeProvider:
    """The ASGI app."""

    def __init__(self) -> None:
        self.requests_served = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        self.requests_served += 1
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        query = {k: v[0] for k, v in parse_qs(scope.get("query_string", b"").decode()).items()}
        method, path = scope["method"], scope["path"]
        family = self._family(path, headers)
        try:
            payload = orjson.loads(body) if body else {}
        except orjson.JSONDecodeError:
            await self._json(send, 400, {}, self._envelope(family)(400, "We could not parse the JSON body."))
            return
        model = payload.get("model") if isinstance(payload, dict) else None
        gemini_call = fake_gemini.model_and_method(path) if family == "google" else None
        if gemini_call is not None:
            model = gemini_call[0]  # Gemini names the model in the URL
        controls = Controls(headers, model if isinstance(model, str) else None)
        if not self._authorised(family, headers, query):
            await self._json(send, *self._unauthorised(family))
            return
        latency = controls.num("latency")
        if latency:
            await asyncio.sleep(latency / 1000)
        forced = _forced(controls, family)
        if forced is not None:
            await self._json(send, *forced)
            return
        if gemini_call is not None and method == "POST":
            await self._gemini(send, payload, gemini_call, controls)
            return
        if family == "anthropic" and method == "POST" and path == "/v1/messages/count_tokens":
            await self._json(send, 200, {}, fake_gemini.count_tokens(payload))
            return
        if family == "anthropic" and method == "POST" and path == "/v1/messages":
            problem = _anthropic_invalid(payload)
            if problem:
                await self._json(send, 400, {}, anthropic_error(400, problem))
            elif payload.get("stream"):
                await _anthropic_stream(send, payload, controls)
            else:
                await self._json(send, 200, {}, _anthropic_message(payload, controls))
            return
        if family == "azure" and method == "POST":
            deployment = _azure_deployment(path, payload)
            if deployment is None or ("/deployments/" in path and "api-version" not in query):
                await self._json(send, 404, {}, {"error": {"code": "404", "message": "Resource not found"}})
                return
            from proxy.fake_provider import responses as responses_api

            controls.model = responses_api.azure_served_model(deployment)
            family = "openai"  # the rest is OpenAI's wire format
        if family == "openai" and method == "POST" and path.endswith("/chat/completions"):
            if payload.get("stream"):
                await self._chat_stream(send, payload, controls)
            else:
                await self._json(send, 200, {}, self._chat(payload, controls))
            return
        if family == "openai" and method == "POST" and path.endswith("/responses"):
            from proxy.fake_provider import responses as responses_api

            if payload.get("stream"):
                await responses_api.stream(send, payload, controls)
            else:
                await self._json(send, 200, {}, responses_api.response(payload, controls))
            return
        if family == "openai" and method == "POST" and path.endswith("/embeddings"):
            await self._json(send, 200, {}, self._embeddings(payload, controls))
            return
        if method == "GET" and path.endswith("/models"):
            await self._json(send, 200, {}, self._models(family))
            return
        await self._json(send, 404, {}, self._envelope(family)(404, f"Unknown path {method} {path}"))

    async def _gemini(self, send: Send, payload: dict[str, Any], call: tuple[str, str], controls: Controls) -> None:
        model, method = call
        model = controls.model or model
        if method in ("embedContent", "batchEmbedContents"):
            status, body = fake_gemini.embed(payload, method)
            await self._json(send, status, {}, body)
            return
        if method not in ("generateContent", "streamGenerateContent"):
            await self._json(send, 404, {}, google_error(404, f"Method {method} is not found for model {model}."))
            return
        problem = fake_gemini.invalid(payload)
        if problem:
            await self._json(send, 400, {}, google_error(400, problem))
        elif method == "streamGenerateContent":
            await fake_gemini.stream(send, payload, model, controls)
        else:
            await self._json(send, 200, {}, fake_gemini.generate(payload, model, controls))

    # --- auth ------------------------------------------------------------------------------------------------

    @staticmethod
    def _family(path: str, headers: dict[str, str]) -> str:
        if path.startswith("/v1beta"):
            return "google"
        if path.startswith("/openai/"):
            return "azure"
        if "x-api-key" in headers or "anthropic-version" in headers:
            return "anthropic"
        return "openai"

    @staticmethod
    def _envelope(family: str) -> Callable[[int, str], dict[str, Any]]:
        return {"anthropic": anthropic_error, "google": google_error}.get(family, openai_error)

    @staticmethod
    def _authorised(family: str, headers: dict[str, str], query: dict[str, str]) -> bool:
        if family == "anthropic":
            key = headers.get("x-api-key", "")
        elif family == "google":
            key = headers.get("x-goog-api-key") or query.get("key", "")
        elif family == "azure":
            key = headers.get("api-key", "")
        else:
            key = headers.get("authorization", "").removeprefix("Bearer ").strip()
        return key.startswith("fake-")

    @staticmethod
    def _unauthorised(family: str) -> tuple[int, dict[str, str], Any]:
        if family == "anthropic":
            return 401, {}, anthropic_error(401, "invalid x-api-key")
        if family == "google":
            return (
                400,
                {},
                {
                    "error": {
                        "code": 400,
                        "message": "API key not valid. Please pass a valid API key.",
                        "status": "INVALID_ARGUMENT",
                    }
                },
            )
        if family == "azure":
            return (
                401,
                {},
                {
                    "error": {
                        "code": "401",
                        "message": "Access denied due to invalid subscription key or "
                        "wrong API endpoint. Make sure to provide a valid key for an active "
                        "subscription and use a correct regional API endpoint for your resource.",
                    }
                },
            )
        return (
            401,
            {},
            openai_error(
                401,
                "Incorrect API key provided. You can find your API key at "
                "https://platform.openai.com/account/api-keys.",
            ),
        )

    # --- OpenAI-format endpoints -------------------------------------------------------------------------------

    def _chat(self, payload: dict[str, Any], controls: Controls) -> dict[str, Any]:
        messages = payload.get("messages") or []
        model = controls.model or "gpt-4o-mini"
        prompt = _tokens(_prompt_text(messages))
        call = _tool_call(payload.get("tools") or [], messages)
        if call is not None:
            message: dict[str, Any] = {"role": "assistant", "content": None, "tool_calls": [call], "refusal": None}
            finish, completion = "tool_calls", _tokens(call["function"]["arguments"]) + 5
        else:
            text = _answer(messages, controls.num("words", 12))
            message = {"role": "assistant", "content": text, "refusal": None}
            finish, completion = "stop", len(text.split())
        return {
            "id": f"chatcmpl-{_digest(model, messages)}",
            "object": "chat.completion",
            "created": CREATED,
            "model": model,
            "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}],
            "usage": _usage(prompt, completion, controls),
            "system_fingerprint": "fp_fake",
        }

    async def _chat_stream(self, send: Send, payload: dict[str, Any], controls: Controls) -> None:
        messages = payload.get("messages") or []
        model = controls.model or "gpt-4o-mini"
        include_usage = bool((payload.get("stream_options") or {}).get("include_usage")) and not controls.flag(
            "no_usage"
        )
        base = {
            "id": f"chatcmpl-{_digest(model, messages)}",
            "object": "chat.completion.chunk",
            "created": CREATED,
            "model": model,
            "system_fingerprint": "fp_fake",
        }
        usage_field = {"usage": None} if include_usage else {}

        def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
            body = {
                **base,
                "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
                **usage_field,
            }
            return b"data: " + orjson.dumps(body) + b"\n\n"

        await _stream_start(send, controls)
        call = _tool_call(payload.get("tools") or [], messages)
        frames: list[bytes] = []
        if call is not None:
            arguments = call["function"]["arguments"]
            frames.append(
                chunk(
                    {
                        "role": "assistant",
                        "content": None,
                        "tool_calls": [
                            {
                                "index": 0,
                                "id": call["id"],
                                "type": "function",
                                "function": {"name": call["function"]["name"], "arguments": ""},
                            }
                        ],
                        "refusal": None,
                    }
                )
            )
            for i in range(0, len(arguments), 8):
                frames.append(chunk({"tool_calls": [{"index": 0, "function": {"arguments": arguments[i : i + 8]}}]}))
            frames.append(chunk({}, "tool_calls"))
            completion = _tokens(arguments) + 5
        else:
            text = _answer(messages, controls.num("words", 12))
            frames.append(chunk({"role": "assistant", "content": "", "refusal": None}))
            pieces = text.split(" ")
            for i, word in enumerate(pieces):
                frames.append(chunk({"content": word if i == 0 else " " + word}))
            frames.append(chunk({}, "stop"))
            completion = len(pieces)
        if include_usage:
            usage = {**base, "choices": [], "usage": _usage(_tokens(_prompt_text(messages)), completion, controls)}
            frames.append(b"data: " + orjson.dumps(usage) + b"\n\n")
        frames.append(b"data: [DONE]\n\n")
        await _stream_frames(send, frames, controls)

    def _embeddings(self, payload: dict[str, Any], controls: Controls) -> dict[str, Any]:
        inputs = payload.get("input")
        items = inputs if isinstance(inputs, list) else [inputs]
        dims = int(payload.get("dimensions") or 8)
        data = []
        for index, item in enumerate(items):
            seed = hashlib.sha256(str(item).encode()).digest()
            vector = [((seed[i % 32] + i) % 200 - 100) / 100 for i in range(dims)]
            if payload.get("encoding_format") == "base64":
                embedding: Any = base64.b64encode(struct.pack(f"<{dims}f", *vector)).decode()
            else:
                embedding = vector
            data.append({"object": "embedding", "index": index, "embedding": embedding})
        tokens = sum(_tokens(str(item)) for item in items)
        return {
            "object": "list",
            "data": data,
            "model": controls.model or "text-embedding-3-small",
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }

    @staticmethod
    def _models(family: str) -> dict[str, Any]:
        if family == "anthropic":
            data = [
                {
                    "type": "model",
                    "id": m,
                    "display_name": m.replace("-", " ").title(),
                    "created_at": "2025-09-29T00:00:00Z",
                }
                for m in ANTHROPIC_MODELS
            ]
            return {"data": data, "has_more": False, "first_id": data[0]["id"], "last_id": data[-1]["id"]}
        if family == "google":
            return {
                "models": [
                    {
                        "name": f"models/{m}",
                        "displayName": m,
                        "supportedGenerationMethods": ["generateContent", "countTokens"],
                    }
                    for m in GEMINI_MODELS
                ]
            }
        return {
            "object": "list",
            "data": [{"id": m, "object": "model", "created": CREATED, "owned_by": "fake"} for m in OPENAI_MODELS],
        }

    # --- plumbing ---------------------------------------------------------------------------------------------------

    @staticmethod
    async def _json(send: Send, status: int, headers: dict[str, str], body: Any) -> None:
        raw = orjson.dumps(body)
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(raw)).encode()),
                    (b"x-request-id", f"fake_{time.monotonic_ns()}".encode()),
                    *[(k.encode(), v.encode()) for k, v in headers.items()],
                ],
            }
        )
        await send({"type": "http.response.body", "body": raw})


app = FakeProvider()


def _azure_deployment(path: str, payload: Any) -> str | None:
    """The deployment an Azure OpenAI URL addresses: `/openai/deployments/{name}/...` (needs an
    api-version, checked by the caller's auth path) or the v1 API's `/openai/v1/...` (name in the body)."""
    parts = path.strip("/").split("/")
    if len(parts) >= 4 and parts[1] == "deployments":
        return parts[2]
    if len(parts) >= 3 and parts[1] == "v1" and isinstance(payload, dict) and isinstance(payload.get("model"), str):
        return str(payload["model"])
    return None


# --- streaming helpers ---------------------------------------------------------------------------------------


async def _stream_start(send: Send, controls: Controls) -> None:
    """Response headers at once, then the controlled wait before the first event (ttfb)."""
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/event-stream; charset=utf-8"), (b"cache-control", b"no-cache")],
        }
    )
    if controls.num("ttfb"):
        await asyncio.sleep(controls.num("ttfb") / 1000)


async def _stream_frames(send: Send, frames: list[bytes], controls: Controls) -> None:
    delay = controls.num("chunk_delay")
    for frame in frames:
        await send({"type": "http.response.body", "body": frame, "more_body": True})
        if delay:
            await asyncio.sleep(delay / 1000)
    await send({"type": "http.response.body", "body": b"", "more_body": False})


# --- Anthropic Messages ----------------------------------------------------------------------------------------


def _anthropic_invalid(payload: dict[str, Any]) -> str | None:
    """What Anthropic would refuse with 400 (the checks a translation bug would trip)."""
    if not isinstance(payload.get("model"), str):
        return "model: Field required"
    if not isinstance(payload.get("max_tokens"), int):
        return "max_tokens: Field required"
    messages = payload.get("messages")
    if not isinstance(messages, list) or not messages:
        return "messages: Field required"
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ("user", "assistant"):
            return f"messages.{i}.role: Input should be 'user' or 'assistant'"
        if i and messages[i - 1].get("role") == message["role"]:
            return "messages: roles must alternate between 'user' and 'assistant'"
    if messages[0].get("role") != "user":
        return "messages: first message must use the 'user' role"
    return None


def _anthropic_text(payload: dict[str, Any]) -> str:
    parts: list[str] = []
    system = payload.get("system")
    if isinstance(system, str):
        parts.append(system)
    elif isinstance(system, list):
        parts.extend(str(b.get("text", "")) for b in system if isinstance(b, dict))
    for message in payload.get("messages") or []:
        content = message.get("content")
        if isinstance(content, str):
            parts.append(content)
        elif isinstance(content, list):
            for block in content:
                if isinstance(block, dict):
                    text = block.get("text") or block.get("content") or ""
                    parts.append(text if isinstance(text, str) else orjson.dumps(text).decode())
    return " ".join(parts)


def _is_web_search_tool(tool: Any) -> bool:
    """Anthropic's server-side web search tool (`{"type": "web_search_20250305", "name": "web_search"}`)."""
    return isinstance(tool, dict) and str(tool.get("type") or "").startswith("web_search_")


def _anthropic_searches(payload: dict[str, Any]) -> int:
    """Web searches to run: with the web search tool offered, its `max_uses` (default 1) when the last turn
    is the user's; none otherwise."""
    tool = next((t for t in payload.get("tools") or [] if _is_web_search_tool(t)), None)
    messages = payload.get("messages") or []
    if tool is None or not messages or messages[-1].get("role") != "user":
        return 0
    uses = tool.get("max_uses")
    return uses if isinstance(uses, int) and not isinstance(uses, bool) and uses > 0 else 1


def _search_result(query: str, n: int) -> dict[str, Any]:
    digest = _digest(query, n)
    return {
        "title": f"Result {n + 1} for {query[:40]}",
        "url": f"https://example.com/search/{digest[:12]}",
        "encrypted": f"enc_{digest}",
    }


def _anthropic_search_blocks(payload: dict[str, Any], searches: int) -> list[dict[str, Any]]:
    """What Anthropic puts in `content` for each server-side web search: a `server_tool_use` block (the
    query) and its `web_search_tool_result` (the results)."""
    query = _last_user_text(payload.get("messages") or [])[:200] or "search"
    blocks: list[dict[str, Any]] = []
    for n in range(searches):
        result = _search_result(query, n)
        tool_id = f"srvtoolu_{_digest('search', query, n)[:22]}"
        blocks.append({"type": "server_tool_use", "id": tool_id, "name": "web_search", "input": {"query": query}})
        blocks.append(
            {
                "type": "web_search_tool_result",
                "tool_use_id": tool_id,
                "content": [
                    {
                        "type": "web_search_result",
                        "title": result["title"],
                        "url": result["url"],
                        "encrypted_content": result["encrypted"],
                        "page_age": None,
                    }
                ],
            }
        )
    return blocks


def _anthropic_tool_use(payload: dict[str, Any]) -> dict[str, Any] | None:
    """A tool_use block when (client) tools are offered and the last user turn is not only tool results."""
    tools = [t for t in payload.get("tools") or [] if not _is_web_search_tool(t)]
    messages = payload.get("messages") or []
    if not tools or not messages or messages[-1].get("role") != "user":
        return None
    choice = payload.get("tool_choice") or {}
    if choice.get("type") == "none":
        return None
    content = messages[-1].get("content")
    if isinstance(content, list) and content and all(b.get("type") == "tool_result" for b in content):
        return None
    tool = next((t for t in tools if t.get("name") == choice.get("name")), tools[0]) if choice else tools[0]
    arguments = _example_value(tool.get("input_schema", {"type": "object"}))
    return {
        "type": "tool_use",
        "id": f"toolu_{_digest(tool.get('name'), arguments)[:22]}",
        "name": tool.get("name"),
        "input": arguments,
    }


def _anthropic_usage(payload: dict[str, Any], output: int, controls: Controls, searches: int = 0) -> dict[str, Any]:
    prompt = _tokens(_anthropic_text(payload))
    cache_read = controls.num("cached")
    cache_write = controls.num("cache_write")
    usage: dict[str, Any] = {
        "input_tokens": max(prompt, 1),  # excludes the cache reads and writes below, as Anthropic reports it
        "cache_creation_input_tokens": cache_write,
        "cache_read_input_tokens": cache_read,
        "output_tokens": output,
    }
    if searches:  # server-side tool use, billed per search
        usage["server_tool_use"] = {"web_search_requests": searches, "web_fetch_requests": 0}
    return usage


def _anthropic_message(payload: dict[str, Any], controls: Controls) -> dict[str, Any]:
    model = controls.model or "claude-sonnet-4-5"
    searches = _anthropic_searches(payload)
    content: list[dict[str, Any]] = _anthropic_search_blocks(payload, searches)
    call = _anthropic_tool_use(payload)
    if call is not None:
        content.append(call)
        stop, output = "tool_use", _tokens(orjson.dumps(call["input"]).decode()) + 5
    else:
        text = _answer([{"role": "user", "content": _anthropic_text(payload)}], controls.num("words", 12))
        block: dict[str, Any] = {"type": "text", "text": text}
        if searches:  # the answer cites what the search found
            found = content[1]["content"][0]
            block["citations"] = [
                {
                    "type": "web_search_result_location",
                    "cited_text": text,
                    "url": found["url"],
                    "title": found["title"],
                    "encrypted_index": f"idx_{_digest(found['url'])}",
                }
            ]
        content.append(block)
        stop, output = "end_turn", len(text.split())
    return {
        "id": f"msg_{_digest(model, payload.get('messages'))}",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop,
        "stop_sequence": None,
        "usage": _anthropic_usage(payload, output + 10 * searches, controls, searches),
    }


async def _anthropic_stream(send: Send, payload: dict[str, Any], controls: Controls) -> None:
    """The event sequence of Anthropic's streaming Messages API: message_start, per block
    content_block_start / content_block_delta… / content_block_stop, message_delta (stop reason and
    cumulative output tokens), message_stop; a ping after the first block starts."""
    message = _anthropic_message(payload, controls)
    usage = message["usage"]

    def event(kind: str, data: dict[str, Any]) -> bytes:
        return f"event: {kind}\ndata: ".encode() + orjson.dumps({"type": kind, **data}) + b"\n\n"

    start_usage = {k: v for k, v in usage.items() if k != "server_tool_use"}
    start = {**message, "content": [], "stop_reason": None, "usage": {**start_usage, "output_tokens": 1}}
    frames = [event("message_start", {"message": start})]
    for index, block in enumerate(message["content"]):
        if block["type"] == "web_search_tool_result":  # arrives whole
            frames.append(event("content_block_start", {"index": index, "content_block": block}))
        elif block["type"] == "text":
            frames.append(event("content_block_start", {"index": index, "content_block": {"type": "text", "text": ""}}))
            frames.append(event("ping", {}))
            for citation in block.get("citations") or []:
                frames.append(
                    event(
                        "content_block_delta",
                        {"index": index, "delta": {"type": "citations_delta", "citation": citation}},
                    )
                )
            words = block["text"].split(" ")
            for i, word in enumerate(words):
                delta = {"type": "text_delta", "text": word if i == 0 else " " + word}
                frames.append(event("content_block_delta", {"index": index, "delta": delta}))
        else:
            frames.append(event("content_block_start", {"index": index, "content_block": {**block, "input": {}}}))
            arguments = orjson.dumps(block["input"]).decode()
            for i in range(0, len(arguments), 8):
                delta = {"type": "input_json_delta", "partial_json": arguments[i : i + 8]}
                frames.append(event("content_block_delta", {"index": index, "delta": delta}))
        frames.append(event("content_block_stop", {"index": index}))
    frames.append(
        event(
            "message_delta",
            {
                "delta": {"stop_reason": message["stop_reason"], "stop_sequence": None},
                # cumulative; the server tool use (web searches) is reported here, at the end
                "usage": {"output_tokens": usage["output_tokens"]}
                | ({"server_tool_use": usage["server_tool_use"]} if "server_tool_use" in usage else {}),
            },
        )
    )
    frames.append(event("message_stop", {}))
    await _stream_start(send, controls)
    await _stream_frames(send, frames, controls)
