"""ASGI types, the request and response the handlers see, and the route table type."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from billing.fake_stripe.settings import Settings
from billing.fake_stripe.store import Store
from billing.fake_stripe.webhooks import Deliverer
from billing.fake_stripe.wire import Params, dumps

URL_SAFE = ":/?#[]@!$&'()*+,;=%~"

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    query: Params  # decoded bracket notation
    body: bytes
    params: Params = field(default_factory=dict)  # query (GET) or form body (POST), decoded
    request_id: str = ""

    @property
    def base_url(self) -> str:
        return "http://" + self.headers.get("host", "127.0.0.1")


@dataclass
class Response:
    status: int
    body: bytes
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def json(cls, body: Any, status: int = 200) -> Response:
        return cls(status, dumps(body))

    @classmethod
    def html(cls, text: str, status: int = 200) -> Response:
        return cls(status, text.encode(), "text/html; charset=utf-8")

    @classmethod
    def redirect(cls, location: str) -> Response:
        return cls(303, b"", "text/plain", {"location": quote(location, safe=URL_SAFE)})


@dataclass
class Context:
    settings: Settings
    store: Store
    deliverer: Deliverer

    def base_url(self, request: Request) -> str:
        return self.settings.public_url or request.base_url


Handler = Callable[..., "Params | Response"]


@dataclass(frozen=True)
class Route:
    method: str
    pattern: re.Pattern[str]
    handler: Handler


def route(method: str, path: str, handler: Handler) -> Route:
    """`/v1/customers/{id}` → a route whose `{name}` segments are passed to the handler by name."""
    regex = re.sub(r"\{(\w+)\}", r"(?P<\1>[A-Za-z0-9_]+)", path)
    return Route(method, re.compile(f"^{regex}$"), handler)
