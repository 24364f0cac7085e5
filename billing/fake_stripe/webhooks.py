"""Webhook delivery, signed like Stripe, in a background thread, with retries and a delivery log.

Signing: `Stripe-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, f"{t}.{body}")>`, computed
afresh for every attempt, so `stripe.Webhook.construct_event(body, header, secret)` verifies it.

Delivery: every event emitted while a webhook URL is configured gets a delivery record and is queued.
One daemon thread POSTs due deliveries in order (the body is the event as JSON, `Content-Type:
application/json; charset=utf-8`). A 2xx answer is success; any other status (redirects are not
followed) or a connection error/timeout is a failure, retried after each of `Settings.retry_delays`
in turn, then given up ("failed"). Every attempt is logged (time, status code or error, duration).
Nothing survives a restart: the log and the queue are in memory, like the rest of the fake.
"""

from __future__ import annotations

import contextlib
import hashlib
import heapq
import hmac
import http.client
import itertools
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import orjson

from billing.fake_stripe.settings import Settings
from billing.fake_stripe.wire import Params, new_id

USER_AGENT = "Stripe/1.0 (+https://stripe.com/docs/webhooks)"
RESPONSE_EXCERPT = 500  # characters of the endpoint's answer kept in the log


def signature_header(payload: bytes, secret: str, timestamp: int | None = None) -> str:
    timestamp = int(time.time()) if timestamp is None else timestamp
    signed = f"{timestamp}.".encode() + payload
    digest = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def post(url: str, body: bytes, headers: dict[str, str], timeout: float) -> tuple[int, str]:
    """One POST with the standard library (no proxies, no redirects): (status, start of the body)."""
    parts = urlsplit(url)
    connection_class = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    connection = connection_class(parts.hostname or "127.0.0.1", parts.port, timeout=timeout)
    try:
        target = parts.path or "/"
        if parts.query:
            target += "?" + parts.query
        connection.request("POST", target, body=body, headers=headers)
        response = connection.getresponse()
        excerpt = response.read(RESPONSE_EXCERPT * 4).decode("utf-8", "replace")[:RESPONSE_EXCERPT]
        return response.status, excerpt
    finally:
        connection.close()


class Deliverer:
    """The queue, the log and the delivery thread. Thread-safe; `enqueue` never blocks on the network."""

    def __init__(self, settings: Settings, on_delivered: Callable[[str], None] | None = None) -> None:
        self.settings = settings
        self.on_delivered = on_delivered or (lambda event_id: None)
        self._cond = threading.Condition()
        self._queue: list[tuple[float, int, str]] = []  # (due monotonic time, sequence, delivery id)
        self._sequence = itertools.count()
        self._log: dict[str, Params] = {}
        self._payloads: dict[str, bytes] = {}
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._in_flight = False

    # --- public ------------------------------------------------------------------------------------------

    def enqueue(self, event: Params) -> Params | None:
        """Queue `event` for the configured URL (None when no URL is configured)."""
        url = self.settings.webhook_url
        if not url:
            return None
        payload = orjson.dumps(event, option=orjson.OPT_INDENT_2)
        delivery: Params = {
            "id": new_id("whdel_"),
            "object": "fake.webhook_delivery",
            "event": event["id"],
            "type": event["type"],
            "url": url,
            "status": "pending",
            "attempts": [],
            "next_attempt_at": time.time(),
            "created": int(time.time()),
        }
        with self._cond:
            self._log[delivery["id"]] = delivery
            self._payloads[delivery["id"]] = payload
            heapq.heappush(self._queue, (time.monotonic(), next(self._sequence), delivery["id"]))
            self._ensure_thread()
            self._cond.notify()
        return delivery

    def deliveries(self, *, event: str | None = None, event_type: str | None = None) -> list[Params]:
        with self._cond:
            found = [
                orjson.loads(orjson.dumps(d))
                for d in self._log.values()
                if (event is None or d["event"] == event) and (event_type is None or d["type"] == event_type)
            ]
        return found

    def reset(self) -> None:
        """Forget the queue and the log; returns once no attempt is in flight, so nothing queued before the
        reset reaches the endpoint after it."""
        with self._cond:
            self._queue.clear()
            self._log.clear()
            self._payloads.clear()
            self._cond.wait_for(lambda: not self._in_flight, timeout=self.settings.webhook_timeout + 1)

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=5)

    # --- the thread --------------------------------------------------------------------------------------

    def _ensure_thread(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._stopping = False
            self._thread = threading.Thread(target=self._run, name="fake-stripe-webhooks", daemon=True)
            self._thread.start()

    def _next_due(self) -> tuple[Params, bytes] | None:
        """Wait for the next due delivery (None when stopping)."""
        with self._cond:
            while not self._stopping:
                if self._queue:
                    due, _, delivery_id = self._queue[0]
                    wait = due - time.monotonic()
                    if wait <= 0:
                        heapq.heappop(self._queue)
                        if delivery_id in self._log:
                            self._in_flight = True
                            return self._log[delivery_id], self._payloads[delivery_id]
                        continue
                    self._cond.wait(wait)
                else:
                    self._cond.wait()
        return None

    def _run(self) -> None:
        while True:
            item = self._next_due()
            if item is None:
                return
            delivery, payload = item
            self._attempt(delivery, payload)

    def _attempt(self, delivery: Params, payload: bytes) -> None:
        headers = {
            "Content-Type": "application/json; charset=utf-8",
            "User-Agent": USER_AGENT,
            "Accept": "*/*; q=0.5, application/xml",
            "Cache-Control": "no-cache",
            "Stripe-Signature": signature_header(payload, self.settings.webhook_secret),
        }
        started = time.monotonic()
        record: dict[str, Any] = {"at": int(time.time()), "status_code": None, "error": None}
        try:
            status, excerpt = post(delivery["url"], payload, headers, self.settings.webhook_timeout)
            record["status_code"] = status
            record["response"] = excerpt
            ok = 200 <= status < 300
            if not ok:
                record["error"] = f"HTTP {status}"
        except (OSError, http.client.HTTPException) as exc:
            record["error"] = f"{type(exc).__name__}: {exc}"
            ok = False
        record["duration_ms"] = round((time.monotonic() - started) * 1000)
        with self._cond:
            self._in_flight = False
            self._cond.notify_all()
            if delivery["id"] not in self._log:  # reset while in flight
                return
            delivery["attempts"].append(record)
            if ok:
                delivery["status"] = "succeeded"
                delivery["next_attempt_at"] = None
            elif len(delivery["attempts"]) <= len(self.settings.retry_delays):
                delay = self.settings.retry_delays[len(delivery["attempts"]) - 1]
                delivery["next_attempt_at"] = time.time() + delay
                heapq.heappush(self._queue, (time.monotonic() + delay, next(self._sequence), delivery["id"]))
            else:
                delivery["status"] = "failed"
                delivery["next_attempt_at"] = None
            self._cond.notify_all()
        if ok:
            with contextlib.suppress(Exception):
                self.on_delivered(delivery["event"])
