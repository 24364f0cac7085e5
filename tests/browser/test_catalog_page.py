"""The public model catalog in a real browser: readable on a laptop and a phone, the page itself never wider
than the screen (the price table scrolls inside its own box), and searchable from the keyboard."""

from __future__ import annotations

import os

import pytest

from billing.catalog import price_catalog_load

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

SCREENSHOTS = os.environ.get("TURNPIKE_SCREENSHOTS")  # a directory: save what the test saw


@pytest.mark.parametrize(("width", "height"), [(1280, 800), (390, 844)])
def test_catalog_fits_the_screen_and_the_table_scrolls_in_its_box(page, width, height):
    price_catalog_load()
    page.set_viewport_size({"width": width, "height": height})
    page.goto("/models/?q=gemini-2.5&provider=google")
    page.wait_for_selector("table")
    overflow = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
    assert overflow <= 0, f"the page is {overflow}px wider than a {width}px screen"
    box = page.evaluate(
        "(() => { const b = document.querySelector('.table-scroll');"
        " return {client: b.clientWidth, scroll: b.scrollWidth, right: b.getBoundingClientRect().right}; })()"
    )
    assert box["right"] <= width
    if width < 800:
        assert box["scroll"] > box["client"]  # the wide table scrolls within its container
    assert page.get_by_role("row", name="gemini-2.5-pro").count() >= 1
    if SCREENSHOTS:
        page.screenshot(path=os.path.join(SCREENSHOTS, f"catalog-{width}.png"), full_page=True)


def test_search_from_the_keyboard(page):
    price_catalog_load()
    page.goto("/models/")
    search = page.get_by_role("textbox", name="Search")
    search.fill("claude-haiku-4-5")
    search.press("Enter")
    page.wait_for_url("**/models/?q=claude-haiku-4-5*")
    rows = page.locator("tbody tr")
    assert rows.count() >= 1
    assert all("claude-haiku-4-5" in text for text in rows.all_inner_texts())
    assert page.get_by_role("cell", name="$5.00").count() >= 1
