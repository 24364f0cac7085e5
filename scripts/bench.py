"""`make bench`: what the proxy adds over calling the provider directly, measured in one run.

Starts the fake provider and the proxy (gunicorn + one uvicorn worker, uvloop/httptools) as
processes, seeds a workspace through `bootstrap_workspace`, warms the proxy's caches, then measures
direct vs through the proxy with the whole hot path on (key auth from cache, balance reservation in
Redis, pricing, usage event to the Redis stream):

1. throughput at saturation (closed loop, keep-alive connections);
2. latency p50/p95/p99 at a fixed open-loop rate below saturation, and the difference;
3. streaming time to first byte;
4. the proxy worker's RSS before and after.

Writes the results to docs/benchmarks.md. The load generator is a lean asyncio HTTP/1.1 client on
uvloop (a general-purpose client would be the bottleneck long before the proxy).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import platform
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import uvloop

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
import devenv  # noqa: E402  (stdlib-only service bootstrap shared with make dev / make test)

FAKE_PORT = 18090
PROXY_PORT = 18080
HOST = "127.0.0.1"
THROUGHPUT_SECONDS = 8.0
THROUGHPUT_CONNECTIONS = 32
LATENCY_RATE = 300  # requests/s, below saturation on a small machine
LATENCY_SECONDS = 12.0
TTFB_REQUESTS = 300
DOC = ROOT / "docs" / "benchmarks.md"


# --- a minimal HTTP/1.1 client ------------------------------------------------------------------------------


def build_request(path: str, body: dict[str, object], headers: dict[str, str]) -> bytes:
    payload = json.dumps(body, separators=(",", ":")).encode()
    lines = [f"POST {path} HTTP/1.1", f"Host: {HOST}", "Content-Type: application/json"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    lines.append(f"Content-Length: {len(payload)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + payload


async def read_response(reader: asyncio.StreamReader, on_first_body: list[float] | None = None) -> int:
    """Read one response; returns the status. Records when the first body bytes arrived."""
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    lower = head.lower()
    if b"transfer-encoding: chunked" in lower:
        while True:
            size_line = await reader.readuntil(b"\r\n")
            size = int(size_line.strip().split(b";")[0], 16)
            if size == 0:
                await reader.readuntil(b"\r\n")
                return status
            await reader.readexactly(size + 2)
            if on_first_body is not None and not on_first_body:
                on_first_body.append(time.perf_counter())
    start = lower.index(b"content-length:") + 15
    length = int(lower[start : lower.index(b"\r\n", start)])
    await reader.readexactly(length)
    return status


@dataclass
class Result:
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    completed: int = 0


async def closed_loop(port: int, request: bytes, *, seconds: float, connections: int) -> Result:
    result = Result()
    stop = time.perf_counter() + seconds

    async def worker() -> None:
        reader, writer = await asyncio.open_connection(HOST, port)
        try:
            while time.perf_counter() < stop:
                t0 = time.perf_counter()
                writer.write(request)
                status = await read_response(reader)
                result.latencies.append(time.perf_counter() - t0)
                result.completed += 1
                result.errors += status != 200
        finally:
            writer.close()

    await asyncio.gather(*(worker() for _ in range(connections)))
    return result


async def open_loop(port: int, request: bytes, *, rate: int, seconds: float, connections: int = 64) -> Result:
    """Requests scheduled at a fixed rate; latency counted from the scheduled send time (no coordinated
    omission: a slow answer delays the ones behind it, and that delay is counted)."""
    result = Result()
    queue: asyncio.Queue[float | None] = asyncio.Queue()

    async def worker() -> None:
        reader, writer = await asyncio.open_connection(HOST, port)
        try:
            while (scheduled := await queue.get()) is not None:
                writer.write(request)
                status = await read_response(reader)
                result.latencies.append(time.perf_counter() - scheduled)
                result.completed += 1
                result.errors += status != 200
        finally:
            writer.close()

    workers = [asyncio.create_task(worker()) for _ in range(connections)]
    start = time.perf_counter()
    total = int(rate * seconds)
    for i in range(total):
        at = start + i / rate
        delay = at - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        queue.put_nowait(at)
    for _ in workers:
        queue.put_nowait(None)
    await asyncio.gather(*workers)
    return result


async def ttfb(port: int, request: bytes, *, n: int) -> list[float]:
    reader, writer = await asyncio.open_connection(HOST, port)
    out = []
    try:
        for _ in range(n):
            first: list[float] = []
            t0 = time.perf_counter()
            writer.write(request)
            await read_response(reader, on_first_body=first)
            out.append(first[0] - t0)
    finally:
        writer.close()
    return out


# --- processes ----------------------------------------------------------------------------------------------


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))] * 1000


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(x) for x in path.read_text().split()] if path.exists() else []


def pin(pid: int, cpus: set[int]) -> None:
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            os.sched_setaffinity(int(task.name), cpus)


def start(args: list[str], env: dict[str, str], port: int, log: Path) -> subprocess.Popen[bytes]:
    if devenv.port_open(port):
        raise SystemExit(f"port {port} is taken; stop whatever listens there and run `make bench` again")
    proc = subprocess.Popen(
        args, cwd=ROOT, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True
    )
    devenv.wait_for(port, args[0], log)
    return proc


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


BENCH_REDIS_DB = 15


def redis_url_with_db(url: str, db: int) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{db}", parts.query, parts.fragment))


def flush_redis(url: str) -> None:
    import redis  # the project's dependency; imported here so devenv's stdlib-only path stays so

    client = redis.Redis.from_url(url)
    try:
        client.flushdb()
    finally:
        client.close()


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


# --- the run ------------------------------------------------------------------------------------------------


async def measure(direct_port: int, proxy_port: int, api_key: str) -> dict[str, object]:
    small = {"messages": [{"role": "user", "content": "Say hello"}], "max_tokens": 16}
    direct = build_request(
        "/v1/chat/completions", {"model": "gpt-4o-mini", **small}, {"Authorization": "Bearer fake-bench"}
    )
    proxied = build_request(
        "/v1/chat/completions", {"model": "openai/gpt-4o-mini", **small}, {"Authorization": f"Bearer {api_key}"}
    )
    stream = {"stream": True, "messages": [{"role": "user", "content": "Tell me"}]}
    direct_stream = build_request(
        "/v1/chat/completions", {"model": "gpt-4o-mini", **stream}, {"Authorization": "Bearer fake-bench"}
    )
    proxied_stream = build_request(
        "/v1/chat/completions", {"model": "openai/gpt-4o-mini", **stream}, {"Authorization": f"Bearer {api_key}"}
    )
    out: dict[str, object] = {}
    print("warming up …", flush=True)
    await closed_loop(proxy_port, proxied, seconds=2, connections=8)
    await closed_loop(direct_port, direct, seconds=1, connections=8)
    for name, port, request in (("direct", direct_port, direct), ("proxy", proxy_port, proxied)):
        print(f"throughput {name} …", flush=True)
        r = await closed_loop(port, request, seconds=THROUGHPUT_SECONDS, connections=THROUGHPUT_CONNECTIONS)
        out[f"rps_{name}"] = r.completed / THROUGHPUT_SECONDS
        out[f"errors_{name}"] = r.errors
    for name, port, request in (("direct", direct_port, direct), ("proxy", proxy_port, proxied)):
        print(f"latency at {LATENCY_RATE}/s {name} …", flush=True)
        r = await open_loop(port, request, rate=LATENCY_RATE, seconds=LATENCY_SECONDS)
        out[f"lat_{name}"] = {p: pct(r.latencies, p) for p in (50, 95, 99)}
        out[f"lat_errors_{name}"] = r.errors
    for name, port, request in (("direct", direct_port, direct_stream), ("proxy", proxy_port, proxied_stream)):
        print(f"streaming ttfb {name} …", flush=True)
        values = await ttfb(port, request, n=TTFB_REQUESTS)
        out[f"ttfb_{name}"] = {p: pct(values, p) for p in (50, 95)}
    return out


def write_doc(r: dict[str, object], rss: tuple[int, int], requests_total: int) -> str:
    ld, lp = r["lat_direct"], r["lat_proxy"]
    td, tp = r["ttfb_direct"], r["ttfb_proxy"]
    assert isinstance(ld, dict) and isinstance(lp, dict) and isinstance(td, dict) and isinstance(tp, dict)
    added = {p: lp[p] - ld[p] for p in (50, 95, 99)}
    rps = float(r["rps_proxy"])  # type: ignore[arg-type]
    growth = rss[1] - rss[0]

    def ok(flag: bool) -> str:
        return "met" if flag else "**missed**"

    rows = [
        (
            "throughput at saturation, small non-streaming requests",
            f"{float(r['rps_direct']):,.0f} req/s",  # type: ignore[arg-type]
            f"{rps:,.0f} req/s",
            "",
            f"≥ 1,500 req/s per worker: {ok(rps >= 1500)}",
        ),
        *(
            (
                f"latency p{p} at {LATENCY_RATE} req/s",
                f"{ld[p]:.2f} ms",
                f"{lp[p]:.2f} ms",
                f"{added[p]:+.2f} ms",
                {50: f"≤ 1 ms: {ok(added[50] <= 1)}", 95: "", 99: f"≤ 5 ms: {ok(added[99] <= 5)}"}[p],
            )
            for p in (50, 95, 99)
        ),
        *(
            (f"streaming time to first byte p{p}", f"{td[p]:.2f} ms", f"{tp[p]:.2f} ms", f"{tp[p] - td[p]:+.2f} ms", "")
            for p in (50, 95)
        ),
        (
            f"proxy worker RSS before → after {requests_total:,} requests",
            "",
            f"{rss[0] / 1024:.1f} → {rss[1] / 1024:.1f} MiB",
            f"{growth / 1024:+.1f} MiB",
            f"flat: {ok(growth < 20 * 1024)}",
        ),
    ]
    header = "| measurement | direct to the fake provider | through the proxy | added by the proxy | target |"
    table = "\n".join([header, "|---|---|---|---|---|", *("| " + " | ".join(row) + " |" for row in rows)]) + "\n"
    machine = f"{cpu_model()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
    closed = f"{THROUGHPUT_CONNECTIONS} connections in a closed loop for {THROUGHPUT_SECONDS:.0f} s"
    opened = f"an open loop at {LATENCY_RATE} req/s for {LATENCY_SECONDS:.0f} s"
    text = f"""# Benchmarks

`make bench` (`scripts/bench.py`) measures, in one run, calling the bundled fake provider directly
and calling it through the proxy, with the proxy's whole hot path on: the key is resolved from the
in-process cache, the balance is reserved and settled in Redis (two Lua calls), the request is
priced from the catalog, and a usage event is appended to the Redis stream. No Postgres query
happens on the measured path (the proxy is warmed first). The bench workspace is on the Team plan (a 5%
BYOK fee), so every request reserves: the more expensive path. A request that cannot be charged (its own
key on the free plan) skips the reservation and is faster.

- Proxy: gunicorn with **one** uvicorn worker (uvloop, httptools), pinned to CPU 0.
- Fake provider: uvicorn (uvloop, httptools), one process; the load generator shares CPU 1 with it.
- Load generator: asyncio on uvloop, raw HTTP/1.1 keep-alive connections, precomputed requests.
  Throughput: {closed}. Latency: {opened}, measured from each request's
  scheduled send time (so queueing is counted).
  Streaming: {TTFB_REQUESTS} sequential `stream: true` requests, time to the first body bytes.
- Requests: `gpt-4o-mini`, one short user message; the fake answers at once (no simulated latency),
  so every millisecond measured is the stack's own.

## Results

Run on {datetime.now(tz=UTC):%Y-%m-%d %H:%M} UTC — {machine}.

{table}
## Reading the numbers

The machine has {os.cpu_count()} cores shared by the load generator, the fake provider, the proxy, Redis and
Postgres, so absolute numbers are lower than on a dedicated host; the difference between the two
columns, measured in the same run under the same conditions, is what the proxy costs. Throughput
through the proxy is bounded by one Python worker doing the full hot path (two Redis round trips per
request plus one upstream call); production runs one worker per core. A target marked **missed**
is a real finding, not noise to explain away: it is listed in the issue notes with what dominates.

Run it again with `make bench`; the script rewrites this file.

## What moved the numbers

- 2026-11-24, first run: 588 req/s through the proxy, +2.2 ms at p50, +11.8 ms at p99 (all three
  targets missed). A profile (py-spy) showed httpx/httpcore's connection pool dominating: it scans
  and polls every pooled connection on every request. The upstream client moved to aiohttp
  (`proxy/upstream.py`): 2,158 req/s, +1.0 ms p50, +2.0 ms p99.
- Same day: the usage event went onto the stream as one JSON field instead of ~50 string fields
  (redis-py spent most of the emission packing arguments): 2,411 req/s, +0.62 ms p50, +1.79 ms p99.
- Same day, after every model endpoint moved onto one shared lifecycle (`proxy/gateway.py`):
  `make bench` runs had drifted to +0.9…+1.3 ms at p50. An A/B on identical services showed no
  regression (before the refactor 2,340 req/s, +0.72 ms p50; after, 2,220 req/s, +0.60 ms). The
  drift came with the bench itself: each run left ~100k never-ingested usage events in the dev
  Redis (90k were there, a growing append-only file to replay and rewrite; the likely cause). The bench
  now gives the proxy its own Redis database, emptied before and after. Against the private Redis
  `make bench` uses (AOF, fsync every second, as production runs it for durability) p50 lands near
  +0.9 ms: the ≤ 1 ms target holds, with little room; profile before the next hot-path change.
- 2026-11-26, the meter hardened (issue 8: integer-checked Lua, sanitized usage events, key-shape
  check and bounded auth caches, output-cap bounds, a pricing guard). Interleaved runs of the previous
  commit and this one on the same machine: before 2,453 / 2,371 / 2,022 / 2,261 req/s and +0.83 /
  +0.63 / +0.69 / +1.17 ms p50; after 2,078 / 1,978 / 1,871 / 1,831 req/s and +0.94 / +0.92 / +1.03 /
  +1.05 ms. Throughput is about 15% lower; py-spy profiles taken at equal load have the same shape and
  account for about 3% more CPU (resolve +0.9 points, pricing guard +0.6, sanitizing +0.3, bounds +0.2),
  so part of the gap is unexplained and worth a closer profile. The scripts' integer checks cost no
  measurable Redis time. p50 is noise-limited on this VM (the previous commit missed the target in one
  run too). A blocking Redis pool, tried for the pool fix, cost ~10 µs per call and was not kept. The
  p50 target has no room left: the next hot-path change should start with the ideas in
  shared/perf-notes.md (one script for all checks before forwarding, batched usage emission). The last
  run of the session (the results above) also missed p99 (+6.4 ms, against +1.4…+2.0 ms in every other
  run): about 36 requests of the 12 s window were held ~6 ms or more, as one ~100 ms stall would do. No
  periodic work was added to the worker; the cause was not found and is worth a look with a profile.
- 2026-11-26, issue 9 (billing): on a faster VM, before any change, the same bench gave 2,598 / 2,598
  req/s, +0.83 / +0.86 ms p50, +1.73 / +1.66 ms p99. A request that cannot be charged (the workspace's
  own key on a zero-fee plan, the sign-up default) no longer reserves in Redis: with the bench workspace on
  the free plan, 3,557 req/s, +0.38 ms p50, +1.03 ms p99. `usage.cost` in every answer (spliced into the
  provider's bytes, or rewritten with orjson where the position is uncertain) costs ~2 µs per answer. The
  bench now runs on the Team plan, so it keeps measuring the reservation path (results above).
- 2026-11-26, issue 10 (request log, analytics, opt-in bodies): this session's VM is about 3.6 times slower
  than the last one: calling the fake provider *directly* gives 4,555–5,257 req/s here against 18,856
  before, so every proxy figure above is lower and the targets are missed. That is the machine, not the
  change: the previous commit (97b4fac), benched back to back with this one on this VM, gave 933 req/s,
  +1.42 ms p50, +5.89 ms p99; this commit 1,041 req/s, +1.44 ms p50, +3.93 ms p99. With bodies off the
  proxy adds one attribute check per request (`KeyContext.logs_bodies`); the bench workspace has them off.
  Numbers comparable with the earlier entries need a run on a machine like the last session's.
"""
    old = DOC.read_text() if DOC.exists() else ""
    marker = "<!-- dashboard bench:"  # scripts/bench_dashboard.py's section, kept as it is
    if marker in old:
        text = text.rstrip("\n") + "\n\n" + old[old.index(marker) :]
    DOC.write_text(text)
    return table


def main() -> int:
    services = devenv.Services()
    procs: list[subprocess.Popen[bytes]] = []
    cleanups: list[Callable[[], None]] = []
    logs = devenv.DEV / "bench"
    logs.mkdir(parents=True, exist_ok=True)
    try:
        values = devenv.write_env_file(services.up())
        env = {**os.environ, **values, "DJANGO_SETTINGS_MODULE": "config.settings.dev", "LOG_LEVEL": "WARNING"}
        devenv.manage(["migrate", "--noinput", "-v", "0"], env)
        devenv.manage(["load_price_catalog"], env, stdout=subprocess.DEVNULL)
        python = str(ROOT / ".venv" / "bin" / "python")
        fake = start([python, "-m", "proxy.fake_provider", "--port", str(FAKE_PORT)], env, FAKE_PORT, logs / "fake.log")
        procs.append(fake)
        seeded = devenv.manage(
            [
                "bootstrap_workspace",
                "--email",
                "bench@turnpike.local",
                "--workspace",
                "Bench",
                "--provider",
                "openai",
                "--provider-key",
                "fake-bench",
                "--provider-base-url",
                f"http://{HOST}:{FAKE_PORT}/v1",
                "--credit-usd",
                "1000000",
                "--plan",
                "team",  # a BYOK fee: every request reserves and settles (a free-plan request skips the reserve)
                "--key-name",
                "make bench",
                "--json",
            ],
            env,
            capture_output=True,
        )
        api_key = json.loads(seeded.stdout.strip().splitlines()[-1])["api_key"]
        gunicorn = str(ROOT / ".venv" / "bin" / "gunicorn")
        # The proxy gets a Redis database of its own, emptied before and after: the run appends ~100k
        # usage events that no worker ingests, and left in the dev database they pile up run after run
        # (a bigger AOF to load and rewrite, noisier numbers) and mix with `make dev`'s stream.
        bench_redis = redis_url_with_db(env["REDIS_URL"], BENCH_REDIS_DB)
        flush_redis(bench_redis)
        cleanups.append(lambda: flush_redis(bench_redis))
        proxy_env = {**env, "REDIS_URL": bench_redis}
        proxy = start(
            [
                gunicorn,
                "proxy.asgi:app",
                "--worker-class",
                "uvicorn_worker.UvicornWorker",
                "--workers",
                "1",
                "--bind",
                f"{HOST}:{PROXY_PORT}",
                "--log-level",
                "warning",
            ],
            proxy_env,
            PROXY_PORT,
            logs / "proxy.log",
        )
        procs.append(proxy)
        time.sleep(1.0)
        workers = children(proxy.pid)
        worker_pid = workers[0] if workers else proxy.pid
        if (os.cpu_count() or 1) >= 2:
            pin(worker_pid, {0})
            pin(fake.pid, {1})
            os.sched_setaffinity(0, {1})
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
        asyncio.run(
            closed_loop(
                PROXY_PORT,
                build_request(
                    "/v1/chat/completions",
                    {"model": "openai/gpt-4o-mini", "messages": [{"role": "user", "content": "warm"}]},
                    {"Authorization": f"Bearer {api_key}"},
                ),
                seconds=1,
                connections=4,
            )
        )
        rss_before = rss_kib(worker_pid)
        results = asyncio.run(measure(FAKE_PORT, PROXY_PORT, api_key))
        rss_after = rss_kib(worker_pid)
        proxied = float(results["rps_proxy"])  # type: ignore[arg-type]
        total = int(proxied * THROUGHPUT_SECONDS) + LATENCY_RATE * int(LATENCY_SECONDS) + TTFB_REQUESTS
        table = write_doc(results, (rss_before, rss_after), total)
        print("\n" + table)
        print(f"written to {DOC.relative_to(ROOT)}")
        errors = sum(int(v) for k, v in results.items() if "errors" in k)  # type: ignore[call-overload]
        if errors:
            print(f"warning: {errors} non-200 answers during the run; see .dev/bench/*.log", file=sys.stderr)
        return 0
    finally:
        for proc in procs:
            stop(proc)
        for cleanup in cleanups:
            with contextlib.suppress(Exception):
                cleanup()
        services.down()


if __name__ == "__main__":
    raise SystemExit(main())
