"""The "Connect your app" snippets, copied from the rendered page and run as a customer would, against a
real proxy and the fake provider: both the `openai` and the `anthropic` SDK snippet print an answer."""

from __future__ import annotations

import contextlib
import html
import io
import re

import pytest
from django.test import Client, override_settings

pytestmark = pytest.mark.django_db(transaction=True)


def snippet(page: str, name: str) -> str:
    match = re.search(rf'<code id="snippet-{name}">(.*?)</code>', page, re.S)
    assert match, f"no {name} snippet on the page"
    return html.unescape(match.group(1))


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
@pytest.mark.parametrize("name", ["python", "anthropic"])
def test_the_python_snippets_work_as_pasted(make_tenant, start_proxy, fake_provider_url, monkeypatch, provider, name):
    base_url = fake_provider_url if provider == "anthropic" else f"{fake_provider_url}/v1"
    tenant = make_tenant(provider=provider, base_url=base_url)
    proxy = start_proxy()
    browser = Client()
    browser.force_login(tenant.owner)
    with override_settings(TURNPIKE_PROXY_BASE_URL=proxy.base_url):
        page = browser.get(f"/w/{tenant.workspace.slug}/connect/").content.decode()
    code = snippet(page, name)
    monkeypatch.setenv("TURNPIKE_API_KEY", tenant.plaintext)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(code, f"snippet-{name}", "exec"), {})  # running what the page tells users to run
    assert len(printed.getvalue().split()) >= 3
