"""Plans (operators in Django admin): each change validated, audited platform-wide (no workspace) and,
once committed, every workspace's cached charge rates dropped."""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import Any

from django.db import transaction

from billing.models import Plan
from config.errors import ApplicationError
from tenants.cache import invalidate_all_workspaces_on_commit
from tenants.models import User, Workspace
from tenants.services import audit, audit_changes, operator_metadata


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
    public: bool = False,
    description: str = "",
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
    description = (description or "").strip()
    if len(description) > 300 or "\x00" in description:
        raise ApplicationError("A plan description is at most 300 characters.", extra={"field": "description"})
    return {
        "code": code,
        "name": name,
        **rates,
        "is_default": bool(is_default),
        "public": bool(public),
        "description": description,
    }


@transaction.atomic
def plan_create(
    *,
    code: str,
    name: str,
    byok_fee_rate: Any,
    managed_markup_rate: Any,
    is_default: bool = False,
    public: bool = False,
    description: str = "",
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
        public=public,
        description=description,
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
    public: bool | None = None,
    description: str | None = None,
    acting_user: User,
    ip: str | None = None,
) -> Plan:
    """Change a plan's terms. Every workspace's cached charge rates are dropped once it commits.
    `public` and `description` left None keep their values."""
    extra = operator_metadata(acting_user)
    row = Plan.objects.select_for_update().get(pk=plan.pk)
    values = _clean_plan(
        plan_id=row.pk,
        code=code,
        name=name,
        byok_fee_rate=byok_fee_rate,
        managed_markup_rate=managed_markup_rate,
        is_default=is_default,
        public=row.public if public is None else public,
        description=row.description if description is None else description,
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
