"""Reads of the ledger and of usage, always scoped to one workspace."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from django.db.models import Q, Sum

from billing.models import LedgerEntry, UsageEvent, UsageRollup, WorkspaceBalance
from tenants.models import Workspace


def ledger_balance_nanos(*, workspace: Workspace) -> int:
    """The balance recomputed from the ledger entries themselves (the source of truth)."""
    total = LedgerEntry.objects.filter(workspace=workspace).aggregate(total=Sum("amount_nanos"))["total"]
    return int(total or 0)


def workspace_balance(*, workspace_id: int) -> tuple[int, int]:
    """(balance in nano-USD, version) from the versioned balance row; (0, 0) before any posting."""
    row = WorkspaceBalance.objects.filter(workspace_id=workspace_id).values_list("balance_nanos", "version").first()
    return (int(row[0]), int(row[1])) if row else (0, 0)


@dataclass(frozen=True)
class ModelUsage:
    provider: str
    model: str
    requests: int
    errors: int
    unpriced: int
    input_tokens: int
    output_tokens: int
    charge_nanos: int


def usage_by_model(*, workspace: Workspace, since: datetime) -> list[ModelUsage]:
    """Totals per provider x model from the hourly rollups since `since` (hour-aligned), largest first."""
    rows = (
        UsageRollup.objects.filter(workspace=workspace, hour__gte=since.replace(minute=0, second=0, microsecond=0))
        .values("provider", "model")
        .annotate(
            n=Sum("requests"),
            errors=Sum("requests", filter=~Q(status_class="2xx")),
            unpriced=Sum("unpriced_requests"),
            inp=Sum("input_tokens"),
            out=Sum("output_tokens"),
            charge=Sum("charge_nanos"),
        )
        .order_by("-charge", "-n")
    )
    return [
        ModelUsage(
            provider=r["provider"],
            model=r["model"],
            requests=r["n"] or 0,
            errors=r["errors"] or 0,
            unpriced=r["unpriced"] or 0,
            input_tokens=r["inp"] or 0,
            output_tokens=r["out"] or 0,
            charge_nanos=r["charge"] or 0,
        )
        for r in rows
    ]


def usage_events_recent(*, workspace: Workspace, limit: int = 20) -> list[UsageEvent]:
    """The workspace's most recent requests (the (workspace, started_at) index serves this)."""
    return list(
        UsageEvent.objects.filter(workspace=workspace).select_related("key").order_by("-started_at")[: max(limit, 0)]
    )
