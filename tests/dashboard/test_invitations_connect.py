"""Invitations keep their context (the link shown once to the inviter, the sign-in and sign-up pages say
what they lead to), the Connect page carries a new key once and sends a real test request through the
proxy, and a role change asks first."""

from __future__ import annotations

import re
from datetime import timedelta

import httpx
import pytest
from django.core import mail
from django.test import Client
from django.utils import timezone

from contracts.cachekeys import hash_token
from tenants.models import AuditLog, Invitation, Membership
from tenants.roles import Role
from tenants.services import invitation_create, invitation_revoke
from tests.dashboard.conftest import PASSWORD, client_for, make_user

# the proxy on a real socket (reads this test's database, so tests that use it commit: transaction=True)
from tests.proxy.conftest import make_tenant, price_catalog, start_proxy  # noqa: F401 (fixtures)

pytestmark = pytest.mark.django_db

LINK = re.compile(r"https?://[^\s<\"]+/invitations/([A-Za-z0-9_-]+)/")


def invite(client: Client, slug: str, email: str, role: str = Role.DEVELOPER) -> str:
    """Invite through the members page; returns the HTML of the page the owner lands on."""
    response = client.post(f"/w/{slug}/members/", {"email": email, "role": role}, follow=True)
    assert response.status_code == 200
    return response.content.decode()


# --- the inviter sees the link once -------------------------------------------------------------------------


def test_the_inviter_sees_the_link_once_and_it_is_the_emailed_one(world_a, django_capture_on_commit_callbacks):
    owner = client_for(world_a.owner)
    slug = world_a.workspace.slug
    with django_capture_on_commit_callbacks(execute=True):
        html = invite(owner, slug, "bob@example.com", Role.FINANCE)

    shown = LINK.search(html.split('id="invite-link"')[1])
    assert shown and 'data-copy-target="#invite-link-value"' in html
    token = shown[1]
    emailed = LINK.search(mail.outbox[-1].body)
    assert emailed and emailed[1] == token
    invitation = Invitation.objects.get(email="bob@example.com", revoked_at__isnull=True)
    assert invitation.token_hash == hash_token(token) and token not in invitation.token_hash

    again = owner.get(f"/w/{slug}/members/").content.decode()
    assert token not in again and 'id="invite-link"' not in again  # once
    # nothing about it is left in the session, and no audit row holds it
    assert not any(token in str(v) for v in owner.session.values())
    assert not AuditLog.objects.filter(metadata__icontains=token).exists()


def test_new_link_replaces_the_old_one_and_is_audited(world_a, django_capture_on_commit_callbacks):
    owner = client_for(world_a.owner)
    slug = world_a.workspace.slug
    with django_capture_on_commit_callbacks(execute=True):
        invite(owner, slug, "carol@example.com")
    (old,) = [LINK.search(m.body)[1] for m in mail.outbox if "carol@example.com" in m.to]  # type: ignore[index]
    invitation = Invitation.objects.get(email="carol@example.com", revoked_at__isnull=True)

    with django_capture_on_commit_callbacks(execute=True):
        html = owner.post(f"/w/{slug}/invitations/{invitation.pk}/link/", follow=True).content.decode()

    new = LINK.search(html.split('id="invite-link"')[1])[1]  # type: ignore[index]
    assert new != old
    assert "the previous link no longer works" in html
    invitation.refresh_from_db()
    assert invitation.token_hash == hash_token(new)
    row = AuditLog.objects.get(action="member.invitation_reissued")
    assert row.actor == world_a.owner and row.metadata["email"] == "carol@example.com" and new not in str(row.metadata)
    assert LINK.search(mail.outbox[-1].body)[1] == new  # type: ignore[index]
    # the old link is dead, the new one works
    carol = make_user("carol@example.com")
    assert client_for(carol).get(f"/invitations/{old}/").status_code == 404
    assert client_for(carol).post(f"/invitations/{new}/").status_code == 302
    assert Membership.objects.filter(workspace=world_a.workspace, user=carol, role=Role.DEVELOPER).exists()


def test_only_managers_get_a_new_link(world_a, member_client):
    developer, _ = member_client(Role.DEVELOPER)
    before = world_a.invitation.token_hash
    response = developer.post(f"/w/{world_a.workspace.slug}/invitations/{world_a.invitation.pk}/link/")
    assert response.status_code == 403
    world_a.invitation.refresh_from_db()
    assert world_a.invitation.token_hash == before


# --- the sign-in and sign-up pages say what the invitation is ----------------------------------------------


@pytest.fixture
def pending(world_a):
    invitation, token = invitation_create(
        workspace=world_a.workspace, email="bob@example.com", role=Role.FINANCE, acting_user=world_a.owner
    )
    return invitation, token


def test_an_anonymous_visitor_is_sent_to_sign_in_which_names_the_invitation(world_a, pending):
    _, token = pending
    client = Client()
    response = client.get(f"/invitations/{token}/")
    assert response.status_code == 302 and response["Location"].startswith("/accounts/login/?next=")

    page = client.get(response["Location"]).content.decode()
    text = re.sub(r"<[^>]+>", "", page)
    assert f"{world_a.owner.email} invited you to join Alpha as Finance" in " ".join(text.split())
    # the sign-up link keeps `next` and fills in the invited address; the login field is pre-filled too
    signup = re.search(r'href="(/accounts/signup/\?[^"]+)"', page.split('id="invitation-context"')[1])[1]  # type: ignore[index]
    assert f"next=%2Finvitations%2F{token}%2F" in signup and "email=bob%40example.com" in signup
    assert 'value="bob@example.com"' in page

    signup_page = client.get(signup.replace("&amp;", "&")).content.decode()
    assert "invited you to join" in signup_page
    assert re.search(r'<input[^>]*name="email"[^>]*value="bob@example.com"', signup_page)
    assert f'value="/invitations/{token}/"' in signup_page  # next goes on with the form
    # and back: the sign-in link on the sign-up page keeps next too
    assert f"/accounts/login/?next=%2Finvitations%2F{token}%2F" in signup_page


@pytest.mark.parametrize("case", ["unknown", "expired", "revoked", "accepted", "elsewhere", "absolute"])
def test_no_context_for_anything_but_a_pending_invitation(world_a, pending, case):
    invitation, token = pending
    next_url = f"/invitations/{token}/"
    if case == "unknown":
        next_url = "/invitations/" + "x" * 43 + "/"
    elif case == "expired":
        Invitation.objects.filter(pk=invitation.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    elif case == "revoked":
        invitation_revoke(invitation=invitation, acting_user=world_a.owner)
    elif case == "accepted":
        Invitation.objects.filter(pk=invitation.pk).update(accepted_at=timezone.now())
    elif case == "elsewhere":
        next_url = f"/w/alpha/?t=/invitations/{token}/"
    elif case == "absolute":
        next_url = f"https://evil.example/invitations/{token}/"
    for page in ("/accounts/login/", "/accounts/signup/"):
        response = Client().get(page, {"next": next_url})
        html = response.content.decode()
        assert response.status_code == 200
        assert "invited you" not in html and "Alpha" not in html and "bob@example.com" not in html


def test_signing_in_returns_to_the_acceptance_page(world_a, pending):
    _, token = pending
    make_user("bob@example.com")
    client = Client()
    response = client.post(
        "/accounts/login/", {"login": "bob@example.com", "password": PASSWORD, "next": f"/invitations/{token}/"}
    )
    assert response.status_code == 302 and response["Location"] == f"/invitations/{token}/"
    page = client.get(response["Location"]).content.decode()
    assert "Join Alpha" in page and world_a.owner.email in page and "Finance" in page


# --- connect: the new key once, and a real test request -----------------------------------------------------


def test_the_connect_page_carries_a_new_key_once(world_a):
    owner = client_for(world_a.owner)
    slug = world_a.workspace.slug
    created = owner.post(f"/w/{slug}/keys/", {"name": "backend"}).content.decode()
    plaintext = re.search(r'id="new-key-value">([^<]+)<', created)[1]  # type: ignore[index]

    page = owner.get(f"/w/{slug}/connect/")
    html = page.content.decode()
    assert page["Cache-Control"] == "no-store"
    assert f"export TURNPIKE_API_KEY={plaintext}" in html
    assert f'api_key="{plaintext}"' in html and f"Bearer {plaintext}" in html
    assert html.index("snippet-export") < html.index("snippet-python")  # the export hint comes first
    assert f'name="key" id="id_test_key" value="{plaintext}"' in html

    again = owner.get(f"/w/{slug}/connect/").content.decode()
    assert plaintext not in again and "tpk_live_…" in again and 'os.environ["TURNPIKE_API_KEY"]' in again
    assert not any(plaintext in str(v) for v in owner.session.values())


def test_a_new_key_is_not_shown_on_another_workspaces_connect_page(world_a):
    from tenants.services import workspace_create

    other = workspace_create(name="Other", acting_user=world_a.owner)
    owner = client_for(world_a.owner)
    created = owner.post(f"/w/{world_a.workspace.slug}/keys/", {"name": "backend"}).content.decode()
    plaintext = re.search(r'id="new-key-value">([^<]+)<', created)[1]  # type: ignore[index]
    assert plaintext not in owner.get(f"/w/{other.slug}/connect/").content.decode()


def fake_answer(fake_provider_url: str) -> str:
    """What the fake provider answers to the test prompt, asked directly."""
    reply = httpx.post(
        f"{fake_provider_url}/v1/chat/completions",
        headers={"Authorization": "Bearer fake-direct"},
        json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Say hello"}], "max_tokens": 16},
    )
    return reply.json()["choices"][0]["message"]["content"]


@pytest.mark.django_db(transaction=True)
def test_send_a_test_request_shows_the_real_answer_and_the_proxys_errors(
    make_tenant,  # noqa: F811
    start_proxy,  # noqa: F811
    fake_provider_url,
    settings,
    caplog,
):
    tenant = make_tenant()
    proxy = start_proxy()
    settings.TURNPIKE_PROXY_BASE_URL = proxy.base_url
    owner = client_for(tenant.owner)
    url = f"/w/{tenant.workspace.slug}/connect/test/"

    response = owner.post(url, {"key": tenant.plaintext})
    html = response.content.decode()
    assert response.status_code == 200 and response["Cache-Control"] == "no-store"
    assert "200 OK" in html and "openai/gpt-4o-mini" in html
    assert fake_answer(fake_provider_url) in html
    proxy.drain()

    # a wrong key: the proxy's own status and message
    html = owner.post(url, {"key": "tpk_live_not-a-key-at-all"}).content.decode()
    assert re.search(r"<strong>401</strong>: [^<]*key", html, re.I), html[html.find("test-result") :][:400]
    assert "200 OK" not in html

    # no key: asked for one, nothing sent
    response = owner.post(url, {"key": ""})
    assert response.status_code == 400 and "Paste a Turnpike key" in response.content.decode()

    # the proxy down: said so, not a 500
    settings.TURNPIKE_PROXY_BASE_URL = "http://127.0.0.1:9/v1"
    html = owner.post(url, {"key": tenant.plaintext}).content.decode()
    assert "Could not reach Turnpike" in html

    assert tenant.plaintext not in caplog.text


def test_the_test_request_needs_a_post_with_csrf(world_a):
    client = Client(enforce_csrf_checks=True)
    client.force_login(world_a.owner)
    url = f"/w/{world_a.workspace.slug}/connect/test/"
    assert client.get(url).status_code == 405
    assert client.post(url, {"key": world_a.key_plaintext}).status_code == 403


# --- a role change asks first ------------------------------------------------------------------------------


def test_a_role_change_asks_first_and_works_without_javascript(world_a):
    owner = client_for(world_a.owner)
    slug = world_a.workspace.slug
    member = world_a.member
    url = f"/w/{slug}/members/{member.pk}/role/"

    page = owner.post(url, {"role": Role.FINANCE})
    html = page.content.decode()
    assert page.status_code == 200
    assert f"Make {member.user.email} a Finance member?" in html
    member.refresh_from_db()
    assert member.role == Role.DEVELOPER  # nothing changed yet
    assert not AuditLog.objects.filter(action="member.role_changed").exists()
    confirm_form = html.split('id="confirm-role"')[1].split("</form>")[0]
    assert 'name="confirm" value="yes"' in confirm_form and 'name="role" value="finance"' in confirm_form
    assert f'href="/w/{slug}/members/"' in confirm_form  # cancel

    response = owner.post(url, {"role": Role.FINANCE, "confirm": "yes"}, follow=True)
    assert f"{member.user.email} is now Finance." in response.content.decode()
    member.refresh_from_db()
    assert member.role == Role.FINANCE
    assert AuditLog.objects.filter(action="member.role_changed", metadata__to="finance").count() == 1

    html = owner.post(url, {"role": Role.ADMIN}).content.decode()
    assert f"Make {member.user.email} an Admin member?" in html


def test_the_confirmation_step_keeps_the_owner_rules(world_a, member_client):
    admin, _ = member_client(Role.ADMIN)
    url = f"/w/{world_a.workspace.slug}/members/{world_a.member.pk}/role/"
    assert admin.post(url, {"role": Role.OWNER, "confirm": "yes"}).status_code == 403
    world_a.member.refresh_from_db()
    assert world_a.member.role == Role.DEVELOPER
