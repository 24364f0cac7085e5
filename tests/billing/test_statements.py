"""Statements: for random ledgers (top-ups, grants, usage batches posted the way the ingester posts them,
refunds, adjustments, across month boundaries) every statement ties to the ledger under the rounding rule
and its usage lines sum to its usage total; monthly statements are issued once and emailed once."""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal

import pytest
from django.core import mail
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from billing import documents
from billing.models import BillingProfile, LedgerEntry, ModelPrice, Statement, WorkspaceModelPrice
from billing.statements import (
    REQUEST_LINE,
    ROUNDING_RULE,
    allocate,
    build_statement,
    monthly_statements_issue,
    round_to_cents,
    statement_generate_month_to_date,
    statement_issue,
)
from config.errors import ApplicationError, PermissionDenied
from tenants.models import Membership, User
from tenants.roles import Role
from tests.billing.docsupport import Ev, make_key, make_workspace, post, post_usage_batch

T0 = datetime(2026, 1, 1, tzinfo=UTC)
MONTHS = [datetime(2025, 12, 1, tzinfo=UTC), T0, datetime(2026, 2, 1, tzinfo=UTC), datetime(2026, 3, 1, tzinfo=UTC)]
SPAN = int((datetime(2026, 4, 1, tzinfo=UTC) - datetime(2025, 12, 1, tzinfo=UTC)).total_seconds())
MICRO = timedelta(microseconds=1)
MODELS = [("openai", "gpt-priced"), ("anthropic", "claude-fee"), ("groq", "unpriced-model"), ("openai", "own-price")]


def exact_cents(nanos: int) -> int:
    """The reference rounding: Decimal half-up (away from zero), independent of billing.statements."""
    return int((Decimal(nanos) / 10_000_000).quantize(Decimal(1), rounding=ROUND_HALF_UP))


@pytest.fixture
def prices(db):
    ModelPrice.objects.update_or_create(
        provider="openai",
        model="gpt-priced",
        defaults={
            "input_usd_per_mtok": Decimal("0.15"),
            "output_usd_per_mtok": Decimal("0.6"),
            "cached_input_usd_per_mtok": Decimal("0.075"),
        },
    )
    ModelPrice.objects.update_or_create(
        provider="anthropic",
        model="claude-fee",
        defaults={
            "input_usd_per_mtok": Decimal("3"),
            "output_usd_per_mtok": Decimal("15"),
            "cache_write_usd_per_mtok": Decimal("3.75"),
            "request_fee_usd": Decimal("0.001"),
        },
    )


moments = st.one_of(
    st.integers(min_value=0, max_value=SPAN - 1).map(lambda s: MONTHS[0] + timedelta(seconds=s)),
    st.sampled_from(MONTHS[1:]).flatmap(lambda m: st.sampled_from([m - MICRO, m, m + MICRO])),
)
nanos = st.integers(min_value=1, max_value=50 * 10**9)
events = st.builds(
    lambda model, kind, tokens, charge: Ev(model[0], model[1], kind, *tokens, charge_nanos=charge),
    st.sampled_from(MODELS),
    st.sampled_from(["byok", "managed"]),
    st.tuples(*[st.sampled_from([0, 1, 7, 999, 123_456, 10**7])] * 5),
    st.one_of(st.just(0), st.integers(min_value=1, max_value=2 * 10**9)),
)
operations = st.lists(
    st.one_of(
        st.tuples(st.just("topup"), moments, st.integers(min_value=1, max_value=100_000).map(lambda c: c * 10**7)),
        st.tuples(st.just("grant"), moments, nanos),
        st.tuples(st.just("usage"), moments, st.lists(events, min_size=1, max_size=4)),
        st.tuples(st.just("refund"), moments, nanos.map(lambda n: -n)),
        st.tuples(st.just("adjustment"), moments, st.integers(min_value=-(10**10), max_value=10**10)),
    ),
    max_size=14,
)


def check_statement(data, ledger: list[tuple[datetime, str, int]], usage: list[tuple[datetime, Ev]]) -> None:
    start, end = data.period_start, data.period_end
    opening = sum(n for at, _, n in ledger if at < start)
    per_kind: dict[str, int] = defaultdict(int)
    for at, kind, n in ledger:
        if start <= at < end:
            per_kind[kind] += n
    closing = opening + sum(per_kind.values())

    assert data.opening_nanos == opening and data.closing_nanos == closing
    assert data.opening_cents == exact_cents(opening)
    assert data.closing_cents == exact_cents(closing)
    assert data.opening_cents + sum(k.cents for k in data.kinds) == data.closing_cents
    assert [k.kind for k in data.kinds] == ["topup", "grant", "usage", "refund", "adjustment"]
    for k in data.kinds:
        assert k.nanos == per_kind[k.kind]
        assert abs(k.cents * 10_000_000 - k.nanos) <= 10_000_000, k

    usage_total = data.kind("usage")
    assert sum(line.cents for line in data.lines) == -usage_total.cents == data.usage_charged_cents
    assert sum(line.nanos for line in data.lines) == -usage_total.nanos
    assert all(line.cents >= 0 for line in data.lines)
    # every token of the period's events is on a line, once
    expected: dict[tuple[str, str, str, str], int] = defaultdict(int)
    for at, e in usage:
        if start <= at < end:
            for token_type in ("input", "cached_input", "cache_write", "output", "reasoning"):
                expected[(e.provider, e.model, e.credential_kind, token_type)] += getattr(e, token_type)
    shown = {
        (line.provider, line.model, line.credential_kind, line.token_type): line.quantity
        for line in data.lines
        if line.token_type != REQUEST_LINE
    }
    assert shown == {k: v for k, v in expected.items() if v}
    assert all(line.token_type != "unitemised" for line in data.lines)


@pytest.mark.django_db
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=operations, extra=st.tuples(moments, moments))
def test_statements_tie_to_the_ledger_to_the_cent(prices, ops, extra):
    workspace = make_workspace()
    key = make_key(workspace)
    WorkspaceModelPrice.objects.create(
        workspace=workspace,
        provider="openai",
        model="own-price",
        input_usd_per_mtok=Decimal("1"),
        output_usd_per_mtok=Decimal("2"),
    )
    ledger: list[tuple[datetime, str, int]] = []
    usage: list[tuple[datetime, Ev]] = []
    for kind, at, amount in ops:
        if kind == "usage":
            debit = post_usage_batch(workspace, key, amount, at=at)
            usage.extend((at, e) for e in amount)
            if debit:
                ledger.append((at, "usage", debit))
        else:
            post(workspace, kind, amount, at=at)
            ledger.append((at, kind, amount))

    a, b = sorted(extra)
    periods = [(MONTHS[i], MONTHS[i + 1]) for i in range(3)] + ([(a, b)] if a < b else [])
    for start, end in periods:
        check_statement(build_statement(workspace_id=workspace.pk, period_start=start, period_end=end), ledger, usage)

    # The stored statement and its CSV say the same.
    statement = statement_issue(workspace=workspace, period_start=MONTHS[1], period_end=MONTHS[2], kind="monthly")
    rows = list(csv.DictReader(io.StringIO(documents.statement_csv(statement))))
    amount = {r["row_type"]: Decimal(r["amount_usd"]) for r in rows if r["row_type"] != "total"}
    totals = [Decimal(r["amount_usd"]) for r in rows if r["row_type"] == "total"]
    assert amount["opening_balance"] + sum(totals) == amount["closing_balance"]
    assert Decimal(statement.closing_cents) / 100 == amount["closing_balance"]
    usage_row = next(Decimal(r["amount_usd"]) for r in rows if r.get("kind") == "usage" and r["row_type"] == "total")
    assert sum((Decimal(r["amount_usd"]) for r in rows if r["row_type"] == "usage_line"), Decimal(0)) == usage_row
    assert sum(int(r["amount_nanos"]) for r in rows if r["row_type"] == "usage_line") == sum(
        n for at, k, n in ledger if k == "usage" and MONTHS[1] <= at < MONTHS[2]
    )


# --- the rule's building blocks ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("nanos", "cents"),
    [(0, 0), (4_999_999, 0), (5_000_000, 1), (-5_000_000, -1), (-4_999_999, 0), (15_000_000, 2), (-15_000_000, -2)],
)
def test_round_to_cents_is_half_away_from_zero(nanos, cents):
    assert round_to_cents(nanos) == cents == exact_cents(nanos)


def test_allocate_by_largest_remainder():
    assert allocate(10, [1, 1, 1]) == [4, 3, 3]
    assert allocate(100, [0, 0]) == [50, 50]
    assert allocate(7, [5, 0, 5]) == [4, 0, 3]
    assert allocate(0, [3, 4]) == [0, 0]
    assert sum(allocate(1_000_003, [7, 11, 13, 17])) == 1_000_003


def test_cumulative_rounding_ties_where_rounding_each_kind_would_not(db):
    """Three kinds of 0.4 cent each: rounded alone each is 0, yet the balance moved 1.2 cents."""
    workspace = make_workspace()
    at = T0 + timedelta(days=3)
    for kind in ("topup", "grant", "adjustment"):
        post(workspace, kind, 4_000_000, at=at)
    data = build_statement(workspace_id=workspace.pk, period_start=T0, period_end=MONTHS[2])
    assert data.opening_cents == 0 and data.closing_cents == 1
    assert [k.cents for k in data.kinds] == [0, 1, 0, 0, 0]


def test_usage_lines_split_a_groups_charge_by_list_price(prices):
    workspace = make_workspace()
    key = make_key(workspace)
    at = T0 + timedelta(days=1)
    # 1M input ($0.15 list) and 1M output ($0.60 list); charged $1.50 in total (e.g. a 2x rate): 0.30 + 1.20
    post_usage_batch(
        workspace,
        key,
        [Ev("openai", "gpt-priced", "managed", input=10**6, output=10**6, charge_nanos=15 * 10**8)],
        at=at,
    )
    # per-request fees get their own line
    post_usage_batch(workspace, key, [Ev("anthropic", "claude-fee", "byok", charge_nanos=2 * 10**6)] * 2, at=at)
    data = build_statement(workspace_id=workspace.pk, period_start=T0, period_end=MONTHS[2])
    lines = {(line.model, line.token_type): line for line in data.lines}
    assert lines[("gpt-priced", "input")].cents == 30 and lines[("gpt-priced", "output")].cents == 120
    assert lines[("gpt-priced", "input")].unit_price_usd == Decimal("0.3")
    assert lines[("gpt-priced", "output")].unit_price_usd == Decimal("1.2")
    fee = lines[("claude-fee", REQUEST_LINE)]
    assert fee.quantity == 2 and fee.nanos == 4 * 10**6 and fee.unit_price_usd == Decimal("0.002")
    assert data.usage_charged_cents == 150


# --- issuing and emailing ------------------------------------------------------------------------------------


def test_monthly_statement_is_issued_once_and_only_for_a_whole_past_month(db):
    workspace = make_workspace()
    post(workspace, "grant", 10**9, at=T0 + timedelta(days=2))
    first = statement_issue(workspace=workspace, period_start=T0, period_end=MONTHS[2], kind="monthly")
    again = statement_issue(workspace=workspace, period_start=T0, period_end=MONTHS[2], kind="monthly")
    assert again.pk == first.pk and Statement.objects.count() == 1
    assert first.opening_cents == 0 and first.closing_cents == 100
    with pytest.raises(ApplicationError, match="whole calendar month"):
        statement_issue(workspace=workspace, period_start=T0, period_end=T0 + timedelta(days=3), kind="monthly")
    future = datetime.now(tz=UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    with pytest.raises(ApplicationError, match="over"):
        statement_issue(
            workspace=workspace,
            period_start=future,
            period_end=(future + timedelta(days=32)).replace(day=1),
            kind="monthly",
        )
    with pytest.raises(ApplicationError, match="timezone"):
        build_statement(workspace_id=workspace.pk, period_start=datetime(2026, 1, 1), period_end=MONTHS[2])


def test_month_to_date_replaces_the_previous_one_and_needs_billing_access(db):
    workspace = make_workspace()
    finance = User.objects.create_user(email="fin@example.com")
    developer = User.objects.create_user(email="dev@example.com")
    Membership.objects.create(workspace=workspace, user=finance, role=Role.FINANCE)
    Membership.objects.create(workspace=workspace, user=developer, role=Role.DEVELOPER)
    post(workspace, "grant", 123_456_789, at=datetime.now(tz=UTC) - timedelta(seconds=1))

    first = statement_generate_month_to_date(workspace=workspace, acting_user=finance)
    second = statement_generate_month_to_date(workspace=workspace, acting_user=finance)
    assert list(Statement.objects.values_list("pk", flat=True)) == [second.pk] and first.pk != second.pk
    assert second.kind == "to_date" and second.closing_cents == 12
    with pytest.raises(PermissionDenied):
        statement_generate_month_to_date(workspace=workspace, acting_user=developer)


def test_beat_task_issues_and_emails_last_months_statements_once(db, prices):
    billed = make_workspace("Billed Co")
    BillingProfile.objects.create(workspace=billed, billing_emails=["ap@billed.example", "cfo@billed.example"])
    post(billed, "topup", 50 * 10**9, at=T0 + timedelta(days=1))
    post_usage_batch(
        billed,
        make_key(billed),
        [Ev("openai", "gpt-priced", "byok", input=1000, charge_nanos=123_456_789)],
        at=T0 + timedelta(days=20),
    )
    members_only = make_workspace("Members Only")
    owner, finance, dev = (User.objects.create_user(email=f"{r}@members.example") for r in ("owner", "fin", "dev"))
    for user, role in ((owner, Role.OWNER), (finance, Role.FINANCE), (dev, Role.DEVELOPER)):
        Membership.objects.create(workspace=members_only, user=user, role=role)
    post(members_only, "grant", 10**9, at=T0 + timedelta(days=5))
    make_workspace("Idle")  # no entries, no events: no statement
    late = make_workspace("Started in February")
    post(late, "grant", 10**9, at=MONTHS[2] + timedelta(hours=1))

    # Within the grace period after midnight nothing is issued yet.
    assert monthly_statements_issue(now=MONTHS[2] + timedelta(minutes=5))["workspaces"] == 0
    assert not Statement.objects.exists()

    counts = monthly_statements_issue(now=MONTHS[2] + timedelta(hours=1))
    assert counts == {"workspaces": 2, "emailed": 2, "failed": 0}
    statements = {s.workspace.name: s for s in Statement.objects.select_related("workspace")}
    assert set(statements) == {"Billed Co", "Members Only"}
    assert all(s.kind == "monthly" and s.period_start == T0 and s.emailed_at for s in statements.values())
    assert statements["Billed Co"].closing_cents == 5000 - 12

    by_to = {tuple(m.to): m for m in mail.outbox}
    assert set(by_to) == {("ap@billed.example", "cfo@billed.example"), ("fin@members.example", "owner@members.example")}
    message = by_to[("ap@billed.example", "cfo@billed.example")]
    assert "2026-01" in message.subject and "Billed Co" in message.subject
    assert ROUNDING_RULE in message.body
    names = [a[0] for a in message.attachments]
    assert names == [f"turnpike-statement-{statements['Billed Co'].workspace.slug}-2026-01.{x}" for x in ("pdf", "csv")]
    assert message.attachments[0][1][:5] == b"%PDF-" and message.attachments[1][2] == "text/csv"
    assert "usage_line" in message.attachments[1][1]

    # The next hourly run sends nothing again.
    assert monthly_statements_issue(now=MONTHS[2] + timedelta(hours=2))["workspaces"] == 0
    assert len(mail.outbox) == 2 and Statement.objects.count() == 2
    assert LedgerEntry.objects.filter(workspace=late).count() == 1


def test_the_beat_entry_runs_the_registered_task(db):
    from django.conf import settings as django_settings

    from billing.tasks import issue_monthly_statements
    from config.celery import app

    entry = django_settings.CELERY_BEAT_SCHEDULE["billing.issue_monthly_statements"]
    assert entry["task"] == issue_monthly_statements.name and entry["task"] in app.tasks
    now = datetime.now(tz=UTC)
    this_month = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    if now - this_month < timedelta(minutes=20):
        pytest.skip("inside the grace period after midnight on the 1st")
    workspace = make_workspace()
    BillingProfile.objects.create(workspace=workspace, billing_emails=["books@example.com"])
    post(workspace, "grant", 2 * 10**9, at=this_month - timedelta(days=1))

    assert issue_monthly_statements.apply().get() == {"workspaces": 1, "emailed": 1, "failed": 0}
    statement = Statement.objects.get(workspace=workspace)
    assert statement.period_end == this_month and statement.closing_cents == 200
    assert mail.outbox[0].to == ["books@example.com"]


@pytest.mark.django_db(transaction=True)
def test_statements_built_outside_a_transaction_read_one_snapshot():
    workspace = make_workspace()
    key = make_key(workspace)
    post_usage_batch(workspace, key, [Ev("openai", "gpt-x", "managed", input=10, charge_nanos=25_000_000)], at=T0)
    data = build_statement(workspace_id=workspace.pk, period_start=T0, period_end=MONTHS[2])
    assert data.usage_charged_cents == 3 and [line.cents for line in data.lines] == [3]
    owner = User.objects.create_user(email="o@example.com")
    Membership.objects.create(workspace=workspace, user=owner, role=Role.OWNER)
    statement = statement_generate_month_to_date(workspace=workspace, acting_user=owner)
    assert statement.kind == "to_date" and Statement.objects.count() == 1
