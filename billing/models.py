"""Billing: the price catalog and the prepaid balance ledger."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib.postgres.indexes import BrinIndex
from django.db import models
from django.utils import timezone

from contracts.pricing import Price


class LedgerEntry(models.Model):
    """One movement of a workspace's prepaid balance, in exact nano-USD (positive = credit).

    Append-only: a correction is a new entry, never an update. `idempotency_key` makes every posting
    safe to retry (the same top-up, grant or usage batch can never be posted twice)."""

    class Kind(models.TextChoices):
        TOPUP = "topup", "Top-up"
        GRANT = "grant", "Grant"
        USAGE = "usage", "Usage"
        REFUND = "refund", "Refund"
        ADJUSTMENT = "adjustment", "Adjustment"

    workspace = models.ForeignKey("tenants.Workspace", on_delete=models.PROTECT, related_name="ledger_entries")
    kind = models.CharField(max_length=16, choices=Kind.choices)
    amount_nanos = models.BigIntegerField(help_text="Signed nano-USD; credits positive, debits negative.")
    currency = models.CharField(max_length=3, default="USD")
    idempotency_key = models.CharField(max_length=200, unique=True)
    memo = models.CharField(max_length=300, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        indexes = [models.Index(fields=["workspace", "created_at"])]
        verbose_name_plural = "ledger entries"

    def __str__(self) -> str:
        return f"{self.kind} {self.amount_nanos} nano-USD ({self.workspace_id})"


class WorkspaceBalance(models.Model):
    """The ledger balance, kept beside the ledger so it is cheap to read and strictly versioned.

    Every posting locks this row, adds its amount and increments `version` in the same transaction
    as the entry, so `version` orders balances in commit order (the proxy's Redis copy only ever
    moves forward). `billing.selectors.ledger_balance_nanos` recomputes it from the entries; the
    two must always agree (tests/billing/test_ledger.py)."""

    workspace = models.OneToOneField("tenants.Workspace", on_delete=models.PROTECT, related_name="balance")
    balance_nanos = models.BigIntegerField(default=0)
    version = models.BigIntegerField(default=0)
    updated_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"balance of workspace {self.workspace_id}: {self.balance_nanos} nano-USD (v{self.version})"


_PRICE: dict[str, Any] = {"max_digits": 18, "decimal_places": 9}


class PriceFields(models.Model):
    """USD per 1M tokens per token type; None falls back as contracts.pricing explains."""

    input_usd_per_mtok = models.DecimalField(**_PRICE)
    cached_input_usd_per_mtok = models.DecimalField(**_PRICE, null=True, blank=True)
    cache_write_usd_per_mtok = models.DecimalField(**_PRICE, null=True, blank=True)
    output_usd_per_mtok = models.DecimalField(**_PRICE)
    reasoning_usd_per_mtok = models.DecimalField(**_PRICE, null=True, blank=True)
    request_fee_usd = models.DecimalField(**_PRICE, default=0)

    class Meta:
        abstract = True

    def to_price(self) -> Price:
        return Price(
            input=self.input_usd_per_mtok,
            output=self.output_usd_per_mtok,
            cached_input=self.cached_input_usd_per_mtok,
            cache_write=self.cache_write_usd_per_mtok,
            reasoning=self.reasoning_usd_per_mtok,
            request_fee=self.request_fee_usd,
        )


class ModelPrice(PriceFields):
    """The published catalog (platform-wide): loaded from billing/data/price_catalog.toml by
    `manage.py load_price_catalog`."""

    class Mode(models.TextChoices):
        CHAT = "chat", "Chat"
        EMBEDDING = "embedding", "Embedding"

    provider = models.CharField(max_length=32)
    model = models.CharField(max_length=200)
    mode = models.CharField(max_length=16, choices=Mode.choices, default=Mode.CHAT)
    modality = models.CharField(max_length=64, blank=True)
    context_window = models.PositiveIntegerField(null=True, blank=True)
    max_output_tokens = models.PositiveIntegerField(null=True, blank=True)
    aliases = models.JSONField(default=list, blank=True)
    notes = models.CharField(max_length=500, blank=True)
    catalog_version = models.CharField(max_length=32, blank=True)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["provider", "model"], name="modelprice_unique")]
        ordering = ["provider", "model"]

    def __str__(self) -> str:
        return f"{self.provider}/{self.model}"


class WorkspaceModelPrice(PriceFields):
    """A workspace's own price for a model: custom or self-hosted models, or negotiated rates.
    `provider` is the routing prefix: a provider type or an openai_compatible credential's slug."""

    workspace = models.ForeignKey("tenants.Workspace", on_delete=models.CASCADE, related_name="model_prices")
    provider = models.CharField(max_length=64)
    model = models.CharField(max_length=200)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["workspace", "provider", "model"], name="workspacemodelprice_unique")
        ]

    def __str__(self) -> str:
        return f"{self.provider}/{self.model} (workspace {self.workspace_id})"


class UsageEvent(models.Model):
    """One proxied request, as emitted by the proxy (contracts.events.UsageEvent) and ingested by Celery.

    `request_id` is unique: ingesting the same event twice is a no-op. Sized for hundreds of millions
    of rows: a BRIN index on `started_at` (rows arrive in time order) serves time-range scans cheaply,
    and the b-tree on (workspace, started_at) serves a workspace's recent history."""

    request_id = models.CharField(max_length=64, unique=True)
    workspace = models.ForeignKey("tenants.Workspace", on_delete=models.PROTECT, related_name="+")
    key = models.ForeignKey("tenants.GatewayKey", on_delete=models.PROTECT, related_name="+")
    credential = models.ForeignKey(
        "tenants.ProviderCredential", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    provider = models.CharField(max_length=64)
    credential_kind = models.CharField(max_length=16, blank=True)
    model_requested = models.CharField(max_length=200)
    model_served = models.CharField(max_length=200, blank=True)
    status = models.PositiveSmallIntegerField()
    error_code = models.CharField(max_length=64, blank=True)
    input_tokens = models.BigIntegerField(default=0)
    cached_input_tokens = models.BigIntegerField(default=0)
    cache_write_tokens = models.BigIntegerField(default=0)
    output_tokens = models.BigIntegerField(default=0)
    reasoning_tokens = models.BigIntegerField(default=0)
    cost_nanos = models.BigIntegerField(null=True, blank=True, help_text="Provider cost; null = unpriced.")
    charge_nanos = models.BigIntegerField(default=0)
    priced = models.BooleanField(default=True)
    estimated = models.BooleanField(default=False)
    stream = models.BooleanField(default=False)
    latency_ms = models.PositiveIntegerField(default=0)
    ttfb_ms = models.PositiveIntegerField(null=True, blank=True)
    end_user = models.CharField(max_length=256, blank=True)
    metadata = models.JSONField(default=dict, blank=True)
    started_at = models.DateTimeField()
    finished_at = models.DateTimeField()
    ingested_at = models.DateTimeField(default=timezone.now)
    # db_default: ingesters of the previous release, which do not name the column, keep working after migrate
    clamped = models.BooleanField(
        default=False,
        db_default=False,
        help_text="A value was altered to fit its column (NUL removed, text cut, number clamped).",
    )

    class Meta:
        indexes = [
            models.Index(fields=["workspace", "started_at"]),
            BrinIndex(fields=["started_at"], name="usageevent_started_brin"),
        ]

    def __str__(self) -> str:
        return f"{self.request_id} {self.provider}/{self.model_served or self.model_requested} {self.status}"


class UsageDeadLetter(models.Model):
    """A usage stream entry the ingester could not store (billing.ingest): refused by Postgres even alone,
    undecodable, or delivered more than MAX_DELIVERIES times. Its charge was released from the workspace's
    Redis `pending` when it was acknowledged, so it was not debited: an operator decides (docs).

    Written in its own transaction before the entry is acknowledged; `entry_id` is unique, so a crash
    between the two writes it once. `workspace_id` is a plain integer, not a foreign key: the entry may
    name a workspace that does not exist (or none at all), and the insert must never fail on that."""

    entry_id = models.CharField(max_length=64, unique=True, help_text="The usage stream entry id.")
    request_id = models.CharField(max_length=64, blank=True, help_text="If the entry could be decoded.")
    workspace_id = models.BigIntegerField(null=True, blank=True, db_index=True, help_text="If known.")
    charge_nanos = models.BigIntegerField(default=0, help_text="Released from pending; 0 if unknown.")
    error = models.TextField()
    raw_fields = models.TextField(help_text="The raw stream fields, as JSON text (ASCII, escapes for the rest).")
    deliveries = models.PositiveIntegerField(default=1)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"dead letter {self.entry_id} (workspace {self.workspace_id})"


class UsageRollup(models.Model):
    """Hourly totals per workspace x key x provider x model x status class, updated in the same
    transaction as the events they count (so the rollups always equal the events)."""

    workspace = models.ForeignKey("tenants.Workspace", on_delete=models.PROTECT, related_name="+")
    key = models.ForeignKey("tenants.GatewayKey", on_delete=models.PROTECT, related_name="+")
    provider = models.CharField(max_length=64)
    model = models.CharField(max_length=200)
    status_class = models.CharField(max_length=3)  # "2xx", "4xx", "5xx"
    hour = models.DateTimeField()
    requests = models.BigIntegerField(default=0)
    unpriced_requests = models.BigIntegerField(default=0)
    estimated_requests = models.BigIntegerField(default=0)
    input_tokens = models.BigIntegerField(default=0)
    cached_input_tokens = models.BigIntegerField(default=0)
    cache_write_tokens = models.BigIntegerField(default=0)
    output_tokens = models.BigIntegerField(default=0)
    reasoning_tokens = models.BigIntegerField(default=0)
    cost_nanos = models.BigIntegerField(default=0)
    charge_nanos = models.BigIntegerField(default=0)
    latency_ms_total = models.BigIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["workspace", "key", "provider", "model", "status_class", "hour"], name="usagerollup_unique"
            )
        ]
        indexes = [models.Index(fields=["workspace", "hour"])]

    def __str__(self) -> str:
        return f"{self.hour:%Y-%m-%d %H}:00 {self.provider}/{self.model} {self.status_class}: {self.requests}"


class Plan(models.Model):
    """What a workspace is charged on top of provider cost (configured by operators in Django admin).

    charge = provider cost x byok_fee_rate          for the workspace's own credentials (BYOK)
    charge = provider cost x (1 + managed_markup)   for platform-managed credentials
    A workspace without a plan is on the plan marked `is_default` (or, if none, rates 0 and 0)."""

    code = models.SlugField(max_length=40, unique=True)
    name = models.CharField(max_length=100)
    byok_fee_rate = models.DecimalField(max_digits=8, decimal_places=6, default=0)
    managed_markup_rate = models.DecimalField(max_digits=8, decimal_places=6, default=0)
    is_default = models.BooleanField(default=False)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["is_default"], condition=models.Q(is_default=True), name="one_default_plan")
        ]

    def __str__(self) -> str:
        return self.name
