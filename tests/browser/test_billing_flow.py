"""Issue 9's promise, in a real browser against real processes: sign up → add a provider key → a gateway key →
the first request succeeds with $0 balance on the free plan; switch to a fee plan → 402 → Add credit → the
fake Stripe's hosted page → Pay → signed webhook → credited once → the request succeeds; the invoice appears
and downloads as PDF and CSV; a finance member downloads the monthly statement."""

from __future__ import annotations

import re

import openai
import pytest

from billing.models import Invoice, LedgerEntry
from tenants.models import Membership, User, Workspace
from tenants.roles import Role
from tests.browser.test_onboarding import PASSWORD, sign_up_and_verify
from tests.proxy.conftest import price_catalog, start_proxy  # noqa: F401 (fixtures)
from tests.servers import wait_until

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def download(page, link) -> bytes:  # type: ignore[no-untyped-def]
    with page.expect_download() as info:
        link.click()
    with open(info.value.path(), "rb") as fh:
        return fh.read()


def test_free_first_request_then_fee_plan_402_then_top_up_and_documents(
    page,
    browser,
    live_server,
    fake_provider_url,
    stripe_fake,
    start_proxy,  # noqa: F811
):
    sign_up_and_verify(page, "founder@example.com")
    page.goto("/workspaces/new/")
    page.fill("#id_name", "Billing Co")
    page.get_by_role("button", name="Create workspace").click()
    page.wait_for_url(re.compile(r"/w/billing-co/"))

    page.goto("/w/billing-co/credentials/")
    page.select_option("#id_provider", "openai")
    page.fill("#id_secret", "fake-billing-flow-key-7777")
    page.fill("#id_base_url", f"{fake_provider_url}/v1")
    page.get_by_role("button", name="Check and save").last.click()
    page.wait_for_load_state()
    page.goto("/w/billing-co/keys/")
    page.fill("#id_name", "app")
    page.get_by_role("button", name="Create key").click()
    plaintext = page.locator("#new-key-value").inner_text().strip()

    proxy = start_proxy()
    sdk = openai.OpenAI(api_key=plaintext, base_url=proxy.base_url, max_retries=0)
    ask = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}

    # the first request: free plan, own key, no credit at all
    assert sdk.chat.completions.create(**ask).choices[0].message.content

    # a fee plan: the same request now needs credit, and the 402 says where to add it
    page.goto("/w/billing-co/billing/")
    page.get_by_role("radio", name=re.compile(r"\bTeam\b")).check()
    page.get_by_role("button", name="Switch plan").click()
    page.wait_for_load_state()
    assert Workspace.objects.get(slug="billing-co").plan.code == "team"
    with pytest.raises(openai.APIStatusError) as refused:
        wait_until(lambda: sdk.chat.completions.create(**ask) and None, timeout=5, what="the 402")
    assert refused.value.status_code == 402
    assert "/w/billing-co/billing/" in refused.value.message

    # Add credit → Stripe's (fake) hosted page → Pay → back to Billing, credited by the webhook
    page.goto("/w/billing-co/billing/")
    page.get_by_role("radio", name="$25").check()
    page.get_by_role("button", name="Add credit").click()
    page.wait_for_url(re.compile(r"/checkout/cs_test_"))
    page.get_by_role("button", name="Pay").click()
    page.wait_for_url(re.compile(r"/w/billing-co/billing/\?topup="))
    page.locator("#topup-status", has_text="Payment received").wait_for(timeout=15_000)
    workspace = Workspace.objects.get(slug="billing-co")
    assert [e.amount_nanos for e in LedgerEntry.objects.filter(workspace=workspace, kind="topup")] == [25 * 10**9]
    assert "$25.00" in page.locator("#available-balance").inner_text()

    # the request goes through now
    reply = wait_until(lambda: _try(sdk, ask), timeout=5, what="the request after the top-up")
    assert reply.choices[0].message.content

    # the invoice, as PDF and CSV
    invoice = Invoice.objects.get(workspace=workspace)
    row = page.locator("#invoices tr", has_text=invoice.number)
    assert download(page, row.get_by_role("link", name=f"{invoice.number} as PDF")).startswith(b"%PDF")
    csv_text = download(page, row.get_by_role("link", name=f"{invoice.number} as CSV")).decode()
    assert invoice.number in csv_text and "25.00" in csv_text

    # no horizontal overflow on the billing pages, wide or on a phone
    for width in (1280, 390):
        page.set_viewport_size({"width": width, "height": 900})
        for path in ("/w/billing-co/billing/", "/w/billing-co/billing/history/", "/w/billing-co/billing/profile/"):
            page.goto(path)
            overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
            assert overflow <= 0, f"{path} overflows by {overflow}px at {width}px"

    # a finance member logs in, lands on Billing and downloads this month's statement
    finance = User.objects.create_user(email="finance@example.com", password=PASSWORD)
    from allauth.account.models import EmailAddress

    EmailAddress.objects.create(user=finance, email=finance.email, verified=True, primary=True)
    Membership.objects.create(workspace=workspace, user=finance, role=Role.FINANCE)
    context = browser.new_context(base_url=live_server.url)
    other = context.new_page()
    other.goto("/accounts/login/")
    other.fill("input[name=login]", finance.email)
    other.fill("input[name=password]", PASSWORD)
    other.locator("form button[type=submit]").last.click()
    other.wait_for_url(re.compile(r"/w/billing-co/billing/"))
    assert other.get_by_role("link", name="Gateway keys").count() == 0
    other.get_by_role("button", name="Statement for this month to date").click()
    other.wait_for_load_state()
    statement = other.locator("#statements tbody tr").first
    assert download(other, statement.get_by_role("link", name=re.compile("as PDF"))).startswith(b"%PDF")
    statement_csv = download(other, statement.get_by_role("link", name=re.compile("as CSV"))).decode()
    assert "25.00" in statement_csv
    context.close()


def _try(sdk: openai.OpenAI, ask: dict[str, object]) -> object | None:
    try:
        return sdk.chat.completions.create(**ask)  # type: ignore[call-overload]
    except openai.APIStatusError as exc:
        if exc.status_code == 402:
            return None  # the new balance has not reached this proxy yet
        raise
