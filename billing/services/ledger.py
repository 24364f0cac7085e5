"""The ledger: every posting is idempotent by key (a retry returns the existing entry) and moves the
workspace's versioned balance in the same transaction."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from django.db import transaction
from django.utils import timezone

from billing.models import LedgerEntry, WorkspaceBalance
from config.errors import ApplicationError
from contracts.money import usd_to_nanos
from tenants.cache import publish_balance_on_commit
from tenants.models import User, Workspace
from tenants.services import audit

MAX_ENTRY_NANOS = 2**63 - 1  # LedgerEntry.amount_nanos is a BigIntegerField


def _locked_balance(workspace_id: int) -> WorkspaceBalance:
    WorkspaceBalance.objects.get_or_create(workspace_id=workspace_id)
    return WorkspaceBalance.objects.select_for_update().get(workspace_id=workspace_id)


def ledger_post(
    *,
    workspace_id: int,
    kind: str,
    amount_nanos: int,
    idempotency_key: str,
    memo: str = "",
    acting_user: User | None = None,
    created_at: datetime | None = None,
) -> tuple[LedgerEntry, bool]:
    """Append one entry. Must run inside a transaction; returns (entry, created).

    `created_at` (default now) places the entry in a statement period; the ingester passes the time it
    stamps on the events it stores with the debit, so a statement finds exactly the debit's events.

    The balance row is locked first, so concurrent postings for a workspace serialise and a
    duplicate idempotency key is detected under the lock rather than by a failed insert."""
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("ledger_post must run inside a transaction")
    balance = _locked_balance(workspace_id)
    existing = LedgerEntry.objects.filter(idempotency_key=idempotency_key).first()
    if existing is not None:
        return existing, False
    entry = LedgerEntry.objects.create(
        workspace_id=workspace_id,
        kind=kind,
        amount_nanos=amount_nanos,
        idempotency_key=idempotency_key,
        memo=memo,
        created_by=acting_user,
        created_at=created_at or timezone.now(),
    )
    balance.balance_nanos += amount_nanos
    balance.version += 1
    balance.updated_at = timezone.now()
    balance.save(update_fields=["balance_nanos", "version", "updated_at"])
    if kind != LedgerEntry.Kind.USAGE:
        # Usage debits reach Redis through the ingester's ACK script, atomically with the release of
        # their pending charges; everything else (grants, top-ups, adjustments) is pushed here, so a
        # top-up lets a refused workspace through at once rather than after a cache expiry.
        publish_balance_on_commit(workspace_id, balance.balance_nanos, balance.version)
    return entry, True


@transaction.atomic
def ledger_grant_post(
    *,
    workspace: Workspace,
    amount_usd: Decimal | str,
    idempotency_key: str,
    memo: str = "",
    acting_user: User | None = None,
) -> tuple[LedgerEntry, bool]:
    """Credit the balance with a grant (promotional or operator credit). Returns (entry, created)."""
    nanos = usd_to_nanos(amount_usd)
    if nanos <= 0:
        raise ApplicationError("A grant must be a positive amount.")
    if nanos > MAX_ENTRY_NANOS:
        raise ApplicationError("A grant that large cannot be posted.")
    entry, created = ledger_post(
        workspace_id=workspace.pk,
        kind=LedgerEntry.Kind.GRANT,
        amount_nanos=nanos,
        idempotency_key=idempotency_key,
        memo=memo,
        acting_user=acting_user,
    )
    if created:
        audit(
            workspace=workspace,
            actor=acting_user,
            action="billing.grant_posted",
            target=entry,
            metadata={"amount_usd": str(amount_usd), "memo": memo},
        )
    return entry, created
