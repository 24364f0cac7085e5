"""Small ASGI response helpers and request parsing shared by the proxy's handlers."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from proxy.errors import ProxyError
from proxy.types import Receive, Scope, Send

JSON = b"application/json"


def header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return None


def api_key(scope: Scope) -> str | None:
    """The caller's key from `Authorization: Bearer …` or `x-api-key` (Anthropic SDK style)."""
    auth = header(scope, b"authorization")
    if auth:
        scheme, _, value = auth.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    key = header(scope, b"x-api-key")
    return key.strip() if key and key.strip() else None


async def read_body(receive: Receive, *, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ConnectionResetError("client disconnected while sending the body")
        body = message.get("body", b"")
        size += len(body)
        if size > limit:
            raise ProxyError.too_large(limit)
        chunks.append(body)
        if not message.get("more_body", False):
            return b"".join(chunks)


def parse_json_object(body: bytes) -> dict[str, Any]:
    if not body:
        raise ProxyError.invalid_request("The request body is empty; send a JSON object.")
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ProxyError.invalid_request(f"The request body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ProxyError.invalid_request("The request body must be a JSON object.")
    return data


async def send_bytes(
    send: Send, status: int, body: bytes, *, content_type: bytes = JSON, headers: Sequence[tuple[bytes, bytes]] = ()
) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", content_type), (b"content-length", str(len(body)).encode()), *headers],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def send_error(send: Send, error: ProxyError, *, request_id: str, anthropic: bool = False) -> None:
    body = error.anthropic_body() if anthropic else error.openai_body()
    extra = [(b"x-request-id", request_id.encode())]
    extra += [(k.encode(), v.encode()) for k, v in error.headers.items()]
    await send_bytes(send, error.status, body, headers=extra)
