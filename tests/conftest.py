"""Fixtures shared by every test package: the fake provider on a real socket, and a Redis client on the
settings' Redis with the usage stream emptied before and after."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import redis
from django.conf import settings

from contracts.events import USAGE_STREAM
from proxy.fake_provider.app import FakeProvider
from tests.servers import ThreadedServer


@pytest.fixture(scope="session")
def fake_provider_url() -> Iterator[str]:
    """The fake provider (OpenAI/Anthropic/Gemini/Azure wire formats) at http://127.0.0.1:<port>.
    OpenAI-format base URL: this + "/v1". Valid keys start with `fake-`."""
    with ThreadedServer(FakeProvider()) as server:
        yield server.url


@pytest.fixture(scope="session", autouse=True)
def _no_redis_state_of_earlier_runs() -> None:
    """Each run's test database starts its ids at 1, so a balance hash or cached document an earlier run
    left in the same Redis would belong to this run's workspace 1 (a balance hash's version would even
    win over the new one). Forget them before the first test."""
    client = redis.Redis.from_url(settings.REDIS_URL)
    with client:
        for pattern in ("tp:bal:*", "tp:ws:*", "tp:key:*", "tp:gen:*", "tp:infl:*", "tp:infla:*"):
            keys = list(client.scan_iter(match=pattern, count=1000))
            for start in range(0, len(keys), 500):
                client.delete(*keys[start : start + 500])


@pytest.fixture
def r() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(settings.REDIS_URL)
    client.delete(USAGE_STREAM)
    yield client
    client.delete(USAGE_STREAM)
    client.close()


@pytest.fixture
def standard_plans(db: None) -> None:
    """The plans migration 0006 creates (Free BYOK as the default, Team), again: a transactional test
    elsewhere in the run may have flushed them."""
    import importlib

    from django.apps import apps

    importlib.import_module("billing.migrations.0006_billing_accounts").create_plans(apps, None)


STRIPE_KEY = "sk_test_turnpike_tests"
STRIPE_WEBHOOK_SECRET = "whsec_turnpike_tests"


@pytest.fixture(scope="session")
def fake_stripe_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The bundled fake Stripe (billing/fake_stripe) as a process of its own."""
    import sys

    from tests.servers import free_port, process

    port = free_port()
    args = [sys.executable, "-m", "billing.fake_stripe", "--port", str(port), "--secret-key", STRIPE_KEY]
    args += ["--webhook-secret", STRIPE_WEBHOOK_SECRET, "--retry-delays", "0.1,0.2,0.4"]
    log_path = tmp_path_factory.mktemp("fake_stripe") / "fake_stripe.log"
    with process(args, port=port, log_path=log_path, env={"FAKE_STRIPE_WEBHOOK_URL": ""}):
        yield f"http://127.0.0.1:{port}"


@pytest.fixture
def stripe_fake(fake_stripe_url: str, live_server: Any, settings: Any, standard_plans: None) -> Iterator[Any]:
    """The fake Stripe, reset, delivering signed webhooks to this test's live server; Django's settings
    pointed at it. Yields an httpx client on the fake (its /_fake/ control endpoints)."""
    import httpx

    settings.STRIPE_SECRET_KEY = STRIPE_KEY
    settings.STRIPE_WEBHOOK_SECRET = STRIPE_WEBHOOK_SECRET
    settings.STRIPE_API_BASE = fake_stripe_url
    with httpx.Client(base_url=fake_stripe_url, timeout=10) as client:
        client.post("/_fake/reset").raise_for_status()
        client.post(
            "/_fake/config",
            json={"webhook_url": f"{live_server.url}/stripe/webhook/", "webhook_secret": STRIPE_WEBHOOK_SECRET},
        ).raise_for_status()
        yield client
