"""Request and response bodies on the usage stream (opt-in; docs/request-log.md).

When a workspace or a gateway key opted in, and the request did not opt out with the header
`x-turnpike-log-bodies: off`, the proxy adds one field `b` to the request's usage stream entry: a JSON
object {"rq": base64, "rs": base64, "rqt": bool, "rst": bool} holding the request body as the client sent
it and the response body as the client received it (an SSE stream as sent, an error as sent), each cut at
BODY_MAX_BYTES (`rqt`/`rst`: it was cut). Headers are never captured, so API keys in them cannot end up
stored. The ingester stores the pair in billing.RequestBody beside the event; an entry whose `b` does not
decode still stores its event (the money matters more than the bodies).

`b` travels outside the event's JSON (`e`), so the generation record and every consumer of `e` stay small.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import MutableMapping
from dataclasses import dataclass
from typing import Any

import orjson

BODY_MAX_BYTES = 32 * 1024
FIELD = "b"
OPT_OUT_HEADER = b"x-turnpike-log-bodies"


@dataclass(frozen=True, slots=True)
class Bodies:
    request: bytes
    response: bytes
    request_truncated: bool = False
    response_truncated: bool = False

    def encode(self) -> str:
        return orjson.dumps(
            {
                "rq": base64.b64encode(self.request).decode(),
                "rs": base64.b64encode(self.response).decode(),
                "rqt": self.request_truncated,
                "rst": self.response_truncated,
            }
        ).decode()


def cut(data: bytes) -> tuple[bytes, bool]:
    """`data` cut at BODY_MAX_BYTES, and whether it was."""
    return (data, False) if len(data) <= BODY_MAX_BYTES else (data[:BODY_MAX_BYTES], True)


def decode(text: Any) -> Bodies | None:
    """The bodies of a stream entry's `b` field, or None if it is missing or malformed (never raises)."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    if not isinstance(text, str) or not text:
        return None
    try:
        data = orjson.loads(text)
        if not isinstance(data, dict):
            return None
        request = base64.b64decode(data.get("rq", ""), validate=True)
        response = base64.b64decode(data.get("rs", ""), validate=True)
    except (ValueError, TypeError, binascii.Error):
        return None
    return Bodies(
        request=request[:BODY_MAX_BYTES],
        response=response[:BODY_MAX_BYTES],
        request_truncated=data.get("rqt") is True or len(request) > BODY_MAX_BYTES,
        response_truncated=data.get("rst") is True or len(response) > BODY_MAX_BYTES,
    )


class Recorder:
    """Wraps an ASGI `send`: passes every message on and keeps the first BODY_MAX_BYTES of the response
    body bytes sent to the client."""

    __slots__ = ("_send", "chunks", "size", "truncated")

    def __init__(self, send: Any) -> None:
        self._send = send
        self.chunks: list[bytes] = []
        self.size = 0
        self.truncated = False

    async def __call__(self, message: MutableMapping[str, Any]) -> None:
        if message.get("type") == "http.response.body":
            body = message.get("body") or b""
            room = BODY_MAX_BYTES - self.size
            if len(body) > room:
                self.truncated = True
                body = body[: max(room, 0)]
            if body:
                self.chunks.append(bytes(body))
                self.size += len(body)
        await self._send(message)

    def body(self) -> bytes:
        return b"".join(self.chunks)
