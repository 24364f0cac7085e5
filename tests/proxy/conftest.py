"""Fixtures for the proxy tests: the real proxy ASGI app on a real socket, a tenant built through the real
services (credential for the fake provider, gateway key, prepaid grant), and the official `openai` SDK.

The proxy reads Postgres through its own connection pool, so tests that drive it commit their data
(`transaction=True`) and point the proxy at pytest-django's test database.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import openai
import pytest
import redis
from django.conf import settings
from django.core.management import call_command
from django.db import connection

from billing.services import ledger_grant_post
from contracts import balance
from proxy.app import ProxyApp
from proxy.config import ProxyConfig
from tenants.cache import key_doc_key, workspace_doc_key
from tenants.models import GatewayKey, ProviderCredential, User, Workspace
from tenants.services import gateway_key_create, provider_credential_create, workspace_create
from tests.servers import ThreadedServer


def running_database_url() -> str:
    """The URL of the database pytest-django created for this run (what the proxy must read)."""
    params = connection.settings_dict
    host = params.get("HOST") or "127.0.0.1"
    port = params.get("PORT") or 5432
    auth = params.get("USER") or "postgres"
    if params.get("PASSWORD"):
        auth += f":{params['PASSWORD']}"
    return f"postgresql://{auth}@{host}:{port}/{params['NAME']}"


def proxy_config(spool_dir: Path, **overrides: object) -> ProxyConfig:
    values: dict[str, object] = {
        "redis_url": settings.REDIS_URL,
        "database_url": running_database_url(),
        "master_key": settings.TURNPIKE_MASTER_KEY,
        "spool_dir": spool_dir,
        "auth_ttl": 10.0,
        "connect_timeout": 2.0,
        "read_timeout": 10.0,
        "total_timeout": 20.0,
        # the fake provider listens on loopback; tests of the SSRF guard override this
        "allow_private_provider_urls": settings.TURNPIKE_ALLOW_PRIVATE_PROVIDER_URLS,
    }
    values.update(overrides)
    return ProxyConfig(**values)  # type: ignore[arg-type]


@pytest.fixture
def price_catalog(transactional_db: None) -> None:
    call_command("load_price_catalog", stdout=open("/dev/null", "w"))  # noqa: SIM115


@dataclass
class Tenant:
    owner: User
    workspace: Workspace
    credential: ProviderCredential
    key: GatewayKey
    plaintext: str

    def forget_redis_state(self, r: redis.Redis) -> None:
        """Workspace ids repeat across runs on a long-lived Redis: drop what an earlier run left."""
        ws = self.workspace.pk
        r.delete(balance.bal_key(ws), *balance.inflight_keys(ws), workspace_doc_key(ws), key_doc_key(self.key.key_hash))


@pytest.fixture
def make_tenant(
    transactional_db: None, price_catalog: None, fake_provider_url: str, r: redis.Redis
) -> Callable[..., Tenant]:
    def make(
        *, credit_usd: str | None = "10", provider: str = "openai", label: str = "", base_url: str | None = None
    ) -> Tenant:
        owner = User.objects.create_user(email=f"{uuid.uuid4().hex[:10]}@example.com", password="x" * 16)
        ws = workspace_create(name=f"Acme {uuid.uuid4().hex[:6]}", acting_user=owner)
        credential = provider_credential_create(
            workspace=ws,
            provider=provider,
            label=label,
            secret="fake-" + uuid.uuid4().hex,
            base_url=base_url if base_url is not None else f"{fake_provider_url}/v1",
            acting_user=owner,
        )
        if credit_usd is not None:
            ledger_grant_post(workspace=ws, amount_usd=credit_usd, idempotency_key=f"test-grant-{ws.pk}")
        key, plaintext = gateway_key_create(workspace=ws, name="test", acting_user=owner)
        tenant = Tenant(owner=owner, workspace=ws, credential=credential, key=key, plaintext=plaintext)
        tenant.forget_redis_state(r)
        return tenant

    return make


@pytest.fixture
def tenant(make_tenant: Callable[..., Tenant]) -> Tenant:
    return make_tenant()


class RunningProxy:
    def __init__(self, app: ProxyApp, server: ThreadedServer) -> None:
        self.app = app
        self.server = server

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def base_url(self) -> str:
        return f"{self.server.url}/v1"

    def drain(self, timeout: float = 5.0) -> None:
        """Wait until every request has finished (the client may see its response before the proxy has
        scheduled the usage event) and every event is written to Redis (or spooled)."""
        assert self.app.rt is not None
        deadline = time.monotonic() + timeout
        while (self.app.active_requests or self.app.rt.emitter._tasks) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not self.app.active_requests, "requests still running"
        assert not self.app.rt.emitter._tasks, "usage emission did not finish"


@pytest.fixture
def start_proxy(tmp_path: Path, price_catalog: None) -> Iterator[Callable[..., RunningProxy]]:
    """Start a proxy (after the test's data exists, so the catalog it loads at startup is complete)."""
    started: list[ThreadedServer] = []

    def start(**overrides: object) -> RunningProxy:
        app = ProxyApp(proxy_config(tmp_path / "spool", **overrides))
        server = ThreadedServer(app).__enter__()
        started.append(server)
        assert app.rt is not None
        deadline = time.monotonic() + 5
        while not app.rt.listener_ready.is_set():  # invalidations are heard from here on
            assert time.monotonic() < deadline, "proxy never subscribed to invalidations"
            time.sleep(0.01)
        return RunningProxy(app, server)

    yield start
    for server in started:
        server.__exit__(None, None, None)


@pytest.fixture
def proxy(start_proxy: Callable[..., RunningProxy]) -> RunningProxy:
    return start_proxy()


@pytest.fixture
def client(proxy: RunningProxy, tenant: Tenant) -> Iterator[openai.OpenAI]:
    """The official SDK, configured the way a customer would: base URL and key, nothing else."""
    with openai.OpenAI(base_url=proxy.base_url, api_key=tenant.plaintext, max_retries=0, timeout=20) as sdk:
        yield sdk
