"""Usage statements: a workspace's ledger over [period_start, period_end) (UTC), in cents that tie.

Where the numbers come from:
- opening balance = the exact sum of the workspace's ledger entries created before `period_start`;
- one total per ledger kind (top-ups, grants, usage, refunds, adjustments) = the exact sum of the entries
  created in the period; closing = opening + those totals = the ledger sum before `period_end`;
- usage lines = the workspace's UsageEvents with `ingested_at` in the period: the ingester posts one usage
  debit per workspace and batch, stamped with the `ingested_at` of exactly the events it debits, so these
  are the events behind the period's usage debits. They are grouped per provider x model served x
  credential kind (byok / managed); each group's exact charge (sum of `charge_nanos`) is split over its
  token types (input, cached input, cache write, output, reasoning) in proportion to tokens x the list
  price of that type (the workspace's own price for the model, else the catalog's, with the fallbacks of
  contracts.pricing), plus a `request` line for per-request fees (requests x fee) and one line per billable
  unit type the events carry (`fee:web_search`: web searches x the price's fee for them; the events'
  `units`, summed per group). The plan's rate is the same factor on every type of an event, so the
  proportion is the one the charge was made of; a group without a price splits by tokens, and a group
  without tokens is one `request` line. Splits of nano-USD are exact integers (largest remainder). Unit
  price shown = the line's exact amount / its quantity (USD per 1M tokens, per request, or per unit such
  as a search).

THE ROUNDING RULE (ROUNDING_RULE below; docs/billing.md; the footer of every statement):
  round(x) = x nano-USD to the nearest cent, half a cent away from zero.
  C0 = round(opening). Then, in the fixed order top-up, grant, usage, refund, adjustment, add each kind's
  exact total to the running exact sum S_k and round it: C_k = round(S_k). A kind's cents = C_k - C_{k-1};
  closing = the last C = round(exact closing). So opening + the kinds = closing exactly, opening and
  closing are each the ledger rounded once, and a kind is within one cent of its exact amount.
  Usage lines: the usage total's cents (as a positive charge) are split over the lines in proportion to
  their exact amounts, by largest remainder (ties to the earlier line), so the lines sum exactly to it.

Statements are stored (`Statement`): a monthly one per workspace and calendar month, issued once by
`monthly_statements_issue` (Celery beat: `billing.issue_monthly_statements`) after the month is over
and emailed to the billing contacts with its PDF and CSV; a month-to-date one on demand, which replaces
the workspace's previous month-to-date statement.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from fractions import Fraction
from typing import Any

from django.core.mail import EmailMessage
from django.db import IntegrityError, connection, transaction
from django.db.models import Count, Exists, OuterRef, Q, Sum, Value
from django.db.models.functions import Coalesce, NullIf
from django.utils import timezone

from billing.contacts import billing_contacts
from billing.models import LedgerEntry, ModelPrice, Statement, UsageEvent, WorkspaceModelPrice
from config.errors import ApplicationError
from contracts.pricing import FEE_PREFIX, WEB_SEARCH, Price, Usage, cost_breakdown_usd
from tenants.models import User, Workspace
from tenants.roles import Perm
from tenants.services import require_permission

log = logging.getLogger("turnpike.billing.statements")

NANOS_PER_CENT = 10_000_000
KIND_ORDER: tuple[str, ...] = tuple(LedgerEntry.Kind.values)  # topup, grant, usage, refund, adjustment
TOKEN_TYPES: tuple[str, ...] = ("input", "cached_input", "cache_write", "output", "reasoning")
REQUEST_LINE = "request"
UNITEMISED_LINE = "unitemised"
# Lines of billable units: FEE_PREFIX + the unit's fee name ("fee:web_search"). Label, unit (plural) and
# what its unit price is per, for the units the proxy reports; another name shows as itself.
FEE_UNITS: dict[str, tuple[str, str, str]] = {
    WEB_SEARCH: ("Web searches", "searches", "search"),
    "maps_grounding": ("Maps grounding", "grounded prompts", "grounded prompt"),
}
TOKEN_TYPE_LABELS = {
    "input": "Input",
    "cached_input": "Cached input",
    "cache_write": "Cache write",
    "output": "Output",
    "reasoning": "Reasoning",
    REQUEST_LINE: "Per-request fees",
    UNITEMISED_LINE: "Usage not itemised",
    **{FEE_PREFIX + name: label for name, (label, _, _) in FEE_UNITS.items()},
}
STATEMENT_GRACE = timedelta(minutes=15)  # let transactions stamped before midnight commit before issuing
RULE_ID = "cumulative-half-up-v1"
ROUNDING_RULE = (
    "Rounding: the ledger is kept in nano-USD (10^-9 USD) and rounded to cents here, half a cent away from zero. "
    "Opening = the opening balance rounded once. Then top-ups, grants, usage, refunds and adjustments are added "
    "in that order to the exact running sum, which is rounded after each; each total is the difference of "
    "consecutive rounded sums, so opening + totals = closing, and closing = the closing balance rounded once. "
    "Usage lines share the usage total in proportion to their exact amounts (largest remainder), so they add up "
    "to it exactly."
)


# --- rounding -----------------------------------------------------------------------------------------------


def round_to_cents(nanos: int) -> int:
    """nano-USD to the nearest cent, a half cent away from zero (exact integer arithmetic)."""
    whole, rest = divmod(abs(nanos), NANOS_PER_CENT)
    cents = whole + (1 if 2 * rest >= NANOS_PER_CENT else 0)
    return -cents if nanos < 0 else cents


def allocate(total: int, weights: list[Fraction] | list[int]) -> list[int]:
    """Split the integer `total` in proportion to `weights` by largest remainder: the parts sum to `total`
    exactly; ties go to the earlier weight. Equal weights when they sum to zero."""
    if not weights:
        if total:
            raise ValueError("cannot allocate a non-zero total over no lines")
        return []
    scale: list[Fraction] = [Fraction(w) for w in weights]
    whole = sum(scale, Fraction(0))
    if whole == 0:
        scale, whole = [Fraction(1)] * len(weights), Fraction(len(weights))
    shares = [total * w / whole for w in scale]
    parts = [share.numerator // share.denominator for share in shares]
    left = total - sum(parts)  # 0 <= left < len(weights): the fractional parts sum to it
    order = sorted(range(len(shares)), key=lambda i: (-(shares[i] - parts[i]), i))
    for i in order[:left]:
        parts[i] += 1
    return parts


# --- the statement's numbers ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class KindTotal:
    kind: str
    nanos: int  # exact, signed as in the ledger (credits positive)
    cents: int  # under the rounding rule


@dataclass(frozen=True)
class UsageLine:
    provider: str
    model: str
    credential_kind: str
    token_type: str  # one of TOKEN_TYPES, REQUEST_LINE, UNITEMISED_LINE or FEE_PREFIX + a unit name
    quantity: int  # tokens, requests for a `request` line, units (e.g. searches) for a fee line
    nanos: int  # exact amount charged (positive = a debit of the balance)
    cents: int  # its share of the usage total, in cents (positive = charged)

    @property
    def fee_unit(self) -> str | None:
        """The billable unit of a fee line (`web_search`), else None."""
        return self.token_type.removeprefix(FEE_PREFIX) if self.token_type.startswith(FEE_PREFIX) else None

    @property
    def unit(self) -> str:
        fee = self.fee_unit
        if fee is not None:
            return FEE_UNITS[fee][1] if fee in FEE_UNITS else fee
        return "requests" if self.token_type == REQUEST_LINE else "tokens"

    @property
    def price_per(self) -> str:
        fee = self.fee_unit
        if fee is not None:
            return FEE_UNITS[fee][2] if fee in FEE_UNITS else fee
        return "request" if self.token_type == REQUEST_LINE else "1M tokens"

    @property
    def price_suffix(self) -> str:
        """Short form of `price_per` for a unit price: `req`, `1M` or the unit (`search`)."""
        if self.fee_unit is not None:
            return self.price_per
        return "req" if self.token_type == REQUEST_LINE else "1M"

    @property
    def unit_price_usd(self) -> Decimal | None:
        """The exact amount / quantity: USD per 1M tokens (6 decimals), per request or per unit (9 decimals)."""
        if self.quantity <= 0 or self.token_type == UNITEMISED_LINE:
            return None
        if self.token_type == REQUEST_LINE or self.fee_unit is not None:
            return (Decimal(self.nanos) / self.quantity / 10**9).quantize(Decimal("1e-9"), rounding=ROUND_HALF_UP)
        return (Decimal(self.nanos) / self.quantity / 1000).quantize(Decimal("1e-6"), rounding=ROUND_HALF_UP)

    def as_json(self) -> dict[str, Any]:
        return {
            "provider": self.provider,
            "model": self.model,
            "credential_kind": self.credential_kind,
            "token_type": self.token_type,
            "quantity": self.quantity,
            "nanos": self.nanos,
            "cents": self.cents,
        }


@dataclass(frozen=True)
class StatementData:
    workspace_id: int
    period_start: datetime
    period_end: datetime
    opening_nanos: int
    opening_cents: int
    kinds: tuple[KindTotal, ...]  # KIND_ORDER, then any other kind found, alphabetically
    closing_nanos: int
    closing_cents: int
    lines: tuple[UsageLine, ...]

    def kind(self, kind: str) -> KindTotal:
        return next((k for k in self.kinds if k.kind == kind), KindTotal(kind, 0, 0))

    @property
    def usage_charged_cents(self) -> int:
        """The usage total as a positive charge: what the lines sum to."""
        return -self.kind(LedgerEntry.Kind.USAGE).cents

    def totals_json(self) -> dict[str, Any]:
        return {
            "rule": RULE_ID,
            "opening": {"cents": self.opening_cents, "nanos": self.opening_nanos},
            "kinds": [{"kind": k.kind, "cents": k.cents, "nanos": k.nanos} for k in self.kinds],
            "closing": {"cents": self.closing_cents, "nanos": self.closing_nanos},
        }

    @classmethod
    def from_statement(cls, statement: Statement) -> StatementData:
        totals = statement.totals
        return cls(
            workspace_id=statement.workspace_id,
            period_start=statement.period_start,
            period_end=statement.period_end,
            opening_nanos=int(totals["opening"]["nanos"]),
            opening_cents=statement.opening_cents,
            kinds=tuple(KindTotal(str(k["kind"]), int(k["nanos"]), int(k["cents"])) for k in totals["kinds"]),
            closing_nanos=int(totals["closing"]["nanos"]),
            closing_cents=statement.closing_cents,
            lines=tuple(
                UsageLine(
                    provider=str(line["provider"]),
                    model=str(line["model"]),
                    credential_kind=str(line["credential_kind"]),
                    token_type=str(line["token_type"]),
                    quantity=int(line["quantity"]),
                    nanos=int(line["nanos"]),
                    cents=int(line["cents"]),
                )
                for line in statement.lines
            ),
        )


def _check_period(period_start: datetime, period_end: datetime) -> None:
    for value in (period_start, period_end):
        if not isinstance(value, datetime) or timezone.is_naive(value):
            raise ApplicationError("A statement period needs timezone-aware datetimes.")
    if period_start >= period_end:
        raise ApplicationError("A statement period must end after it starts.")


def _list_price(*, workspace_id: int, provider: str, model: str) -> Price | None:
    own = WorkspaceModelPrice.objects.filter(workspace_id=workspace_id, provider=provider, model=model).first()
    if own is not None:
        return own.to_price()
    row = (
        ModelPrice.objects.filter(provider=provider, model=model).first()
        or ModelPrice.objects.filter(provider=provider, aliases__contains=[model]).first()
    )
    return row.to_price() if row is not None else None


def _group_lines(*, workspace_id: int, group: dict[str, Any], units: dict[str, int]) -> list[UsageLine]:
    """The lines of one provider x model x credential kind, sharing its exact charge (nanos only). `units`:
    the group's billable unit counts by name (web searches), one line each."""
    tokens = {t: int(group[t] or 0) for t in TOKEN_TYPES}
    requests, charge = int(group["requests"]), int(group["charge"] or 0)
    price = _list_price(workspace_id=workspace_id, provider=group["provider"], model=group["model"])
    unit_names = sorted(name for name, count in units.items() if count > 0)
    fee_types = [FEE_PREFIX + name for name in unit_names]
    types = [*TOKEN_TYPES, REQUEST_LINE, *fee_types]
    weights: list[Fraction] = []
    if price is not None:
        usage = Usage(
            input=max(tokens["input"], 0),
            cached_input=max(tokens["cached_input"], 0),
            cache_write=max(tokens["cache_write"], 0),
            output=max(tokens["output"], 0),
            reasoning=max(tokens["reasoning"], 0),
            units=tuple((name, units[name]) for name in unit_names),
        )
        cost = cost_breakdown_usd(price, usage)
        weights = [Fraction(cost[t]) for t in TOKEN_TYPES] + [Fraction(requests * price.request_fee)]
        weights += [Fraction(cost.get(t, 0)) for t in fee_types]  # a unit the price has no fee for: 0
    if not any(weights):
        weights = [Fraction(tokens[t]) for t in TOKEN_TYPES] + [Fraction(0)] * (1 + len(fee_types))
    if not any(weights):
        weights = [Fraction(0)] * len(TOKEN_TYPES) + [Fraction(1)] + [Fraction(0)] * len(fee_types)
    amounts = allocate(charge, weights)
    quantities = [*(tokens[t] for t in TOKEN_TYPES), requests, *(units[name] for name in unit_names)]
    return [
        UsageLine(
            provider=group["provider"],
            model=group["model"],
            credential_kind=group["credential_kind"],
            token_type=token_type,
            quantity=quantity if token_type != REQUEST_LINE or nanos else 0,
            nanos=nanos,
            cents=0,
        )
        for token_type, quantity, nanos in zip(types, quantities, amounts, strict=True)
        if nanos or (quantity and token_type != REQUEST_LINE)
    ]


def _usage_lines(*, workspace_id: int, period_start: datetime, period_end: datetime) -> list[UsageLine]:
    groups = (
        UsageEvent.objects.filter(workspace_id=workspace_id, ingested_at__gte=period_start, ingested_at__lt=period_end)
        .annotate(served=Coalesce(NullIf("model_served", Value("")), "model_requested"))
        .values("provider", "served", "credential_kind")
        .annotate(
            requests=Count("id"),
            input=Sum("input_tokens"),
            cached_input=Sum("cached_input_tokens"),
            cache_write=Sum("cache_write_tokens"),
            output=Sum("output_tokens"),
            reasoning=Sum("reasoning_tokens"),
            charge=Sum("charge_nanos"),
        )
        .order_by("provider", "served", "credential_kind")
    )
    units = _group_units(workspace_id=workspace_id, period_start=period_start, period_end=period_end)
    lines: list[UsageLine] = []
    for group in groups:
        row: dict[str, Any] = dict(group)
        row["model"] = row.pop("served")
        key = (row["provider"], row["model"], row["credential_kind"])
        lines.extend(_group_lines(workspace_id=workspace_id, group=row, units=units.get(key, {})))
    return lines


_GROUP_UNITS_SQL = """
SELECT e.provider, COALESCE(NULLIF(e.model_served, ''), e.model_requested) AS served, e.credential_kind,
       u.key, SUM(u.value::numeric)
FROM billing_usageevent e CROSS JOIN LATERAL jsonb_each(e.units) AS u(key, value)
WHERE e.workspace_id = %s AND e.ingested_at >= %s AND e.ingested_at < %s
  AND e.units <> '{}'::jsonb AND jsonb_typeof(u.value) = 'number'
GROUP BY 1, 2, 3, 4
"""


def _group_units(
    *, workspace_id: int, period_start: datetime, period_end: datetime
) -> dict[tuple[str, str, str], dict[str, int]]:
    """The billable units of the period's events, summed per provider x model served x credential kind and
    unit name (the same groups as the token sums). Only events that carry units are read."""
    out: dict[tuple[str, str, str], dict[str, int]] = {}
    with connection.cursor() as cursor:
        cursor.execute(_GROUP_UNITS_SQL, [workspace_id, period_start, period_end])
        for provider, served, credential_kind, name, total in cursor.fetchall():
            out.setdefault((provider, served, credential_kind), {})[name] = int(total)
    return out


def build_statement(*, workspace_id: int, period_start: datetime, period_end: datetime) -> StatementData:
    """The statement's numbers for [period_start, period_end), computed from the ledger and the events.

    Its queries read one snapshot (a REPEATABLE READ transaction), so a usage batch committing meanwhile
    is either wholly in (debit and events) or wholly out. Inside a caller's transaction, that one's."""
    _check_period(period_start, period_end)
    if transaction.get_connection().in_atomic_block:
        return _build(workspace_id=workspace_id, period_start=period_start, period_end=period_end)
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        return _build(workspace_id=workspace_id, period_start=period_start, period_end=period_end)


def _build(*, workspace_id: int, period_start: datetime, period_end: datetime) -> StatementData:
    entries = LedgerEntry.objects.filter(workspace_id=workspace_id)
    opening = int(entries.filter(created_at__lt=period_start).aggregate(t=Sum("amount_nanos"))["t"] or 0)
    per_kind = {
        row["kind"]: int(row["t"] or 0)
        for row in entries.filter(created_at__gte=period_start, created_at__lt=period_end)
        .values("kind")
        .annotate(t=Sum("amount_nanos"))
        .order_by()
    }
    order = [*KIND_ORDER, *sorted(set(per_kind) - set(KIND_ORDER))]
    running = opening
    rounded = opening_cents = round_to_cents(opening)
    kinds: list[KindTotal] = []
    for kind in order:
        running += per_kind.get(kind, 0)
        now_rounded = round_to_cents(running)
        kinds.append(KindTotal(kind=kind, nanos=per_kind.get(kind, 0), cents=now_rounded - rounded))
        rounded = now_rounded

    lines = _usage_lines(workspace_id=workspace_id, period_start=period_start, period_end=period_end)
    usage_nanos = -per_kind.get(LedgerEntry.Kind.USAGE, 0)  # as a positive charge
    itemised = sum(line.nanos for line in lines)
    if itemised != usage_nanos:  # never expected: a usage debit whose events are not in the period
        lines.append(UsageLine("", "", "", UNITEMISED_LINE, 0, usage_nanos - itemised, 0))
    usage_cents = -next(k.cents for k in kinds if k.kind == LedgerEntry.Kind.USAGE)
    cents = allocate(usage_cents, [line.nanos for line in lines])
    return StatementData(
        workspace_id=workspace_id,
        period_start=period_start,
        period_end=period_end,
        opening_nanos=opening,
        opening_cents=opening_cents,
        kinds=tuple(kinds),
        closing_nanos=running,
        closing_cents=rounded,
        lines=tuple(
            UsageLine(
                provider=line.provider,
                model=line.model,
                credential_kind=line.credential_kind,
                token_type=line.token_type,
                quantity=line.quantity,
                nanos=line.nanos,
                cents=share,
            )
            for line, share in zip(lines, cents, strict=True)
        ),
    )


# --- issuing -------------------------------------------------------------------------------------------------


def month_start(moment: datetime) -> datetime:
    """The first instant (UTC) of `moment`'s calendar month."""
    return moment.astimezone(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def next_month(start: datetime) -> datetime:
    return month_start(month_start(start) + timedelta(days=32))


def _create(workspace: Workspace, kind: str, data: StatementData) -> Statement:
    return Statement.objects.create(
        workspace=workspace,
        kind=kind,
        period_start=data.period_start,
        period_end=data.period_end,
        opening_cents=data.opening_cents,
        closing_cents=data.closing_cents,
        totals=data.totals_json(),
        lines=[line.as_json() for line in data.lines],
        issued_at=timezone.now(),
    )


def statement_issue(*, workspace: Workspace, period_start: datetime, period_end: datetime, kind: str) -> Statement:
    """Store the statement of `workspace` for the period.

    monthly: the period must be a whole calendar month (UTC) that is over; idempotent (the stored one is
    returned, also to a concurrent caller). to_date: a fresh statement replacing the workspace's previous
    month-to-date one."""
    _check_period(period_start, period_end)
    if kind == Statement.Kind.MONTHLY:
        if period_start != month_start(period_start) or period_end != next_month(period_start):
            raise ApplicationError("A monthly statement covers one whole calendar month (UTC).")
        if period_end > timezone.now():
            raise ApplicationError("A monthly statement is issued once its month is over.")
        existing = Statement.objects.filter(workspace=workspace, kind=kind, period_start=period_start).first()
        if existing is not None:
            return existing
        data = build_statement(workspace_id=workspace.pk, period_start=period_start, period_end=period_end)
        try:
            with transaction.atomic():
                return _create(workspace, kind, data)
        except IntegrityError:  # a concurrent caller stored it first
            return Statement.objects.get(workspace=workspace, kind=kind, period_start=period_start)
    if kind == Statement.Kind.TO_DATE:
        data = build_statement(workspace_id=workspace.pk, period_start=period_start, period_end=period_end)
        with transaction.atomic():
            Workspace.objects.select_for_update().filter(pk=workspace.pk).first()  # one replacement at a time
            Statement.objects.filter(workspace=workspace, kind=kind).delete()
            return _create(workspace, kind, data)
    raise ApplicationError(f"Unknown statement kind {kind!r}.")


def statement_generate_month_to_date(*, workspace: Workspace, acting_user: User) -> Statement:
    """The current calendar month (UTC) to now, for a member allowed to see billing."""
    require_permission(workspace=workspace, user=acting_user, perm=Perm.BILLING_VIEW)
    now = timezone.now()
    return statement_issue(
        workspace=workspace, period_start=month_start(now), period_end=now, kind=Statement.Kind.TO_DATE
    )


# --- emailing ------------------------------------------------------------------------------------------------


def statement_email(*, statement: Statement) -> bool:
    """Email the statement (PDF and CSV attached) to the billing contacts, once: the row is locked while
    sending and `emailed_at` set in the same transaction. False if it was already sent or has no one to
    go to. A crash after sending and before the commit sends it again on the next run (at least once)."""
    from billing import documents  # documents renders StatementData from this module

    with transaction.atomic():
        row = Statement.objects.select_for_update().select_related("workspace").get(pk=statement.pk)
        if row.emailed_at is not None:
            return False
        recipients = billing_contacts(workspace=row.workspace)
        if not recipients:
            log.warning("statement %s of workspace %s: no billing contact to email", row.public_id, row.workspace_id)
            return False
        period = f"{row.period_start:%Y-%m}" if row.kind == Statement.Kind.MONTHLY else "month to date"
        message = EmailMessage(
            subject=f"[Turnpike] Usage statement {period} for {row.workspace.name}",
            body=(
                f"Attached is the usage statement of the workspace {row.workspace.name!r}, as PDF and CSV.\n\n"
                f"Period: {documents.statement_period_text(row)}\n"
                f"Opening balance: {documents.money(row.opening_cents)}\n"
                f"Closing balance: {documents.money(row.closing_cents)}\n\n{ROUNDING_RULE}\n"
            ),
            to=recipients,
        )
        message.attach(documents.statement_filename(row, "pdf"), documents.statement_pdf(row), "application/pdf")
        message.attach(documents.statement_filename(row, "csv"), documents.statement_csv(row), "text/csv")
        message.send()
        Statement.objects.filter(pk=row.pk).update(emailed_at=timezone.now())
    return True


def monthly_statements_issue(*, now: datetime | None = None) -> dict[str, int]:
    """Issue (if missing) and email the previous UTC month's statement of every workspace with a ledger
    entry or a usage event before the month's end. Waits STATEMENT_GRACE into the new month, so postings
    stamped before midnight have committed. One workspace's failure is logged; the others go on, and the
    next run (hourly) tries it again."""
    now = now or timezone.now()
    period_end = month_start(now)
    if now - period_end < STATEMENT_GRACE:
        return {"workspaces": 0, "emailed": 0, "failed": 0}
    period_start = month_start(period_end - timedelta(days=1))
    pending = (
        Workspace.objects.filter(
            Q(Exists(LedgerEntry.objects.filter(workspace=OuterRef("pk"), created_at__lt=period_end)))
            | Q(Exists(UsageEvent.objects.filter(workspace=OuterRef("pk"), ingested_at__lt=period_end)))
        )
        .exclude(
            Exists(
                Statement.objects.filter(
                    workspace=OuterRef("pk"),
                    kind=Statement.Kind.MONTHLY,
                    period_start=period_start,
                    emailed_at__isnull=False,
                )
            )
        )
        .order_by("pk")
    )
    counts = {"workspaces": 0, "emailed": 0, "failed": 0}
    for workspace in pending:
        counts["workspaces"] += 1
        try:
            statement = statement_issue(
                workspace=workspace, period_start=period_start, period_end=period_end, kind=Statement.Kind.MONTHLY
            )
            if statement_email(statement=statement):
                counts["emailed"] += 1
        except Exception:
            counts["failed"] += 1
            log.exception("monthly statement %s of workspace %s failed", f"{period_start:%Y-%m}", workspace.pk)
    return counts
