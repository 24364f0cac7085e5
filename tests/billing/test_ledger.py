"""The prepaid ledger: grants are idempotent by key (also under concurrency), the balance row always
equals the sum of the entries, and the ledger is append-only, also in the Django admin."""

from __future__ import annotations

import threading
from decimal import Decimal

import pytest
from django.db import connection, transaction
from django.test import Client

from billing.models import LedgerEntry, WorkspaceBalance
from billing.selectors import ledger_balance_nanos, workspace_balance
from billing.services import ledger_grant_post, ledger_post
from config.errors import ApplicationError
from tenants.models import AuditLog, User
from tenants.services import workspace_create


@pytest.fixture
def owner(db):
    return User.objects.create_user(email="finance@example.com", password="correct-horse-battery-staple")


@pytest.fixture
def workspace(owner):
    return workspace_create(name="Acme", acting_user=owner)


def balances_agree(workspace) -> int:
    """The versioned balance row and the ledger sum must be the same number; returns it."""
    row_balance, _ = workspace_balance(workspace_id=workspace.pk)
    assert row_balance == ledger_balance_nanos(workspace=workspace)
    return row_balance


def test_new_workspace_has_zero_balance(workspace):
    assert workspace_balance(workspace_id=workspace.pk) == (0, 0)
    assert ledger_balance_nanos(workspace=workspace) == 0


def test_grant_credits_exact_nano_usd_and_is_audited(workspace, owner):
    entry, created = ledger_grant_post(
        workspace=workspace, amount_usd=Decimal("25.123456789"), idempotency_key="promo-1", acting_user=owner
    )
    assert created
    assert entry.amount_nanos == 25_123_456_789 and entry.kind == LedgerEntry.Kind.GRANT and entry.currency == "USD"
    assert balances_agree(workspace) == 25_123_456_789
    assert workspace_balance(workspace_id=workspace.pk)[1] == 1
    audit = AuditLog.objects.get(action="billing.grant_posted")
    assert audit.workspace == workspace and audit.actor == owner and audit.metadata["amount_usd"] == "25.123456789"


def test_grant_is_idempotent_by_key(workspace, owner):
    first, created_first = ledger_grant_post(workspace=workspace, amount_usd="10", idempotency_key="k1")
    again, created_again = ledger_grant_post(workspace=workspace, amount_usd="10", idempotency_key="k1")

    assert created_first and not created_again
    assert again.pk == first.pk
    assert LedgerEntry.objects.filter(idempotency_key="k1").count() == 1
    assert balances_agree(workspace) == 10 * 1_000_000_000
    assert workspace_balance(workspace_id=workspace.pk)[1] == 1, "a replay must not bump the version"
    assert AuditLog.objects.filter(action="billing.grant_posted").count() == 1

    # A different key is a different grant.
    ledger_grant_post(workspace=workspace, amount_usd="0.5", idempotency_key="k2")
    assert balances_agree(workspace) == 10_500_000_000
    assert workspace_balance(workspace_id=workspace.pk)[1] == 2


@pytest.mark.parametrize("amount", ["0", "-1", Decimal("-0.000000001"), 0])
def test_non_positive_grant_is_refused(workspace, amount):
    with pytest.raises(ApplicationError, match="positive"):
        ledger_grant_post(workspace=workspace, amount_usd=amount, idempotency_key="bad")
    assert not LedgerEntry.objects.exists()
    assert balances_agree(workspace) == 0


@pytest.mark.parametrize("amount", [1.5, "0.0000000001", "ten"])
def test_float_sub_nano_or_garbage_grant_is_refused(workspace, amount):
    with pytest.raises((TypeError, ValueError)):
        ledger_grant_post(workspace=workspace, amount_usd=amount, idempotency_key="bad")
    assert not LedgerEntry.objects.exists()


def test_grant_too_large_for_the_ledger_is_refused_cleanly(workspace):
    with pytest.raises(ApplicationError, match="large"):
        ledger_grant_post(workspace=workspace, amount_usd="9300000000", idempotency_key="huge")
    assert not LedgerEntry.objects.exists()


def _race(n: int, post) -> list[object]:
    """Run `post(i)` in n threads, each on its own database connection, released together."""
    barrier = threading.Barrier(n)
    results: list[object] = [None] * n

    def worker(i: int) -> None:
        try:
            barrier.wait(timeout=10)
            results[i] = post(i)
        except Exception as exc:  # reported by the assertion below
            results[i] = exc
        finally:
            connection.close()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not any(t.is_alive() for t in threads)
    return results


@pytest.mark.django_db(transaction=True)
def test_concurrent_posts_with_the_same_key_make_exactly_one_entry():
    owner = User.objects.create_user(email="race@example.com")
    workspace = workspace_create(name="Race", acting_user=owner)

    results = _race(
        8, lambda i: ledger_grant_post(workspace=workspace, amount_usd="5", idempotency_key="stripe:evt_123")
    )

    assert not [r for r in results if isinstance(r, Exception)], results
    created = [r[1] for r in results]  # type: ignore[index]
    assert created.count(True) == 1 and created.count(False) == 7
    assert len({r[0].pk for r in results}) == 1  # type: ignore[index]
    assert LedgerEntry.objects.filter(idempotency_key="stripe:evt_123").count() == 1
    assert balances_agree(workspace) == 5_000_000_000
    assert WorkspaceBalance.objects.get(workspace=workspace).version == 1
    assert AuditLog.objects.filter(action="billing.grant_posted").count() == 1


@pytest.mark.django_db(transaction=True)
def test_concurrent_posts_with_different_keys_are_all_counted():
    owner = User.objects.create_user(email="race2@example.com")
    workspace = workspace_create(name="Race 2", acting_user=owner)

    results = _race(8, lambda i: ledger_grant_post(workspace=workspace, amount_usd="1.25", idempotency_key=f"g{i}"))

    assert not [r for r in results if isinstance(r, Exception)], results
    assert balances_agree(workspace) == 8 * 1_250_000_000
    assert WorkspaceBalance.objects.get(workspace=workspace).version == 8


@pytest.mark.django_db(transaction=True)
def test_ledger_post_refuses_to_run_outside_a_transaction():
    owner = User.objects.create_user(email="tx@example.com")
    workspace = workspace_create(name="Tx", acting_user=owner)
    with pytest.raises(RuntimeError, match="inside a transaction"):
        ledger_post(workspace_id=workspace.pk, kind="grant", amount_nanos=1, idempotency_key="x")
    with transaction.atomic():
        ledger_post(workspace_id=workspace.pk, kind="adjustment", amount_nanos=-3, idempotency_key="x")
    assert balances_agree(workspace) == -3


# --- the admin: append-only ---------------------------------------------------------------------------------

# WhiteNoise warns when STATIC_ROOT (.dev/staticfiles) has not been collected, which a test run never does.
ignore_uncollected_static = pytest.mark.filterwarnings("ignore:No directory at:UserWarning")


@pytest.fixture
def staff_client(db) -> Client:
    operator = User.objects.create_superuser(email="ops@example.com", password="correct-horse-battery-staple")
    client = Client()
    client.force_login(operator)
    return client


@pytest.fixture
def entry(workspace):
    entry, _ = ledger_grant_post(workspace=workspace, amount_usd="42", idempotency_key="admin-test", memo="welcome")
    return entry


@ignore_uncollected_static
def test_admin_shows_ledger_entries_read_only(staff_client, entry):
    listing = staff_client.get("/admin/billing/ledgerentry/")
    assert listing.status_code == 200
    assert "welcome" in listing.content.decode()

    page = staff_client.get(f"/admin/billing/ledgerentry/{entry.pk}/change/")
    assert page.status_code == 200
    html = page.content.decode()
    assert "42000000000" in html
    assert 'name="_save"' not in html and 'name="amount_nanos"' not in html
    assert "/delete/" not in html


@ignore_uncollected_static
def test_admin_refuses_to_change_or_delete_a_ledger_entry(staff_client, entry, workspace):
    change = staff_client.post(
        f"/admin/billing/ledgerentry/{entry.pk}/change/",
        {
            "workspace": workspace.pk,
            "kind": "grant",
            "amount_nanos": "999000000000",
            "currency": "USD",
            "idempotency_key": "admin-test",
            "memo": "tampered",
        },
    )
    assert change.status_code == 403
    assert staff_client.get(f"/admin/billing/ledgerentry/{entry.pk}/delete/").status_code == 403
    assert staff_client.post(f"/admin/billing/ledgerentry/{entry.pk}/delete/", {"post": "yes"}).status_code == 403
    bulk = staff_client.post(
        "/admin/billing/ledgerentry/", {"action": "delete_selected", "_selected_action": [entry.pk], "post": "yes"}
    )
    assert bulk.status_code in (200, 302, 403)

    entry.refresh_from_db()
    assert entry.amount_nanos == 42_000_000_000 and entry.memo == "welcome"
    assert balances_agree(workspace) == 42_000_000_000


@ignore_uncollected_static
def test_admin_cannot_add_entries_that_bypass_the_balance(staff_client, workspace):
    """An entry typed into the admin would skip the balance row, idempotency and the audit log."""
    assert staff_client.get("/admin/billing/ledgerentry/add/").status_code == 403
    response = staff_client.post(
        "/admin/billing/ledgerentry/add/",
        {
            "workspace": workspace.pk,
            "kind": "grant",
            "amount_nanos": "1000000000",
            "currency": "USD",
            "idempotency_key": "sneaky",
            "created_at_0": "2025-01-01",
            "created_at_1": "00:00:00",
        },
    )
    assert response.status_code == 403
    assert not LedgerEntry.objects.exists()
    assert balances_agree(workspace) == 0
