"""Failed-login limits hold per real client behind a load balancer, the audit log records the client's
address rather than the load balancer's, and the Django admin login is limited like the dashboard's.

The limits are counted in the Redis cache (real Redis); every test uses its own addresses and emails,
so counts left by other tests (they live for minutes) cannot interfere."""

from __future__ import annotations

import itertools

import pytest
from allauth.account.models import EmailAddress
from django.conf import settings
from django.test import Client, override_settings

from tenants.models import AuditLog, User
from tenants.services import gateway_key_create

INGRESS = "10.1.0.9"  # what REMOTE_ADDR is for every request behind the ingress
_seq = itertools.count(1)


def limit(per: str) -> int:
    """The login_failed allowance `per` "ip" or "key" (the email), from settings."""
    for rate in settings.ACCOUNT_RATE_LIMITS["login_failed"].split(","):
        amount, _, kind = rate.split("/")
        if kind == per:
            return int(amount)
    raise AssertionError(f"no per-{per} login_failed limit configured")


def address() -> str:
    return f"198.51.100.{next(_seq) % 250 + 1}"


def person(*, staff: bool = False) -> User:
    n = next(_seq)
    email = f"{'ops' if staff else 'dev'}{n}@limits.test"
    user = User.objects.create_user(email=email, password="right-password-123", is_staff=staff)
    EmailAddress.objects.create(user=user, email=email, verified=True, primary=True)
    return user


def behind_ingress(client_address: str) -> dict[str, str]:
    """What the app sees from a client behind one ingress: the client may send its own (forged)
    X-Forwarded-For; the ingress appends the address it saw and connects from its own."""
    return {"REMOTE_ADDR": INGRESS, "HTTP_X_FORWARDED_FOR": f"203.0.113.250, {client_address}"}


def dashboard_login(client: Client, email: str, password: str, via: dict[str, str]):
    return client.post("/accounts/login/", {"login": email, "password": password}, **via)


def is_logged_in(client: Client) -> bool:
    return "_auth_user_id" in client.session


@pytest.mark.django_db
@override_settings(ALLAUTH_TRUSTED_PROXY_COUNT=1)
def test_failures_from_one_client_do_not_lock_out_another_behind_the_ingress():
    attacker, victim = address(), address()
    for _ in range(limit("ip")):
        response = dashboard_login(Client(), f"nobody{next(_seq)}@limits.test", "wrong", behind_ingress(attacker))
        assert "Too many failed login attempts" not in response.content.decode()

    locked = Client()
    user = person()
    response = dashboard_login(locked, user.email, "right-password-123", behind_ingress(attacker))
    assert "Too many failed login attempts" in response.content.decode()
    assert not is_logged_in(locked)

    other = Client()
    response = dashboard_login(other, person().email, "right-password-123", behind_ingress(victim))
    assert response.status_code == 302 and is_logged_in(other)


@pytest.mark.django_db
def test_without_trusted_proxies_the_forwarded_header_is_ignored():
    """With the default (0), X-Forwarded-For is client-controlled and not believed: everyone behind one
    ingress is one client. This is why TURNPIKE_TRUSTED_PROXY_COUNT must be set behind a load balancer."""
    ingress = f"10.2.0.{next(_seq) % 250 + 1}"
    for n in range(limit("ip")):
        forged = {"REMOTE_ADDR": ingress, "HTTP_X_FORWARDED_FOR": f"198.18.0.{n + 1}"}
        dashboard_login(Client(), f"nobody{next(_seq)}@limits.test", "wrong", forged)

    client = Client()
    via = {"REMOTE_ADDR": ingress, "HTTP_X_FORWARDED_FOR": "198.18.1.1"}
    response = dashboard_login(client, person().email, "right-password-123", via)
    assert "Too many failed login attempts" in response.content.decode()
    assert not is_logged_in(client)


@pytest.mark.django_db
@override_settings(ALLAUTH_TRUSTED_PROXY_COUNT=1)
def test_audit_rows_record_the_client_address_not_the_ingress(workspace, owner):
    client_address = address()
    key, _ = gateway_key_create(workspace=workspace, name="ci", acting_user=owner)
    dashboard = Client()
    dashboard.force_login(owner)
    response = dashboard.post(f"/w/{workspace.slug}/keys/{key.public_id}/revoke/", **behind_ingress(client_address))
    assert response.status_code == 302
    assert AuditLog.objects.get(action="key.revoked").ip_address == client_address

    operator = person(staff=True)
    operator.is_superuser = True
    operator.save()
    other_key, _ = gateway_key_create(workspace=workspace, name="other", acting_user=owner)
    admin = Client()
    admin.force_login(operator)
    operator_address = address()
    admin.post(
        "/admin/tenants/gatewaykey/",
        {"action": "revoke", "_selected_action": [str(other_key.pk)]},
        **behind_ingress(operator_address),
    )
    row = AuditLog.objects.get(action="key.revoked", target_id=str(other_key.public_id))
    assert row.ip_address == operator_address and row.metadata["operator"] is True


def admin_login(client: Client, email: str, password: str, ip: str):
    return client.post(
        "/admin/login/?next=/admin/", {"username": email, "password": password, "next": "/admin/"}, REMOTE_ADDR=ip
    )


@pytest.mark.django_db
def test_admin_login_is_refused_after_repeated_failures_for_an_account():
    operator, colleague = person(staff=True), person(staff=True)
    for _ in range(limit("key")):
        # a different address each time: the per-account limit holds even when the attacker rotates IPs
        response = admin_login(Client(), operator.email, "wrong", address())
        assert response.status_code == 200
        assert "Too many failed login attempts" not in response.content.decode()

    client = Client()
    response = admin_login(client, operator.email, "right-password-123", address())
    assert response.status_code == 429
    assert "Too many failed login attempts" in response.content.decode()
    assert not is_logged_in(client)

    other = Client()
    response = admin_login(other, colleague.email, "right-password-123", address())
    assert response.status_code == 302 and is_logged_in(other)


@pytest.mark.django_db
def test_admin_login_is_refused_after_repeated_failures_from_one_address():
    ip = address()
    for _ in range(limit("ip")):
        assert admin_login(Client(), f"nobody{next(_seq)}@limits.test", "wrong", ip).status_code == 200

    client = Client()
    response = admin_login(client, person(staff=True).email, "right-password-123", ip)
    assert response.status_code == 429
    assert "Too many failed login attempts" in response.content.decode()
    assert not is_logged_in(client)


@pytest.mark.django_db
def test_a_successful_admin_login_does_not_count_as_a_failure():
    operator, ip = person(staff=True), address()
    for _ in range(limit("key") + 2):
        client = Client()
        assert admin_login(client, operator.email, "right-password-123", ip).status_code == 302
        assert is_logged_in(client)
