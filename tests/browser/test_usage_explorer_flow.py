"""Issue 10's promise, in a real browser against real processes: traffic through the proxy (the official
openai SDK) → the analytics page charts it for every range → a click on a model in the breakdown opens the
request log filtered to that model → a request's detail page → the CSV export holds exactly the rows the
filtered log shows."""

from __future__ import annotations

import csv
import io
import re

import openai
import pytest
import redis
from django.conf import settings

from billing.ingest import run_ingest
from billing.models import UsageEvent
from contracts.events import USAGE_STREAM
from tests.browser.test_every_page import sign_in
from tests.dashboard.conftest import SECRET_A, build_world
from tests.proxy.conftest import price_catalog, start_proxy  # noqa: F401 (fixtures)

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def download(page, link) -> bytes:  # type: ignore[no-untyped-def]
    with page.expect_download() as info:
        link.click()
    with open(info.value.path(), "rb") as fh:
        return fh.read()


def test_traffic_to_charts_to_filtered_log_to_detail_to_csv(page, live_server, fake_provider_url, start_proxy):  # noqa: F811
    # a usage stream left over by an earlier run may name this workspace's id (ids restart per test database)
    redis.Redis.from_url(settings.REDIS_URL).delete(USAGE_STREAM)
    world = build_world("Explorer", SECRET_A, fake_provider_url)
    proxy = start_proxy()
    sdk = openai.OpenAI(api_key=world.key_plaintext, base_url=proxy.base_url, max_retries=0, timeout=20)
    tagged = sdk.with_options(default_headers={"x-turnpike-metadata": '{"team": "search"}'})
    ask = [{"role": "user", "content": "hello"}]
    mini_ids = [
        tagged.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=ask, user=f"u{i % 2}").headers[
            "x-request-id"
        ]
        for i in range(4)
    ]
    streamed = tagged.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=ask, stream=True)
    mini_ids.append(streamed.headers["x-request-id"])
    assert [chunk for chunk in streamed.parse()]  # read to the end, as an app would
    other_ids = [
        sdk.chat.completions.with_raw_response.create(model="gpt-4o", messages=ask).headers["x-request-id"]
        for _ in range(2)
    ]
    proxy.drain()
    run_ingest()
    assert UsageEvent.objects.filter(workspace=world.workspace).count() == 7

    sign_in(page, live_server, world)
    slug = world.workspace.slug
    outside: list[str] = []
    page.on("request", lambda r: outside.append(r.url) if not r.url.startswith(live_server.url) else None)

    # the analytics page charts the traffic for every range (all of it is from the last minute)
    for key in ("1h", "24h", "7d", "30d"):
        page.goto(f"/w/{slug}/analytics/?range={key}")
        assert page.locator("#total-requests .current").inner_text().strip() == "7", key
        page.locator(".chart-box canvas").first.wait_for()  # Chart.js drew from our own static file
        assert page.locator(".chart-box canvas").count() >= 4, key
    assert not outside, f"requests left the site: {outside}"

    # the breakdown by model, 30 days: a click on gpt-4o-mini opens its requests
    row = page.locator("#breakdown-table tr", has=page.get_by_role("link", name="gpt-4o-mini", exact=True))
    assert re.search(r"\b5\b", row.inner_text())
    row.get_by_role("link", name="gpt-4o-mini", exact=True).click()
    page.wait_for_url(re.compile(rf"/w/{slug}/requests/\?.*model=gpt-4o-mini"))
    assert "range=30d" in page.url
    listed = [a.inner_text().strip() for a in page.locator("#request-log tbody a[href*='/requests/req_']").all()]
    assert sorted(listed) == sorted(mini_ids)

    # the detail page of one of them
    page.get_by_role("link", name=mini_ids[0]).click()
    page.wait_for_url(re.compile(rf"/requests/{mini_ids[0]}/"))
    detail = page.locator("main").inner_text()
    assert mini_ids[0] in detail and "gpt-4o-mini" in detail and "u0" in detail and "search" in detail
    page.go_back()

    # the CSV of the filtered log: exactly the rows the page lists, not the other model's
    body = download(page, page.get_by_role("link", name="Download CSV")).decode()
    rows = list(csv.DictReader(io.StringIO(body)))
    assert sorted(r["request_id"] for r in rows) == sorted(mini_ids)
    assert not set(other_ids) & {r["request_id"] for r in rows}
    assert {r["model_served"] for r in rows} == {"gpt-4o-mini"}
