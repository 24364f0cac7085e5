"""The analytics page in a real browser: charts drawn by Chart.js from our own static files (nothing leaves
localhost), switching ranges, a table behind every chart with the same numbers, and no sideways scrolling."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

import pytest
from django.urls import reverse

from billing.ingest import usage_ingest_batch
from contracts.events import UsageEvent
from tests.browser.test_every_page import sign_in
from tests.dashboard.conftest import SECRET_A, build_world

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def events(world, count: int) -> list[UsageEvent]:
    out = []
    base = datetime.now(tz=UTC) - timedelta(hours=2)
    for i in range(count):
        ms = int((base - timedelta(hours=i % 20)).timestamp() * 1000)
        status, code = (429, "rate_limited") if i % 7 == 0 else (200, "")
        out.append(
            UsageEvent(
                request_id=f"req_{uuid.uuid4().hex}",
                workspace_id=world.workspace.pk,
                key_id=world.key.pk,
                provider="openrouter",
                credential_id=world.credential.pk,
                credential_kind="byok",
                model_requested="meta-llama/llama-3.3-70b-instruct-with-a-long-name",
                model_served="meta-llama/llama-3.3-70b-instruct-with-a-long-name",
                status=status,
                error_code=code,
                input_tokens=100 + i,
                cached_input_tokens=20,
                output_tokens=30,
                reasoning_tokens=5,
                cost_nanos=1_234_567,
                charge_nanos=1_234_567,
                latency_ms=80 + 10 * i,
                ttfb_ms=30 + i,
                user=f"user-{i % 3}",
                started_at_ms=ms,
                finished_at_ms=ms + 80 + 10 * i,
            )
        )
    return out


def test_charts_draw_from_local_files_ranges_switch_and_tables_agree(page, live_server, fake_provider_url):
    world = build_world("Charts Inc", SECRET_A, fake_provider_url)
    usage_ingest_batch(events=events(world, 40))
    sign_in(page, live_server, world)
    outside: list[str] = []
    local = urlsplit(live_server.url).netloc
    page.on(
        "request",
        lambda r: (
            None if r.url.startswith(("data:", "blob:")) or urlsplit(r.url).netloc == local else outside.append(r.url)
        ),
    )
    scripts: list[str] = []
    page.on("response", lambda r: scripts.append(r.url) if r.url.endswith(".js") else None)

    url = reverse("dashboard:analytics", kwargs={"slug": world.workspace.slug})
    page.set_viewport_size({"width": 1280, "height": 900})
    page.goto(url)
    page.wait_for_function("document.querySelectorAll('.chart-box canvas').length === 7")
    assert any("/static/vendor/chartjs/chart.umd.min.js" in s for s in scripts)
    assert page.evaluate("typeof Chart") == "function"
    # each canvas is drawn (not blank) and named for screen readers
    for chart_id in ("spend", "requests", "tokens", "errors", "error-codes", "latency", "ttfb"):
        canvas = page.locator(f'.chart-box[data-chart="{chart_id}"] canvas')
        assert canvas.get_attribute("role") == "img" and "table below" in (canvas.get_attribute("aria-label") or "")
        assert canvas.bounding_box()["height"] > 100  # type: ignore[index]
    assert page.evaluate("Object.values(Chart.instances).length") == 7

    # the table behind the requests chart shows the same number as the totals
    requests_total = page.locator("#total-requests td.current").inner_text()
    assert requests_total == "40"
    page.locator("#chart-requests-title").locator("xpath=..").get_by_text("Show as table").click()
    table_total = page.locator("#table-requests tfoot td").last
    assert table_total.is_visible() and table_total.inner_text() == requests_total

    # switching the range: the page reloads for 7 days, by day
    page.get_by_role("navigation", name="Time range").get_by_role("link", name="Last 7 days").click()
    page.wait_for_url("**range=7d**")
    page.wait_for_function("document.querySelectorAll('.chart-box canvas').length === 7")
    assert page.locator('nav[aria-label="Time range"] a[aria-current="page"]').inner_text() == "Last 7 days"
    assert page.locator("#total-requests td.current").inner_text() == "40"
    assert page.locator("#table-spend tbody tr").count() == 7
    # and through the form, to the last hour (nothing there: zero)
    page.select_option("#range", "1h")
    page.get_by_role("button", name="Apply").click()
    page.wait_for_url("**range=1h**")
    assert page.locator("#total-requests td.current").inner_text() == "0"

    # the breakdown's model opens its requests
    page.goto(url + "?range=24h")
    link = page.locator("#breakdown-table tbody a").first
    assert link.inner_text() == "meta-llama/llama-3.3-70b-instruct-with-a-long-name"
    href = link.get_attribute("href") or ""
    assert href.startswith(reverse("dashboard:requests", kwargs={"slug": world.workspace.slug})) and "range=24h" in href
    assert "model=meta-llama" in href

    for width, height in ((1280, 800), (390, 844)):
        page.set_viewport_size({"width": width, "height": height})
        for query in ("", "?range=30d&breakdown=user"):
            page.goto(url + query)
            page.wait_for_function("document.querySelectorAll('.chart-box canvas').length === 7")
            scroll, inner = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
            assert scroll <= inner, f"{query or 'default'} at {width}px is {scroll}px wide"
    assert not outside, f"requests left localhost: {outside}"


def test_without_javascript_the_numbers_are_all_there(browser, live_server, fake_provider_url):
    world = build_world("No JS Inc", SECRET_A, fake_provider_url)
    usage_ingest_batch(events=events(world, 10))
    context = browser.new_context(base_url=live_server.url, java_script_enabled=False)
    page = context.new_page()
    try:
        sign_in(page, live_server, world)
        page.goto(reverse("dashboard:analytics", kwargs={"slug": world.workspace.slug}))
        assert page.locator(".chart-box canvas").count() == 0
        assert page.locator("#total-requests td.current").inner_text() == "10"
        assert page.locator("#table-requests tfoot td").last.inner_text() == "10"
        assert page.locator("#breakdown-table tbody tr").count() == 1
    finally:
        context.close()
