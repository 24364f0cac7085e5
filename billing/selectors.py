"""Reads of the ledger and of usage, always scoped to one workspace."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import redis
from django.conf import settings
from django.db.models import Q, QuerySet, Sum

from billing.models import Invoice, LedgerEntry, Plan, Statement, UsageEvent, UsageRollup, WorkspaceBalance
from contracts import balance
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


# --- billing pages ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BalanceOverview:
    ledger_nanos: int  # posted to the ledger
    pending_nanos: int | None  # charged by the proxy, not yet posted (None: Redis unreachable)
    inflight_nanos: int | None  # reserved by requests still running

    @property
    def available_nanos(self) -> int:
        return self.ledger_nanos - (self.pending_nanos or 0) - (self.inflight_nanos or 0)


def balance_overview(*, workspace: Workspace) -> BalanceOverview:
    """The ledger balance and, from the proxy's Redis hash, usage charged but not yet ingested."""
    ledger, _ = workspace_balance(workspace_id=workspace.pk)
    pending = inflight = None
    try:
        client = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=1, socket_connect_timeout=1)
        with client:
            values = client.hmget(balance.bal_key(workspace.pk), "pending", "inflight")
        pending, inflight = (max(int(v or 0), 0) for v in values)  # type: ignore[union-attr]
    except (redis.RedisError, ValueError, OSError):
        pass
    return BalanceOverview(ledger_nanos=ledger, pending_nanos=pending, inflight_nanos=inflight)


def _ledger_query(
    *, workspace: Workspace, kind: str | None = None, since: datetime | None = None, before: datetime | None = None
) -> QuerySet[LedgerEntry]:
    rows = LedgerEntry.objects.filter(workspace=workspace)
    if kind:
        rows = rows.filter(kind=kind)
    if since is not None:
        rows = rows.filter(created_at__gte=since)
    if before is not None:
        rows = rows.filter(created_at__lt=before)
    return rows.order_by("-created_at", "-id")


def ledger_entries(*, workspace: Workspace, offset: int = 0, limit: int = 50, **filters: Any) -> list[LedgerEntry]:
    return list(_ledger_query(workspace=workspace, **filters)[offset : offset + limit])


def ledger_entries_iter(*, workspace: Workspace, **filters: Any) -> Iterator[LedgerEntry]:
    return _ledger_query(workspace=workspace, **filters).iterator(chunk_size=2000)


def invoices_list(*, workspace: Workspace, limit: int = 50) -> list[Invoice]:
    return list(Invoice.objects.filter(workspace=workspace).order_by("-issued_at", "-id")[:limit])


def statements_list(*, workspace: Workspace, limit: int = 50) -> list[Statement]:
    return list(Statement.objects.filter(workspace=workspace).order_by("-period_start", "-issued_at")[:limit])


def plan_of(*, workspace: Workspace) -> Plan | None:
    """The workspace's plan, or the default plan if it has none (None if there is no default either)."""
    return workspace.plan or Plan.objects.filter(is_default=True).first()


def needs_credit(*, workspace: Workspace, plan: Plan | None) -> bool:
    """Whether some of the workspace's requests can cost it money (BRIEF: only those need a balance)."""
    if plan is not None and plan.byok_fee_rate > 0:
        return True
    return workspace.managed_access
