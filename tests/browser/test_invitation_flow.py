"""An invitation, end to end in a real browser: the owner invites bob and copies the link the members page
shows once; bob, in a browser of his own, opens it, is told on the sign-in page who invited him to what,
signs up (the address filled in), confirms his email, comes back to the acceptance page and joins."""

from __future__ import annotations

import re

import pytest
from django.conf import settings as django_settings
from django.core import mail
from django.test import Client

from tenants.models import Membership, User
from tenants.roles import Role
from tenants.services import workspace_create
from tests.dashboard.conftest import make_user

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

PASSWORD = "a-long-and-unusual-passphrase-42"


def sign_in(page, live_server, user: User) -> None:  # type: ignore[no-untyped-def]
    client = Client()
    client.force_login(user)
    cookie = client.cookies[django_settings.SESSION_COOKIE_NAME]
    page.context.add_cookies([{"name": cookie.key, "value": cookie.value, "url": live_server.url}])


def fits(page) -> bool:  # type: ignore[no-untyped-def]
    return page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")


def test_an_invited_person_signs_up_from_the_copied_link_and_joins(browser, page, live_server, settings):
    settings.TURNPIKE_DASHBOARD_URL = live_server.url  # the links point at this server
    owner = make_user("owner@example.com")
    workspace = workspace_create(name="Acme Robotics", acting_user=owner)

    # the owner invites bob, on a phone-sized screen, and copies the link shown once
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=live_server.url)
    page.set_viewport_size({"width": 390, "height": 844})
    sign_in(page, live_server, owner)
    page.goto(f"/w/{workspace.slug}/members/")
    page.fill("#id_email", "bob@example.com")
    page.select_option("#id_role", Role.DEVELOPER)
    page.get_by_role("button", name="Send invitation").click()
    page.wait_for_load_state()
    card = page.locator("#invite-link")
    assert card.is_visible() and "bob@example.com" in card.inner_text()
    assert fits(page), "the members page with the invitation link is wider than a phone"
    card.get_by_role("button", name="Copy").click()
    assert card.get_by_role("button", name="Copied").is_visible()
    link = page.evaluate("navigator.clipboard.readText()")
    assert re.fullmatch(rf"{re.escape(live_server.url)}/invitations/[A-Za-z0-9_-]+/", link), link
    assert link in mail.outbox[-1].body  # the same link as the email
    page.reload()
    assert page.locator("#invite-link").count() == 0 and link not in page.content()  # shown once

    # bob, in a browser of his own, opens the link: the sign-in page says what it is about
    bob_context = browser.new_context(base_url=live_server.url, viewport={"width": 390, "height": 844})
    bob_context.set_default_timeout(15_000)
    bob = bob_context.new_page()
    bob.goto(link)
    bob.wait_for_url(re.compile(r"/accounts/login/\?next="))
    context_note = bob.locator("#invitation-context")
    assert "owner@example.com invited you to join Acme Robotics as Developer" in " ".join(
        context_note.inner_text().split()
    )
    assert fits(bob)

    # he has no account yet: sign up, with his address already filled in
    context_note.get_by_role("link", name="create an account").click()
    bob.wait_for_url(re.compile(r"/accounts/signup/"))
    assert "invited you to join Acme Robotics" in bob.locator("#invitation-context").inner_text()
    assert bob.input_value("#id_email") == "bob@example.com"
    bob.fill("#id_password1", PASSWORD)
    bob.fill("#id_password2", PASSWORD)
    bob.locator("form button[type=submit]").last.click()
    bob.wait_for_load_state()
    assert "verify" in bob.content().lower() or "confirm" in bob.content().lower()

    # email verification is mandatory: he confirms, and is back at the acceptance page, signed in
    (message,) = [m for m in mail.outbox if "bob@example.com" in m.to and "confirm-email" in m.body]
    confirm = re.search(r"https?://\S+/accounts/confirm-email/\S+/", message.body).group(0)  # type: ignore[union-attr]
    bob.goto(confirm[confirm.index("/accounts/") :])
    bob.locator("form button[type=submit]").last.click()
    bob.wait_for_url(f"{link}")
    assert "Join Acme Robotics" in bob.locator("main").inner_text()
    assert "owner@example.com" in bob.locator("main").inner_text()

    bob.get_by_role("button", name="Accept invitation").click()
    bob.wait_for_url(re.compile(rf"/w/{workspace.slug}/"))
    assert "You joined Acme Robotics." in bob.content()
    assert Membership.objects.filter(workspace=workspace, user__email="bob@example.com", role=Role.DEVELOPER).exists()
    bob_context.close()


def test_a_stale_link_shows_no_context(page, live_server):
    owner = make_user("owner2@example.com")
    workspace_create(name="Secret Works", acting_user=owner)
    page.goto("/invitations/" + "A" * 43 + "/")
    page.wait_for_url(re.compile(r"/accounts/login/"))
    assert page.locator("#invitation-context").count() == 0
    assert "Secret Works" not in page.content()
