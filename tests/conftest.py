"""Fixtures shared by every test package: the fake provider on a real socket, and a Redis client on the
settings' Redis with the usage stream emptied before and after."""

from __future__ import annotations

from collections.abc import Iterator

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


@pytest.fixture
def r() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(settings.REDIS_URL)
    client.delete(USAGE_STREAM)
    yield client
    client.delete(USAGE_STREAM)
    client.close()
