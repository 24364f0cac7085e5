"""Every page fits the screen, on a laptop (1280 px) and a phone (390 px): the document is never wider than the
window (wide tables scroll inside their own box), and the first Tab lands on "Skip to content".

The workspace pages are taken from dashboard/urls.py (every route whose only argument is the workspace slug
and which answers a GET with HTML), so a new page is checked without anyone remembering to list it."""

from __future__ import annotations

import itertools
from datetime import timedelta

import pytest
from django.conf import settings
from django.db import transaction
from django.test import Client
from django.urls import URLPattern, reverse
from django.utils import timezone

from billing.catalog import price_catalog_load
from billing.models import LedgerEntry
from billing.services import billing_profile_update, ledger_grant_post, ledger_post
from billing.services.invoices import invoice_issue_for_topup
from contracts.providers import PROVIDERS
from dashboard.urls import urlpatterns
from tests.billing.docsupport import Ev, paid_topup, post_usage_batch
from tests.dashboard.conftest import SECRET_A, World, build_world

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

WIDTHS = [(1280, 800), (390, 844)]
PUBLIC_PAGES = ["/", "/accounts/login/", "/accounts/signup/", "/accounts/password/reset/", "/models/"]
SIGNED_IN_PAGES = ["/workspaces/new/", "/models/"]
# the workspace pages a person must be able to use on a phone; the route list below must contain them all
MUST_HAVE = {
    "overview",
    "credentials",
    "keys",
    "connect",
    "members",
    "settings",
    "audit",
    "billing",
    "billing_history",
    "billing_profile",
}


def workspace_pages(slug: str) -> dict[str, str]:
    """{route name: URL} for every dashboard route that takes only the workspace slug."""
    pages = {}
    for pattern in urlpatterns:
        if isinstance(pattern, URLPattern) and set(pattern.pattern.converters) == {"slug"} and pattern.name:
            pages[pattern.name] = reverse(f"dashboard:{pattern.name}", kwargs={"slug": slug})
    return pages


def one_of_everything(fake_provider_url: str) -> World:
    """A workspace with a provider key, a gateway key, a pending invitation, a second member, credit, a paid
    top-up with its invoice, a billing profile and usage with long model names (the widest tables)."""
    price_catalog_load()
    world = build_world("Everything Inc", SECRET_A, fake_provider_url)
    ws = world.workspace
    ledger_grant_post(workspace=ws, amount_usd="5", idempotency_key="every-page-grant", acting_user=world.owner)
    topup = paid_topup(ws, cents=2_500, user=world.owner)
    with transaction.atomic():
        ledger_post(
            workspace_id=ws.pk,
            kind=LedgerEntry.Kind.TOPUP,
            amount_nanos=topup.amount_nanos,
            idempotency_key=f"every-page-topup-{topup.pk}",
            acting_user=world.owner,
        )
        invoice_issue_for_topup(topup=topup)
    billing_profile_update(
        workspace=ws,
        acting_user=world.owner,
        data={"legal_name": "Everything Incorporated B.V.", "country": "NL", "address": "Keizersgracht 1\nAmsterdam"},
    )
    now = timezone.now() - timedelta(minutes=5)
    events = [
        Ev("openai", "gpt-4o-mini", "byok", input=1200, output=340, charge_nanos=1_234_567),
        Ev("openrouter", "meta-llama/llama-3.3-70b-instruct-with-a-long-name", "byok", input=98_765, output=43_210),
        Ev("anthropic", "claude-haiku-4-5", "managed", input=5, output=7, charge_nanos=99),
    ]
    post_usage_batch(ws, world.key, events, at=now)
    return world


def sign_in(page, live_server, world: World) -> None:  # type: ignore[no-untyped-def]
    client = Client()
    client.force_login(world.owner)
    cookie = client.cookies[settings.SESSION_COOKIE_NAME]
    page.context.add_cookies([{"name": cookie.key, "value": cookie.value, "url": live_server.url}])


def overflow_of(page, url: str) -> tuple[int, int, int]:  # type: ignore[no-untyped-def]
    response = page.goto(url)
    assert response is not None and response.ok, f"{url} answered {response and response.status}"
    return response.status, *page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")


def assert_fits(page, pages: list[str]) -> None:  # type: ignore[no-untyped-def]
    wide = []
    for width, height in WIDTHS:
        page.set_viewport_size({"width": width, "height": height})
        for url in pages:
            _, scroll, inner = overflow_of(page, url)
            if scroll > inner:
                wide.append(f"{url} at {width}px is {scroll}px wide")
    assert not wide, "pages wider than the window: " + "; ".join(wide)


def assert_skip_link_first(page, url: str) -> None:  # type: ignore[no-untyped-def]
    page.goto(url)
    page.keyboard.press("Tab")
    focused = page.evaluate(
        "(() => { const a = document.activeElement;"
        " return {text: a.textContent.trim(), href: a.getAttribute('href'),"
        " visible: a.getBoundingClientRect().height > 0}; })()"
    )
    assert focused == {"text": "Skip to content", "href": "#content", "visible": True}, f"first Tab on {url}: {focused}"
    assert page.locator("main#content").count() == 1
    page.keyboard.press("Enter")
    assert page.evaluate("location.hash") == "#content"


def test_landing_page_tells_a_visitor_what_turnpike_is_and_how_to_start(page, live_server):
    response = page.goto("/")
    assert response is not None and response.status == 200 and page.url == f"{live_server.url}/"
    main = page.locator("main#content")
    assert "LLM gateway" in main.inner_text() and "base_url" in main.inner_text()
    steps = main.locator("ol.steps > li h3").all_inner_texts()
    assert steps == ["Add your provider keys", "Get a Turnpike key", "Change your base_url"]
    shown = main.locator("ul.providers li").all_inner_texts()
    for spec in PROVIDERS.values():
        if spec.type != "openai_compatible":
            assert spec.label in shown
    assert main.get_by_role("link", name="browse the model catalog").get_attribute("href") == "/models/"
    page.get_by_role("link", name="Sign up free").click()
    page.wait_for_url("**/accounts/signup/")
    page.goto("/")
    page.get_by_role("link", name="Log in").first.click()
    page.wait_for_url("**/accounts/login/")
    # landmarks, and headings that never skip a level: one h1, then h2s with h3s under them
    page.goto("/")
    assert page.locator("header").count() == 1 and page.locator("main").count() == 1
    assert page.locator("nav").count() >= 1
    levels = page.evaluate("[...document.querySelectorAll('h1,h2,h3,h4,h5,h6')].map(h => +h.tagName[1])")
    assert levels[0] == 1 and levels.count(1) == 1
    assert all(b - a <= 1 for a, b in itertools.pairwise(levels)), levels


def test_public_pages_fit_both_widths_and_start_with_a_skip_link(page, live_server):
    price_catalog_load()
    assert_fits(page, PUBLIC_PAGES)
    for url in PUBLIC_PAGES:
        assert_skip_link_first(page, url)


def test_every_workspace_page_fits_both_widths_and_starts_with_a_skip_link(page, live_server, fake_provider_url):
    world = one_of_everything(fake_provider_url)
    sign_in(page, live_server, world)
    routes = workspace_pages(world.workspace.slug)
    assert set(routes) >= MUST_HAVE, f"routes missing from dashboard/urls.py: {MUST_HAVE - set(routes)}"

    html_pages = []
    for name, url in routes.items():
        response = page.request.get(url, max_redirects=0)
        if response.status == 405 or "text/html" not in response.headers.get("content-type", ""):
            continue  # a POST-only action or a download (CSV), not a page
        assert response.ok, f"{name} ({url}) answered {response.status}"
        html_pages.append(url)
    assert {routes[name] for name in MUST_HAVE} <= set(html_pages)

    # a signed-in person going to / lands in their workspace, not on the landing page
    page.goto("/")
    assert page.url.endswith(routes["overview"])

    # the pages show what was built, so the widest content is really on them
    page.goto(routes["overview"])
    assert page.locator("#recent-requests").get_by_text("llama-3.3-70b-instruct-with-a-long-name").count() == 1

    assert_fits(page, html_pages + SIGNED_IN_PAGES)
    for url in [routes["overview"], routes["members"], "/workspaces/new/"]:
        assert_skip_link_first(page, url)


def test_phone_navigation_reaches_every_section_and_role_selects_are_readable(page, live_server, fake_provider_url):
    world = one_of_everything(fake_provider_url)
    sign_in(page, live_server, world)
    page.set_viewport_size({"width": 390, "height": 844})
    page.goto(reverse("dashboard:members", kwargs={"slug": world.workspace.slug}))
    nav = page.locator("aside.sidebar nav a")
    assert nav.count() >= 7
    for i in range(nav.count()):
        box = nav.nth(i).bounding_box()
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 390, nav.nth(i).inner_text()
        assert box["height"] >= 24, f"{nav.nth(i).inner_text()} is too small to tap"
    role = page.get_by_label(f"Role of {world.member.user.email}")
    box = role.bounding_box()
    assert box is not None and box["x"] + box["width"] <= 390
    # the selected role is shown in full, not clipped
    assert role.evaluate("s => s.scrollWidth <= s.clientWidth + 1 && s.clientWidth >= 90"), "role select is clipped"
