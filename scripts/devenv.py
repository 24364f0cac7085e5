"""Bring up what Turnpike needs on this machine, then run the dev stack or the test suite.

    python scripts/devenv.py dev     services, migrate, seed, then every Procfile process, supervised
    python scripts/devenv.py test    services, browser, then pytest (extra args are passed to pytest)
    python scripts/devenv.py stop    stop the private Postgres/Redis under .dev/

Postgres and Redis come from DATABASE_URL / REDIS_URL when they are set. Otherwise private instances
run under .dev/ on fixed ports (Postgres 54329, Redis 63799), installed with apt-get only when the
binaries are missing. initdb refuses to run as root, so as root the private cluster belongs to an
unprivileged system user, `turnpike`. The services this script started are stopped when it exits.

`dev` runs the Procfile under `Supervisor` (below): output prefixed with the process name, as honcho
does; a process that exits is started again (with backoff) instead of stopping the stack; Ctrl-C or
SIGTERM stops every process.

Standard library only: it runs before anything else is known to work.
"""

from __future__ import annotations

import base64
import contextlib
import glob
import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

ROOT = Path(__file__).resolve().parent.parent
DEV = ROOT / ".dev"
ENV_FILE = DEV / "env"
PG_DIR = DEV / "postgres"
PG_DATA = PG_DIR / "data"
PG_RUN = PG_DIR / "run"
PG_LOG = PG_DIR / "postgres.log"
REDIS_DIR = DEV / "redis"
PG_PORT = 54329
REDIS_PORT = 63799
SERVICE_USER = "turnpike"
PYTHON = str(ROOT / ".venv" / "bin" / "python")
DEMO_EMAIL = "demo@turnpike.local"
FAKE_PROVIDER_PORT = 8090
FAKE_STRIPE_PORT = 12111


def say(message: str) -> None:
    print(f"[turnpike] {message}", flush=True)


def fail(message: str) -> None:
    print(f"[turnpike] error: {message}", file=sys.stderr, flush=True)
    raise SystemExit(1)


def run(args: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, check=True, text=True, **kwargs)  # type: ignore[call-overload, no-any-return]


def port_open(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.3):
        return True
    return False


# --- .dev/env ---------------------------------------------------------------------------------------------


def read_env_file(path: Path = ENV_FILE) -> dict[str, str]:
    values: dict[str, str] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            line = line.strip()
            if line and not line.startswith("#") and "=" in line:
                key, _, value = line.partition("=")
                values[key.strip()] = value.strip()
    return values


def write_env_file(updates: dict[str, str], path: Path = ENV_FILE) -> dict[str, str]:
    """Merge `updates` into the env file. Generated secrets are created once and never replaced:
    data encrypted under the master key must stay readable across runs."""
    values = read_env_file(path)
    values.setdefault("SECRET_KEY", secrets.token_urlsafe(50))
    values.setdefault("TURNPIKE_MASTER_KEY", new_master_key("dev"))
    values.setdefault("TURNPIKE_DASHBOARD_URL", "http://127.0.0.1:8000")  # the proxy's 402 links here
    values.update(updates)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["# written by scripts/devenv.py; secrets here are generated once and kept"]
    lines += [f"{key}={value}" for key, value in sorted(values.items())]
    path.write_text("\n".join(lines) + "\n")
    path.chmod(0o600)
    return values


def new_master_key(key_id: str) -> str:
    return f"{key_id}:{base64.urlsafe_b64encode(os.urandom(32)).decode()}"


# --- binaries ----------------------------------------------------------------------------------------------


def apt_install(packages: list[str], why: str) -> None:
    if shutil.which("apt-get") is None:
        fail(f"{why}, and there is no apt-get to install {' '.join(packages)}: install them, or set the URLs")
    say(f"{why}: installing {' '.join(packages)} with apt-get")
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    run([*sudo, "apt-get", "update", "-q"], env=env, stdout=subprocess.DEVNULL)
    run([*sudo, "apt-get", "install", "-y", "-q", *packages], env=env, stdout=subprocess.DEVNULL)


def postgres_bin(name: str) -> str | None:
    """A Postgres server binary from PATH or the newest /usr/lib/postgresql/<v>/bin."""
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), key=lambda p: int(Path(p).parts[-3]))
    if candidates:
        return candidates[-1]
    return shutil.which(name)


def ensure_binaries(*, postgres: bool, redis: bool) -> None:
    missing = []
    if postgres and not (postgres_bin("initdb") and postgres_bin("pg_ctl")):
        missing.append("postgresql")
    if redis and not shutil.which("redis-server"):
        missing.append("redis-server")
    if missing:
        apt_install(missing, "Postgres/Redis server binaries are missing")


# --- Postgres ----------------------------------------------------------------------------------------------


def _as_service_user() -> list[str]:
    """Command prefix running as the unprivileged owner of the private cluster (root only)."""
    return ["runuser", "-u", SERVICE_USER, "--"] if os.geteuid() == 0 else []


def _ensure_service_user() -> None:
    if os.geteuid() != 0:
        return
    try:
        pwd.getpwnam(SERVICE_USER)
    except KeyError:
        say(f"creating system user {SERVICE_USER!r} to own the private Postgres (initdb refuses root)")
        run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", SERVICE_USER])
    # The service user must be able to reach .dev/postgres through every parent directory.
    for parent in [PG_DIR, *PG_DIR.parents]:
        if parent == Path("/"):
            break
        mode = parent.stat().st_mode
        if not mode & 0o001:
            parent.chmod(mode | 0o001)


def _chown_to_service_user(path: Path) -> None:
    if os.geteuid() == 0:
        entry = pwd.getpwnam(SERVICE_USER)
        for item in [path, *path.rglob("*")]:
            os.chown(item, entry.pw_uid, entry.pw_gid)


def pg_running() -> bool:
    result = subprocess.run(
        [*_as_service_user(), postgres_bin("pg_ctl") or "pg_ctl", "-D", str(PG_DATA), "status"],
        capture_output=True,
        text=True,
    )
    return result.returncode == 0


def start_postgres() -> bool:
    """Start the private cluster (initialising it on first use). True if this call started it."""
    PG_DIR.mkdir(parents=True, exist_ok=True)
    PG_RUN.mkdir(parents=True, exist_ok=True)
    _ensure_service_user()
    _chown_to_service_user(PG_DIR)
    if not (PG_DATA / "PG_VERSION").exists():
        say(f"initialising a private Postgres cluster in {PG_DATA}")
        run(
            [
                *_as_service_user(),
                postgres_bin("initdb") or "initdb",
                "-D",
                str(PG_DATA),
                "-U",
                "turnpike",
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
            ],
            stdout=subprocess.DEVNULL,
        )
    if pg_running():
        return False
    say(f"starting private Postgres on 127.0.0.1:{PG_PORT}")
    options = f"-c listen_addresses=127.0.0.1 -c port={PG_PORT} -c unix_socket_directories={PG_RUN} -c fsync=off"
    result = subprocess.run(
        [
            *_as_service_user(),
            postgres_bin("pg_ctl") or "pg_ctl",
            "-D",
            str(PG_DATA),
            "-l",
            str(PG_LOG),
            "-o",
            options,
            "-w",
            "-t",
            "60",
            "start",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    if result.returncode != 0:
        tail = PG_LOG.read_text()[-2000:] if PG_LOG.exists() else result.stderr
        fail(f"Postgres did not start:\n{tail}")
    wait_for(PG_PORT, "Postgres", PG_LOG)
    _ensure_database("turnpike")
    return True


def _ensure_database(name: str) -> None:
    createdb = postgres_bin("createdb") or "createdb"
    result = subprocess.run(
        [createdb, "-h", "127.0.0.1", "-p", str(PG_PORT), "-U", "turnpike", name], capture_output=True, text=True
    )
    if result.returncode != 0 and "already exists" not in result.stderr:
        fail(f"could not create database {name}: {result.stderr.strip()}")


def stop_postgres() -> None:
    if PG_DATA.exists() and pg_running():
        say("stopping private Postgres")
        subprocess.run(
            [*_as_service_user(), postgres_bin("pg_ctl") or "pg_ctl", "-D", str(PG_DATA), "-m", "fast", "-w", "stop"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )


# --- Redis --------------------------------------------------------------------------------------------------


def redis_pidfile() -> Path:
    return REDIS_DIR / "redis.pid"


def start_redis() -> bool:
    REDIS_DIR.mkdir(parents=True, exist_ok=True)
    if port_open(REDIS_PORT):
        return False
    say(f"starting private Redis on 127.0.0.1:{REDIS_PORT}")
    # As docs/configuration.md ("Redis requirements") asks: appendonly, so the usage stream and balance
    # counters survive a Redis restart; noeviction, so memory pressure refuses writes (the proxy spools)
    # instead of silently dropping a balance hash or the stream.
    run(
        [
            "redis-server",
            "--bind",
            "127.0.0.1",
            "--port",
            str(REDIS_PORT),
            "--daemonize",
            "yes",
            "--dir",
            str(REDIS_DIR),
            "--pidfile",
            str(redis_pidfile()),
            "--logfile",
            str(REDIS_DIR / "redis.log"),
            "--appendonly",
            "yes",
            "--appendfsync",
            "everysec",
            "--maxmemory-policy",
            "noeviction",
            "--save",
            "",
        ],
        stdout=subprocess.DEVNULL,
    )
    wait_for(REDIS_PORT, "Redis", REDIS_DIR / "redis.log")
    return True


def stop_redis() -> None:
    pidfile = redis_pidfile()
    if pidfile.exists():
        with contextlib.suppress(ValueError, ProcessLookupError):
            say("stopping private Redis")
            pid = int(pidfile.read_text().strip())
            os.kill(pid, signal.SIGTERM)
            for _ in range(100):
                os.kill(pid, 0)
                time.sleep(0.05)


def wait_for(port: int, name: str, log: Path, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if port_open(port):
            return
        time.sleep(0.1)
    tail = log.read_text()[-2000:] if log.exists() else "(no log)"
    fail(f"{name} is not answering on 127.0.0.1:{port} after {timeout:.0f}s:\n{tail}")


# --- the process supervisor -----------------------------------------------------------------------------------

RESTART_DELAY_FIRST = 1.0  # seconds before restarting a process that exited
RESTART_DELAY_MAX = 30.0  # the backoff doubles per quick exit up to this
STABLE_AFTER = 30.0  # a process that ran this long starts again with the first delay
CRASH_LOOP_AFTER = 5  # quick exits in a row before the supervisor calls it a crash loop
STOP_TIMEOUT = 10.0  # seconds after SIGTERM before SIGKILL
COLOURS = ("36", "33", "32", "35", "34", "31", "96", "93")


def read_procfile(path: Path) -> dict[str, str]:
    processes: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            name, sep, command = line.partition(":")
            if not sep or not name.strip() or not command.strip():
                fail(f"{path}: not a `name: command` line: {line!r}")
            processes[name.strip()] = command.strip()
    return processes


@dataclass
class Child:
    name: str
    command: str
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    restart_at: float | None = None  # when to start it again after it exited
    delay: float = RESTART_DELAY_FIRST
    quick_exits: int = 0
    readers: list[threading.Thread] = field(default_factory=list)


class Supervisor:
    """Runs every Procfile process until asked to stop; restarts one that exits.

    Each process runs through `sh -c "exec <command>"` in its own session (process group), so stopping it
    reaches its children too (gunicorn workers, Celery's pool and embedded beat). When a process exits,
    what is left of its group is stopped, and it is started again after a delay: 1 s, doubling on every
    exit within STABLE_AFTER of its start, at most RESTART_DELAY_MAX; CRASH_LOOP_AFTER quick exits in a
    row are reported as a crash loop, and it keeps being retried at the capped delay (Postgres or Redis
    may come back). SIGINT, SIGTERM or SIGHUP stops every group: SIGTERM, then SIGKILL after STOP_TIMEOUT.
    """

    def __init__(self, processes: dict[str, str], *, env: dict[str, str], cwd: Path, out: IO[str] | None = None):
        self.children = [Child(name, command) for name, command in processes.items()]
        self.env = env
        self.cwd = cwd
        self.out = out or sys.stdout
        self.colour = self.out.isatty()
        self.width = max([len(c.name) for c in self.children] + [len("system")])
        self.lock = threading.Lock()
        self.stopping = False

    def say(self, name: str, text: str) -> None:
        prefix = f"{time.strftime('%H:%M:%S')} {name:<{self.width}} |"
        if self.colour:
            names = [c.name for c in self.children]
            code = COLOURS[names.index(name) % len(COLOURS)] if name in names else "1"
            prefix = f"\033[{code}m{prefix}\033[0m"
        with self.lock:
            self.out.write(f"{prefix} {text}\n")
            self.out.flush()

    def _pipe(self, child: Child, stream: IO[bytes]) -> None:
        for raw in iter(stream.readline, b""):
            self.say(child.name, raw.decode(errors="replace").rstrip("\n"))
        stream.close()

    def _start(self, child: Child) -> None:
        child.proc = subprocess.Popen(
            ["/bin/sh", "-c", f"exec {child.command}"],
            cwd=self.cwd,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        child.started_at = time.monotonic()
        child.restart_at = None
        assert child.proc.stdout is not None
        reader = threading.Thread(target=self._pipe, args=(child, child.proc.stdout), daemon=True)
        reader.start()
        child.readers = [reader]
        self.say("system", f"{child.name} started (pid {child.proc.pid})")

    def _signal_group(self, child: Child, sig: signal.Signals) -> None:
        if child.proc is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(child.proc.pid, sig)

    def _group_alive(self, child: Child) -> bool:
        if child.proc is None:
            return False
        try:
            os.killpg(child.proc.pid, 0)
        except (ProcessLookupError, PermissionError):
            return False
        return True

    def _on_exit(self, child: Child, code: int) -> None:
        assert child.proc is not None
        ran = time.monotonic() - child.started_at
        how = f"was killed by {signal.Signals(-code).name}" if code < 0 else f"exited with code {code}"
        # What it leaves behind (an orphaned gunicorn worker holding the port) must not outlive it.
        self._signal_group(child, signal.SIGTERM)
        deadline = time.monotonic() + 2
        while self._group_alive(child) and time.monotonic() < deadline:
            time.sleep(0.05)
        self._signal_group(child, signal.SIGKILL)
        if ran >= STABLE_AFTER:
            child.delay, child.quick_exits = RESTART_DELAY_FIRST, 0
        else:
            child.quick_exits += 1
        note = ""
        if child.quick_exits >= CRASH_LOOP_AFTER:
            note = f"; crash loop: {child.quick_exits} exits in a row within {STABLE_AFTER:.0f} s of starting"
        self.say("system", f"{child.name} {how} after {ran:.1f} s; restarting in {child.delay:.0f} s{note}")
        child.restart_at = time.monotonic() + child.delay
        if child.quick_exits:
            child.delay = min(child.delay * 2, RESTART_DELAY_MAX)
        child.proc = None

    def _request_stop(self, signum: int, frame: object) -> None:
        self.stopping = True

    def run(self) -> int:
        # SIGHUP too: the children run in sessions of their own, so a closed terminal reaches only us.
        stop_signals = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
        previous = {sig: signal.signal(sig, self._request_stop) for sig in stop_signals}
        try:
            for child in self.children:
                self._start(child)
            while not self.stopping:
                now = time.monotonic()
                for child in self.children:
                    if child.proc is not None:
                        code = child.proc.poll()
                        if code is not None:
                            self._on_exit(child, code)
                    elif child.restart_at is not None and now >= child.restart_at:
                        self._start(child)
                time.sleep(0.2)
            self.stop()
            return 0
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def stop(self) -> None:
        self.say("system", "stopping every process")
        running = [c for c in self.children if c.proc is not None]
        for child in running:
            self._signal_group(child, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        while any(self._group_alive(c) for c in running) and time.monotonic() < deadline:
            for child in running:
                if child.proc is not None:
                    child.proc.poll()  # reap the leader, so its group can be seen to be empty
            time.sleep(0.1)
        for child in running:
            if self._group_alive(child):
                self.say("system", f"{child.name} did not stop within {STOP_TIMEOUT:.0f} s: killing it")
                self._signal_group(child, signal.SIGKILL)
            if child.proc is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    child.proc.wait(timeout=5)
            for reader in child.readers:
                reader.join(timeout=1)
        self.say("system", "every process stopped")


# --- orchestration ---------------------------------------------------------------------------------------------


class Services:
    """Ensures Postgres and Redis; remembers which ones it started, to stop exactly those."""

    def __init__(self) -> None:
        self.started: list[str] = []

    def up(self) -> dict[str, str]:
        database_url = os.environ.get("DATABASE_URL", "")
        redis_url = os.environ.get("REDIS_URL", "")
        ensure_binaries(postgres=not database_url, redis=not redis_url)
        if not database_url:
            if start_postgres():
                self.started.append("postgres")
            database_url = f"postgresql://turnpike@127.0.0.1:{PG_PORT}/turnpike"
        if not redis_url:
            if start_redis():
                self.started.append("redis")
            redis_url = f"redis://127.0.0.1:{REDIS_PORT}/0"
        return {"DATABASE_URL": database_url, "REDIS_URL": redis_url}

    def down(self) -> None:
        if "redis" in self.started:
            stop_redis()
        if "postgres" in self.started:
            stop_postgres()


def manage(args: list[str], env: dict[str, str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    return run([PYTHON, "manage.py", *args], cwd=ROOT, env=env, **kwargs)


def seed(env: dict[str, str]) -> dict[str, object]:
    """The demo workspace, through bootstrap_workspace; the fake provider must answer the key check."""
    password_file = DEV / "demo-password"
    if not password_file.exists():
        password_file.write_text(secrets.token_urlsafe(12))
        password_file.chmod(0o600)
    password = password_file.read_text().strip()
    fake = None
    if not port_open(FAKE_PROVIDER_PORT):
        fake = subprocess.Popen(
            [PYTHON, "-m", "proxy.fake_provider", "--port", str(FAKE_PROVIDER_PORT)], cwd=ROOT, env=env
        )
        wait_for(FAKE_PROVIDER_PORT, "the fake provider", DEV / "none")
    try:
        result = manage(
            [
                "bootstrap_workspace",
                "--email",
                DEMO_EMAIL,
                "--workspace",
                "Demo",
                "--password",
                password,
                "--provider",
                "openai",
                "--provider-key",
                "fake-demo-key-0001",
                "--provider-base-url",
                f"http://127.0.0.1:{FAKE_PROVIDER_PORT}/v1",
                "--credit-usd",
                "25",
                "--plan",
                "dev-demo",
                "--key-name",
                "make dev",
                "--json",
            ],
            env,
            capture_output=True,
        )
    finally:
        if fake is not None:
            fake.terminate()
            fake.wait(timeout=10)
    data: dict[str, object] = json.loads(result.stdout.strip().splitlines()[-1])
    data["password"] = password
    return data


def banner(data: dict[str, object]) -> None:
    key, base = data["api_key"], data["proxy_base_url"]
    print(
        f"""
================================================================================
 Turnpike is starting.

 Dashboard     {data["dashboard_url"]}
 Log in        {DEMO_EMAIL} / {data["password"]}
 Gateway key   {key}
               (shown once; `make dev` prints a fresh one each run)
 Proxy         {base}

 curl:
   curl {base}/chat/completions \\
     -H "Authorization: Bearer {key}" -H "Content-Type: application/json" \\
     -d '{{"model": "openai/gpt-4o-mini", "messages": [{{"role": "user", "content": "Hello"}}]}}'

 Python (pip install openai):
   from openai import OpenAI
   client = OpenAI(base_url="{base}", api_key="{key}")
   reply = client.chat.completions.create(
       model="openai/gpt-4o-mini", messages=[{{"role": "user", "content": "Hello"}}]
   )
   print(reply.choices[0].message.content)

 A process that exits is started again. Ctrl-C stops every process.
================================================================================
""",
        flush=True,
    )


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def stripe_dev_values() -> dict[str, str]:
    """Dev Stripe settings: the web app's real `stripe` SDK talks to the bundled fake (billing/fake_stripe,
    the `stripe` process of the Procfile), which signs its webhooks with the same secret. Kept across runs."""
    current = read_env_file()
    secret = current.get("STRIPE_SECRET_KEY") or f"sk_test_dev_{secrets.token_hex(12)}"
    webhook = current.get("STRIPE_WEBHOOK_SECRET") or f"whsec_dev_{secrets.token_hex(16)}"
    return {
        "STRIPE_SECRET_KEY": secret,
        "STRIPE_WEBHOOK_SECRET": webhook,
        "STRIPE_API_BASE": f"http://127.0.0.1:{FAKE_STRIPE_PORT}",
        "FAKE_STRIPE_SECRET_KEY": secret,
        "FAKE_STRIPE_WEBHOOK_SECRET": webhook,
        "FAKE_STRIPE_WEBHOOK_URL": "http://127.0.0.1:8000/stripe/webhook/",
    }


def cmd_dev() -> int:
    # Ctrl-C, and also SIGTERM (a closed terminal, a supervisor), stop every process and the services we
    # started; SIGINT may arrive ignored when launched in the background, so install the handlers.
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    services = Services()
    try:
        values = write_env_file({**services.up(), **stripe_dev_values()})
        env = {**os.environ, **values, "DJANGO_SETTINGS_MODULE": "config.settings.dev", "PYTHONUNBUFFERED": "1"}
        manage(["migrate", "--noinput", "-v", "0"], env)
        manage(["collectstatic", "--noinput", "-v", "0"], env)
        manage(["load_price_catalog"], env, stdout=subprocess.DEVNULL)
        manage(["loaddata", "dev_plans", "-v", "0"], env)  # a demo plan with a BYOK fee: debits show
        banner(seed(env))
        return Supervisor(read_procfile(ROOT / "Procfile"), env=env, cwd=ROOT).run()
    finally:
        services.down()


def install_chromium() -> str:
    path = os.environ.get("TURNPIKE_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(path).exists():
        apt_install(["chromium"], "the browser tests need Debian's chromium")
        path = shutil.which("chromium") or "/usr/bin/chromium"
    return path


def cmd_test(pytest_args: list[str]) -> int:
    services = Services()
    try:
        values = services.up()
        env = {
            **os.environ,
            **values,
            "DJANGO_SETTINGS_MODULE": "config.settings.test",
            "TURNPIKE_CHROMIUM": install_chromium(),
        }
        return subprocess.run([PYTHON, "-m", "pytest", *pytest_args], cwd=ROOT, env=env).returncode
    finally:
        services.down()


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in {"dev", "test", "stop"}:
        print(__doc__)
        return 2
    if argv[0] == "dev":
        return cmd_dev()
    if argv[0] == "test":
        return cmd_test(argv[1:])
    stop_redis()
    stop_postgres()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
