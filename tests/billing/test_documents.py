"""Rendering: the PDFs show what the documents say (text extracted through the fonts' ToUnicode maps),
whatever the buyer's name is made of; the CSVs parse and their totals match the documents."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from billing import documents
from billing.models import BillingProfile, Invoice
from billing.services import credit_note_issue, invoice_issue_for_topup
from billing.statements import ROUNDING_RULE, statement_issue
from tests.billing.docsupport import Ev, make_key, make_workspace, paid_topup, pdf_text, post, post_usage_batch

JAN, FEB = datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 2, 1, tzinfo=UTC)


def flat(text: str) -> str:
    return " ".join(text.split())


def parse(text: str) -> list[dict[str, str]]:
    assert text.count("\r\n") >= 2 and text.splitlines()[0].count(",") > 3, "one header row, then rows"
    return list(csv.DictReader(io.StringIO(text)))


@pytest.fixture
def invoice(db) -> Invoice:
    workspace = make_workspace("Zoë's Café")
    BillingProfile.objects.create(
        workspace=workspace,
        legal_name="Café Zoë 中文 😀 SARL",
        address_line1="1 rue de l'Église",
        postal_code="75001",
        city="Paris",
        country="FR",
        tax_id="FR12345678901",
    )
    return invoice_issue_for_topup(topup=paid_topup(workspace, cents=10_000, tax_cents=2_100, tax_rate="0.21"))


def test_invoice_pdf_shows_number_parties_and_totals(invoice):
    pdf = documents.invoice_pdf(invoice)
    assert pdf.startswith(b"%PDF-")
    text = pdf_text(pdf)
    assert invoice.number in text and f"Number: {invoice.number}" in text
    assert "Café Zoë" in text and "1 rue de l'Église" in text and "75001 Paris" in text
    assert "😀" in text, "the bundled font draws this emoji"
    assert "\ufffd\ufffd" in text, "CJK (not in the font) is drawn as replacement characters, not dropped silently"
    assert "Turnpike B.V." in text and "NL000000000B01" in text and "Tax ID: FR12345678901" in text
    assert "$100.00" in text and "21%" in text and "$21.00" in text and "$121.00" in text
    assert f"Payment reference: {invoice.payment_reference}" in text
    assert "rounded half-up to the cent" in flat(text), "the rounding rule is in the footer"


def test_invoice_csv_parses_and_its_totals_match(invoice):
    rows = parse(documents.invoice_csv(invoice))
    assert len(rows) == 1
    row = rows[0]
    assert tuple(row) == documents.INVOICE_CSV_COLUMNS
    assert row["document_type"] == "invoice" and row["number"] == invoice.number
    assert row["issue_date"] == invoice.issued_at.date().isoformat()
    assert row["buyer_name"] == "Café Zoë 中文 😀 SARL" and row["buyer_country"] == "FR"
    assert (row["net_amount"], row["tax_rate"], row["tax_amount"], row["total_amount"]) == (
        "100.00",
        "0.21",
        "21.00",
        "121.00",
    )
    assert Decimal(row["net_amount"]) + Decimal(row["tax_amount"]) == Decimal(row["total_amount"])
    assert row["payment_reference"] == invoice.payment_reference and row["reverse_charge"] == "false"


def test_credit_note_documents_are_negative_and_name_the_invoice(invoice):
    note = credit_note_issue(invoice=invoice, net_cents=2_500, reason="Partial refund", idempotency_key="cn")
    text = pdf_text(documents.invoice_pdf(note))
    assert "Credit note" in text and note.number in text and f"Corrects invoice: {invoice.number}" in text
    assert "-$25.00" in text and "-$5.25" in text and "-$30.25" in text
    row = parse(documents.invoice_csv(note))[0]
    assert row["document_type"] == "credit_note" and row["corrects_number"] == invoice.number
    assert (row["net_amount"], row["tax_amount"], row["total_amount"]) == ("-25.00", "-5.25", "-30.25")


def test_hostile_text_renders_and_csv_cells_are_not_formulas(db):
    """NUL, control characters, right-to-left text, a 300-character unbroken name and a formula."""
    invoice = Invoice(
        number="TP-2026-999999",
        issuer="TP",
        issued_at=timezone.now(),
        seller={"name": "Turnpike B.V."},
        buyer={"name": '=HYPERLINK("http://evil")\x00\x07 עברית ' + "W" * 300, "country": "IL"},
        description="Prepaid credit for workspace \x00x",
        net_cents=1,
        tax_rate=Decimal(0),
        tax_cents=0,
        total_cents=1,
    )
    pdf = documents.invoice_pdf(invoice)
    text = pdf_text(pdf)
    assert "TP-2026-999999" in text and "\x00" not in text
    row = parse(documents.invoice_csv(invoice))[0]
    assert row["buyer_name"].startswith("'=HYPERLINK") and "\x00" not in row["buyer_name"]
    assert row["description"] == "Prepaid credit for workspace x"


@pytest.fixture
def statement(db):
    workspace = make_workspace("Stmt & Co")
    key = make_key(workspace)
    post(workspace, "topup", 100 * 10**9, at=JAN - timedelta(days=3))  # opening $100.00
    post(workspace, "topup", 20 * 10**9, at=JAN + timedelta(days=1))
    post(workspace, "grant", 5_004_000, at=JAN + timedelta(days=2))
    batches = [
        [Ev("openai", "gpt-4o-mini", "byok", input=12_345, output=678, charge_nanos=3_333_333)],
        [
            Ev(
                "anthropic",
                "claude-haiku-4-5",
                "managed",
                input=1000,
                cache_write=500,
                output=50,
                charge_nanos=7_777_777,
            )
        ],
        [Ev("openai", f"model-{i}", "managed", input=i + 1, charge_nanos=1_000_001 * (i + 1)) for i in range(40)],
    ]
    for day, batch in enumerate(batches, start=3):
        post_usage_batch(workspace, key, batch, at=JAN + timedelta(days=day))
    post(workspace, "refund", -1_000_000_000, at=JAN + timedelta(days=9))
    post(workspace, "adjustment", 2_500_000, at=FEB - timedelta(microseconds=1))
    post(workspace, "grant", 10**9, at=FEB)  # next month: not on this statement
    return statement_issue(workspace=workspace, period_start=JAN, period_end=FEB, kind="monthly")


def test_statement_csv_parses_and_ties(statement):
    rows = parse(documents.statement_csv(statement))
    assert tuple(rows[0]) == documents.STATEMENT_CSV_COLUMNS
    assert rows[0]["row_type"] == "opening_balance" and rows[-1]["row_type"] == "closing_balance"
    assert {r["period_start"] for r in rows} == {"2026-01-01T00:00:00Z"}
    assert {r["period_end"] for r in rows} == {"2026-02-01T00:00:00Z"}
    opening, closing = Decimal(rows[0]["amount_usd"]), Decimal(rows[-1]["amount_usd"])
    totals = {r["kind"]: Decimal(r["amount_usd"]) for r in rows if r["row_type"] == "total"}
    assert list(totals) == ["topup", "grant", "usage", "refund", "adjustment"]
    assert opening == Decimal("100.00") and opening + sum(totals.values()) == closing
    assert Decimal(statement.closing_cents) / 100 == closing
    lines = [r for r in rows if r["row_type"] == "usage_line"]
    assert sum(Decimal(r["amount_usd"]) for r in lines) == totals["usage"] < 0
    exact_usage = -(3_333_333 + 7_777_777 + sum(1_000_001 * (i + 1) for i in range(40)))
    assert sum(int(r["amount_nanos"]) for r in lines) == exact_usage
    assert (
        int(next(r for r in rows if r["kind"] == "usage" and r["row_type"] == "total")["amount_nanos"]) == exact_usage
    )
    mini = {r["token_type"]: r for r in lines if r["model"] == "gpt-4o-mini"}
    assert mini["input"]["quantity"] == "12345" and mini["input"]["unit"] == "tokens"
    assert mini["input"]["price_per"] == "1M tokens" and Decimal(mini["input"]["unit_price_usd"]) > 0
    # exact closing: 120 + 0.005004 - usage - 1 + 0.0025 dollars, rounded once
    exact_closing = 120 * 10**9 + 5_004_000 + exact_usage - 10**9 + 2_500_000
    assert int(rows[-1]["amount_nanos"]) == exact_closing


def test_statement_pdf_shows_totals_lines_and_the_rule(statement):
    pdf = documents.statement_pdf(statement)
    assert pdf.startswith(b"%PDF-")
    text = pdf_text(pdf)
    assert "Usage statement" in text and "Stmt & Co" in text
    assert "2026-01-01 to 2026-01-31 (UTC)" in text
    assert "Opening balance" in text and "$100.00" in text and "Closing balance" in text
    assert f"${statement.closing_cents // 100:,}.{statement.closing_cents % 100:02d}" in text
    assert "claude-haiku-4-5" in text and "Cache write" in text and "model-39" in text, "the table runs on"
    assert "Page 2 of" in text
    assert flat(ROUNDING_RULE)[:80] in flat(text)


def test_empty_statement_renders(db):
    workspace = make_workspace("Quiet")
    post(workspace, "grant", 10**9, at=JAN - timedelta(days=1))
    statement = statement_issue(workspace=workspace, period_start=JAN, period_end=FEB, kind="monthly")
    assert "No usage in this period." in pdf_text(documents.statement_pdf(statement))
    rows = parse(documents.statement_csv(statement))
    assert [r["row_type"] for r in rows] == ["opening_balance"] + ["total"] * 5 + ["closing_balance"]
    assert rows[0]["amount_usd"] == rows[-1]["amount_usd"] == "1.00"
