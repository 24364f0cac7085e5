"""The fake's state, in memory: every object by id, the event log, stored idempotent responses, and the
test controls (forced declines). One re-entrant lock guards all of it.

Concurrency: the ASGI handlers run each API call synchronously while holding `Store.lock`, so one call's
reads and writes (and the events it emits) are atomic with respect to every other call; the webhook
delivery thread takes the same lock only to read an event and update its delivery record.

Events: `emit` snapshots the object (a deep copy, as Stripe's `data.object` is the object at the time of
the event), appends the event to the log, and hands it to the deliverer. The `request` field of the
event names the API request that caused it (`with store.request(...)`), or null for the hosted page and
the control endpoints, like Stripe's dashboard-initiated events.
"""

from __future__ import annotations

import contextlib
import copy
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from billing.fake_stripe import objects
from billing.fake_stripe.cards import Decline
from billing.fake_stripe.settings import Settings
from billing.fake_stripe.wire import Params, StripeError, get_int, get_str, list_object, not_found

# object type → the noun in Stripe's "No such …" message
NOUNS = {
    "customer": "customer",
    "checkout.session": "checkout.session",
    "payment_intent": "payment_intent",
    "payment_method": "PaymentMethod",
    "charge": "charge",
    "refund": "refund",
    "dispute": "dispute",
    "event": "event",
}


@dataclass(frozen=True)
class StoredResponse:
    """What an idempotent POST answered, to replay for the same key."""

    method: str
    path: str
    fingerprint: bytes
    status: int
    body: bytes


class Store:
    def __init__(self, settings: Settings, on_event: Callable[[Params], object] | None = None) -> None:
        self.lock = threading.RLock()
        self.settings = settings
        self.on_event = on_event or (lambda event: None)
        self._request: dict[str, Any] = {"id": None, "idempotency_key": None}
        self.reset()

    def reset(self) -> None:
        with self.lock:
            self.objects: dict[str, Params] = {}
            self.private: dict[str, dict[str, Any]] = {}  # what Stripe keeps but does not show, by object id
            self.events: dict[str, Params] = {}
            self.idempotent: dict[str, StoredResponse] = {}
            self.declines: dict[str, Decline] = {}  # payment method or customer id → forced decline

    # --- objects -------------------------------------------------------------------------------------------

    def add(self, obj: Params, **private: Any) -> Params:
        self.objects[obj["id"]] = obj
        self.private[obj["id"]] = dict(private)
        return obj

    def get(self, object_id: str, kind: str, *, param: str = "id") -> Params:
        found = self.objects.get(object_id) if kind != "event" else self.events.get(object_id)
        if found is None or found["object"] != kind:
            raise not_found(NOUNS[kind], object_id, param=param)
        return found

    def all(self, kind: str, **filters: Any) -> list[Params]:
        """Objects of one type whose fields equal `filters` (None filters are ignored), newest first."""
        source = self.events if kind == "event" else self.objects
        wanted = {k: v for k, v in filters.items() if v is not None}
        return [
            obj
            for obj in reversed(source.values())
            if obj["object"] == kind and all(obj.get(k) == v for k, v in wanted.items())
        ]

    # --- events --------------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def request(self, request_id: str | None, idempotency_key: str | None) -> Iterator[None]:
        """Events emitted inside the block name this API request."""
        with self.lock:
            previous = self._request
            self._request = {"id": request_id, "idempotency_key": idempotency_key}
            try:
                yield
            finally:
                self._request = previous

    def emit(self, event_type: str, obj: Params, *, previous_attributes: Params | None = None) -> Params:
        event = objects.event(
            event_type=event_type,
            data_object=copy.deepcopy(obj),
            api_version=self.settings.api_version,
            pending_webhooks=1 if self.settings.webhook_url else 0,
            request=dict(self._request),
        )
        if previous_attributes:
            event["data"]["previous_attributes"] = copy.deepcopy(previous_attributes)
        self.events[event["id"]] = event
        self.on_event(event)
        return event

    # --- reading: expansion and list pages -----------------------------------------------------------------

    def render(self, obj: Params, expand: list[Any]) -> Params:
        """A copy of `obj` with the `expand[]` paths replaced by the objects they name."""
        result = copy.deepcopy(obj)
        for path in expand:
            if not isinstance(path, str) or not path:
                raise StripeError("Invalid expand: must be a list of strings.", param="expand")
            parts = path.split(".")
            if len(parts) > 4:
                raise StripeError(f"You cannot expand more than 4 levels of a property ({path}).", param="expand")
            self._expand(result, parts, path)
        return result

    def _expand(self, node: Params, parts: list[str], path: str) -> None:
        if node.get("object") == "list":
            if parts[0] != "data":
                raise StripeError(f"This property cannot be expanded ({path}).", param="expand")
            for item in node["data"]:
                if len(parts) > 1:
                    self._expand(item, parts[1:], path)
            return
        head, rest = parts[0], parts[1:]
        if head == "line_items" and node.get("object") == "checkout.session":
            items = self.private.get(node["id"], {}).get("line_items", [])
            node["line_items"] = list_object(f"/v1/checkout/sessions/{node['id']}/line_items", copy.deepcopy(items))
        elif head not in node:
            raise StripeError(f"This property cannot be expanded ({path}).", param="expand")
        value = node[head]
        if isinstance(value, str):
            target = self.objects.get(value)
            if target is None:
                raise StripeError(f"This property cannot be expanded ({path}).", param="expand")
            value = node[head] = copy.deepcopy(target)
        if not rest or value is None:
            return
        if not isinstance(value, dict):
            raise StripeError(f"This property cannot be expanded ({path}).", param="expand")
        self._expand(value, rest, path)

    def page(self, url: str, items: list[Params], params: Params) -> Params:
        """Stripe's cursor pagination over `items` (newest first): limit, starting_after, ending_before."""
        limit = get_int(params, "limit", minimum=1, maximum=100) or 10
        after = get_str(params, "starting_after")
        before = get_str(params, "ending_before")
        ids = [item["id"] for item in items]
        if after is not None:
            if after not in ids:
                raise not_found("object", after, param="starting_after")
            items = items[ids.index(after) + 1 :]
            window = items[:limit]
            has_more = len(items) > limit
        elif before is not None:
            if before not in ids:
                raise not_found("object", before, param="ending_before")
            items = items[: ids.index(before)]
            window = items[-limit:]
            has_more = len(items) > limit
        else:
            window = items[:limit]
            has_more = len(items) > limit
        return list_object(url, window, has_more=has_more)
