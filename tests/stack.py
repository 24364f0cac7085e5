"""Private servers and process inspection for tests that run the whole stack and break it on purpose.

- `PostgresServer`: a Postgres cluster of our own (initdb into a fresh directory, a free port) that a
  test may stop (fast shutdown: sessions terminated, as a restart or failover does) and start again on
  the same port and data. initdb refuses to run as root, so as root the cluster belongs to the
  unprivileged `turnpike` system user, as in scripts/devenv.py. The postmaster is our direct child
  (Popen with `user=`, not `runuser`/`pg_ctl`), so its pid is the server's and signals reach it.
- `RedisServer` (tests/redis_server.py): a redis-server of our own, configured as production runs it.
- `/proc` helpers: a process's children, whether a pid is still running (not a zombie), and which of
  some processes owns the client end of a TCP connection (to find the worker behind a Postgres session).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import IO, Any

import psycopg

from scripts.devenv import SERVICE_USER, postgres_bin
from tests.redis_server import REQUIRED_ARGS, RedisServer
from tests.servers import free_port

__all__ = [
    "REQUIRED_ARGS",
    "PostgresServer",
    "RedisServer",
    "child_pids",
    "is_running",
    "owner_of_client_port",
]

DATABASE = "turnpike"


def _service_user() -> dict[str, Any]:
    """Popen arguments that run a command as the cluster's owner: `turnpike` as root, else ourselves."""
    if os.geteuid() != 0:
        return {}
    try:
        entry = pwd.getpwnam(SERVICE_USER)
    except KeyError:  # same account as scripts/devenv.py creates
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", SERVICE_USER], check=True
        )
        entry = pwd.getpwnam(SERVICE_USER)
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}


class PostgresServer:
    """A private cluster: `start()`, `stop()`, `restart()`; same port and data across restarts. The data
    lives in a directory of its own under the system temp dir (pytest's tmp_path is private to root, the
    service user could not enter it); `close()` stops the server and removes it. The server log goes to
    `log_path`, opened here and inherited, so it may live anywhere."""

    def __init__(self, *, log_path: Path) -> None:
        self.port = free_port()
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self._as_owner = _service_user()
        self.dir = Path(tempfile.mkdtemp(prefix="turnpike-pg-"))
        if self._as_owner:
            os.chown(self.dir, self._as_owner["user"], self._as_owner["group"])
        self.data = self.dir / "data"
        self._log: IO[bytes] | None = None
        initdb = postgres_bin("initdb") or "initdb"
        result = subprocess.run(
            [initdb, "-D", str(self.data), "-U", "turnpike", "--auth=trust", "--encoding=UTF8", "--locale=C", "-N"],
            cwd=self.dir,
            capture_output=True,
            text=True,
            **self._as_owner,
        )
        if result.returncode != 0:
            shutil.rmtree(self.dir, ignore_errors=True)
            raise RuntimeError(f"initdb failed ({result.returncode}): {result.stderr.strip()}")

    def url(self, database: str = DATABASE) -> str:
        return f"postgresql://turnpike@127.0.0.1:{self.port}/{database}"

    def start(self, *, timeout: float = 60.0) -> PostgresServer:
        if self._log is None:
            self._log = open(self.log_path, "ab")  # noqa: SIM115 (closed in close())
        args = [postgres_bin("postgres") or "postgres", "-D", str(self.data), "-p", str(self.port)]
        args += ["-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={self.dir}"]
        args += ["-c", "fsync=off", "-c", "max_connections=200"]
        self.proc = subprocess.Popen(args, cwd=self.dir, stdout=self._log, stderr=subprocess.STDOUT, **self._as_owner)
        # The port opens before the server accepts sessions ("the database system is starting up").
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"postgres exited with {self.proc.returncode}; see {self.log_path}")
            try:
                with psycopg.connect(self.url("postgres"), connect_timeout=2):
                    break
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        return self

    def create_database(self, name: str = DATABASE) -> None:
        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')

    def stop(self) -> None:
        """Fast shutdown (SIGINT): open transactions are rolled back, sessions terminated, a checkpoint
        written. An immediate shutdown (SIGQUIT) if that takes more than 30 s."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.send_signal(signal.SIGQUIT)
                self.proc.wait(timeout=10)
        self.proc = None

    def restart(self, *, down: float) -> None:
        self.stop()
        time.sleep(down)
        self.start()

    def close(self) -> None:
        try:
            self.stop()
        finally:
            if self._log is not None:
                self._log.close()
                self._log = None
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


def child_pids(pid: int) -> set[int]:
    """The direct children of `pid` (every thread's), from /proc."""
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            found |= {int(p) for p in (task / "children").read_text().split()}
    return found


def is_running(pid: int) -> bool:
    """True while `pid` exists and has not exited (a zombie waiting to be reaped has exited)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def owner_of_client_port(pids: Iterable[int], port: int) -> int | None:
    """Which of `pids` holds the TCP socket whose local port is `port` (e.g. a Postgres session's
    `client_port`): match the socket inode in /proc/net/tcp* against each process's open files."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if int(fields[1].rsplit(":", 1)[1], 16) == port:
                    inodes.add(f"socket:[{fields[9]}]")
    for pid in pids:
        with contextlib.suppress(OSError):
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                with contextlib.suppress(OSError):
                    if os.readlink(fd) in inodes:
                        return pid
    return None
