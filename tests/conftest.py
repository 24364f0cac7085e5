"""Fixtures shared by every test package: the fake provider on a real socket."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from proxy.fake_provider.app import FakeProvider
from tests.servers import ThreadedServer


@pytest.fixture(scope="session")
def fake_provider_url() -> Iterator[str]:
    """The fake provider (OpenAI/Anthropic/Gemini/Azure wire formats) at http://127.0.0.1:<port>.
    OpenAI-format base URL: this + "/v1". Valid keys start with `fake-`."""
    with ThreadedServer(FakeProvider()) as server:
        yield server.url
