"""The proxy's configuration, read once from the environment (docs/configuration.md lists every
variable). The proxy does not import Django; it reads the same variables the web app does."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from contracts.balance import GENERATION_TTL_SECONDS

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/turnpike"
DEV_MASTER_KEY = "dev:ZGV2LW9ubHktbWFzdGVyLWtleS0zMi1ieXRlcyEhISE="  # same default as config/settings/base.py

DEFAULT_CONNECT_TIMEOUT = 5.0
DEFAULT_READ_TIMEOUT = 300.0  # between bytes from the provider; long generations stream slowly
DEFAULT_TOTAL_TIMEOUT = 600.0
DEFAULT_MAX_BODY_BYTES = 10 * 1024 * 1024
DEFAULT_AUTH_TTL = 10.0  # seconds an in-process entry lives even if an invalidation message is lost
DEFAULT_NEGATIVE_TTL = 2.0  # seconds an unknown key is remembered as unknown, in process
DEFAULT_REDIS_DOC_TTL = 300  # seconds a key/workspace document lives in Redis
# In-process caches are LRUs of at most this many entries (per worker process). A key entry is ~0.7 KB
# (20,000 measured at 14 MB); a workspace entry holds decrypted credentials and prices, a few KB each.
# Unknown keys (~0.25 KB each) have their own LRU, so a flood of random keys evicts only other unknown
# keys, never a working one.
DEFAULT_KEY_CACHE_SIZE = 20_000
DEFAULT_WORKSPACE_CACHE_SIZE = 5_000
DEFAULT_NEGATIVE_CACHE_SIZE = 10_000
# At most this many keys per worker may be waiting for Postgres at once (keys unknown in process and in
# Redis); one more gets 503 + Retry-After without touching Postgres, so a flood of distinct random keys
# queues a bounded amount of work behind the Store's pool (4 connections).
DEFAULT_MAX_PENDING_KEY_LOADS = 64
DEFAULT_MAX_CONNECTIONS = 1000
# Redis connections per worker (one per concurrent Redis call). Past it a request is refused with 503 "busy",
# never served as if Redis were down (that would decide on a stale balance).
DEFAULT_REDIS_MAX_CONNECTIONS = 1024
DEFAULT_DISCONNECT_USAGE_WAIT = 5.0  # seconds a stream is read on after its client left, for exact usage
DEFAULT_DASHBOARD_URL = "http://127.0.0.1:8000"  # same default as config/settings/base.py
# Seconds the settle script keeps each request's event in Redis for GET /v1/generation (contracts.balance);
# after that the answer comes from Postgres. About 0.75 KB of Redis memory per request (more with tags).
DEFAULT_GENERATION_TTL = GENERATION_TTL_SECONDS


def _float(name: str, default: float) -> float:
    value = os.environ.get(name, "")
    return float(value) if value else default


def _int(name: str, default: int) -> int:
    value = os.environ.get(name, "")
    return int(value) if value else default


def _bool(name: str, default: bool) -> bool:
    value = os.environ.get(name, "").strip().lower()
    if not value:
        return default
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise RuntimeError(f"environment variable {name} must be a boolean, got {value!r}")


def _url(name: str, default: str) -> str:
    value = (os.environ.get(name, "").strip() or default).rstrip("/")
    if not value.startswith(("http://", "https://")):
        raise RuntimeError(f"environment variable {name} must be an http(s) URL, got {value!r}")
    return value


def _load_dev_env_file() -> None:
    """Outside production, read what `make dev` wrote to .dev/env, as the Django settings do."""
    if os.environ.get("DJANGO_SETTINGS_MODULE", "").endswith("production"):
        return
    path = Path(__file__).resolve().parent.parent / ".dev" / "env"
    if not path.exists():
        return
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, _, value = line.partition("=")
            os.environ.setdefault(key.strip(), value.strip())


@dataclass(frozen=True, slots=True)
class ProxyConfig:
    redis_url: str = DEFAULT_REDIS_URL
    database_url: str = DEFAULT_DATABASE_URL
    master_key: str = DEV_MASTER_KEY
    retired_master_keys: tuple[str, ...] = ()
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    read_timeout: float = DEFAULT_READ_TIMEOUT
    total_timeout: float = DEFAULT_TOTAL_TIMEOUT
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    auth_ttl: float = DEFAULT_AUTH_TTL
    negative_ttl: float = DEFAULT_NEGATIVE_TTL
    redis_doc_ttl: int = DEFAULT_REDIS_DOC_TTL
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    redis_max_connections: int = DEFAULT_REDIS_MAX_CONNECTIONS
    disconnect_usage_wait: float = DEFAULT_DISCONNECT_USAGE_WAIT
    generation_ttl: int = DEFAULT_GENERATION_TTL
    # The web dashboard's public URL: the 402 links to <dashboard_url>/w/<workspace slug>/billing/
    dashboard_url: str = DEFAULT_DASHBOARD_URL
    key_cache_size: int = DEFAULT_KEY_CACHE_SIZE
    workspace_cache_size: int = DEFAULT_WORKSPACE_CACHE_SIZE
    negative_cache_size: int = DEFAULT_NEGATIVE_CACHE_SIZE
    max_pending_key_loads: int = DEFAULT_MAX_PENDING_KEY_LOADS
    # Connect to loopback/private/link-local provider addresses (checked at every new connection, so a
    # host re-pointed after its base URL was saved is still refused). Same variable as the web app;
    # from_env defaults it to true outside production (dev and tests run the fake provider on loopback).
    allow_private_provider_urls: bool = False
    spool_dir: Path = field(default_factory=lambda: Path(".dev/spool"))
    provider_base_urls: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_env(cls) -> ProxyConfig:
        _load_dev_env_file()
        production = os.environ.get("DJANGO_SETTINGS_MODULE", "").endswith("production")
        master_key = os.environ.get("TURNPIKE_MASTER_KEY", "")
        if not master_key:
            if production:
                raise RuntimeError("TURNPIKE_MASTER_KEY is required in production")
            master_key = DEV_MASTER_KEY
        retired = tuple(k.strip() for k in os.environ.get("TURNPIKE_MASTER_KEYS_RETIRED", "").split(",") if k.strip())
        overrides = {
            name[len("TURNPIKE_PROVIDER_BASE_URL_") :].lower(): value
            for name, value in os.environ.items()
            if name.startswith("TURNPIKE_PROVIDER_BASE_URL_") and value
        }
        return cls(
            redis_url=os.environ.get("REDIS_URL") or DEFAULT_REDIS_URL,
            database_url=os.environ.get("DATABASE_URL") or DEFAULT_DATABASE_URL,
            master_key=master_key,
            retired_master_keys=retired,
            connect_timeout=_float("TURNPIKE_PROXY_CONNECT_TIMEOUT", DEFAULT_CONNECT_TIMEOUT),
            read_timeout=_float("TURNPIKE_PROXY_READ_TIMEOUT", DEFAULT_READ_TIMEOUT),
            total_timeout=_float("TURNPIKE_PROXY_TOTAL_TIMEOUT", DEFAULT_TOTAL_TIMEOUT),
            max_body_bytes=_int("TURNPIKE_PROXY_MAX_BODY_BYTES", DEFAULT_MAX_BODY_BYTES),
            auth_ttl=_float("TURNPIKE_PROXY_AUTH_TTL", DEFAULT_AUTH_TTL),
            negative_ttl=_float("TURNPIKE_PROXY_NEGATIVE_TTL", DEFAULT_NEGATIVE_TTL),
            redis_doc_ttl=_int("TURNPIKE_PROXY_REDIS_DOC_TTL", DEFAULT_REDIS_DOC_TTL),
            max_connections=_int("TURNPIKE_PROXY_MAX_CONNECTIONS", DEFAULT_MAX_CONNECTIONS),
            redis_max_connections=_int("TURNPIKE_PROXY_REDIS_MAX_CONNECTIONS", DEFAULT_REDIS_MAX_CONNECTIONS),
            disconnect_usage_wait=_float("TURNPIKE_PROXY_DISCONNECT_USAGE_WAIT", DEFAULT_DISCONNECT_USAGE_WAIT),
            generation_ttl=_int("TURNPIKE_PROXY_GENERATION_TTL", DEFAULT_GENERATION_TTL),
            dashboard_url=_url("TURNPIKE_DASHBOARD_URL", DEFAULT_DASHBOARD_URL),
            key_cache_size=_int("TURNPIKE_PROXY_KEY_CACHE_SIZE", DEFAULT_KEY_CACHE_SIZE),
            workspace_cache_size=_int("TURNPIKE_PROXY_WORKSPACE_CACHE_SIZE", DEFAULT_WORKSPACE_CACHE_SIZE),
            negative_cache_size=_int("TURNPIKE_PROXY_NEGATIVE_CACHE_SIZE", DEFAULT_NEGATIVE_CACHE_SIZE),
            max_pending_key_loads=_int("TURNPIKE_PROXY_MAX_PENDING_KEY_LOADS", DEFAULT_MAX_PENDING_KEY_LOADS),
            allow_private_provider_urls=_bool("TURNPIKE_ALLOW_PRIVATE_PROVIDER_URLS", not production),
            spool_dir=Path(os.environ.get("TURNPIKE_PROXY_SPOOL_DIR") or ".dev/spool"),
            provider_base_urls=overrides,
        )
