"""A client that hangs up mid-stream is charged what the provider served, not a guess: the proxy stops
sending but reads the upstream stream on (for `disconnect_usage_wait` seconds) for the provider's own
usage. Only when none comes in time is the usage estimated, and then with the provider's exact input,
cached and cache-write counts from the stream's start."""

from __future__ import annotations

import time

import httpx
import pytest

from contracts.events import USAGE_STREAM, UsageEvent

pytestmark = pytest.mark.django_db(transaction=True)

HI = [{"role": "user", "content": "Tell me, in many words, how a gateway counts the tokens it streams back."}]


def events(r) -> list[UsageEvent]:
    return [UsageEvent.from_fields({k.decode(): v.decode() for k, v in f.items()}) for _, f in r.xrange(USAGE_STREAM)]


def stream_and_hang_up(url: str, headers: dict[str, str], body: dict, *, after_events: int = 5) -> str:
    """Read a few events of a streamed answer, then close the connection. Returns the request id."""
    received = b""
    with httpx.Client(timeout=10) as http, http.stream("POST", url, json=body, headers=headers) as response:
        assert response.status_code == 200
        for piece in response.iter_raw():
            received += piece
            if received.count(b"data: ") >= after_events:
                return response.headers["x-request-id"]
    raise AssertionError("the stream ended before the client could hang up")


def wait_for_event(proxy, r, request_id: str, timeout: float = 15.0) -> UsageEvent:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [e for e in events(r) if e.request_id == request_id]
        if found:
            proxy.drain()
            return found[0]
        time.sleep(0.05)
    raise AssertionError(f"no usage event for {request_id}")


def test_the_providers_exact_usage_is_charged_after_the_client_hangs_up(proxy, tenant, r):
    model = "openai/gpt-4o-mini@words=60;chunk_delay=15;cached=3;reasoning=5"
    headers = {"authorization": f"Bearer {tenant.plaintext}"}
    url = f"{proxy.base_url}/chat/completions"
    body = {"model": model, "messages": HI, "stream": True}
    with httpx.Client(timeout=10) as http:  # the same answer, read to the end: what the provider bills
        whole = http.post(url, headers=headers, json=body)
    assert whole.status_code == 200
    proxy.drain()
    (reference,) = events(r)

    request_id = stream_and_hang_up(url, headers, body)
    event = wait_for_event(proxy, r, request_id)

    assert event.error_code == "client_disconnected" and event.stream
    assert not event.estimated  # the provider's own count, read after the client left
    assert (event.input_tokens, event.cached_input_tokens, event.output_tokens, event.reasoning_tokens) == (
        reference.input_tokens,
        reference.cached_input_tokens,
        reference.output_tokens,
        reference.reasoning_tokens,
    )
    assert event.reasoning_tokens == 5 and event.cached_input_tokens == 3


def test_a_provider_too_slow_to_finish_is_estimated_from_what_it_streamed(start_proxy, tenant, r):
    proxy = start_proxy(disconnect_usage_wait=0.3)
    headers = {"authorization": f"Bearer {tenant.plaintext}"}
    body = {"model": "openai/gpt-4o-mini@words=400;chunk_delay=20", "messages": HI, "stream": True}
    request_id = stream_and_hang_up(f"{proxy.base_url}/chat/completions", headers, body)
    event = wait_for_event(proxy, r, request_id)

    assert event.stream and event.estimated
    assert event.error_code == "client_disconnected"
    assert 0 < event.output_tokens < 400  # what was generated before the proxy gave up, not the whole answer
    assert event.input_tokens > 0


def test_an_estimate_keeps_the_providers_cached_and_cache_write_counts(start_proxy, make_tenant, fake_provider_url, r):
    tenant = make_tenant(provider="anthropic", base_url=fake_provider_url)
    proxy = start_proxy(disconnect_usage_wait=0.3)
    headers = {"x-api-key": tenant.plaintext, "anthropic-version": "2023-06-01"}
    body = {
        "model": "anthropic/claude-haiku-4-5@words=400;chunk_delay=20;cached=700;cache_write=1100",
        "max_tokens": 1000,
        "messages": HI,
        "stream": True,
    }
    request_id = stream_and_hang_up(f"{proxy.url}/v1/messages", headers, body, after_events=6)
    event = wait_for_event(proxy, r, request_id)

    assert event.estimated and event.error_code == "client_disconnected"
    # message_start carried the provider's exact input-side counts: kept, not re-estimated
    assert (event.cached_input_tokens, event.cache_write_tokens) == (700, 1100)
    assert 0 < event.output_tokens < 400
