"""Rendering invoices, credit notes and statements as PDF and CSV.

PDF: fpdf2 (pure Python, no system packages; embeds a subset of a TrueType font, so any text the font
covers renders). The font is DejaVu Sans, bundled in billing/fonts/ with its licence, never a system font.
A character the font lacks (CJK, most emoji) is drawn as U+FFFD, and control characters (NUL included)
are dropped, so no buyer name can break a document; the CSV keeps the text as stored.

CSV: one header row, then one row per line; dates ISO 8601 (UTC); amounts as decimal strings (`12.34`,
`-3.00`) and, where lines carry sub-cent amounts, the exact nano-USD beside them. Free-text cells that
start with = + - @ (a spreadsheet would run them as formulas) are prefixed with an apostrophe.

Sign conventions: credit notes carry negative amounts. In a statement CSV every amount is signed by its
effect on the balance (credits positive, debits negative), so usage lines are negative and
opening + the `total` rows = closing; the PDF shows usage lines as positive charges under "Usage".
"""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from functools import cache
from pathlib import Path

from fontTools.ttLib import TTFont
from fpdf import FPDF
from fpdf.enums import WrapMode, XPos, YPos
from fpdf.fonts import FontFace

from billing.models import Invoice, Statement
from billing.statements import (
    ROUNDING_RULE,
    TOKEN_TYPE_LABELS,
    UNITEMISED_LINE,
    StatementData,
    UsageLine,
)

logging.getLogger("fontTools").setLevel(logging.WARNING)  # fpdf2 subsets the font per document, chattily

FONT_DIR = Path(__file__).resolve().parent / "fonts"
FONT_REGULAR = FONT_DIR / "DejaVuSans.ttf"
FONT_BOLD = FONT_DIR / "DejaVuSans-Bold.ttf"
FONT = "dejavu"
REPLACEMENT = "\ufffd"
KIND_LABELS = {
    "topup": "Top-ups",
    "grant": "Grants",
    "usage": "Usage",
    "refund": "Refunds",
    "adjustment": "Adjustments",
}
INVOICE_RULE = (
    "Amounts in USD. Tax = net amount x rate, rounded half-up to the cent. A credit note carries negative "
    "amounts; its tax is the invoice's tax pro rata to the amount credited, rounded half-up on the running "
    "total, so that crediting the whole invoice returns exactly the tax invoiced."
)
INVOICE_CSV_COLUMNS = (
    "document_type",
    "number",
    "issue_date",
    "corrects_number",
    "seller_name",
    "seller_tax_id",
    "buyer_name",
    "buyer_address",
    "buyer_country",
    "buyer_tax_id",
    "workspace",
    "description",
    "currency",
    "net_amount",
    "tax_rate",
    "tax_amount",
    "total_amount",
    "reverse_charge",
    "tax_note",
    "payment_reference",
)
STATEMENT_CSV_COLUMNS = (
    "workspace",
    "period_start",
    "period_end",
    "row_type",
    "kind",
    "provider",
    "model",
    "credential_kind",
    "token_type",
    "quantity",
    "unit",
    "unit_price_usd",
    "price_per",
    "amount_usd",
    "amount_nanos",
)


# --- formatting ----------------------------------------------------------------------------------------------


def cents_decimal(cents: int) -> str:
    """'12.34', '-3.00', '0.00': a machine-friendly decimal string of a cent amount."""
    sign = "-" if cents < 0 else ""
    whole, rest = divmod(abs(cents), 100)
    return f"{sign}{whole}.{rest:02d}"


def money(cents: int) -> str:
    """'$1,234.56', '-$3.00': a cent amount for a person to read."""
    sign = "-" if cents < 0 else ""
    whole, rest = divmod(abs(cents), 100)
    return f"{sign}${whole:,}.{rest:02d}"


def nanos_decimal(nanos: int) -> str:
    """Exact USD of a nano-USD amount: '0.000012345'."""
    sign = "-" if nanos < 0 else ""
    whole, rest = divmod(abs(nanos), 10**9)
    return f"{sign}{whole}.{rest:09d}"


def decimal_text(value: Decimal | None, *, min_places: int = 2) -> str:
    """A Decimal without trailing zeros beyond `min_places`: '0.165', '2.50'."""
    if value is None:
        return ""
    text = format(value.normalize(), "f")
    whole, _, fraction = text.partition(".")
    return f"{whole}.{fraction.ljust(min_places, '0')}" if min_places or fraction else whole


def rate_text(rate: Decimal) -> str:
    return decimal_text(rate, min_places=0) if rate else "0"


def percent_text(rate: Decimal) -> str:
    return f"{decimal_text(rate * 100, min_places=0)}%"


def iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def _csv_text(value: str) -> str:
    """A free-text cell: control characters (NUL included) dropped, a formula-like start neutralised."""
    value = "".join(ch for ch in value if ch >= " " or ch == "\n")
    return "'" + value if value[:1] in ("=", "+", "-", "@") else value


def _csv(columns: Sequence[str], rows: Iterable[dict[str, object]]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(columns), lineterminator="\r\n")
    writer.writeheader()
    for row in rows:
        writer.writerow(row)
    return out.getvalue()


# --- PDF scaffolding -----------------------------------------------------------------------------------------


@cache
def _covered() -> frozenset[int]:
    """Code points both bundled fonts can draw."""
    regular = set(TTFont(str(FONT_REGULAR), lazy=True)["cmap"].getBestCmap())
    bold = set(TTFont(str(FONT_BOLD), lazy=True)["cmap"].getBestCmap())
    return frozenset(regular & bold)


def pdf_text(value: object) -> str:
    """Text the bundled font can draw: control characters dropped (newlines kept), others it lacks as U+FFFD."""
    covered = _covered()
    chars = []
    for ch in str(value):
        if ch == "\n" or (ch >= " " and not 0x7F <= ord(ch) < 0xA0):
            chars.append(ch if ord(ch) in covered else REPLACEMENT)
    return "".join(chars)


class _Document(FPDF):
    def __init__(self, *, title: str, footer_text: str) -> None:
        super().__init__(orientation="portrait", unit="mm", format="A4")
        self.footer_text = footer_text
        self.add_font(FONT, "", str(FONT_REGULAR))
        self.add_font(FONT, "B", str(FONT_BOLD))
        self.set_title(title)
        self.set_creator("Turnpike")
        self.set_margins(18, 18, 18)
        self.set_auto_page_break(auto=True, margin=32)
        self.alias_nb_pages()
        self.add_page()

    def footer(self) -> None:
        self.set_y(-28)
        self.set_font(FONT, "", 7)
        self.set_text_color(90)
        self.multi_cell(0, 3.2, pdf_text(self.footer_text), align="L", new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        self.cell(0, 4, f"Page {self.page_no()} of {{nb}}", align="R")
        self.set_text_color(0)

    def line_text(self, text: str, *, size: float = 9, bold: bool = False, height: float = 4.6) -> None:
        self.set_font(FONT, "B" if bold else "", size)
        self.multi_cell(0, height, pdf_text(text), align="L", new_x=XPos.LMARGIN, new_y=YPos.NEXT)

    def heading(self, title: str, right: str) -> None:
        self.set_font(FONT, "B", 18)
        self.cell(100, 10, pdf_text(title))
        self.set_font(FONT, "B", 12)
        self.cell(0, 10, pdf_text(right), align="R", new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        self.ln(2)

    def two_blocks(self, left: tuple[str, list[str]], right: tuple[str, list[str]]) -> None:
        """Two address blocks side by side."""
        top, width = self.get_y(), (self.w - self.l_margin - self.r_margin) / 2 - 4
        bottoms = []
        for x, (title, lines) in ((self.l_margin, left), (self.l_margin + width + 8, right)):
            self.set_xy(x, top)
            self.set_font(FONT, "B", 9)
            self.multi_cell(width, 4.6, pdf_text(title), align="L", new_x=XPos.LEFT, new_y=YPos.NEXT)
            self.set_font(FONT, "", 9)
            for line in lines:
                if line:
                    self.multi_cell(width, 4.6, pdf_text(line), align="L", new_x=XPos.LEFT, new_y=YPos.NEXT)
            bottoms.append(self.get_y())
        self.set_xy(self.l_margin, max(bottoms) + 4)

    def grid(
        self,
        rows: Sequence[Sequence[str]],
        *,
        widths: Sequence[float],
        align: Sequence[str],
        bold_last: bool = False,
    ) -> None:
        self.set_font(FONT, "", 8.5)
        with self.table(
            col_widths=tuple(widths),
            text_align=tuple(align),
            width=self.w - self.l_margin - self.r_margin,
            wrapmode=WrapMode.WORD,
            line_height=4.6,
            headings_style=FontFace(emphasis="BOLD", fill_color=(235, 235, 235)),
            borders_layout="SINGLE_TOP_LINE",
        ) as table:
            for index, cells in enumerate(rows):
                style = FontFace(emphasis="BOLD") if bold_last and index == len(rows) - 1 else None
                row = table.row(style=style)
                for cell in cells:
                    row.cell(pdf_text(cell))
        self.ln(3)

    def render(self) -> bytes:
        return bytes(self.output())


# --- invoices ------------------------------------------------------------------------------------------------


def _doc_title(invoice: Invoice) -> str:
    return "Credit note" if invoice.kind == Invoice.Kind.CREDIT_NOTE else "Invoice"


def _buyer_address(buyer: dict[str, object]) -> list[str]:
    """The buyer's address lines, without the country."""
    city = " ".join(str(buyer.get(k) or "") for k in ("postal_code", "city")).strip()
    lines = [str(buyer.get("address_line1") or ""), str(buyer.get("address_line2") or ""), city]
    return [line for line in [*lines, str(buyer.get("region") or "")] if line]


def invoice_filename(invoice: Invoice, ext: str) -> str:
    return f"turnpike-{invoice.number}.{ext}"


def invoice_pdf(invoice: Invoice) -> bytes:
    title = _doc_title(invoice)
    doc = _Document(title=f"{title} {invoice.number}", footer_text=INVOICE_RULE)
    doc.heading(title, invoice.number)
    corrects = invoice.corrects.number if invoice.corrects_id and invoice.corrects else ""
    meta = [
        f"Number: {invoice.number}",
        f"Issue date: {invoice.issued_at:%Y-%m-%d}",
        f"Corrects invoice: {corrects}" if corrects else "",
        f"Payment reference: {invoice.payment_reference}" if invoice.payment_reference else "",
        "Paid in full by card." if invoice.kind == Invoice.Kind.INVOICE else "Amount credited to the buyer.",
    ]
    for line in meta:
        if line:
            doc.line_text(line)
    doc.ln(4)
    seller, buyer = invoice.seller or {}, invoice.buyer or {}
    doc.two_blocks(
        (
            "From",
            [
                str(seller.get("name", "")),
                str(seller.get("address", "")),
                str(seller.get("country", "")),
                f"VAT ID: {seller['tax_id']}" if seller.get("tax_id") else "",
                str(seller.get("email", "")),
            ],
        ),
        (
            "Bill to",
            [
                str(buyer.get("name", "")),
                *_buyer_address(buyer),
                str(buyer.get("country") or ""),
                f"Tax ID: {buyer['tax_id']}" if buyer.get("tax_id") else "",
                f"Workspace: {buyer['workspace']}" if buyer.get("workspace") else "",
            ],
        ),
    )
    doc.grid(
        [
            ("Description", "Net", "Tax rate", "Tax", "Total"),
            (
                invoice.description,
                money(invoice.net_cents),
                percent_text(invoice.tax_rate),
                money(invoice.tax_cents),
                money(invoice.total_cents),
            ),
        ],
        widths=(80, 25, 20, 25, 25),
        align=("LEFT", "RIGHT", "RIGHT", "RIGHT", "RIGHT"),
    )
    doc.grid(
        [
            ("", "Amount (USD)"),
            ("Net", money(invoice.net_cents)),
            (f"Tax ({percent_text(invoice.tax_rate)})", money(invoice.tax_cents)),
            ("Total", money(invoice.total_cents)),
        ],
        widths=(130, 45),
        align=("RIGHT", "RIGHT"),
        bold_last=True,
    )
    if invoice.tax_note:
        doc.line_text(invoice.tax_note, size=8.5)
    return doc.render()


def invoice_csv(invoice: Invoice) -> str:
    seller, buyer = invoice.seller or {}, invoice.buyer or {}
    row: dict[str, object] = {
        "document_type": invoice.kind,
        "number": invoice.number,
        "issue_date": invoice.issued_at.date().isoformat(),
        "corrects_number": invoice.corrects.number if invoice.corrects_id and invoice.corrects else "",
        "seller_name": _csv_text(str(seller.get("name", ""))),
        "seller_tax_id": _csv_text(str(seller.get("tax_id", ""))),
        "buyer_name": _csv_text(str(buyer.get("name", ""))),
        "buyer_address": _csv_text(", ".join(_buyer_address(buyer))),
        "buyer_country": str(buyer.get("country", "")),
        "buyer_tax_id": _csv_text(str(buyer.get("tax_id", ""))),
        "workspace": _csv_text(str(buyer.get("workspace", ""))),
        "description": _csv_text(invoice.description),
        "currency": invoice.currency,
        "net_amount": cents_decimal(invoice.net_cents),
        "tax_rate": rate_text(invoice.tax_rate),
        "tax_amount": cents_decimal(invoice.tax_cents),
        "total_amount": cents_decimal(invoice.total_cents),
        "reverse_charge": "true" if invoice.reverse_charge else "false",
        "tax_note": _csv_text(invoice.tax_note),
        "payment_reference": _csv_text(invoice.payment_reference),
    }
    return _csv(INVOICE_CSV_COLUMNS, [row])


# --- statements ----------------------------------------------------------------------------------------------


def statement_period_text(statement: Statement) -> str:
    start, end = statement.period_start, statement.period_end
    if statement.kind == Statement.Kind.MONTHLY:
        return f"{start:%Y-%m-%d} to {end - timedelta(microseconds=1):%Y-%m-%d} (UTC)"
    return f"{start:%Y-%m-%d %H:%M} to {end:%Y-%m-%d %H:%M} UTC (month to date)"


def statement_filename(statement: Statement, ext: str) -> str:
    slug = statement.workspace.slug
    if statement.kind == Statement.Kind.MONTHLY:
        return f"turnpike-statement-{slug}-{statement.period_start:%Y-%m}.{ext}"
    return f"turnpike-statement-{slug}-{statement.period_end:%Y-%m-%d}-month-to-date.{ext}"


def _line_label(line: UsageLine) -> tuple[str, str, str, str]:
    return (
        line.provider,
        line.model,
        {"byok": "own key", "managed": "managed"}.get(line.credential_kind, line.credential_kind),
        TOKEN_TYPE_LABELS.get(line.token_type, line.token_type),
    )


def _unit_price_text(line: UsageLine) -> str:
    price = line.unit_price_usd
    if price is None:
        return ""
    return f"${decimal_text(price)}/{line.price_suffix}"


def statement_pdf(statement: Statement) -> bytes:
    data = StatementData.from_statement(statement)
    title = "Usage statement"
    doc = _Document(
        title=f"{title} {statement.workspace.name} {statement.period_start:%Y-%m}", footer_text=ROUNDING_RULE
    )
    doc.heading(title, f"{statement.period_start:%Y-%m}")
    doc.line_text(f"Workspace: {statement.workspace.name}", bold=True)
    doc.line_text(f"Period: {statement_period_text(statement)}")
    doc.line_text(f"Issued: {statement.issued_at:%Y-%m-%d %H:%M} UTC")
    doc.ln(4)
    summary: list[tuple[str, str]] = [("", "Amount (USD)"), ("Opening balance", money(data.opening_cents))]
    summary += [(KIND_LABELS.get(k.kind, k.kind.title()), money(k.cents)) for k in data.kinds]
    summary.append(("Closing balance", money(data.closing_cents)))
    doc.line_text("Balance", size=11, bold=True, height=6)
    doc.grid(summary, widths=(130, 45), align=("LEFT", "RIGHT"), bold_last=True)

    doc.line_text("Usage", size=11, bold=True, height=6)
    if not data.lines:
        doc.line_text("No usage in this period.")
    else:
        rows: list[tuple[str, ...]] = [("Provider", "Model", "Key", "Type", "Quantity", "Unit price", "Amount")]
        for line in data.lines:
            quantity = f"{line.quantity:,}" if line.token_type != UNITEMISED_LINE else ""
            rows.append((*_line_label(line), quantity, _unit_price_text(line), money(line.cents)))
        rows.append(("", "Usage total", "", "", "", "", money(data.usage_charged_cents)))
        doc.grid(
            rows,
            widths=(19, 43, 18, 22, 22, 31, 19),
            align=("LEFT", "LEFT", "LEFT", "LEFT", "RIGHT", "RIGHT", "RIGHT"),
            bold_last=True,
        )
        doc.line_text(
            "Amounts are charges to the prepaid balance. Quantity is tokens, or requests for per-request fees. "
            "Unit price = the line's exact amount / its quantity, in USD per 1M tokens (/1M), per request (/req) "
            "or per web search (/search).",
            size=7.5,
        )
    return doc.render()


def statement_csv(statement: Statement) -> str:
    data = StatementData.from_statement(statement)
    base = {
        "workspace": _csv_text(statement.workspace.name),
        "period_start": iso(statement.period_start),
        "period_end": iso(statement.period_end),
    }
    rows: list[dict[str, object]] = [
        base
        | {
            "row_type": "opening_balance",
            "amount_usd": cents_decimal(data.opening_cents),
            "amount_nanos": data.opening_nanos,
        }
    ]
    rows += [
        base | {"row_type": "total", "kind": k.kind, "amount_usd": cents_decimal(k.cents), "amount_nanos": k.nanos}
        for k in data.kinds
    ]
    for line in data.lines:
        price = line.unit_price_usd
        rows.append(
            base
            | {
                "row_type": "usage_line",
                "kind": "usage",
                "provider": _csv_text(line.provider),
                "model": _csv_text(line.model),
                "credential_kind": line.credential_kind,
                "token_type": line.token_type,
                "quantity": line.quantity if line.token_type != UNITEMISED_LINE else "",
                "unit": line.unit if line.token_type != UNITEMISED_LINE else "",
                "unit_price_usd": decimal_text(price) if price is not None else "",
                "price_per": line.price_per if price is not None else "",
                "amount_usd": cents_decimal(-line.cents),
                "amount_nanos": -line.nanos,
            }
        )
    rows.append(
        base
        | {
            "row_type": "closing_balance",
            "amount_usd": cents_decimal(data.closing_cents),
            "amount_nanos": data.closing_nanos,
        }
    )
    return _csv(STATEMENT_CSV_COLUMNS, rows)
