"""The proxy's key cache under hostile and unlucky conditions (proxy/auth.py states the protocol).

- A string that is not shaped like a Turnpike key is refused without a cache entry, Redis or Postgres.
- An unknown key is remembered (in process, then in Redis) so repeating it costs no Postgres query and
  no Redis write; 10,000 random keys leave the in-process caches within their bounds; while Postgres
  is stuck, only a bounded number of unknown keys wait for it and the rest get 503 at once.
- The revocation race: a load that read the key row (or the workspace's credentials) before the change
  committed, and writes after the web app's tombstone, leaves the key refused / the credential unused,
  in Redis, in that worker's memory, and for any proxy that starts afterwards. The loading steps are
  driven in that order against the real Redis and Postgres, then a real proxy is asked over a socket.
- SSRF: a provider host that resolves to loopback is refused when the proxy connects (502), unless the
  deployment allows private provider URLs.
"""

from __future__ import annotations

import asyncio
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterator

import httpx
import openai
import psycopg
import pytest
import redis
import redis.asyncio as aioredis
from django.conf import settings

from contracts import crypto
from contracts.cachekeys import (
    GATEWAY_KEY_PREFIX,
    GATEWAY_KEY_RANDOM_BYTES,
    TOMBSTONE,
    WORKSPACE_EPOCH_KEY,
    hash_token,
    key_doc_key,
    looks_like_gateway_key,
    workspace_doc_key,
)
from proxy.auth import Found, KeyResolver, Load
from proxy.store import Store
from tenants.cache import invalidate_all_workspaces_on_commit
from tenants.services import gateway_key_revoke, provider_credential_remove
from tests.proxy.conftest import RunningProxy, Tenant, running_database_url
from tests.servers import run_async

pytestmark = pytest.mark.django_db(transaction=True)

HI = [{"role": "user", "content": "hi"}]
MODEL = "openai/gpt-4o-mini"


def random_key() -> str:
    """Well-formed, and known to no database."""
    return GATEWAY_KEY_PREFIX + secrets.token_urlsafe(GATEWAY_KEY_RANDOM_BYTES)


def status_of(proxy: RunningProxy, key: str) -> int:
    response = httpx.post(
        f"{proxy.base_url}/chat/completions",
        json={"model": MODEL, "messages": HI},
        headers={"authorization": f"Bearer {key}"},
        timeout=10,
    )
    if response.status_code == 401:
        assert response.json()["error"]["code"] == "invalid_api_key"
    return response.status_code


def postgres_queries(proxy: RunningProxy) -> int:
    assert proxy.app.rt is not None
    return proxy.app.rt.store.queries


def cache_sizes(proxy: RunningProxy) -> dict[str, int]:
    assert proxy.app.rt is not None
    return proxy.app.rt.resolver.cache_sizes()


class RedisMonitor:
    """Every command the Redis server runs in the test's database while the block runs (MONITOR), read
    on a raw connection so that other databases' binary payloads cannot trip a parser."""

    def __init__(self, r: redis.Redis) -> None:
        kwargs = r.connection_pool.connection_kwargs
        self._db = int(kwargs.get("db", 0))
        self._conn = redis.Connection(host=kwargs.get("host", "127.0.0.1"), port=kwargs.get("port", 6379))
        self._r = r
        self._sentinel = f"monitor-end-{secrets.token_hex(8)}"
        self._thread = threading.Thread(target=self._read, daemon=True)
        self.lines: list[str] = []

    def _read(self) -> None:
        while True:
            line = self._conn.read_response(disable_decoding=True)
            text = line.decode("utf-8", "replace") if isinstance(line, bytes) else str(line)
            if self._sentinel in text:
                return
            if f"[{self._db} " in text:
                self.lines.append(text)

    def __enter__(self) -> RedisMonitor:
        self._conn.connect()
        self._conn.send_command("MONITOR")
        assert self._conn.read_response() in (b"OK", "OK")
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._r.echo(self._sentinel)
        self._thread.join(timeout=10)
        self._conn.disconnect()
        assert not self._thread.is_alive(), "MONITOR never saw its sentinel"

    def mentioning(self, text: str) -> list[str]:
        return [line for line in self.lines if text in line]


# --- shape check, negative cache, bounds -------------------------------------------------------------------


def test_keys_made_by_the_web_app_have_the_shape_the_proxy_checks(tenant: Tenant) -> None:
    assert looks_like_gateway_key(tenant.plaintext)
    assert not looks_like_gateway_key(tenant.plaintext[:-1])
    assert not looks_like_gateway_key(tenant.plaintext + "A")
    assert not looks_like_gateway_key(tenant.plaintext[:-1] + "=")


MALFORMED = [
    "sk-proj-an-openai-key",
    "tpk_live_short",
    GATEWAY_KEY_PREFIX + "!" * 43,
    GATEWAY_KEY_PREFIX + "A" * 44,
    "tpk_test_" + "A" * 43,
    GATEWAY_KEY_PREFIX + "é" * 43,
    "x" * 5000,
]


def test_malformed_keys_touch_no_cache_no_redis_and_no_postgres(
    proxy: RunningProxy, tenant: Tenant, r: redis.Redis
) -> None:
    assert status_of(proxy, tenant.plaintext) == 200  # the proxy is warm and working
    queries, sizes = postgres_queries(proxy), cache_sizes(proxy)

    with RedisMonitor(r) as monitor:
        for key in MALFORMED * 3:
            response = httpx.post(
                f"{proxy.base_url}/chat/completions",
                json={"model": MODEL, "messages": HI},
                headers=[(b"authorization", f"Bearer {key}".encode())],  # bytes: some are not ASCII
                timeout=10,
            )
            assert response.status_code == 401
            assert response.json()["error"]["code"] == "invalid_api_key"
            assert "not a Turnpike key" in response.json()["error"]["message"]

    assert monitor.mentioning("tp:key:") == []
    for key in MALFORMED:
        assert monitor.mentioning(hash_token(key)) == []
    assert postgres_queries(proxy) == queries
    assert cache_sizes(proxy) == sizes


def test_a_repeated_unknown_key_costs_no_postgres_query_and_no_redis_write(
    start_proxy: Callable[..., RunningProxy], tenant: Tenant, r: redis.Redis
) -> None:
    first = start_proxy()
    unknown = random_key()
    name = key_doc_key(hash_token(unknown))

    before = postgres_queries(first)
    assert status_of(first, unknown) == 401
    assert postgres_queries(first) == before + 1  # one lookup: the key really is unknown
    assert r.get(name) == b'{"missing":true}'  # remembered in Redis too, briefly
    assert 0 < r.ttl(name) <= 30

    with RedisMonitor(r) as monitor:
        for _ in range(20):
            assert status_of(first, unknown) == 401
    assert postgres_queries(first) == before + 1
    assert monitor.mentioning(name) == []  # answered from the worker's memory: no Redis at all

    # Another worker (a fresh in-process cache) finds the Redis entry: a read, no write, no Postgres.
    second = start_proxy()
    before_second = postgres_queries(second)
    with RedisMonitor(r) as monitor:
        for _ in range(5):
            assert status_of(second, unknown) == 401
    assert postgres_queries(second) == before_second
    touching = monitor.mentioning(name)
    assert touching and all('"GET"' in line for line in touching), touching


async def raw_get_statuses(port: int, path: str, keys: list[str], *, connections: int = 16) -> list[int]:
    """GET `path` once per key over a few keep-alive connections, as a minimal HTTP/1.1 client (a full
    client would spend more CPU than the proxy under test on 10,000 requests)."""
    statuses: list[int] = []

    async def one_connection(chunk: list[str]) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            for key in chunk:
                writer.write(f"GET {path} HTTP/1.1\r\nhost: proxy\r\nauthorization: Bearer {key}\r\n\r\n".encode())
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    int(line.split(b":", 1)[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                )
                await reader.readexactly(length)
                statuses.append(int(head.split(b" ", 2)[1]))
        finally:
            writer.close()

    await asyncio.gather(*(one_connection(keys[i::connections]) for i in range(connections)))
    return statuses


def test_ten_thousand_random_keys_stay_within_the_cache_bounds(
    start_proxy: Callable[..., RunningProxy], tenant: Tenant, r: redis.Redis
) -> None:
    bound = 500
    # entries outlive the flood, so that a missing one could only have been evicted
    proxy = start_proxy(negative_cache_size=bound, auth_ttl=600.0, negative_ttl=600.0)
    assert proxy.app.rt is not None
    resolver = proxy.app.rt.resolver
    assert status_of(proxy, tenant.plaintext) == 200  # a working key, now cached in process
    floor = resolver._floor
    keys = [random_key() for _ in range(10_000)]

    statuses = run_async(raw_get_statuses(proxy.server.port, "/v1/models", keys))
    assert statuses == [401] * len(keys)
    sizes = resolver.cache_sizes()
    assert sizes["unknown_keys"] <= bound
    assert sizes["keys"] <= 1  # unknown keys have an LRU of their own: they never take a working key's place
    if resolver._floor == floor:  # (on a Redis shared with other suites, their "all" message may clear it)
        assert resolver._keys.get(tenant.key.key_hash)[0]
    queries = postgres_queries(proxy)
    assert status_of(proxy, tenant.plaintext) == 200
    assert postgres_queries(proxy) == queries  # from memory or Redis: no Postgres for a working key
    r.delete(*(key_doc_key(hash_token(key)) for key in keys))


def test_while_postgres_is_stuck_only_a_bounded_number_of_unknown_keys_wait_for_it(
    start_proxy: Callable[..., RunningProxy], tenant: Tenant
) -> None:
    proxy = start_proxy(max_pending_key_loads=2)
    assert proxy.app.rt is not None
    resolver = proxy.app.rt.resolver
    assert status_of(proxy, tenant.plaintext) == 200  # warm: from now on served from memory
    waiting: list[int] = []
    threads = [threading.Thread(target=lambda: waiting.append(status_of(proxy, random_key()))) for _ in range(2)]
    # Another connection holds an exclusive lock on the key table: every key lookup in Postgres waits,
    # as it would behind a stuck or overloaded database.
    with psycopg.connect(running_database_url()) as conn:
        conn.execute("LOCK TABLE tenants_gatewaykey IN ACCESS EXCLUSIVE MODE")
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 5
        while resolver.pending_key_loads < 2:
            assert time.monotonic() < deadline, "the two unknown keys never reached Postgres"
            time.sleep(0.01)

        response = httpx.get(f"{proxy.base_url}/models", headers={"authorization": f"Bearer {random_key()}"})
        assert response.status_code == 503
        assert response.headers["retry-after"] == "1"
        assert resolver.pending_key_loads == 2  # the third key queued nothing
        assert status_of(proxy, tenant.plaintext) == 200  # the warm path needs no Postgres
        conn.rollback()

    for thread in threads:
        thread.join(timeout=10)
    assert waiting == [401, 401]
    assert resolver.pending_key_loads == 0


# --- the revocation race ------------------------------------------------------------------------------------


class Worker:
    """One proxy worker's key resolver on its own event loop, against the real Redis and Postgres, with
    its invalidation listener running whenever the loop runs, so the test can stop between steps."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.store = Store(running_database_url())
        self.redis = aioredis.Redis.from_url(settings.REDIS_URL)
        self.resolver = KeyResolver(
            redis=self.redis,
            store=self.store,
            keyring=crypto.keyring_from_values(
                settings.TURNPIKE_MASTER_KEY, tuple(settings.TURNPIKE_MASTER_KEYS_RETIRED)
            ),
            auth_ttl=10.0,
            negative_ttl=2.0,
            redis_doc_ttl=300,
        )
        ready = asyncio.Event()
        self.listener = self.loop.create_task(self.resolver.listen_for_invalidations(on_ready=ready.set))
        self.run(asyncio.wait_for(ready.wait(), 5))

    def run(self, coroutine):  # type: ignore[no-untyped-def]
        return self.loop.run_until_complete(coroutine)

    def hear_invalidation(self, load: Load, ident: object) -> None:
        """Let the listener apply the message the web app just published about `ident` (("k", hash) or
        ("w", id)), or an "all", after `load` began."""

        async def wait() -> None:
            deadline = time.monotonic() + 5
            while not self.resolver._stale(ident, load):
                assert time.monotonic() < deadline, "the invalidation never arrived"
                await asyncio.sleep(0.01)

        self.run(wait())

    def close(self) -> None:
        self.listener.cancel()
        self.run(asyncio.gather(self.listener, return_exceptions=True))
        self.run(self.store.close())
        self.run(self.redis.aclose())
        self.loop.close()


@pytest.fixture
def worker() -> Iterator[Worker]:
    w = Worker()
    yield w
    w.close()


def test_a_load_that_read_the_key_before_the_revoke_cannot_bring_it_back(
    worker: Worker, tenant: Tenant, r: redis.Redis, start_proxy: Callable[..., RunningProxy]
) -> None:
    resolver, key_hash = worker.resolver, tenant.key.key_hash
    name = key_doc_key(key_hash)

    # P0-P2: this worker misses, finds nothing in Redis, reads the row while the key is still live.
    load = resolver._begin()
    found, _, _ = worker.run(resolver._read(name))
    assert found is Found.NOTHING
    doc = worker.run(resolver._key_doc_from_store(key_hash))
    assert doc is not None and doc["revoked"] is False

    # The revoke commits; the web app tombstones the document and publishes; the listener applies it.
    gateway_key_revoke(key=tenant.key, acting_user=tenant.owner)
    assert r.get(name) == TOMBSTONE
    worker.hear_invalidation(load, ("k", key_hash))

    # P3, P4 of the stale load: neither Redis nor this worker's memory takes the old document.
    assert worker.run(resolver._fill(name, doc, load, ttl=300)) is False
    assert r.get(name) == TOMBSTONE
    resolver._remember_key(key_hash, doc, load)
    assert worker.run(resolver.resolve(tenant.plaintext)) is None
    assert r.get(name) == TOMBSTONE  # a tombstone makes the reload read Postgres, and not fill Redis

    # Any proxy worker that starts now refuses the key.
    assert status_of(start_proxy(), tenant.plaintext) == 401


def test_a_stale_document_written_before_the_tombstone_is_overwritten(
    worker: Worker, tenant: Tenant, r: redis.Redis, start_proxy: Callable[..., RunningProxy]
) -> None:
    resolver, key_hash = worker.resolver, tenant.key.key_hash
    name = key_doc_key(key_hash)

    load = resolver._begin()
    assert worker.run(resolver._read(name))[0] is Found.NOTHING
    doc = worker.run(resolver._key_doc_from_store(key_hash))
    assert worker.run(resolver._fill(name, doc, load, ttl=300)) is True  # P3 wins the race to Redis
    assert r.get(name) != TOMBSTONE

    gateway_key_revoke(key=tenant.key, acting_user=tenant.owner)
    worker.hear_invalidation(load, ("k", key_hash))
    assert r.get(name) == TOMBSTONE  # the web app's write replaced it

    resolver._remember_key(key_hash, doc, load)  # P4 after the message: not stored
    assert worker.run(resolver.resolve(tenant.plaintext)) is None
    assert status_of(start_proxy(), tenant.plaintext) == 401


def test_a_load_that_read_a_removed_credential_cannot_bring_it_back(
    worker: Worker, tenant: Tenant, r: redis.Redis, start_proxy: Callable[..., RunningProxy]
) -> None:
    resolver, ws = worker.resolver, tenant.workspace.pk
    name = workspace_doc_key(ws)

    load = resolver._begin()
    found, _, epoch = worker.run(resolver._read(name, epoch=True))
    assert found is Found.NOTHING
    doc = worker.run(resolver._workspace_doc_from_store(ws))
    assert [c["id"] for c in doc["credentials"]] == [tenant.credential.pk]

    provider_credential_remove(credential=tenant.credential, acting_user=tenant.owner)
    assert r.get(name) == TOMBSTONE
    worker.hear_invalidation(load, ("w", ws))

    assert worker.run(resolver._fill(name, doc, load, ttl=300, epoch=epoch)) is False
    assert r.get(name) == TOMBSTONE
    resolver._remember_workspace(ws, resolver._decrypt_workspace(doc), load)
    assert worker.run(resolver.workspace(ws)).credentials == ()

    proxy = start_proxy()
    with (
        openai.OpenAI(base_url=proxy.base_url, api_key=tenant.plaintext, max_retries=0) as sdk,
        pytest.raises(openai.NotFoundError),
    ):
        sdk.chat.completions.create(model=MODEL, messages=HI)


def test_a_platform_wide_change_refuses_fills_under_way_and_tombstones_every_document(
    worker: Worker, make_tenant: Callable[..., Tenant], r: redis.Redis
) -> None:
    resolver = worker.resolver
    cached, loading = make_tenant(), make_tenant()
    worker.run(resolver.workspace(cached.workspace.pk))  # filled: a document in Redis
    assert r.get(workspace_doc_key(cached.workspace.pk)) not in (None, TOMBSTONE)

    name = workspace_doc_key(loading.workspace.pk)
    load = resolver._begin()
    found, _, epoch = worker.run(resolver._read(name, epoch=True))
    assert found is Found.NOTHING
    doc = worker.run(resolver._workspace_doc_from_store(loading.workspace.pk))

    epoch_before = r.get(WORKSPACE_EPOCH_KEY)
    invalidate_all_workspaces_on_commit()  # outside a transaction: runs now, as after a commit
    worker.hear_invalidation(load, ("all",))  # no key or workspace is named so: only "all" makes it stale
    assert r.get(WORKSPACE_EPOCH_KEY) != epoch_before
    assert r.get(workspace_doc_key(cached.workspace.pk)) == TOMBSTONE

    assert worker.run(resolver._fill(name, doc, load, ttl=300, epoch=epoch)) is False  # the epoch moved
    assert r.get(name) is None
    assert resolver.cache_sizes()["workspaces"] == 0


# --- SSRF at connect time -------------------------------------------------------------------------------------


def test_a_provider_host_that_resolves_to_loopback_is_refused_when_connecting(
    make_tenant: Callable[..., Tenant], start_proxy: Callable[..., RunningProxy], fake_provider_url: str
) -> None:
    # Saved while the host was acceptable (the web app allows private URLs in tests): as if its DNS
    # had been re-pointed at 127.0.0.1 afterwards.
    assert {info[4][0] for info in socket.getaddrinfo("localhost", 80, type=socket.SOCK_STREAM)} & {"127.0.0.1"}
    by_name = make_tenant(base_url=fake_provider_url.replace("127.0.0.1", "localhost") + "/v1")
    by_address = make_tenant()  # http://127.0.0.1:<port>/v1: a literal address is checked too

    guarded = start_proxy(allow_private_provider_urls=False)
    for tenant in (by_name, by_address):
        started = time.monotonic()
        with (
            openai.OpenAI(base_url=guarded.base_url, api_key=tenant.plaintext, max_retries=0, timeout=10) as sdk,
            pytest.raises(openai.InternalServerError) as caught,
        ):
            sdk.chat.completions.create(model=MODEL, messages=HI)
        assert caught.value.status_code == 502
        assert caught.value.code == "upstream_address_internal"
        assert "internal address" in caught.value.message
        assert time.monotonic() - started < 5  # refused, not left to time out

    allowed = start_proxy(allow_private_provider_urls=True)
    for tenant in (by_name, by_address):
        with openai.OpenAI(base_url=allowed.base_url, api_key=tenant.plaintext, max_retries=0) as sdk:
            assert sdk.chat.completions.create(model=MODEL, messages=HI).choices
