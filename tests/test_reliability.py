"""The whole stack, under load, while its parts are broken one after another: every answered request
must be billed exactly once, and every process must still be running at the end.

What runs (all real, all private to this test, so it can break them without disturbing the suite):
  Postgres  a cluster of its own (tests/stack.py), migrated by `manage.py migrate`, with the price catalog,
            the demo plan (a BYOK fee, so every charge is > 0) and 3 workspaces from `bootstrap_workspace`
  Redis     a redis-server of its own, append-only and `noeviction`, as production runs it
  proxy     `gunicorn proxy.asgi:app` with 2 uvicorn workers, as the Procfile and deploy/ run it
  worker    `celery -A config worker -B`, prefork with 2 children and beat embedded
  provider  the bundled fake provider (in this process)
Load: client threads with the official openai SDK, streaming and not, round-robin over the workspaces,
paced and bounded in count and time; a request counts as answered when it got 200 and, streamed, when
its stream finished.

Faults, one after another, while the load runs:
  1. a worker child is SIGKILLed in the middle of a batch: its ingest transaction is blocked on a
     balance row this test holds locked, after it read its entries and before it could commit or ack;
     the master must replace it and the entries must be reclaimed;
  2. Redis stops (clean shutdown) for 2 s while another batch is in flight, and starts again: the worker
     must reconnect and survive (a Redis restart used to kill it: tests/test_worker_redis_restart.py),
     the batch must finish; the proxy keeps answering and spools, and replays the spool once Redis is back;
  3. Postgres stops (fast shutdown: sessions terminated) for 2 s and starts again: the proxy's caches
     are warm, so it needs no Postgres and keeps answering; ingestion waits and resumes.

Then, once the pipeline has settled (bounded wait), it checks what finance and an operator would:
every answered request is exactly one usage event of its workspace, none twice, per workspace the
ledger's usage debits equal minus the sum of the charges and the balance equals credit minus charges,
rollups count every event once, Redis holds nothing pending, in flight or unacknowledged, nothing was
dead-lettered, the spool is empty, and the proxy master, both of its workers and the celery master are
the processes that started (no worker died and was silently replaced).

Logs of every process are under tmp_path/logs; a failure quotes their errors.

Run it alone:
    DATABASE_URL=... REDIS_URL=... .venv/bin/python scripts/devenv.py test -p no:cacheprovider \
        tests/test_reliability.py
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import openai
import psycopg
import pytest
import redis
from django.conf import settings

from contracts import balance
from contracts.events import USAGE_DEAD_STREAM, USAGE_GROUP, USAGE_STREAM
from contracts.money import usd_to_nanos
from tests.servers import ROOT, celery_worker_args, free_port, process, wait_until
from tests.stack import REQUIRED_ARGS, PostgresServer, RedisServer, child_pids, is_running, owner_of_client_port

pytestmark = pytest.mark.slow

MODEL = "openai/gpt-4o-mini"  # no fake-provider controls in the name: `gpt-4o-mini@…` is not in the catalog
PLAN = "dev-demo"  # billing/fixtures/dev_plans.json: a 5% BYOK fee, so every request is charged
CREDIT_USD = "100"
WORKSPACES = 3
CONCURRENCY = 4
REQUEST_INTERVAL = 0.05  # at most 20 requests/s: the machine's 2 cores also run every server here
ANSWERED_PER_PHASE = 40  # answered requests before the first fault and after each (~400 in all)
MAX_REQUESTS = 1000  # bounds, never reached when all goes well: the load stops at the first of these
LOAD_SECONDS = 150.0
OUTAGE_SECONDS = 2.0
SETTLE_SECONDS = 90.0
CLAIM_IDLE_MS = 2000  # a dead consumer's entries are reclaimed after this


# --- the stack ---------------------------------------------------------------------------------------------


@dataclass
class Workspace:
    id: int
    key: str


@dataclass
class Stack:
    pg: PostgresServer
    redis: RedisServer
    env: dict[str, str]
    logs: Path
    spool: Path
    workspaces: list[Workspace] = field(default_factory=list)


def manage(env: dict[str, str], *args: str) -> str:
    result = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, f"manage.py {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def provision(stack: Stack, fake_provider_url: str) -> None:
    """Schema, catalog, plan and workspaces, through the same commands an operator (and `make dev`) runs."""
    stack.pg.create_database()
    manage(stack.env, "migrate", "--noinput", "-v", "0")
    manage(stack.env, "load_price_catalog")
    manage(stack.env, "loaddata", "dev_plans", "-v", "0")
    for n in range(WORKSPACES):
        out = manage(
            stack.env,
            *("bootstrap_workspace", "--email", f"owner{n}@reliability.test", "--workspace", f"Reliability {n}"),
            *("--provider", "openai", "--provider-key", f"fake-reliability-{n}"),
            *("--provider-base-url", f"{fake_provider_url}/v1", "--credit-usd", CREDIT_USD, "--plan", PLAN, "--json"),
        )
        data = json.loads(out.strip().splitlines()[-1])
        with psycopg.connect(stack.pg.url()) as conn:
            row = conn.execute("SELECT id FROM tenants_workspace WHERE slug = %s", [data["workspace"]]).fetchone()
        assert row is not None
        stack.workspaces.append(Workspace(id=row[0], key=data["api_key"]))


@dataclass
class ProxyProcess:
    proc: subprocess.Popen[bytes]
    url: str
    workers: set[int]


@contextlib.contextmanager
def proxy_process(stack: Stack) -> Iterator[ProxyProcess]:
    port = free_port()
    log = stack.logs / "proxy.log"
    args = [str(ROOT / ".venv" / "bin" / "gunicorn"), "proxy.asgi:app"]
    args += ["--worker-class", "uvicorn_worker.UvicornWorker", "--workers", "2", "--bind", f"127.0.0.1:{port}"]
    args += ["--log-level", "info", "--graceful-timeout", "10"]
    with process(args, port=port, env=stack.env, log_path=log) as proc:
        # the master listens before its workers have loaded the catalog: wait for both
        wait_until(
            lambda: proc.poll() is not None or log.read_text().count("Application startup complete") >= 2,
            timeout=60,
            what="both proxy workers to start",
        )
        assert proc.poll() is None, f"the proxy exited with {proc.returncode}; see {log}"
        yield ProxyProcess(proc=proc, url=f"http://127.0.0.1:{port}", workers=child_pids(proc.pid))


@contextlib.contextmanager
def celery_worker(stack: Stack) -> Iterator[subprocess.Popen[bytes]]:
    log = stack.logs / "worker.log"
    args = celery_worker_args(log_path=log, name="reliability", pool="prefork", concurrency=2)
    with process(args, env=stack.env, log_path=log) as proc:
        wait_until(
            lambda: proc.poll() is not None or re.search(r"reliability@\S+ ready", log.read_text()),
            timeout=60,
            what="the celery worker to be ready",
        )
        assert proc.poll() is None, f"the celery worker exited with {proc.returncode}; see {log}"
        yield proc


# --- the load ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    index: int
    workspace: int  # index into Stack.workspaces
    stream: bool
    started: float
    finished: float
    request_id: str | None
    error: str  # "" when answered


class Load:
    """CONCURRENCY threads sending requests i = 0, 1, 2, … (workspace i % 3, streamed every other round),
    request i not before start + i × REQUEST_INTERVAL, until `stop()`, MAX_REQUESTS or LOAD_SECONDS."""

    def __init__(self, base_url: str, keys: list[str]) -> None:
        # No keep-alive: every request is a new connection, so both proxy workers accept their share.
        self.clients = [
            openai.OpenAI(
                base_url=f"{base_url}/v1",
                api_key=key,
                max_retries=0,  # a failure must be seen, not retried away
                timeout=30,
                http_client=openai.DefaultHttpxClient(limits=httpx.Limits(max_keepalive_connections=0)),
            )
            for key in keys
        ]
        self.outcomes: list[Outcome] = []
        self._lock = threading.Lock()
        self._next = 0
        self._stopping = threading.Event()
        self._threads = [threading.Thread(target=self._run, name=f"load-{n}", daemon=True) for n in range(CONCURRENCY)]
        self._t0 = 0.0

    def __enter__(self) -> Load:
        self._t0 = time.monotonic()
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stopping.set()
        for thread in self._threads:
            thread.join(timeout=60)
        for client in self.clients:
            client.close()

    @property
    def running(self) -> bool:
        return any(thread.is_alive() for thread in self._threads)

    def answered(self) -> list[Outcome]:
        with self._lock:
            return [o for o in self.outcomes if not o.error]

    def wait_answered(self, more: int, *, timeout: float = 90.0) -> None:
        target = len(self.answered()) + more
        wait_until(
            lambda: len(self.answered()) >= target or not self.running, timeout=timeout, what=f"{more} more answers"
        )
        assert self.running, "the load reached MAX_REQUESTS or LOAD_SECONDS before the scenario ended"

    def _take(self) -> int | None:
        with self._lock:
            if self._stopping.is_set() or self._next >= MAX_REQUESTS or time.monotonic() - self._t0 > LOAD_SECONDS:
                return None
            index = self._next
            self._next += 1
        self._stopping.wait(max(0.0, self._t0 + index * REQUEST_INTERVAL - time.monotonic()))
        return index

    def _run(self) -> None:
        while (index := self._take()) is not None:
            outcome = self._send(index)
            with self._lock:
                self.outcomes.append(outcome)

    def _send(self, index: int) -> Outcome:
        workspace = index % len(self.clients)
        stream = (index // len(self.clients)) % 2 == 1
        client = self.clients[workspace]
        messages: Any = [{"role": "user", "content": f"question {index}"}]
        started = time.monotonic()
        request_id: str | None = None
        error = ""
        try:
            if stream:
                with client.chat.completions.with_streaming_response.create(
                    model=MODEL, messages=messages, stream=True
                ) as response:
                    request_id = response.headers.get("x-request-id")
                    finish = None
                    for chunk in response.parse():
                        if chunk.choices and chunk.choices[0].finish_reason:
                            finish = chunk.choices[0].finish_reason
                    if finish is None:
                        error = "the stream ended without a finish_reason"
            else:
                raw = client.chat.completions.with_raw_response.create(model=MODEL, messages=messages)
                request_id = raw.headers.get("x-request-id")
                if not raw.parse().choices[0].message.content:
                    error = "an empty answer"
        except openai.APIStatusError as exc:
            request_id = exc.response.headers.get("x-request-id")
            error = f"HTTP {exc.status_code}: {exc.message}"
        except Exception as exc:  # refused, reset, timed out, cut mid-stream: the client saw a failure
            error = f"{type(exc).__name__}: {exc}"
        if not error and not request_id:
            error = "answered without an x-request-id"
        return Outcome(index, workspace, stream, started, time.monotonic(), request_id, error)


# --- faults ------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def a_batch_in_flight(stack: Stack, worker: subprocess.Popen[bytes]) -> Iterator[int]:
    """Hold the first workspace's balance row until the block ends: the next ingest batch (every batch
    has that workspace's events) blocks on it inside its transaction, after it read its entries and
    before it could commit or acknowledge, as a slow batch does under load. Yields the pid of the pool
    child that owns the blocked session; on leaving, the row is let go and the batch goes on."""
    with psycopg.connect(stack.pg.url()) as lock, psycopg.connect(stack.pg.url(), autocommit=True) as watch:
        lock.execute(
            "SELECT 1 FROM billing_workspacebalance WHERE workspace_id = %s FOR UPDATE", [stack.workspaces[0].id]
        )

        def blocked_child() -> int | None:
            ports = watch.execute(
                "SELECT client_port FROM pg_stat_activity WHERE datname = current_database() "
                "AND wait_event_type = 'Lock' AND client_port IS NOT NULL"
            ).fetchall()
            for (port,) in ports:
                owner = owner_of_client_port(child_pids(worker.pid), port)
                if owner is not None:
                    return owner
            return None

        try:
            yield wait_until(blocked_child, timeout=30, what="a worker child to block in the middle of a batch")
        finally:
            lock.rollback()


def spooled_lines(spool: Path) -> int:
    """Lines waiting in the proxy's spool files (live or being replayed; not dead letters)."""
    total = 0
    for path in list(spool.glob("usage-*.jsonl")) + list(spool.glob("usage-*.replaying")):
        if path.name.endswith(".dead.jsonl"):
            continue
        with contextlib.suppress(FileNotFoundError):
            total += sum(1 for line in path.read_bytes().splitlines() if line.strip())
    return total


# --- what is stored ----------------------------------------------------------------------------------------


@dataclass
class Pipeline:
    """Redis's side of the pipeline, per workspace and for the stream."""

    pending: dict[int, int]
    inflight: dict[int, int]
    reservations: dict[int, int]
    ledger: dict[int, int | None]
    unacked: int
    unread: int
    dead_letters: int
    spooled: int


def pipeline_state(stack: Stack) -> Pipeline:
    client = redis.Redis.from_url(stack.redis.url, socket_timeout=5)
    try:
        fields = {
            ws.id: client.hmget(balance.bal_key(ws.id), "pending", "inflight", "ledger") for ws in stack.workspaces
        }
        try:
            unacked = int(client.xpending(USAGE_STREAM, USAGE_GROUP)["pending"])
        except redis.ResponseError:  # no group yet
            unacked = 0
        return Pipeline(
            pending={ws: int(f[0] or 0) for ws, f in fields.items()},
            inflight={ws: int(f[1] or 0) for ws, f in fields.items()},
            reservations={ws.id: int(client.zcard(balance.inflight_keys(ws.id)[0])) for ws in stack.workspaces},
            ledger={ws: None if f[2] is None else int(f[2]) for ws, f in fields.items()},
            unacked=unacked,
            unread=int(client.xlen(USAGE_STREAM)),
            dead_letters=int(client.xlen(USAGE_DEAD_STREAM)),
            spooled=spooled_lines(stack.spool),
        )
    finally:
        client.close()


def stored_events(stack: Stack) -> dict[str, tuple[int, int, bool]]:
    """request id -> (workspace id, charge nanos, stream)"""
    with psycopg.connect(stack.pg.url(), connect_timeout=5) as conn:
        rows = conn.execute("SELECT request_id, workspace_id, charge_nanos, stream FROM billing_usageevent").fetchall()
    return {row[0]: (row[1], row[2], row[3]) for row in rows}


def settled(stack: Stack, answered: set[str]) -> bool:
    try:
        state = pipeline_state(stack)
        stored = stored_events(stack)
    except (redis.RedisError, psycopg.Error):
        return False
    return (
        answered <= stored.keys()
        and not any(state.pending.values())
        and not any(state.inflight.values())
        and state.unacked == 0
        and state.unread == 0
        and state.spooled == 0
    )


def notable_log_lines(logs: Path, limit: int = 25) -> str:
    pattern = re.compile(r"\b(ERROR|CRITICAL|FATAL|PANIC)\b|Traceback|exited with|Error: |WorkerLostError")
    parts = []
    for path in sorted(logs.glob("*.log")):
        lines = [line for line in path.read_text(errors="replace").splitlines() if pattern.search(line)]
        if lines:
            parts.append(f"--- {path} ({len(lines)} notable lines, last {min(limit, len(lines))}):")
            parts += [line[:400] for line in lines[-limit:]]
    return "\n".join(parts) or "(no errors in the logs)"


# --- the test ----------------------------------------------------------------------------------------------


def test_every_answered_request_is_billed_once_through_a_worker_kill_a_redis_and_a_postgres_restart(
    fake_provider_url: str, tmp_path: Path
) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    with contextlib.ExitStack() as cleanup:
        pg = cleanup.enter_context(PostgresServer(log_path=logs / "postgres.log"))
        redis_server = RedisServer(tmp_path / "redis", args=(*REQUIRED_ARGS, "--logfile", str(logs / "redis.log")))
        cleanup.callback(redis_server.stop)
        redis_server.start()
        stack = Stack(pg=pg, redis=redis_server, env={}, logs=logs, spool=tmp_path / "spool")
        stack.env = {
            "DJANGO_SETTINGS_MODULE": "config.settings.test",
            "TURNPIKE_TEST_RUN_ID": "reliability",
            "DATABASE_URL": pg.url(),
            "REDIS_URL": redis_server.url,
            "CELERY_BROKER_URL": redis_server.url,
            "TURNPIKE_MASTER_KEY": settings.TURNPIKE_MASTER_KEY,  # what the web side encrypted with
            "TURNPIKE_ALLOW_PRIVATE_PROVIDER_URLS": "1",  # the fake provider is on loopback
            "TURNPIKE_PROXY_SPOOL_DIR": str(stack.spool),
            "TURNPIKE_INGEST_CLAIM_IDLE_MS": str(CLAIM_IDLE_MS),
            "PYTHONUNBUFFERED": "1",
        }
        provision(stack, fake_provider_url)
        proxy = cleanup.enter_context(proxy_process(stack))
        worker = cleanup.enter_context(celery_worker(stack))
        worker_children = len(child_pids(worker.pid))
        windows: dict[str, tuple[float, float]] = {}
        problems: list[str] = []

        load = cleanup.enter_context(Load(proxy.url, [ws.key for ws in stack.workspaces]))
        # warm: every workspace's key and workspace documents and balance are in Redis, and the
        # pipeline stores events end to end
        load.wait_answered(ANSWERED_PER_PHASE)
        first = {o.request_id for o in load.answered()}
        wait_until(lambda: first <= stored_events(stack).keys(), timeout=30, what="the first events in Postgres")

        # 1. a worker child is killed in the middle of a batch; its master starts another, and the
        #    entries it read are reclaimed after CLAIM_IDLE_MS
        started = time.monotonic()
        with a_batch_in_flight(stack, worker) as victim:
            os.kill(victim, signal.SIGKILL)
            wait_until(lambda: not is_running(victim), timeout=10, what="the killed worker child to be gone")
        wait_until(
            lambda: worker.poll() is not None or len(child_pids(worker.pid)) >= worker_children,
            timeout=30,
            what=f"the celery master to replace the killed child {victim}",
        )
        windows["worker child SIGKILL"] = (started, time.monotonic())
        load.wait_answered(ANSWERED_PER_PHASE)

        # 2. Redis restarts while a batch is in flight (its task unacknowledged across the reconnect, the
        #    moment a restart used to kill the worker); the proxy answers and spools meanwhile
        started = time.monotonic()
        worker_log = stack.logs / "worker.log"
        connected = worker_log.read_text().count("Connected to redis")
        with a_batch_in_flight(stack, worker):
            redis_server.stop()
            wait_until(lambda: spooled_lines(stack.spool) > 0, timeout=15, what="the proxy to spool without Redis")
            time.sleep(max(0.0, started + OUTAGE_SECONDS - time.monotonic()))
            redis_server.start()
            with contextlib.suppress(AssertionError):  # a dead master, or a log line reworded: checked below
                wait_until(
                    lambda: worker.poll() is not None or worker_log.read_text().count("Connected to redis") > connected,
                    timeout=20,
                    what="the celery worker to reconnect to Redis",
                )
        windows["Redis down"] = (started, time.monotonic())
        load.wait_answered(ANSWERED_PER_PHASE)

        # 3. Postgres restarts (fast shutdown); the proxy's caches are warm, it needs no Postgres
        started = time.monotonic()
        pg.stop()
        time.sleep(OUTAGE_SECONDS)
        pg.start()
        windows["Postgres down"] = (started, time.monotonic())
        load.wait_answered(ANSWERED_PER_PHASE)
        load.stop()

        outcomes = sorted(load.outcomes, key=lambda o: o.index)
        answered = [o for o in outcomes if not o.error]
        answered_ids = {o.request_id for o in answered if o.request_id}
        try:
            wait_until(lambda: settled(stack, answered_ids), timeout=SETTLE_SECONDS, what="", interval=1.0)
        except AssertionError:
            problems.append(f"the pipeline did not settle within {SETTLE_SECONDS:.0f} s (details below)")

        # --- the client's view
        for name, (start, end) in windows.items():
            during = [o for o in outcomes if start <= o.started <= end]
            failed = [o for o in during if o.error]
            if not during or failed:
                problems.append(f"{name}: {len(during) - len(failed)} of {len(during)} requests sent were answered")
        failures = [o for o in outcomes if o.error]
        if failures:
            where = Counter(
                next((name for name, (s, e) in windows.items() if s <= o.started <= e), "outside any fault")
                for o in failures
            )
            examples = "; ".join(f"#{o.index} {o.error[:200]}" for o in failures[:5])
            problems.append(f"{len(failures)} of {len(outcomes)} requests failed ({dict(where)}): {examples}")
        if len(answered_ids) != len(answered):
            problems.append("the proxy gave two answered requests the same x-request-id")

        # --- Postgres: one event per answered request, and money that adds up
        with psycopg.connect(pg.url()) as conn:
            events = conn.execute(
                "SELECT request_id, workspace_id, charge_nanos, stream FROM billing_usageevent"
            ).fetchall()
            debits = dict(
                conn.execute(
                    "SELECT workspace_id, SUM(amount_nanos) FROM billing_ledgerentry WHERE kind = 'usage' "
                    "GROUP BY workspace_id"
                ).fetchall()
            )
            balances = dict(conn.execute("SELECT workspace_id, balance_nanos FROM billing_workspacebalance").fetchall())
            rollups = {
                row[0]: (row[1], row[2])
                for row in conn.execute(
                    "SELECT workspace_id, SUM(requests), SUM(charge_nanos) FROM billing_usagerollup "
                    "GROUP BY workspace_id"
                ).fetchall()
            }
            dead_rows = conn.execute("SELECT request_id, error FROM billing_usagedeadletter").fetchall()
        by_id = Counter(row[0] for row in events)
        twice = [rid for rid, n in by_id.items() if n > 1]
        if twice:
            problems.append(f"{len(twice)} request ids have more than one event: {twice[:5]}")
        stored = {row[0]: row for row in events}
        missing = [o for o in answered if o.request_id not in stored]
        if missing:
            problems.append(
                f"{len(missing)} of {len(answered)} answered requests have no usage event, e.g. "
                + ", ".join(f"#{o.index} {o.request_id}" for o in missing[:5])
            )
        sent_ids = {o.request_id for o in outcomes if o.request_id}
        unknown = set(stored) - sent_ids
        if unknown:
            problems.append(f"{len(unknown)} events belong to no request this test sent: {sorted(unknown)[:5]}")
        ws_ids = [ws.id for ws in stack.workspaces]
        wrong = [
            o
            for o in answered
            if o.request_id in stored
            and (stored[o.request_id][1] != ws_ids[o.workspace] or stored[o.request_id][3] != o.stream)
        ]
        if wrong:
            problems.append(f"{len(wrong)} events have the wrong workspace or stream flag, e.g. #{wrong[0].index}")
        free = [row[0] for row in events if row[2] <= 0]
        if free:
            problems.append(f"{len(free)} events were charged nothing (the plan has a BYOK fee): {free[:5]}")
        if dead_rows:
            problems.append(f"{len(dead_rows)} usage entries were dead-lettered: {dead_rows[:3]}")
        credit = usd_to_nanos(CREDIT_USD)
        for n, ws in enumerate(ws_ids):
            mine = [row for row in events if row[1] == ws]
            charges = sum(row[2] for row in mine)
            if (debits.get(ws) or 0) != -charges:
                problems.append(f"workspace {n}: ledger usage debits {debits.get(ws)} != -(sum of charges {charges})")
            if balances.get(ws) != credit - charges:
                problems.append(f"workspace {n}: balance {balances.get(ws)} != credit {credit} - charges {charges}")
            if rollups.get(ws, (0, 0)) != (len(mine), charges):
                problems.append(
                    f"workspace {n}: rollups count {rollups.get(ws)} (requests, charges), events {(len(mine), charges)}"
                )

        # --- Redis: nothing pending, in flight or unacknowledged; the balance agrees with Postgres
        try:
            state = pipeline_state(stack)
        except redis.RedisError as exc:
            problems.append(f"Redis does not answer: {exc}")
        else:
            for n, ws in enumerate(ws_ids):
                if state.pending[ws] or state.inflight[ws] or state.reservations[ws]:
                    problems.append(
                        f"workspace {n}: Redis pending {state.pending[ws]}, inflight {state.inflight[ws]}, "
                        f"{state.reservations[ws]} open reservations (all should be 0)"
                    )
                if state.ledger[ws] != balances.get(ws):
                    problems.append(f"workspace {n}: Redis ledger {state.ledger[ws]} != Postgres {balances.get(ws)}")
            if state.unacked or state.unread:
                problems.append(f"usage stream: {state.unacked} entries unacknowledged, {state.unread} still in it")
            if state.dead_letters:
                problems.append(f"{state.dead_letters} entries in the dead-letter stream {USAGE_DEAD_STREAM}")
            if state.spooled:
                problems.append(f"{state.spooled} events still in the proxy's spool, never replayed")
        dead_spool = [p.name for p in stack.spool.glob("*.dead.jsonl")]
        if dead_spool:
            problems.append(f"the proxy dead-lettered spooled events: {dead_spool}")

        # --- every process is still the one that started
        if proxy.proc.poll() is not None:
            problems.append(f"the proxy's gunicorn master exited with {proxy.proc.returncode}")
        gone = {pid for pid in proxy.workers if not is_running(pid) or pid not in child_pids(proxy.proc.pid)}
        if len(proxy.workers) != 2 or gone:
            problems.append(f"proxy workers {sorted(proxy.workers)} at start; no longer running: {sorted(gone)}")
        if worker.poll() is not None:
            problems.append(f"the celery master exited with {worker.returncode}")
        elif len(child_pids(worker.pid)) < worker_children:
            problems.append(
                f"the celery master runs {len(child_pids(worker.pid))} children, {worker_children} at start"
            )

        summary = (
            f"{len(outcomes)} requests ({len(answered)} answered, {sum(o.stream for o in answered)} streamed) over "
            f"{WORKSPACES} workspaces; {len(events)} events stored; killed worker child {victim}; logs in {logs}"
        )
        print(summary)
        assert not problems, "\n".join([*problems, summary, notable_log_lines(logs)])
