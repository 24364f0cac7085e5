"""The proxy checks at startup that its Redis keeps usage safe (docs/configuration.md, "Redis
requirements") and says so at WARNING when it does not, or when it cannot tell (CONFIG disabled, as on
managed Redis). It keeps serving either way."""

from __future__ import annotations

import logging
import time

import httpx
import pytest

from tests.redis_server import RedisServer


def warnings_logged(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and r.name == "turnpike.proxy"]


def wait_for_warnings(caplog, count: int) -> list[str]:
    deadline = time.monotonic() + 10
    while len(warnings_logged(caplog)) < count and time.monotonic() < deadline:
        time.sleep(0.05)
    return warnings_logged(caplog)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (
            ("--maxmemory-policy", "allkeys-lru", "--appendonly", "no"),
            [
                "Redis maxmemory-policy is 'allkeys-lru', Turnpike requires 'noeviction': an evicted balance hash",
                "Redis appendonly is 'no', Turnpike requires 'yes': a Redis restart loses the usage stream",
            ],
        ),
        (
            ("--rename-command", "CONFIG", ""),  # managed Redis
            ["could not check the Redis server settings (CONFIG GET refused"],
        ),
    ],
    ids=["evicting-and-no-aof", "config-disabled"],
)
def test_the_proxy_warns_at_startup_when_redis_may_lose_usage(start_proxy, tmp_path, caplog, args, expected):
    server = RedisServer(tmp_path / "redis", args=args).start()
    try:
        with caplog.at_level(logging.WARNING, logger="turnpike.proxy"):
            proxy = start_proxy(redis_url=server.url)
            logged = wait_for_warnings(caplog, len(expected))
            assert httpx.get(f"{proxy.url}/healthz").status_code == 200  # a warning, not a refusal
    finally:
        server.stop()
    assert len(logged) == len(expected), logged
    for message, start in zip(logged, expected, strict=True):
        assert message.startswith(start), message
        assert "docs/configuration.md" in message


def test_a_redis_run_as_required_gets_no_warning(start_proxy, tmp_path, caplog):
    server = RedisServer(tmp_path / "redis").start()  # noeviction + appendonly
    try:
        with caplog.at_level(logging.WARNING, logger="turnpike.proxy"):
            start_proxy(redis_url=server.url)
            time.sleep(1)  # the check runs right after startup
    finally:
        server.stop()
    assert not [m for m in warnings_logged(caplog) if "Redis" in m]
