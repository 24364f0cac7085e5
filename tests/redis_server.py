"""A private redis-server for tests that stop and restart Redis, or need it configured a certain way
(an evicting policy, CONFIG disabled as on managed Redis), without touching the shared one."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

from tests.servers import free_port, wait_for_port

# As production runs it (docs/configuration.md, "Redis requirements"), fsync'd on every write so that a
# stop/start in a test loses nothing.
REQUIRED_ARGS = ("--appendonly", "yes", "--appendfsync", "always", "--maxmemory-policy", "noeviction")


class RedisServer:
    """Same port and data directory across `stop()` / `start()`, so a restart keeps the data."""

    def __init__(self, workdir: Path, *, args: tuple[str, ...] = REQUIRED_ARGS) -> None:
        self.port = free_port()
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.args = args
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        command = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir)]
        command += ["--save", "", *self.args]
        self.proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        wait_for_port(self.port, process=self.proc)
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # a clean shutdown, as a restart or failover does
            self.proc.wait(timeout=20)
        self.proc = None
