"""A new person's first minutes, in a real browser: sign up, verify the email, create a workspace,
paste a provider key (checked live against the fake provider), create a gateway key and see it once,
and copy a snippet. And what a viewer and a stranger cannot do."""

from __future__ import annotations

import re

import pytest
from django.core import mail

from tenants.models import AuditLog, GatewayKey, Membership, ProviderCredential, User
from tenants.roles import Role
from tenants.services import workspace_create

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

PASSWORD = "a-long-and-unusual-passphrase-42"


def sign_up_and_verify(page, email: str) -> None:
    page.goto("/accounts/signup/")
    page.fill("#id_email", email)
    page.fill("#id_password1", PASSWORD)
    page.fill("#id_password2", PASSWORD)
    page.locator("form button[type=submit], form input[type=submit]").last.click()
    page.wait_for_load_state()
    assert "verify" in page.content().lower() or "confirm" in page.content().lower()
    (message,) = [m for m in mail.outbox if email in m.to]
    link = re.search(r"https?://\S+/accounts/confirm-email/\S+/", message.body).group(0)
    page.goto(link[link.index("/accounts/") :])
    page.locator("form button[type=submit]").last.click()
    page.wait_for_load_state()


def test_sign_up_to_a_working_snippet(page, fake_provider_url):
    sign_up_and_verify(page, "new.person@example.com")

    # a new user lands on "create a workspace"
    page.goto("/workspaces/new/")
    page.fill("#id_name", "Acme Robotics")
    page.get_by_role("button", name="Create workspace").click()
    page.wait_for_url(re.compile(r"/w/acme-robotics/"))

    # a rejected provider key: a clear error, nothing saved
    page.goto("/w/acme-robotics/credentials/")
    page.select_option("#id_provider", "openai")
    page.fill("#id_secret", "sk-this-key-is-refused")
    page.fill("#id_base_url", f"{fake_provider_url}/v1")
    page.get_by_role("button", name="Check and save").last.click()
    page.wait_for_load_state()
    assert page.locator(".errorlist").count() >= 1
    assert not ProviderCredential.objects.exists()

    # an accepted key: only its last 4 characters are ever shown
    secret = "fake-browser-secret-key-4242"
    page.select_option("#id_provider", "openai")
    page.fill("#id_secret", secret)
    page.fill("#id_base_url", f"{fake_provider_url}/v1")
    page.get_by_role("button", name="Check and save").last.click()
    page.wait_for_load_state()
    assert ProviderCredential.objects.filter(secret_last4="4242").count() == 1
    assert "4242" in page.content() and secret not in page.content()

    # a gateway key, shown once, with a copy button
    page.goto("/w/acme-robotics/keys/")
    page.fill("#id_name", "backend")
    page.get_by_role("button", name="Create key").click()
    page.wait_for_load_state()
    plaintext = page.locator("#new-key-value").inner_text().strip()
    assert plaintext.startswith("tpk_live_")
    assert page.locator("#new-key button.copy").is_visible()
    key = GatewayKey.objects.get(name="backend")
    assert key.prefix in plaintext and plaintext not in key.key_hash
    page.reload()
    assert plaintext not in page.content()  # never shown again
    page.goto("/w/acme-robotics/keys/")
    assert plaintext not in page.content()

    # connect your app: snippets with this deployment's proxy URL
    page.goto("/w/acme-robotics/connect/")
    content = page.content()
    assert "base_url" in content and "/v1" in content and "curl" in content
    assert page.locator("button.copy").count() >= 3

    actions = set(AuditLog.objects.values_list("action", flat=True))
    assert {"credential.created", "key.created"} <= actions


def test_a_viewer_cannot_create_keys_and_a_stranger_cannot_see_the_workspace(page):
    owner = User.objects.create_user(email="owner@example.com", password=PASSWORD)
    workspace = workspace_create(name="Private Co", acting_user=owner)
    viewer = User.objects.create_user(email="viewer@example.com", password=PASSWORD)
    Membership.objects.create(workspace=workspace, user=viewer, role=Role.VIEWER)
    stranger = User.objects.create_user(email="stranger@example.com", password=PASSWORD)
    from allauth.account.models import EmailAddress

    for user in (viewer, stranger):
        EmailAddress.objects.create(user=user, email=user.email, verified=True, primary=True)

    def log_in(email: str) -> None:
        page.context.clear_cookies()
        page.goto("/accounts/login/")
        page.fill("#id_login", email)
        page.fill("#id_password", PASSWORD)
        page.locator("form button[type=submit]").last.click()
        page.wait_for_load_state()

    log_in("viewer@example.com")
    page.goto(f"/w/{workspace.slug}/keys/")
    assert page.locator("#create-key").count() == 0  # no form for a viewer
    status = page.evaluate(
        """async (url) => {
            const csrf = document.cookie.split('; ').find(c => c.startsWith('csrftoken='))?.split('=')[1];
            const r = await fetch(url, {method: 'POST', headers: {'X-CSRFToken': csrf,
                'Content-Type': 'application/x-www-form-urlencoded'}, body: 'name=sneaky'});
            return r.status;
        }""",
        f"/w/{workspace.slug}/keys/",
    )
    assert status == 403
    assert not GatewayKey.objects.filter(name="sneaky").exists()

    log_in("stranger@example.com")
    response = page.goto(f"/w/{workspace.slug}/")
    assert response.status == 404
    assert "Private Co" not in page.content()
