"""A real Celery worker process through a Redis restart, and a worker that stops consuming.

The restart happens while an ingest batch is in flight: the worker has read entries from the usage stream
and its Postgres insert is blocked on a lock this test holds (as a slow batch is under load). With the
Redis transport's ack emulation on, that is the moment kombu kills the worker ("'NoneType' object has no
attribute 'hostname'") and `make dev` used to take the whole stack down with it. Both pools are run:
`solo` (what the pipeline tests use) and `prefork` (what `make dev` and deploy/ run).
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import redis

from billing.models import UsageEvent as UsageEventRow
from contracts.events import USAGE_STREAM, UsageEvent
from tenants.models import User
from tenants.services import gateway_key_create, workspace_create
from tests.proxy.conftest import running_database_url
from tests.redis_server import RedisServer
from tests.servers import celery_worker_args, celery_worker_env, process, wait_until

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis").start()
    yield server
    server.stop()


@contextlib.contextmanager
def worker(
    redis_url: str, log_path: Path, *, pool: str, beat: bool = True, stall_seconds: int = 120
) -> Iterator[Worker]:
    name = f"worker-{uuid.uuid4().hex[:8]}"
    env = celery_worker_env(
        database_url=running_database_url(),
        redis_url=redis_url,
        name=name,
        TURNPIKE_WORKER_STALL_SECONDS=str(stall_seconds),
    )
    args = celery_worker_args(log_path=log_path, name=name, pool=pool, beat=beat)
    with process(args, env=env, log_path=log_path) as proc:
        yield Worker(proc, log_path)


class Worker:
    def __init__(self, proc, log_path: Path) -> None:
        self.proc = proc
        self.log_path = log_path

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def running(self) -> bool:
        return self.proc.poll() is None


def emit(redis_url: str, *, workspace_id: int, key_id: int) -> str:
    request_id = uuid.uuid4().hex
    usage = UsageEvent(
        request_id=request_id,
        workspace_id=workspace_id,
        key_id=key_id,
        provider="openai",
        credential_id=None,
        credential_kind="byok",
        model_requested="openai/gpt-4o-mini",
        model_served="gpt-4o-mini",
        status=200,
        input_tokens=10,
        output_tokens=20,
        started_at_ms=int(time.time() * 1000),
        finished_at_ms=int(time.time() * 1000),
    )
    client = redis.Redis.from_url(redis_url)
    client.xadd(USAGE_STREAM, usage.to_fields())
    client.close()
    return request_id


def stored() -> set[str]:
    return set(UsageEventRow.objects.values_list("request_id", flat=True))


def insert_is_blocked() -> bool:
    with psycopg.connect(running_database_url(), autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
        ).fetchone()
    return bool(row and row[0])


@pytest.mark.parametrize("pool", ["solo", "prefork"])
def test_the_worker_survives_a_redis_restart_in_the_middle_of_a_batch_and_keeps_ingesting(pool, redis_server, tmp_path):
    owner = User.objects.create_user(email=f"{uuid.uuid4().hex[:10]}@example.com", password="x" * 16)
    workspace = workspace_create(name="Restart", acting_user=owner)
    key, _ = gateway_key_create(workspace=workspace, name="restart", acting_user=owner)
    ids = {"workspace_id": workspace.pk, "key_id": key.pk}

    with worker(redis_server.url, tmp_path / "worker.log", pool=pool) as w:
        first = emit(redis_server.url, **ids)
        wait_until(lambda: stored() == {first}, timeout=60, what="the worker to ingest")

        with psycopg.connect(running_database_url()) as lock:
            lock.execute("LOCK TABLE billing_usageevent IN SHARE MODE")  # inserts wait, reads do not
            in_flight = emit(redis_server.url, **ids)
            wait_until(insert_is_blocked, timeout=30, what="a batch to block mid-insert")

            redis_server.stop()
            with contextlib.suppress(AssertionError):  # a solo worker is busy in the batch: it cannot tell
                wait_until(lambda: "Connection to broker lost" in w.log, timeout=5, what="the loss")
            redis_server.start()
            time.sleep(1)
            lock.rollback()  # the batch goes on

        after = emit(redis_server.url, **ids)
        wait_until(lambda: stored() == {first, in_flight, after}, timeout=90, what="ingestion after the restart")
        assert w.running(), f"the worker died:\n{w.log[-3000:]}"
        assert "Unrecoverable error" not in w.log


def test_a_worker_that_receives_nothing_while_redis_answers_shuts_down_and_says_why(tmp_path):
    """No beat: nothing is sent, as if the worker had stopped consuming. It must not idle on silently
    (its supervisor restarts it). The Redis here evicts and has no append-only file: the worker says so."""
    server = RedisServer(tmp_path / "redis", args=("--maxmemory-policy", "allkeys-lru", "--appendonly", "no"))
    server.start()
    try:
        with worker(server.url, tmp_path / "worker.log", pool="solo", beat=False, stall_seconds=2) as w:
            wait_until(lambda: not w.running(), timeout=60, what="the stalled worker to shut down")
            log = w.log
    finally:
        server.stop()
    assert "has stopped consuming" in log
    assert "maxmemory-policy is 'allkeys-lru', Turnpike requires 'noeviction'" in log
    assert "appendonly is 'no', Turnpike requires 'yes'" in log
