"""A workspace's own model prices (its billing managers, or operators): validated, audited in the
workspace's log, and the workspace's cached prices dropped once committed."""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

from django.db import transaction
from django.utils import timezone

from billing.catalog import PRICE_FIELDS
from billing.models import WorkspaceModelPrice
from billing.services.plans import _decimal
from config.errors import ApplicationError
from contracts.pricing import Price
from tenants.cache import invalidate_workspace_on_commit
from tenants.models import User, Workspace
from tenants.roles import Perm
from tenants.services import audit, audit_changes, authorize

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
