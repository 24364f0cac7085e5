"""Replaying the usage spool (proxy/usage.py) against a real Redis: no line can stop it, and an outage in
the middle of a file neither loses nor re-sends what was already sent.

Spool files are written the way a proxy worker writes them (one JSON object per line, the event's stream
fields), under the name of another worker: replay takes over the files of workers that died.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import redis.asyncio as aioredis

from contracts import balance
from contracts.events import USAGE_STREAM, UsageEvent
from proxy.usage import UsageEmitter
from tests.redis_server import RedisServer
from tests.servers import run_async

WORKSPACE = 41


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis").start()
    yield server
    server.stop()


def event(*, workspace_id: int = WORKSPACE, charge: int = 1_000) -> UsageEvent:
    return UsageEvent(
        request_id=uuid.uuid4().hex,
        workspace_id=workspace_id,
        key_id=7,
        provider="openai",
        credential_id=3,
        credential_kind="byok",
        model_requested="openai/gpt-4o-mini",
        model_served="gpt-4o-mini",
        status=200,
        input_tokens=12,
        output_tokens=30,
        charge_nanos=charge,
        started_at_ms=1_700_000_000_000,
        finished_at_ms=1_700_000_000_250,
    )


def line(e: UsageEvent) -> str:
    return json.dumps(e.to_fields(), separators=(",", ":")) + "\n"


def streamed_ids(url: str) -> list[str]:
    client = redis.Redis.from_url(url)
    try:
        return [UsageEvent.from_fields(fields).request_id for _, fields in client.xrange(USAGE_STREAM)]
    finally:
        client.close()


def dead_letters(spool: Path) -> list[dict]:
    return [json.loads(text) for path in spool.glob("*.dead.jsonl") for text in path.read_text().splitlines()]


def replay(url: str, spool: Path) -> int:
    """One replay pass of a fresh emitter (a new proxy worker), with the proxy's client settings."""

    async def run() -> int:
        client = aioredis.Redis.from_url(url, socket_timeout=2.0, socket_connect_timeout=1.0)
        try:
            return await UsageEmitter(redis=client, spool_dir=spool).replay_once()
        finally:
            await client.aclose()

    return run_async(run())


def leftovers(spool: Path) -> list[str]:
    """Spool files still waiting (everything but dead letters)."""
    return sorted(p.name for p in spool.iterdir() if not p.name.endswith(".dead.jsonl"))


def test_a_torn_line_in_the_middle_of_a_file_is_dead_lettered_and_every_other_event_is_sent(
    redis_server, tmp_path, caplog
):
    spool = tmp_path / "spool"
    spool.mkdir()
    events = [event() for _ in range(5)]
    torn = line(events[1])[:40]  # a writer killed mid-line, then a newline from a later write
    glued = line(events[2])[:55]  # torn, and the next event appended right after it on the same line
    (spool / "usage-4242-0badf00d.jsonl").write_text(
        line(events[0]) + torn + "\n" + glued + line(events[3]) + "\n" + "\xff not json\n" + line(events[4])
    )

    with caplog.at_level(logging.ERROR, logger="turnpike.proxy.usage"):
        assert replay(redis_server.url, spool) == 3

    assert streamed_ids(redis_server.url) == [events[0].request_id, events[3].request_id, events[4].request_id]
    letters = dead_letters(spool)
    assert [letter["line"] for letter in letters] == [torn, glued, "\xff not json"]
    assert all(letter["reason"].startswith(("undecodable line", "torn line")) for letter in letters)
    assert {letter["source"] for letter in letters} == {"usage-4242-0badf00d.jsonl"}
    assert leftovers(spool) == [], "the file must be done with, not retried forever"
    assert sum("dead-lettered" in r.getMessage() for r in caplog.records) == 3


def test_a_line_whose_script_call_fails_is_dead_lettered_and_replay_goes_on(redis_server, tmp_path, caplog):
    spool = tmp_path / "spool"
    spool.mkdir()
    broken_workspace = 99
    # The script refuses to settle into a balance that is not a hash (as it refuses any value it cannot take).
    redis.Redis.from_url(redis_server.url).set(balance.bal_key(broken_workspace), "not a hash")
    good_before, refused, good_after = event(), event(workspace_id=broken_workspace), event()
    (spool / "usage-4243-0badf00d.jsonl").write_text(line(good_before) + line(refused) + line(good_after))

    with caplog.at_level(logging.ERROR, logger="turnpike.proxy.usage"):
        assert replay(redis_server.url, spool) == 2

    assert streamed_ids(redis_server.url) == [good_before.request_id, good_after.request_id]
    (letter,) = dead_letters(spool)
    assert letter["request_id"] == refused.request_id
    assert letter["reason"].startswith("refused by Redis")
    assert UsageEvent.from_fields(json.loads(letter["line"])).request_id == refused.request_id  # re-sendable
    assert leftovers(spool) == []
    assert any(refused.request_id in r.getMessage() for r in caplog.records)
    # a later pass has nothing left to send twice
    assert replay(redis_server.url, spool) == 0
    assert len(streamed_ids(redis_server.url)) == 2


@pytest.fixture
def everysec_redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """fsync'd every second rather than on every write, for a test that sends thousands (a clean stop
    still writes everything)."""
    server = RedisServer(tmp_path / "redis", args=("--appendonly", "yes", "--appendfsync", "everysec")).start()
    yield server
    server.stop()


def test_redis_down_then_up_resumes_where_it_stopped_and_loses_nothing(everysec_redis_server, tmp_path):
    redis_server = everysec_redis_server
    spool = tmp_path / "spool"
    spool.mkdir()
    events = [event() for _ in range(5_000)]
    (spool / "usage-4244-0badf00d.jsonl").write_text("".join(line(e) for e in events))

    # Redis is down: the pass sends nothing and keeps every line
    redis_server.stop()
    assert replay(redis_server.url, spool) == 0
    assert "usage-4244-0badf00d.replaying" in leftovers(spool)
    assert len((spool / "usage-4244-0badf00d.replaying").read_text().splitlines()) == len(events)

    # Redis is back, and goes away again in the middle of the file
    redis_server.start()
    stopped = threading.Event()

    def stop_when_some_are_sent() -> None:
        watcher = redis.Redis.from_url(redis_server.url)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and watcher.xlen(USAGE_STREAM) < 500:
            time.sleep(0.005)
        watcher.close()
        redis_server.stop()
        stopped.set()

    stopper = threading.Thread(target=stop_when_some_are_sent)
    stopper.start()
    first = replay(redis_server.url, spool)
    stopper.join()
    assert stopped.is_set()
    assert 500 <= first < len(events), "the outage was meant to interrupt the pass"
    assert "usage-4244-0badf00d.replaying" in leftovers(spool)

    redis_server.start()
    second = replay(redis_server.url, spool)
    ids = Counter(streamed_ids(redis_server.url))
    assert set(ids) == {e.request_id for e in events}, "a spooled event was lost"
    # resumed at the recorded offset: at most the line in flight when Redis stopped is sent twice
    assert sum(ids.values()) - len(events) <= 1
    assert first + second >= len(events)
    assert leftovers(spool) == []
    assert dead_letters(spool) == []
