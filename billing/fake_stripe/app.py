"""The fake Stripe's ASGI app: one request's life.

1. Read the body (at most MAX_BODY bytes, else 413) and decode params: the query string for GET, the
   form body for POST to `/v1` and `/checkout`, JSON for `/_fake`.
2. `/v1`: check `Authorization: Bearer <secret key>` (or HTTP basic with the key as user name) → 401
   in Stripe's envelope.
3. Find the route (404 `Unrecognized request URL`, as Stripe says it).
4. Under `Store.lock`: for a `/v1` POST with `Idempotency-Key`, replay the stored answer for the same
   key and the same params, or answer 400 idempotency_error for other params or another endpoint; else
   run the handler, apply `expand[]`, serialise, and store the answer under the key when it is 200 or 402
   (Stripe keeps the result of every request that began executing; a 400 from validation is not kept).
5. Answer with `Request-Id`, `Stripe-Version`, and `Idempotency-Key`/`Idempotent-Replayed` as Stripe does.
"""

from __future__ import annotations

import base64
import binascii
import logging

import orjson

from billing.fake_stripe import api, control, page
from billing.fake_stripe.routing import Context, Receive, Request, Response, Route, Scope, Send
from billing.fake_stripe.settings import Settings
from billing.fake_stripe.store import Store, StoredResponse
from billing.fake_stripe.webhooks import Deliverer
from billing.fake_stripe.wire import StripeError, decode_form, decode_json, dumps, get_list, new_id

MAX_BODY = 1024 * 1024
MAX_IDEMPOTENCY_KEY = 255
MAX_STORED_RESPONSES = 10_000  # the oldest idempotent answers are forgotten first (Stripe: after 24 h)
log = logging.getLogger("billing.fake_stripe")


def _redact(key: str) -> str:
    return f"{key[:8]}{'*' * 4}{key[-4:]}" if len(key) > 12 else "****"


class FakeStripe:
    """The ASGI app. `FakeStripe(Settings(...))`; without settings, from FAKE_STRIPE_* variables."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or Settings.from_env()
        self.deliverer = Deliverer(self.settings, on_delivered=self._delivered)
        self.store = Store(self.settings, on_event=self.deliverer.enqueue)
        self.context = Context(settings=self.settings, store=self.store, deliverer=self.deliverer)
        self.routes: list[Route] = [*api.ROUTES, *control.ROUTES, *page.ROUTES]

    def _delivered(self, event_id: str) -> None:
        with self.store.lock:
            event = self.store.events.get(event_id)
            if event is not None and event["pending_webhooks"] > 0:
                event["pending_webhooks"] -= 1

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    self.deliverer.stop()
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        body = b""
        too_large = False
        while True:
            message = await receive()
            if not too_large:
                body += message.get("body", b"")
                too_large = len(body) > MAX_BODY
            if not message.get("more_body"):
                break
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        request = Request(
            method=scope["method"],
            path=scope["path"],
            headers=headers,
            query={},
            body=b"" if too_large else body,
            request_id=new_id("req_", 14),
        )
        if too_large:
            response = self._error(StripeError("Request body too large (at most 1 MB).", status=413))
        else:
            response = self.handle(request, scope.get("query_string", b""))
        await self._send(send, request, response)

    # --- one request -----------------------------------------------------------------------------------------

    def handle(self, request: Request, query_string: bytes) -> Response:
        api_call = request.path.startswith("/v1/")
        try:
            request.query = decode_form(query_string)
            if api_call:
                self._authenticate(request)
            if request.method == "POST":
                if request.path.startswith("/_fake/"):
                    request.params = decode_json(request.body)
                else:
                    content_type = request.headers.get("content-type", "application/x-www-form-urlencoded")
                    if "json" in content_type:
                        raise StripeError(
                            "Invalid request: Stripe's API takes application/x-www-form-urlencoded bodies, not JSON."
                        )
                    request.params = decode_form(request.body)
            else:
                request.params = request.query
            route, args = self._route(request)
            with self.store.lock:
                key = request.headers.get("idempotency-key") if api_call and request.method == "POST" else None
                if key is not None:
                    return self._idempotent(request, route, args, key)
                return self._run(request, route, args, key=None)
        except StripeError as error:
            return self._error(error)

    def _authenticate(self, request: Request) -> None:
        header = request.headers.get("authorization", "")
        scheme, _, credential = header.partition(" ")
        key = ""
        if scheme.lower() == "bearer":
            key = credential.strip()
        elif scheme.lower() == "basic":
            try:
                key = base64.b64decode(credential.strip(), validate=True).decode().partition(":")[0]
            except (binascii.Error, UnicodeDecodeError):
                key = ""
        if not key:
            raise StripeError(
                "You did not provide an API key. You need to provide your API key in the Authorization header, "
                "using Bearer auth (e.g. 'Authorization: Bearer YOUR_SECRET_KEY'). See "
                "https://stripe.com/docs/api#authentication for details, or we can help at https://support.stripe.com/.",
                status=401,
            )
        if key != self.settings.secret_key:
            raise StripeError(f"Invalid API Key provided: {_redact(key)}", status=401)

    def _route(self, request: Request) -> tuple[Route, dict[str, str]]:
        allowed = False
        for candidate in self.routes:
            match = candidate.pattern.match(request.path)
            if match is None:
                continue
            if candidate.method == request.method:
                return candidate, match.groupdict()
            allowed = True
        status = 405 if allowed and not request.path.startswith("/v1/") else 404
        raise StripeError(
            f"Unrecognized request URL ({request.method}: {request.path}). Please see https://stripe.com/docs or we "
            "can help at https://support.stripe.com/.",
            status=status,
        )

    def _run(self, request: Request, route: Route, args: dict[str, str], *, key: str | None) -> Response:
        try:
            with self.store.request(request.request_id if request.path.startswith("/v1/") else None, key):
                result = route.handler(self.context, request, **args)
                if isinstance(result, Response):
                    return result
                expand = get_list(request.params, "expand") if request.path.startswith("/v1/") else []
                return Response.json(self.store.render(result, expand) if expand else result)
        except StripeError as error:
            return self._error(error)
        except Exception:
            log.exception("fake Stripe failed on %s %s", request.method, request.path)
            return self._error(
                StripeError("The fake Stripe hit an internal error (see its log).", status=500, type="api_error")
            )

    def _idempotent(self, request: Request, route: Route, args: dict[str, str], key: str) -> Response:
        if len(key) > MAX_IDEMPOTENCY_KEY:
            return self._error(
                StripeError(
                    f"Idempotency keys can be at most {MAX_IDEMPOTENCY_KEY} characters long.", param="idempotency_key"
                )
            )
        fingerprint = orjson.dumps(request.params, option=orjson.OPT_SORT_KEYS)
        stored = self.store.idempotent.get(key)
        if stored is not None:
            if stored.path != request.path or stored.method != request.method:
                return self._error(
                    StripeError(
                        "Keys for idempotent requests can only be used for the same endpoint they were first used "
                        f"for ('{stored.method} {stored.path}' vs '{request.method} {request.path}'). Try using a key "
                        f"other than '{key}' if you meant to execute a different request.",
                        type="idempotency_error",
                    )
                )
            if stored.fingerprint != fingerprint:
                return self._error(
                    StripeError(
                        "Keys for idempotent requests can only be used with the same parameters they were first used "
                        f"with. Try using a key other than '{key}' if you meant to execute a different request.",
                        type="idempotency_error",
                    )
                )
            return Response(stored.status, stored.body, headers={"idempotent-replayed": "true"})
        response = self._run(request, route, args, key=key)
        if response.status in (200, 402):
            self.store.idempotent[key] = StoredResponse(
                request.method, request.path, fingerprint, response.status, response.body
            )
            while len(self.store.idempotent) > MAX_STORED_RESPONSES:
                del self.store.idempotent[next(iter(self.store.idempotent))]
        return response

    @staticmethod
    def _error(error: StripeError) -> Response:
        return Response(error.status, dumps(error.envelope()))

    async def _send(self, send: Send, request: Request, response: Response) -> None:
        headers: list[tuple[bytes, bytes]] = [
            (b"content-type", response.content_type.encode()),
            (b"content-length", str(len(response.body)).encode()),
            (b"request-id", request.request_id.encode()),
            (b"cache-control", b"no-cache, no-store"),
        ]
        if request.path.startswith("/v1/"):
            version = request.headers.get("stripe-version") or self.settings.api_version
            headers.append((b"stripe-version", version.encode("latin-1")))
            if request.method == "POST" and "idempotency-key" in request.headers:
                headers.append((b"idempotency-key", request.headers["idempotency-key"].encode("latin-1")))
        headers.extend((k.encode(), v.encode("latin-1", "replace")) for k, v in response.headers.items())
        await send({"type": "http.response.start", "status": response.status, "headers": headers})
        await send({"type": "http.response.body", "body": response.body})


def create_app(settings: Settings | None = None) -> FakeStripe:
    return FakeStripe(settings)
