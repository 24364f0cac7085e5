"""Reads of the ledger."""

from __future__ import annotations

from django.db.models import Sum

from billing.models import LedgerEntry, WorkspaceBalance
from tenants.models import Workspace


def ledger_balance_nanos(*, workspace: Workspace) -> int:
    """The balance recomputed from the ledger entries themselves (the source of truth)."""
    total = LedgerEntry.objects.filter(workspace=workspace).aggregate(total=Sum("amount_nanos"))["total"]
    return int(total or 0)


def workspace_balance(*, workspace_id: int) -> tuple[int, int]:
    """(balance in nano-USD, version) from the versioned balance row; (0, 0) before any posting."""
    row = WorkspaceBalance.objects.filter(workspace_id=workspace_id).values_list("balance_nanos", "version").first()
    return (int(row[0]), int(row[1])) if row else (0, 0)
