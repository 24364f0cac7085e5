"""Statements itemise per-unit fees: a group's web searches get a `fee:web_search` line (searches, their share
of the charge, the price per search), a unit the price has no fee for is listed at no charge, and for random
usage with and without searches every statement's lines still sum to its usage total."""

from __future__ import annotations

import csv
import io
import uuid
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.db import transaction
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from billing import documents
from billing.models import LedgerEntry, ModelPrice, UsageEvent
from billing.services import ledger_post
from billing.statements import TOKEN_TYPE_LABELS, build_statement, statement_issue
from tests.billing.docsupport import make_key, make_workspace, pdf_text

T0 = datetime(2026, 1, 1, tzinfo=UTC)
T1 = datetime(2026, 2, 1, tzinfo=UTC)


@pytest.fixture
def prices(db):
    ModelPrice.objects.update_or_create(
        provider="anthropic",
        model="claude-search",
        defaults={
            "input_usd_per_mtok": Decimal("3"),
            "output_usd_per_mtok": Decimal("15"),
            "fees": {"web_search": "0.01"},
        },
    )
    ModelPrice.objects.update_or_create(
        provider="openai",
        model="gpt-no-fee",
        defaults={"input_usd_per_mtok": Decimal("1"), "output_usd_per_mtok": Decimal("2")},
    )


def post_events(workspace, key, events: list[tuple[str, str, int, int, dict, int]], *, at: datetime) -> int:
    """(provider, model, input, output, units, charge) events and their one usage debit, as the ingester
    stores them (the debit's created_at = the events' ingested_at). Returns the total charge."""
    total = sum(e[5] for e in events)
    with transaction.atomic():
        for provider, model, input_tokens, output_tokens, units, charge in events:
            UsageEvent.objects.create(
                request_id=f"req_{uuid.uuid4().hex}",
                workspace=workspace,
                key=key,
                provider=provider,
                credential_kind="byok",
                model_requested=model,
                model_served=model,
                status=200,
                input_tokens=input_tokens,
                output_tokens=output_tokens,
                units=units,
                cost_nanos=charge,
                charge_nanos=charge,
                started_at=at,
                finished_at=at,
                ingested_at=at,
            )
        if total:
            ledger_post(
                workspace_id=workspace.pk,
                kind=LedgerEntry.Kind.USAGE,
                amount_nanos=-total,
                idempotency_key=f"usage:{uuid.uuid4().hex}",
                created_at=at,
            )
    return total


def test_web_searches_get_their_own_line_priced_per_search(prices):
    workspace = make_workspace()
    key = make_key(workspace)
    at = T0 + timedelta(days=3)
    # 1M input ($3) + 2 searches ($0.02) and 1M input + 1 search: list $6.03, charged 2x (a fee plan): $12.06
    post_events(
        workspace,
        key,
        [
            ("anthropic", "claude-search", 10**6, 0, {"web_search": 2}, 6_040_000_000),
            ("anthropic", "claude-search", 10**6, 0, {"web_search": 1}, 6_020_000_000),
        ],
        at=at,
    )
    data = build_statement(workspace_id=workspace.pk, period_start=T0, period_end=T1)
    lines = {line.token_type: line for line in data.lines}
    assert set(lines) == {"input", "fee:web_search"}
    search = lines["fee:web_search"]
    assert search.quantity == 3 and search.nanos == 60_000_000 and search.cents == 6
    assert search.unit == "searches" and search.price_per == "search" and search.price_suffix == "search"
    assert search.unit_price_usd == Decimal("0.02")  # $0.01 list x the plan's 2x
    assert lines["input"].nanos == 12 * 10**9 and lines["input"].cents == 1200
    assert TOKEN_TYPE_LABELS["fee:web_search"] == "Web searches"
    assert sum(line.cents for line in data.lines) == data.usage_charged_cents == 1206

    statement = statement_issue(workspace=workspace, period_start=T0, period_end=T1, kind="monthly")
    rows = [r for r in csv.DictReader(io.StringIO(documents.statement_csv(statement))) if r["row_type"] == "usage_line"]
    (row,) = [r for r in rows if r["token_type"] == "fee:web_search"]
    assert (row["quantity"], row["unit"], row["price_per"]) == ("3", "searches", "search")
    assert Decimal(row["unit_price_usd"]) == Decimal("0.02") and Decimal(row["amount_usd"]) == Decimal("-0.06")
    text = pdf_text(documents.statement_pdf(statement))
    assert "Web\nsearches\n3\n" in text  # the label (wrapped in its narrow column) and the quantity


def test_units_the_price_has_no_fee_for_are_listed_at_no_charge(prices):
    workspace = make_workspace()
    key = make_key(workspace)
    post_events(workspace, key, [("openai", "gpt-no-fee", 10**6, 0, {"web_search": 4}, 10**9)], at=T0 + timedelta(1))
    data = build_statement(workspace_id=workspace.pk, period_start=T0, period_end=T1)
    lines = {line.token_type: line for line in data.lines}
    assert lines["fee:web_search"].quantity == 4 and lines["fee:web_search"].nanos == 0
    assert lines["input"].nanos == 10**9


MODELS = [("anthropic", "claude-search"), ("openai", "gpt-no-fee"), ("groq", "unpriced-model")]
events_strategy = st.lists(
    st.tuples(
        st.sampled_from(MODELS),
        st.sampled_from([0, 1, 999, 10**6]),
        st.sampled_from([0, 7, 10**5]),
        st.sampled_from([{}, {"web_search": 1}, {"web_search": 3}, {"web_search": 2, "maps_grounding": 1}]),
        st.integers(min_value=0, max_value=3 * 10**9),
    ).map(lambda t: (t[0][0], t[0][1], t[1], t[2], t[3], t[4])),
    min_size=1,
    max_size=6,
)


@pytest.mark.django_db
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batches=st.lists(events_strategy, min_size=1, max_size=3))
def test_lines_sum_to_the_usage_total_with_fee_lines(prices, batches):
    workspace = make_workspace()
    key = make_key(workspace)
    total = 0
    units: dict[tuple[str, str, str], int] = defaultdict(int)
    for n, batch in enumerate(batches):
        total += post_events(workspace, key, batch, at=T0 + timedelta(days=n + 1, seconds=n))
        for provider, model, _, _, event_units, _ in batch:
            for name, count in event_units.items():
                units[(provider, model, name)] += count
    data = build_statement(workspace_id=workspace.pk, period_start=T0, period_end=T1)
    assert sum(line.nanos for line in data.lines) == total == -data.kind("usage").nanos
    assert sum(line.cents for line in data.lines) == data.usage_charged_cents
    assert all(line.token_type != "unitemised" for line in data.lines)
    shown = {
        (line.provider, line.model, line.token_type.removeprefix("fee:")): line.quantity
        for line in data.lines
        if line.token_type.startswith("fee:")
    }
    assert shown == {k: v for k, v in units.items() if v}
