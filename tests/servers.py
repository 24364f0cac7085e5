"""Running real servers on real sockets for tests: an ASGI app in a background thread (uvicorn), or a
process (gunicorn, celery) with its port awaited. Plain helpers; fixtures live in conftest files."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import uvicorn

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, *, timeout: float = 20.0, process: subprocess.Popen[Any] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode} before listening on {port}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port} after {timeout}s")


class ThreadedServer:
    """An ASGI app served by uvicorn on 127.0.0.1:<free port> in a daemon thread."""

    def __init__(self, app: Any, *, port: int | None = None, lifespan: str = "on") -> None:
        self.port = port or free_port()
        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            lifespan=lifespan,
            access_log=False,
            loop="asyncio",
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> ThreadedServer:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@contextlib.contextmanager
def process(
    args: list[str],
    *,
    port: int | None = None,
    env: dict[str, str] | None = None,
    log_path: Path | None = None,
    timeout: float = 30.0,
) -> Iterator[subprocess.Popen[bytes]]:
    """Run a command (in its own process group) until the block ends; wait for `port` if given."""
    full_env = {**os.environ, **(env or {})}
    log = open(log_path, "wb") if log_path else subprocess.DEVNULL  # noqa: SIM115
    proc = subprocess.Popen(args, cwd=ROOT, env=full_env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        if port is not None:
            wait_for_port(port, timeout=timeout, process=proc)
        yield proc
    finally:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)
        if log_path:
            log.close()  # type: ignore[union-attr]


def run_async(coroutine: Any) -> Any:
    """Run a coroutine to completion on a fresh event loop in its own thread, whatever loop the calling
    thread has (a test must not depend on which fixtures ran before it)."""
    result: dict[str, Any] = {}

    def target() -> None:
        try:
            result["value"] = asyncio.run(coroutine)
        except BaseException as exc:
            result["error"] = exc

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    if "error" in result:
        raise result["error"]
    return result.get("value")


def wait_until(predicate: Callable[[], Any], *, timeout: float, what: str, interval: float = 0.05) -> Any:
    """Poll `predicate` until it returns something true (returned), or fail saying what never happened."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def celery_worker_args(
    *, log_path: Path, name: str, pool: str = "solo", concurrency: int = 2, beat: bool = True
) -> list[str]:
    """`celery worker` as the Procfile and deploy/ run it (no gossip or mingle), with its beat schedule
    beside its log."""
    args = [str(ROOT / ".venv" / "bin" / "celery"), "-A", "config", "worker", f"--pool={pool}", "--loglevel=INFO"]
    args += ["-n", f"{name}@%h", "--without-gossip", "--without-mingle"]
    args += [f"--concurrency={concurrency}"] if pool == "prefork" else []
    args += ["-B", "-s", str(log_path.with_suffix(".beat"))] if beat else []
    return args


def celery_worker_env(*, database_url: str, redis_url: str, name: str, **extra: str) -> dict[str, str]:
    return {
        "DJANGO_SETTINGS_MODULE": "config.settings.test",
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "CELERY_BROKER_URL": redis_url,
        "TURNPIKE_INGEST_CLAIM_IDLE_MS": "1000",
        "TURNPIKE_TEST_RUN_ID": name,
        **extra,
    }
