"""The whole usage pipeline with real processes: proxy -> Redis stream -> Celery worker (with beat) ->
Postgres, through a worker killed in the middle of a batch and a Redis restart. Every request must be
counted exactly once and the ledger must equal the sum of the charges.

The Redis here is a private `redis-server` (append-only file on, as production runs it) so the test
can stop and restart it without touching anything else.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import httpx
import psycopg
import pytest
import redis
from django.db import connection
from django.db.models import Sum

from billing.models import LedgerEntry, Plan, UsageEvent, UsageRollup, WorkspaceBalance
from contracts import balance
from contracts.events import USAGE_GROUP, USAGE_STREAM
from tests.proxy.conftest import running_database_url
from tests.servers import celery_worker_args, celery_worker_env, process, wait_until
from tests.stack import RedisServer

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

MODEL = "openai/gpt-4o-mini"


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis")
    server.start()
    yield server
    server.stop()


@contextlib.contextmanager
def celery_worker(redis_url: str, log_path: Path, name: str) -> Iterator[subprocess.Popen[bytes]]:
    env = celery_worker_env(database_url=running_database_url(), redis_url=redis_url, name=name)
    with process(celery_worker_args(log_path=log_path, name=name), env=env, log_path=log_path) as proc:
        yield proc


def send(proxy_url: str, key: str, n: int, *, stream: bool = False) -> list[str]:
    ids = []
    with httpx.Client(timeout=20) as http:
        for i in range(n):
            response = http.post(
                f"{proxy_url}/v1/chat/completions",
                headers={"authorization": f"Bearer {key}"},
                json={"model": MODEL, "messages": [{"role": "user", "content": f"question {i}"}], "stream": stream},
            )
            assert response.status_code == 200, response.text
            response.read()
            ids.append(response.headers["x-request-id"])
    return ids


def stored(workspace_id: int) -> set[str]:
    return set(UsageEvent.objects.filter(workspace_id=workspace_id).values_list("request_id", flat=True))


def blocked_on_a_lock() -> bool:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
        return bool(cursor.fetchone()[0])


def test_every_request_is_counted_once_through_a_worker_crash_and_a_redis_restart(
    tenant, start_proxy, redis_server, tmp_path
):
    plan = Plan.objects.create(code="metered", name="Metered BYOK", byok_fee_rate=Decimal("1"))
    tenant.workspace.plan = plan
    tenant.workspace.save(update_fields=["plan"])
    ws = tenant.workspace.pk
    granted = WorkspaceBalance.objects.get(workspace_id=ws).balance_nanos
    proxy = start_proxy(redis_url=redis_server.url)
    r = redis.Redis.from_url(redis_server.url)
    sent: list[str] = []

    # 1. the pipeline works: events reach Postgres within seconds
    with celery_worker(redis_server.url, tmp_path / "worker1.log", "w1") as worker1:
        sent += send(proxy.url, tenant.plaintext, 6) + send(proxy.url, tenant.plaintext, 4, stream=True)
        wait_until(lambda: stored(ws) == set(sent), timeout=30, what="the first events in Postgres")

        # 2. the worker dies in the middle of a batch: its transaction is blocked on the balance row
        #    we hold, after it read the entries from the stream and before it could commit or ack
        with psycopg.connect(running_database_url()) as lock:
            lock.execute("SELECT 1 FROM billing_workspacebalance WHERE workspace_id = %s FOR UPDATE", [ws])
            sent += send(proxy.url, tenant.plaintext, 5)
            wait_until(blocked_on_a_lock, timeout=30, what="the worker to block mid-batch")
            os.killpg(worker1.pid, signal.SIGKILL)
            worker1.wait(timeout=10)
            lock.rollback()
    assert r.xpending(USAGE_STREAM, USAGE_GROUP)["pending"] == 5  # read, never acknowledged

    # 3. Redis goes away: the proxy keeps serving and spools its events; they are replayed on return
    redis_server.stop()
    during_outage = send(proxy.url, tenant.plaintext, 4) + send(proxy.url, tenant.plaintext, 2, stream=True)
    sent += during_outage
    proxy.drain()
    spooled = [*(tmp_path / "spool").glob("usage-*.jsonl"), *(tmp_path / "spool").glob("usage-*.replaying")]
    assert spooled, "events during the outage were not spooled"  # (a replay pass may have renamed the file)
    redis_server.start()
    r = redis.Redis.from_url(redis_server.url)
    sent += send(proxy.url, tenant.plaintext, 3)

    # 4. a new worker reclaims the dead one's entries and ingests the rest
    with celery_worker(redis_server.url, tmp_path / "worker2.log", "w2"):
        wait_until(lambda: stored(ws) == set(sent), timeout=60, what="every event in Postgres")
        wait_until(lambda: int(r.hget(balance.bal_key(ws), "pending") or 0) == 0, timeout=10, what="pending 0")

    assert len(sent) == len(set(sent)) == 24
    events = UsageEvent.objects.filter(workspace_id=ws)
    assert events.count() == 24  # each once: unique request ids, no duplicate rows
    charges = events.aggregate(s=Sum("charge_nanos"))["s"]
    assert charges > 0 and all(e.charge_nanos > 0 for e in events)
    debits = LedgerEntry.objects.filter(workspace_id=ws, kind=LedgerEntry.Kind.USAGE).aggregate(s=Sum("amount_nanos"))
    assert debits["s"] == -charges
    assert WorkspaceBalance.objects.get(workspace_id=ws).balance_nanos == granted - charges
    assert UsageRollup.objects.filter(workspace_id=ws).aggregate(n=Sum("requests"))["n"] == 24
    assert UsageRollup.objects.filter(workspace_id=ws).aggregate(c=Sum("charge_nanos"))["c"] == charges
    # Redis agrees with Postgres once everything is acknowledged
    assert int(r.hget(balance.bal_key(ws), "ledger")) == granted - charges
    assert int(r.hget(balance.bal_key(ws), "inflight") or 0) == 0
    assert r.xpending(USAGE_STREAM, USAGE_GROUP)["pending"] == 0
