"""Invoices (receipts) for paid top-ups and credit notes correcting them; numbers that never skip.

Numbering: one counter per (issuing entity, series, year of issue) in `DocumentSequence`. A document
takes its number when it is finalized, in the finalizing transaction, by one upsert
(`INSERT ... ON CONFLICT DO UPDATE SET last_value = last_value + 1 RETURNING last_value`). The upsert
creates the row race-free the first time and otherwise takes the row's lock, so concurrent finalizations
queue on it until the holder commits or rolls back; a rolled-back transaction gives its number back. So
numbers are sequential in commit order and gapless: `TP-2026-000123` (invoices), `TP-CN-2026-000007`
(credit notes), six digits at least (the counter may grow past them).

Invoices are never edited (`Invoice.save` refuses an update): the seller and buyer are snapshots taken at
finalization, so a later billing-profile edit changes no issued document. A correction is a credit note.

Credit notes carry NEGATIVE amounts (net, tax, total), kind `credit_note`, and `corrects` = the invoice:
the sum of an invoice and its credit notes is what remains invoiced, in the CSV as in the books. A credit
note never takes more than what is left of its invoice. Its tax is the invoice's tax pro rata, rounded
half-up cumulatively: after credit notes worth `c` of the invoice's net in total, the tax credited so far
is round_half_up(invoice tax x c / invoice net), and each credit note carries the difference from the
previous total; so crediting the whole net, in any number of parts, credits exactly the whole tax.
(Given a refunded gross amount instead, the same rule applies to the net: net credited so far =
round_half_up(invoice net x gross credited / invoice total); tax = gross - net.)
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Sum
from django.utils import timezone

from billing.models import BillingProfile, DocumentSequence, Invoice, TopUp
from billing.tax import REVERSE_CHARGE_NOTE
from config.errors import ApplicationError
from tenants.models import Workspace
from tenants.services import audit

INVOICE_SERIES = "invoice"
CREDIT_NOTE_SERIES = "credit_note"
CENTS_PER_NANOS = 10_000_000  # nano-USD per cent
MAX_TEXT = 300  # Invoice.description


def _clean(value: Any, limit: int = 200) -> str:
    """Text for a snapshot: a string without NUL or other control characters, trimmed."""
    text = "" if value is None else str(value)
    text = "".join(ch if ch >= " " or ch in "\n" else " " for ch in text.replace("\x00", ""))
    return text.strip()[:limit]


def _half_up(numerator: int, denominator: int) -> int:
    """numerator / denominator rounded half-up (away from zero on a tie), exactly."""
    return int((Decimal(numerator) / Decimal(denominator)).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def document_number(*, issuer: str, series: str, year: int, value: int) -> str:
    middle = "CN-" if series == CREDIT_NOTE_SERIES else ""
    return f"{issuer}-{middle}{year}-{value:06d}"


def _next_number(*, issuer: str, series: str, year: int) -> str:
    """Take the next number of (issuer, series, year); holds the counter's row lock until commit."""
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("a document number must be taken inside the finalizing transaction")
    table = DocumentSequence._meta.db_table
    with connection.cursor() as cur:
        cur.execute(
            f"INSERT INTO {table} (issuer, series, year, last_value) VALUES (%s, %s, %s, 1) "  # noqa: S608 (model table)
            f"ON CONFLICT (issuer, series, year) DO UPDATE SET last_value = {table}.last_value + 1 "
            "RETURNING last_value",
            [issuer, series, year],
        )
        row = cur.fetchone()
    assert row is not None
    return document_number(issuer=issuer, series=series, year=year, value=int(row[0]))


def seller_snapshot() -> dict[str, str]:
    seller = settings.TURNPIKE_SELLER
    return {key: _clean(seller.get(key, "")) for key in ("name", "address", "country", "tax_id", "email")}


def buyer_snapshot(*, workspace: Workspace) -> dict[str, Any]:
    """The buyer as the billing profile says now (the workspace's name if it gives no legal name)."""
    profile = BillingProfile.objects.filter(workspace=workspace).first()
    if profile is None:
        return {"name": _clean(workspace.name), "workspace": _clean(workspace.name), "emails": []}
    emails = profile.billing_emails if isinstance(profile.billing_emails, list) else []
    return {
        "name": _clean(profile.legal_name) or _clean(workspace.name),
        "workspace": _clean(workspace.name),
        "address_line1": _clean(profile.address_line1),
        "address_line2": _clean(profile.address_line2),
        "postal_code": _clean(profile.postal_code, 20),
        "city": _clean(profile.city, 100),
        "region": _clean(profile.region, 100),
        "country": _clean(profile.country, 2).upper(),
        "tax_id": _clean(profile.tax_id, 32),
        "emails": [_clean(e, 254) for e in emails if isinstance(e, str) and _clean(e, 254)],
    }


def invoice_issue_for_topup(*, topup: TopUp) -> Invoice:
    """The invoice of a paid top-up, finalized now with the next number; the existing one if issued.

    Call it inside the transaction that credits the top-up, after its status is saved as paid: the
    number is then taken, and given back on a rollback, with the credit. Locks the top-up row, so two
    concurrent calls for one top-up make one invoice."""
    with transaction.atomic():
        locked = TopUp.objects.select_for_update().select_related("workspace").get(pk=topup.pk)
        key = f"invoice:{locked.pk}"
        existing = Invoice.objects.filter(idempotency_key=key).first()
        if existing is not None:
            return existing
        if locked.status != TopUp.Status.PAID:
            raise ApplicationError(f"Top-up {locked.public_id} is not paid; it cannot be invoiced.")
        if locked.amount_nanos <= 0 or locked.amount_nanos % CENTS_PER_NANOS:
            raise ApplicationError("A top-up is invoiced in whole cents; this one is not.")
        if locked.tax_cents < 0:
            raise ApplicationError("A top-up's tax cannot be negative.")
        workspace = locked.workspace
        issuer = settings.TURNPIKE_SELLER["issuer"]
        now = timezone.now()
        number = _next_number(issuer=issuer, series=INVOICE_SERIES, year=now.year)
        net = locked.amount_cents
        invoice = Invoice(
            workspace=workspace,
            kind=Invoice.Kind.INVOICE,
            topup=locked,
            number=number,
            issuer=issuer,
            issued_at=timezone.now(),  # after the lock: a later number never has an earlier date
            seller=seller_snapshot(),
            buyer=buyer_snapshot(workspace=workspace),
            description=_clean(f"Prepaid credit for workspace {workspace.name}", MAX_TEXT),
            currency=locked.currency,
            net_cents=net,
            tax_rate=locked.tax_rate,
            tax_cents=locked.tax_cents,
            total_cents=net + locked.tax_cents,
            reverse_charge=locked.reverse_charge,
            tax_note=REVERSE_CHARGE_NOTE if locked.reverse_charge else "",
            payment_reference=locked.stripe_payment_intent_id or locked.stripe_checkout_session_id or "",
            idempotency_key=key,
        )
        invoice.save()
        audit(
            workspace=workspace,
            actor=None,
            action="invoice.issued",
            target=invoice,
            metadata={"number": number, "total_cents": invoice.total_cents, "topup": str(locked.public_id)},
        )
        return invoice


def _amount(name: str, value: int | None) -> int | None:
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{name} must be an int of cents, got {type(value).__name__}")
    if value <= 0:
        raise ApplicationError(f"A credit note's {name} must be positive.")
    return value


def credit_note_issue(
    *,
    invoice: Invoice,
    reason: str,
    idempotency_key: str,
    net_cents: int | None = None,
    gross_cents: int | None = None,
) -> Invoice:
    """Issue a credit note against `invoice` for `net_cents` (tax added pro rata) or for `gross_cents`
    (a refunded or disputed amount, tax included: split pro rata). Exactly one of the two. Idempotent by
    `idempotency_key` (a retry returns the same note). Refused if it would credit more than is left.
    Amounts on the note are negative (see the module docstring)."""
    net_cents = _amount("net amount", net_cents)
    gross_cents = _amount("gross amount", gross_cents)
    if (net_cents is None) == (gross_cents is None):
        raise ApplicationError("Give a credit note either a net or a gross amount.")
    if not isinstance(idempotency_key, str) or not idempotency_key.strip() or len(idempotency_key) > 200:
        raise ApplicationError("A credit note needs an idempotency key of 1 to 200 characters.")
    with transaction.atomic():
        original = Invoice.objects.select_for_update().select_related("workspace").get(pk=invoice.pk)
        existing = Invoice.objects.filter(idempotency_key=idempotency_key).first()  # after the lock: sees retries
        if existing is not None:
            if existing.corrects_id != original.pk:
                raise ApplicationError("That idempotency key was used for another document.")
            return existing
        if original.kind != Invoice.Kind.INVOICE:
            raise ApplicationError("Only an invoice can be credited, not a credit note.")
        before = Invoice.objects.filter(corrects=original, kind=Invoice.Kind.CREDIT_NOTE).aggregate(
            net=Sum("net_cents"), tax=Sum("tax_cents"), total=Sum("total_cents")
        )
        credited_net, credited_tax = -int(before["net"] or 0), -int(before["tax"] or 0)
        credited_total = -int(before["total"] or 0)
        if net_cents is not None:
            if net_cents > original.net_cents - credited_net:
                raise ApplicationError(
                    f"A credit note of {net_cents} cents net exceeds what is left of invoice {original.number} "
                    f"({original.net_cents - credited_net} cents)."
                )
            tax = _half_up(original.tax_cents * (credited_net + net_cents), original.net_cents) - credited_tax
            net = net_cents
        else:
            assert gross_cents is not None
            if gross_cents > original.total_cents - credited_total:
                raise ApplicationError(
                    f"A credit note of {gross_cents} cents exceeds what is left of invoice {original.number} "
                    f"({original.total_cents - credited_total} cents)."
                )
            net = _half_up(original.net_cents * (credited_total + gross_cents), original.total_cents) - credited_net
            tax = gross_cents - net
        now = timezone.now()
        number = _next_number(issuer=original.issuer, series=CREDIT_NOTE_SERIES, year=now.year)
        note = Invoice(
            workspace=original.workspace,
            kind=Invoice.Kind.CREDIT_NOTE,
            topup_id=original.topup_id,
            corrects=original,
            number=number,
            issuer=original.issuer,
            issued_at=timezone.now(),
            seller=original.seller,
            buyer=original.buyer,
            description=_clean(f"Credit note for invoice {original.number}: {_clean(reason)}", MAX_TEXT),
            currency=original.currency,
            net_cents=-net,
            tax_rate=original.tax_rate,
            tax_cents=-tax,
            total_cents=-(net + tax),
            reverse_charge=original.reverse_charge,
            tax_note=original.tax_note,
            payment_reference=original.payment_reference,
            idempotency_key=idempotency_key,
        )
        note.save()
        audit(
            workspace=original.workspace,
            actor=None,
            action="invoice.credit_note_issued",
            target=note,
            metadata={"number": number, "corrects": original.number, "total_cents": note.total_cents},
        )
        return note


def invoice_credited_cents(*, invoice: Invoice) -> int:
    """How much of the invoice's total its credit notes have credited (positive cents)."""
    total = Invoice.objects.filter(corrects=invoice, kind=Invoice.Kind.CREDIT_NOTE).aggregate(t=Sum("total_cents"))
    return -int(total["t"] or 0)
