"""Scripted setup: a user, a workspace, optionally a provider credential and credit, and a fresh key.

    python manage.py bootstrap_workspace --email E --workspace NAME \
        [--provider TYPE --provider-key K [--provider-base-url URL]] [--credit-usd N] [--plan CODE] [--json]

Re-running is safe: the user, workspace, credential and grant are reused; only the gateway key is new
(a key's plaintext cannot be shown twice, so each run mints one).
"""

from __future__ import annotations

import json
import secrets
from decimal import Decimal, InvalidOperation
from typing import Any

from allauth.account.models import EmailAddress
from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.core.validators import validate_email
from django.db import transaction

from billing.models import Plan
from billing.selectors import ledger_balance_nanos
from billing.services import ledger_grant_post
from config.errors import ApplicationError
from contracts.money import nanos_to_usd, usd_to_nanos
from tenants.models import Membership, ProviderCredential, ProviderType, User, Workspace
from tenants.roles import Role
from tenants.services import (
    gateway_key_create,
    provider_credential_create,
    provider_credential_rotate,
    provider_credential_secret,
    workspace_billing_update,
    workspace_create,
)


class Command(BaseCommand):
    help = "Create (or reuse) a user, workspace, provider credential and credit, and print a new gateway key."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--email", required=True)
        parser.add_argument("--workspace", required=True, help="workspace name")
        parser.add_argument("--password", help="password for a newly created user (default: generated)")
        parser.add_argument("--provider", choices=ProviderType.values)
        parser.add_argument("--provider-key", help="the provider API key (stored encrypted)")
        parser.add_argument("--provider-base-url", default="")
        parser.add_argument("--provider-label", default="")
        parser.add_argument("--skip-check", action="store_true", help="store the key without a live check")
        parser.add_argument("--credit-usd", help="grant this much prepaid credit (once per amount)")
        parser.add_argument("--plan", help="put the workspace on this existing plan (billing.Plan code)")
        parser.add_argument("--key-name", default="bootstrap")
        parser.add_argument("--json", action="store_true", help="print one JSON object")

    def handle(self, *args: Any, **opts: Any) -> None:
        email = opts["email"].strip().lower()
        try:
            validate_email(email)
        except ValidationError as exc:
            raise CommandError(f"--email {opts['email']!r} is not a valid email address") from exc
        if bool(opts["provider"]) != bool(opts["provider_key"]):
            raise CommandError("--provider and --provider-key go together")
        plan = None
        if opts.get("plan"):
            plan = Plan.objects.filter(code=opts["plan"]).first()
            if plan is None:
                known = ", ".join(Plan.objects.order_by("code").values_list("code", flat=True)) or "none"
                raise CommandError(f"--plan {opts['plan']!r} does not exist (known plans: {known})")
        opts["plan_obj"] = plan
        credit = None
        if opts["credit_usd"] is not None:
            try:
                credit = Decimal(opts["credit_usd"])
            except InvalidOperation as exc:
                raise CommandError(f"--credit-usd {opts['credit_usd']!r} is not a number") from exc
            if not credit.is_finite() or credit <= 0:
                raise CommandError("--credit-usd must be a positive amount")
            try:
                usd_to_nanos(credit)
            except ValueError as exc:  # e.g. finer than a nano-dollar
                raise CommandError(f"--credit-usd {opts['credit_usd']!r}: {exc}") from exc
        try:
            result = self._bootstrap(email=email, credit=credit, opts=opts)
        except ApplicationError as exc:
            raise CommandError(exc.message) from exc
        if opts["json"]:
            self.stdout.write(json.dumps(result))
            return
        for label, key in [
            ("Dashboard", "dashboard_url"),
            ("Login email", "email"),
            ("Password", "password"),
            ("Workspace", "workspace"),
            ("Balance (USD)", "balance_usd"),
            ("Proxy base URL", "proxy_base_url"),
            ("Gateway key (shown once)", "api_key"),
        ]:
            if result.get(key) is not None:
                self.stdout.write(f"{label + ':':26} {result[key]}")

    @transaction.atomic
    def _bootstrap(self, *, email: str, credit: Decimal | None, opts: dict[str, Any]) -> dict[str, Any]:
        password = None
        user = User.objects.filter(email__iexact=email).first()
        if user is None:
            password = opts["password"] or secrets.token_urlsafe(12)
            user = User.objects.create_user(email=email, password=password)
        EmailAddress.objects.update_or_create(user=user, email=email, defaults={"verified": True, "primary": True})

        membership = (
            Membership.objects.select_related("workspace")
            .filter(user=user, role=Role.OWNER, workspace__name=opts["workspace"].strip())
            .order_by("pk")
            .first()
        )
        workspace: Workspace = (
            membership.workspace if membership else workspace_create(name=opts["workspace"], acting_user=user)
        )

        credential_slug = None
        if opts["provider"]:
            credential_slug = self._ensure_credential(workspace=workspace, user=user, opts=opts)

        plan = opts.get("plan_obj")
        if plan is not None and workspace.plan_id != plan.pk:
            workspace.plan = plan
            workspace_billing_update(workspace=workspace, fields=["plan"])

        if credit is not None:
            ledger_grant_post(
                workspace=workspace,
                amount_usd=credit,
                idempotency_key=f"bootstrap-grant:{workspace.public_id}:{credit.normalize()}",
                memo="bootstrap_workspace credit",
                acting_user=user,
            )
        _, plaintext = gateway_key_create(workspace=workspace, name=opts["key_name"], acting_user=user)
        return {
            "email": email,
            "password": password,
            "workspace": workspace.slug,
            "workspace_name": workspace.name,
            "credential": credential_slug,
            "plan": workspace.plan.code if workspace.plan else None,
            "balance_usd": str(nanos_to_usd(ledger_balance_nanos(workspace=workspace))),
            "api_key": plaintext,
            "proxy_base_url": settings.TURNPIKE_PROXY_BASE_URL,
            "dashboard_url": f"{settings.TURNPIKE_DASHBOARD_URL.rstrip('/')}/w/{workspace.slug}/",
        }

    def _ensure_credential(self, *, workspace: Workspace, user: User, opts: dict[str, Any]) -> str:
        """Reuse the workspace's credential for this provider and base URL; rotate it if the key changed."""
        secret = opts["provider_key"].strip()
        existing = ProviderCredential.objects.filter(
            workspace=workspace, provider=opts["provider"], removed_at__isnull=True
        ).order_by("pk")
        for credential in existing:
            if credential.base_url.rstrip("/") != (opts["provider_base_url"] or "").strip().rstrip("/"):
                continue
            if provider_credential_secret(credential=credential) != secret:
                provider_credential_rotate(
                    credential=credential, secret=secret, acting_user=user, validate=not opts["skip_check"]
                )
            return credential.slug
        credential = provider_credential_create(
            workspace=workspace,
            provider=opts["provider"],
            label=opts["provider_label"],
            secret=secret,
            base_url=opts["provider_base_url"],
            acting_user=user,
            validate=not opts["skip_check"],
        )
        return credential.slug
