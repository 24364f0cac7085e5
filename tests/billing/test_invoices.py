"""Invoices and credit notes: gapless sequential numbers under concurrent finalization (real threads, real
Postgres transactions, some rolled back), idempotency, immutability, snapshots, and credit notes that
never credit more than was invoiced."""

from __future__ import annotations

import threading
import time
from decimal import Decimal

import pytest
from django.db import connection, transaction
from django.utils import timezone

from billing.models import BillingProfile, DocumentSequence, Invoice, TopUp
from billing.services import credit_note_issue, invoice_issue_for_topup
from billing.tax import REVERSE_CHARGE_NOTE
from config.errors import ApplicationError
from tenants.models import AuditLog
from tests.billing.docsupport import make_workspace, paid_topup

YEAR = timezone.now().year


def number(n: int) -> str:
    return f"TP-{YEAR}-{n:06d}"


@pytest.fixture
def workspace(db):
    return make_workspace("Acme Labs")


def test_invoice_of_a_paid_topup_snapshots_seller_buyer_and_tax(workspace):
    BillingProfile.objects.create(
        workspace=workspace,
        legal_name="Acme Labs GmbH",
        address_line1="Torstraße 1",
        postal_code="10119",
        city="Berlin",
        country="DE",
        tax_id="DE123456789",
        billing_emails=["ap@acme.example"],
    )
    topup = paid_topup(workspace, cents=5_000, tax_cents=0, reverse_charge=True)

    invoice = invoice_issue_for_topup(topup=topup)

    assert invoice.number == number(1) and invoice.kind == Invoice.Kind.INVOICE
    assert invoice.seller["name"] == "Turnpike B.V." and invoice.seller["tax_id"] == "NL000000000B01"
    assert invoice.buyer["name"] == "Acme Labs GmbH" and invoice.buyer["tax_id"] == "DE123456789"
    assert invoice.buyer["address_line1"] == "Torstraße 1" and invoice.buyer["emails"] == ["ap@acme.example"]
    assert invoice.description == "Prepaid credit for workspace Acme Labs"
    assert (invoice.net_cents, invoice.tax_cents, invoice.total_cents) == (5_000, 0, 5_000)
    assert invoice.reverse_charge and invoice.tax_note == REVERSE_CHARGE_NOTE
    assert invoice.payment_reference == topup.stripe_payment_intent_id
    audit = AuditLog.objects.get(action="invoice.issued")
    assert audit.workspace == workspace and audit.actor is None and audit.metadata["number"] == number(1)


def test_buyer_falls_back_to_the_workspace_name_and_tax_is_added(workspace):
    invoice = invoice_issue_for_topup(topup=paid_topup(workspace, cents=10_000, tax_cents=2_100, tax_rate="0.21"))
    assert invoice.buyer["name"] == "Acme Labs"
    assert (invoice.net_cents, invoice.tax_rate, invoice.tax_cents, invoice.total_cents) == (
        10_000,
        Decimal("0.21"),
        2_100,
        12_100,
    )
    assert not invoice.reverse_charge and invoice.tax_note == ""


def test_issuing_twice_returns_the_same_invoice_and_uses_one_number(workspace):
    topup = paid_topup(workspace)
    first = invoice_issue_for_topup(topup=topup)
    again = invoice_issue_for_topup(topup=topup)
    assert again.pk == first.pk
    assert Invoice.objects.count() == 1
    assert DocumentSequence.objects.get(series="invoice", year=YEAR).last_value == 1
    assert invoice_issue_for_topup(topup=paid_topup(workspace)).number == number(2)


def test_unpaid_topup_is_not_invoiced(workspace):
    topup = paid_topup(workspace)
    TopUp.objects.filter(pk=topup.pk).update(status=TopUp.Status.PENDING)
    with pytest.raises(ApplicationError, match="not paid"):
        invoice_issue_for_topup(topup=topup)
    assert not Invoice.objects.exists() and not DocumentSequence.objects.exists()


def test_invoice_is_immutable_and_keeps_its_buyer_after_profile_edits(workspace):
    profile = BillingProfile.objects.create(workspace=workspace, legal_name="Old Name Ltd", country="GB")
    invoice = invoice_issue_for_topup(topup=paid_topup(workspace))

    profile.legal_name, profile.country, profile.tax_id = "New Name Inc", "US", "12-3456789"
    profile.save()
    workspace.name = "Renamed"
    workspace.save()

    stored = Invoice.objects.get(pk=invoice.pk)
    assert stored.buyer["name"] == "Old Name Ltd" and stored.buyer["country"] == "GB"
    assert stored.description == "Prepaid credit for workspace Acme Labs"
    stored.net_cents = 1
    with pytest.raises(ValueError, match="immutable"):
        stored.save()
    assert Invoice.objects.get(pk=invoice.pk).net_cents == invoice.net_cents
    # A new invoice takes the new details.
    assert invoice_issue_for_topup(topup=paid_topup(workspace)).buyer["name"] == "New Name Inc"


def test_a_rolled_back_finalization_gives_its_number_back(workspace):
    class Abort(Exception):
        pass

    with pytest.raises(Abort), transaction.atomic():
        assert invoice_issue_for_topup(topup=paid_topup(workspace)).number == number(1)
        raise Abort
    assert invoice_issue_for_topup(topup=paid_topup(workspace)).number == number(1)


# --- credit notes ----------------------------------------------------------------------------------------------


def test_credit_notes_are_negative_capped_and_tax_is_pro_rata_to_the_cent(workspace):
    invoice = invoice_issue_for_topup(topup=paid_topup(workspace, cents=1_000, tax_cents=210, tax_rate="0.21"))

    first = credit_note_issue(invoice=invoice, net_cents=333, reason="Refund", idempotency_key="cn-1")
    assert first.number == f"TP-CN-{YEAR}-000001" and first.kind == Invoice.Kind.CREDIT_NOTE
    assert first.corrects_id == invoice.pk and first.topup_id == invoice.topup_id
    # 210 x 333 / 1000 = 69.93 -> 70
    assert (first.net_cents, first.tax_cents, first.total_cents) == (-333, -70, -403)
    assert first.buyer == invoice.buyer and first.description.startswith(f"Credit note for invoice {invoice.number}")

    second = credit_note_issue(invoice=invoice, net_cents=333, reason="Refund", idempotency_key="cn-2")
    # cumulative: round(210 x 666 / 1000) = round(139.86) = 140 -> 140 - 70 = 70
    assert (second.net_cents, second.tax_cents) == (-333, -70)

    with pytest.raises(ApplicationError, match="exceeds what is left"):
        credit_note_issue(invoice=invoice, net_cents=335, reason="Too much", idempotency_key="cn-3")

    last = credit_note_issue(invoice=invoice, net_cents=334, reason="Rest", idempotency_key="cn-4")
    assert (last.net_cents, last.tax_cents) == (-334, -70)
    notes = Invoice.objects.filter(corrects=invoice)
    assert sum(n.net_cents for n in notes) == -invoice.net_cents
    assert sum(n.tax_cents for n in notes) == -invoice.tax_cents, "a full credit returns exactly the tax"
    assert sum(n.total_cents for n in notes) == -invoice.total_cents
    assert [n.number for n in notes.order_by("id")] == [f"TP-CN-{YEAR}-{i:06d}" for i in (1, 2, 3)]
    with pytest.raises(ApplicationError, match="exceeds"):
        credit_note_issue(invoice=invoice, net_cents=1, reason="Nothing left", idempotency_key="cn-5")
    assert AuditLog.objects.filter(action="invoice.credit_note_issued").count() == 3


def test_credit_note_by_gross_amount_matches_the_money_paid_back(workspace):
    invoice = invoice_issue_for_topup(topup=paid_topup(workspace, cents=1_000, tax_cents=210, tax_rate="0.21"))
    note = credit_note_issue(invoice=invoice, gross_cents=605, reason="Refund", idempotency_key="r1")
    assert note.total_cents == -605 and note.net_cents == -500 and note.tax_cents == -105
    rest = credit_note_issue(invoice=invoice, gross_cents=605, reason="Refund", idempotency_key="r2")
    assert (rest.net_cents, rest.tax_cents) == (-500, -105)
    with pytest.raises(ApplicationError, match="exceeds"):
        credit_note_issue(invoice=invoice, gross_cents=1, reason="x", idempotency_key="r3")


def test_credit_note_is_idempotent_and_refuses_bad_input(workspace):
    invoice = invoice_issue_for_topup(topup=paid_topup(workspace, cents=1_000))
    note = credit_note_issue(invoice=invoice, net_cents=100, reason="Refund", idempotency_key="same")
    again = credit_note_issue(invoice=invoice, net_cents=100, reason="Refund", idempotency_key="same")
    assert again.pk == note.pk and Invoice.objects.filter(kind="credit_note").count() == 1

    for bad in (0, -5):
        with pytest.raises(ApplicationError, match="positive"):
            credit_note_issue(invoice=invoice, net_cents=bad, reason="x", idempotency_key=f"bad{bad}")
    with pytest.raises(TypeError):
        credit_note_issue(invoice=invoice, net_cents=1.5, reason="x", idempotency_key="float")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        credit_note_issue(invoice=invoice, net_cents=True, reason="x", idempotency_key="bool")
    with pytest.raises(ApplicationError, match="either"):
        credit_note_issue(invoice=invoice, net_cents=1, gross_cents=1, reason="x", idempotency_key="both")
    with pytest.raises(ApplicationError, match="Only an invoice"):
        credit_note_issue(invoice=note, net_cents=1, reason="x", idempotency_key="of-a-note")
    other = invoice_issue_for_topup(topup=paid_topup(workspace))
    with pytest.raises(ApplicationError, match="another document"):
        credit_note_issue(invoice=other, net_cents=1, reason="x", idempotency_key="same")
    nul = credit_note_issue(invoice=invoice, net_cents=1, reason="bad\x00reason", idempotency_key="nul")
    assert "\x00" not in nul.description


# --- concurrency ---------------------------------------------------------------------------------------------


def _race(n: int, work) -> list[object]:
    """Run work(i) in n threads, each with its own connection, released together."""
    barrier = threading.Barrier(n)
    results: list[object] = [None] * n

    def run(i: int) -> None:
        try:
            barrier.wait(timeout=10)
            results[i] = work(i)
        except Exception as exc:
            results[i] = exc
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads)
    return results


class Abort(Exception):
    pass


@pytest.mark.django_db(transaction=True)
def test_numbers_are_gapless_and_sequential_under_concurrent_finalization():
    workspace = make_workspace("Race")
    topups = [paid_topup(workspace, cents=100 + i) for i in range(16)]

    def finalize(i: int) -> str:
        with transaction.atomic():
            invoice = invoice_issue_for_topup(topup=topups[i])
            time.sleep(0.01)  # hold the counter's lock while others queue on it
            if i % 4 == 3:
                raise Abort  # the crediting transaction fails: its number must come back
            return invoice.number

    results = _race(16, finalize)

    aborted = [r for r in results if isinstance(r, Abort)]
    others = [r for r in results if isinstance(r, Exception) and not isinstance(r, Abort)]
    assert not others, others
    assert len(aborted) == 4
    numbers = sorted(r for r in results if isinstance(r, str))
    assert numbers == [number(i) for i in range(1, 13)], "12 committed invoices, numbered 1..12 without a gap"
    stored = list(Invoice.objects.order_by("number").values_list("number", "topup__amount_nanos", "net_cents"))
    assert [s[0] for s in stored] == numbers
    assert all(amount == net * 10_000_000 for _, amount, net in stored)
    assert DocumentSequence.objects.get(series="invoice").last_value == 12
    # issue dates follow the numbers
    dates = list(Invoice.objects.order_by("number").values_list("issued_at", flat=True))
    assert dates == sorted(dates)


@pytest.mark.django_db(transaction=True)
def test_concurrent_issues_for_one_topup_make_one_invoice_and_credit_notes_stay_capped():
    workspace = make_workspace("Race")
    topup = paid_topup(workspace, cents=1_000)

    results = _race(8, lambda i: invoice_issue_for_topup(topup=topup).number)
    assert results == [number(1)] * 8
    invoice = Invoice.objects.get()

    notes = _race(
        8, lambda i: credit_note_issue(invoice=invoice, net_cents=300, reason="r", idempotency_key=f"k{i}").number
    )
    issued = sorted(n for n in notes if isinstance(n, str))
    refused = [n for n in notes if isinstance(n, ApplicationError)]
    assert len(issued) == 3 and len(refused) == 5, notes
    assert issued == [f"TP-CN-{YEAR}-{i:06d}" for i in (1, 2, 3)]
    assert -sum(Invoice.objects.filter(corrects=invoice).values_list("net_cents", flat=True)) == 900
