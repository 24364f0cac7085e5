"""Writes for billing.

Ledger: every posting is idempotent by key (a retry returns the existing entry) and moves the
workspace's versioned balance in the same transaction.

Plans and workspace model prices (operators in Django admin; prices also for a workspace's billing
managers): each change is validated, audited in the same transaction (plans platform-wide, with no
workspace; prices in the workspace's log) and, once committed, the proxy's cached documents that
carry them are dropped (every workspace for a plan, the one workspace for a price), so the next
request is charged at the new rates.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import Any

from django.db import transaction
from django.utils import timezone

from billing.catalog import PRICE_FIELDS
from billing.models import LedgerEntry, Plan, WorkspaceBalance, WorkspaceModelPrice
from config.errors import ApplicationError
from contracts.money import usd_to_nanos
from contracts.pricing import Price
from tenants.cache import invalidate_all_workspaces_on_commit, invalidate_workspace_on_commit, publish_balance_on_commit
from tenants.models import User, Workspace
from tenants.roles import Perm
from tenants.services import audit, audit_changes, authorize, operator_metadata

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
) -> tuple[LedgerEntry, bool]:
    """Append one entry. Must run inside a transaction; returns (entry, created).

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


# --- plans and workspace prices ------------------------------------------------------------------------


def _decimal(value: Any, *, field: str, label: str, max_digits: int, places: int) -> Decimal:
    """A non-negative exact amount that fits DecimalField(max_digits, places), or a clear error."""
    try:
        amount = value if isinstance(value, Decimal) else Decimal(str(value).strip())
    except InvalidOperation as exc:
        raise ApplicationError(f"{label} must be a decimal number.", extra={"field": field}) from exc
    if not amount.is_finite() or amount < 0:
        raise ApplicationError(f"{label} must be zero or more.", extra={"field": field})
    if amount != amount.quantize(Decimal(1).scaleb(-places)):
        raise ApplicationError(f"{label} can have at most {places} decimal places.", extra={"field": field})
    if amount >= Decimal(10) ** (max_digits - places):
        raise ApplicationError(f"{label} is too large.", extra={"field": field})
    return amount


_PLAN_CODE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,39}$")


def _clean_plan(
    *,
    plan_id: int | None,
    code: str,
    name: str,
    byok_fee_rate: Any,
    managed_markup_rate: Any,
    is_default: bool,
) -> dict[str, Any]:
    code = (code or "").strip()
    if not _PLAN_CODE.match(code):
        raise ApplicationError("A plan code is 1 to 40 lowercase letters, digits, - or _.", extra={"field": "code"})
    others = Plan.objects.exclude(pk=plan_id) if plan_id is not None else Plan.objects.all()
    if others.filter(code=code).exists():
        raise ApplicationError(f"A plan with code {code!r} already exists.", extra={"field": "code"})
    name = (name or "").strip()
    if not name or len(name) > 100:
        raise ApplicationError("A plan name must be 1 to 100 characters.", extra={"field": "name"})
    rates = {
        field: _decimal(value, field=field, label=label, max_digits=8, places=6)
        for field, label, value in (
            ("byok_fee_rate", "The BYOK fee rate", byok_fee_rate),
            ("managed_markup_rate", "The managed markup rate", managed_markup_rate),
        )
    }
    if is_default and others.filter(is_default=True).exists():
        raise ApplicationError(
            "Another plan is the default; make it not the default first.", extra={"field": "is_default"}
        )
    return {"code": code, "name": name, **rates, "is_default": bool(is_default)}


@transaction.atomic
def plan_create(
    *,
    code: str,
    name: str,
    byok_fee_rate: Any,
    managed_markup_rate: Any,
    is_default: bool = False,
    acting_user: User,
    ip: str | None = None,
) -> Plan:
    extra = operator_metadata(acting_user)
    values = _clean_plan(
        plan_id=None,
        code=code,
        name=name,
        byok_fee_rate=byok_fee_rate,
        managed_markup_rate=managed_markup_rate,
        is_default=is_default,
    )
    plan = Plan.objects.create(**values)
    changes = audit_changes(dict.fromkeys(values), values)
    audit(
        workspace=None,
        actor=acting_user,
        action="plan.created",
        target=plan,
        ip=ip,
        metadata={"changes": changes, **extra},
    )
    if plan.is_default:
        invalidate_all_workspaces_on_commit()  # workspaces without a plan now pay these rates
    return plan


@transaction.atomic
def plan_update(
    *,
    plan: Plan,
    code: str,
    name: str,
    byok_fee_rate: Any,
    managed_markup_rate: Any,
    is_default: bool,
    acting_user: User,
    ip: str | None = None,
) -> Plan:
    """Change a plan's terms. Every workspace's cached charge rates are dropped once it commits."""
    extra = operator_metadata(acting_user)
    row = Plan.objects.select_for_update().get(pk=plan.pk)
    values = _clean_plan(
        plan_id=row.pk,
        code=code,
        name=name,
        byok_fee_rate=byok_fee_rate,
        managed_markup_rate=managed_markup_rate,
        is_default=is_default,
    )
    changes = audit_changes({name: getattr(row, name) for name in values}, values)
    if not changes:
        return row
    for field, value in values.items():
        setattr(row, field, value)
    row.save(update_fields=list(values))
    audit(
        workspace=None,
        actor=acting_user,
        action="plan.updated",
        target=row,
        ip=ip,
        metadata={"changes": changes, **extra},
    )
    invalidate_all_workspaces_on_commit()
    return row


@transaction.atomic
def plan_delete(*, plan: Plan, acting_user: User, ip: str | None = None) -> None:
    """Delete a plan no workspace is on (workspaces keep their plan: move them first)."""
    extra = operator_metadata(acting_user)
    row = Plan.objects.select_for_update().get(pk=plan.pk)
    on_it = Workspace.objects.filter(plan=row).count()
    if on_it:
        raise ApplicationError(f"{on_it} workspace(s) are on the plan {row.name!r}; move them to another plan first.")
    terms = {name: str(getattr(row, name)) for name in ("code", "byok_fee_rate", "managed_markup_rate", "is_default")}
    audit(workspace=None, actor=acting_user, action="plan.deleted", target=row, ip=ip, metadata={**terms, **extra})
    row.delete()
    invalidate_all_workspaces_on_commit()


_PRICE_PROVIDER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_PRICE_MODEL = re.compile(r"^[^\s\x00-\x1f\x7f]{1,200}$")


def _clean_price_target(*, workspace: Workspace, provider: str, model: str, exclude_pk: int | None) -> tuple[str, str]:
    provider, model = (provider or "").strip(), (model or "").strip()
    if not _PRICE_PROVIDER.match(provider):
        raise ApplicationError(
            "The provider is a provider type or a credential's slug (letters, digits, . _ -).",
            extra={"field": "provider"},
        )
    if not _PRICE_MODEL.match(model):
        raise ApplicationError("A model id is 1 to 200 characters without spaces.", extra={"field": "model"})
    taken = WorkspaceModelPrice.objects.filter(workspace=workspace, provider=provider, model=model)
    if exclude_pk is not None:
        taken = taken.exclude(pk=exclude_pk)
    if taken.exists():
        raise ApplicationError(f"This workspace already has a price for {provider}/{model}.", extra={"field": "model"})
    return provider, model


def _clean_price(price: Price) -> dict[str, Decimal | None]:
    """The model columns for `price`, every amount checked (input and output required)."""
    columns: dict[str, Decimal | None] = {}
    for key, column in PRICE_FIELDS.items():
        value = getattr(price, key)
        if value is None and key not in ("input", "output"):
            columns[column] = None
            continue
        label = column.replace("_", " ").replace("usd per mtok", "(USD per 1M tokens)").capitalize()
        columns[column] = _decimal(value, field=column, label=label, max_digits=18, places=9)
    return columns


def _price_audit_values(row: WorkspaceModelPrice) -> dict[str, Any]:
    return {"provider": row.provider, "model": row.model, **{c: getattr(row, c) for c in PRICE_FIELDS.values()}}


@transaction.atomic
def workspace_model_price_create(
    *,
    workspace: Workspace,
    provider: str,
    model: str,
    price: Price,
    acting_user: User,
    operator: bool = False,
    ip: str | None = None,
) -> WorkspaceModelPrice:
    """Price a model for one workspace (custom or self-hosted models, negotiated rates)."""
    extra = authorize(workspace=workspace, acting_user=acting_user, perm=Perm.BILLING_MANAGE, operator=operator)
    provider, model = _clean_price_target(workspace=workspace, provider=provider, model=model, exclude_pk=None)
    row = WorkspaceModelPrice.objects.create(workspace=workspace, provider=provider, model=model, **_clean_price(price))
    after = _price_audit_values(row)
    audit(
        workspace=workspace,
        actor=acting_user,
        action="price.created",
        target=row,
        ip=ip,
        metadata={"changes": audit_changes(dict.fromkeys(after), after), **extra},
    )
    invalidate_workspace_on_commit(workspace.pk)
    return row


@transaction.atomic
def workspace_model_price_update(
    *,
    model_price: WorkspaceModelPrice,
    provider: str,
    model: str,
    price: Price,
    acting_user: User,
    operator: bool = False,
    ip: str | None = None,
) -> WorkspaceModelPrice:
    workspace = model_price.workspace
    extra = authorize(workspace=workspace, acting_user=acting_user, perm=Perm.BILLING_MANAGE, operator=operator)
    row = WorkspaceModelPrice.objects.select_for_update().get(pk=model_price.pk)
    provider, model = _clean_price_target(workspace=workspace, provider=provider, model=model, exclude_pk=row.pk)
    before = _price_audit_values(row)
    row.provider, row.model = provider, model
    for column, value in _clean_price(price).items():
        setattr(row, column, value)
    changes = audit_changes(before, _price_audit_values(row))
    if not changes:
        return row
    row.updated_at = timezone.now()
    row.save()
    audit(
        workspace=workspace,
        actor=acting_user,
        action="price.updated",
        target=row,
        ip=ip,
        metadata={"changes": changes, **extra},
    )
    invalidate_workspace_on_commit(workspace.pk)
    return row


@transaction.atomic
def workspace_model_price_delete(
    *, model_price: WorkspaceModelPrice, acting_user: User, operator: bool = False, ip: str | None = None
) -> None:
    """Drop a workspace's own price: the model falls back to the catalog (or becomes unpriced)."""
    workspace = model_price.workspace
    extra = authorize(workspace=workspace, acting_user=acting_user, perm=Perm.BILLING_MANAGE, operator=operator)
    row = WorkspaceModelPrice.objects.select_for_update().filter(pk=model_price.pk).first()
    if row is None:
        return
    values = {k: (str(v) if v is not None else None) for k, v in _price_audit_values(row).items()}
    audit(
        workspace=workspace, actor=acting_user, action="price.deleted", target=row, ip=ip, metadata={**values, **extra}
    )
    row.delete()
    invalidate_workspace_on_commit(workspace.pk)
