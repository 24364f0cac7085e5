"""Billing: the price catalog and the prepaid balance ledger."""

from __future__ import annotations

import uuid
from typing import Any

from django.conf import settings
from django.contrib.postgres.fields import ArrayField
from django.contrib.postgres.indexes import BrinIndex, GinIndex
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
    # Long-context tiers, [{"above_input_tokens": 200000, "input": "2.5", "output": "15", ...}], and fees
    # per unit, {"web_search": "0.01"}: decimal strings, never JSON numbers (contracts.pricing.Price).
    # Loaded from the catalog file only; db_default keeps inserts of the previous release working.
    tiers = models.JSONField(default=list, db_default=models.Value([], models.JSONField()), blank=True, editable=False)
    fees = models.JSONField(default=dict, db_default=models.Value({}, models.JSONField()), blank=True, editable=False)

    class Meta:
        abstract = True

    def to_price(self) -> Price:
        return Price.from_dict(
            {
                "input": self.input_usd_per_mtok,
                "output": self.output_usd_per_mtok,
                "cached_input": self.cached_input_usd_per_mtok,
                "cache_write": self.cache_write_usd_per_mtok,
                "reasoning": self.reasoning_usd_per_mtok,
                "request_fee": self.request_fee_usd,
                "tiers": self.tiers,
                "fees": self.fees,
            }
        )


class ModelPrice(PriceFields):
    """The published catalog (platform-wide): loaded from billing/data/price_catalog.toml by
    `manage.py load_price_catalog`."""

    class Mode(models.TextChoices):
        CHAT = "chat", "Chat"
        COMPLETION = "completion", "Completion"
        RESPONSES = "responses", "Responses API only"
        EMBEDDING = "embedding", "Embedding"

    provider = models.CharField(max_length=32)
    model = models.CharField(max_length=200)
    mode = models.CharField(max_length=16, choices=Mode.choices, default=Mode.CHAT)
    modality = models.CharField(max_length=64, blank=True)
    context_window = models.PositiveIntegerField(null=True, blank=True)
    max_output_tokens = models.PositiveIntegerField(null=True, blank=True)
    aliases = models.JSONField(default=list, blank=True)
    notes = models.CharField(max_length=500, blank=True)
    # USD per 1M tokens of token types usage events do not carry separately (1-hour cache writes, audio
    # and image tokens): shown in the catalog, not charged. Decimal strings.
    extra_prices = models.JSONField(default=dict, db_default=models.Value({}, models.JSONField()), blank=True)
    source = models.CharField(max_length=32, blank=True, db_default="", help_text="Where the price came from.")
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

    The table is partitioned by month of `started_at` (native range partitioning, billing.partitions): a
    time-bounded query reads only its months, and retention drops whole months. Postgres requires every
    unique key of a partitioned table to contain the partition key, so the database's primary key is
    (id, started_at) — Django still addresses rows by `id`, which the identity sequence keeps unique — and
    (request_id, started_at) is unique: the proxy names every request once (`req_<uuid4>`) and an event's
    `started_at` never changes between deliveries, so ingesting the same event twice is still a no-op.
    The b-tree on (workspace, started_at, id) serves a workspace's history newest first (the request log's
    keyset pages); the others serve the log's selective filters."""

    request_id = models.CharField(max_length=64)
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
    # Billable units by fee name ({"web_search": 2}); {} for none. A JSON object rather than a column per
    # unit: the names are the catalog's open-ended `fees` keys, so a new fee needs no migration.
    # db_default: ingesters of the previous release, which do not name the column, keep working.
    units = models.JSONField(
        default=dict,
        db_default=models.Value({}, output_field=models.JSONField()),
        blank=True,
        help_text="Billable units by fee name, e.g. web searches.",
    )
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
        constraints = [
            models.UniqueConstraint(fields=["request_id", "started_at"], name="usageevent_request_unique"),
        ]
        indexes = [
            models.Index(fields=["workspace", "started_at", "id"], name="usageevent_ws_started_id"),
            # statements: the events behind a period's usage debits (same timestamp as their ledger entry)
            models.Index(fields=["workspace", "ingested_at"]),
            BrinIndex(fields=["started_at"], name="usageevent_started_brin"),
            models.Index(fields=["workspace", "key", "started_at"], name="usageevent_ws_key_started"),
            models.Index(
                fields=["workspace", "end_user", "started_at"],
                name="usageevent_ws_user_started",
                condition=~models.Q(end_user=""),
            ),
            GinIndex(fields=["metadata"], name="usageevent_metadata_gin", opclasses=["jsonb_path_ops"]),
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


class RollupFields(models.Model):
    """The sums and histograms of a usage rollup row (hourly: UsageRollup; daily: UsageRollupDay).

    One row per workspace x key x provider x model x status class x error code x period, updated in the
    same transaction as the events they count (so the rollups always equal the events), and kept forever,
    when the events' partitions are long dropped.

    `latency_hist` and `ttfb_hist` count requests per fixed bucket (billing.histogram.BOUNDS_MS), so
    p50/p95/p99 for any range and any breakdown are computed by adding rollup rows, never by scanning
    events. `ttfb_hist` counts only requests that have a time to first byte. Daily rows exist so that a
    30-day chart adds 30 rows per series rather than 720."""

    workspace = models.ForeignKey("tenants.Workspace", on_delete=models.PROTECT, related_name="+")
    key = models.ForeignKey("tenants.GatewayKey", on_delete=models.PROTECT, related_name="+")
    provider = models.CharField(max_length=64)
    model = models.CharField(max_length=200)
    status_class = models.CharField(max_length=3)  # "2xx", "4xx", "5xx"
    error_code = models.CharField(max_length=64, blank=True, default="")
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
    stream_requests = models.BigIntegerField(default=0)
    latency_hist = ArrayField(models.BigIntegerField(), default=list, blank=True)
    ttfb_hist = ArrayField(models.BigIntegerField(), default=list, blank=True)

    class Meta:
        abstract = True


class UsageRollup(RollupFields):
    """Hourly rollups (`hour` is the UTC hour the requests started in)."""

    hour = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["workspace", "key", "provider", "model", "status_class", "error_code", "hour"],
                name="usagerollup_unique_v2",
            )
        ]
        indexes = [models.Index(fields=["workspace", "hour"])]

    def __str__(self) -> str:
        return f"{self.hour:%Y-%m-%d %H}:00 {self.provider}/{self.model} {self.status_class}: {self.requests}"


class UsageRollupDay(RollupFields):
    """Daily rollups (`day` is the UTC day the requests started on): the same sums as the hourly rows."""

    day = models.DateField()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["workspace", "key", "provider", "model", "status_class", "error_code", "day"],
                name="usagerollupday_unique",
            )
        ]
        indexes = [models.Index(fields=["workspace", "day"])]

    def __str__(self) -> str:
        return f"{self.day:%Y-%m-%d} {self.provider}/{self.model} {self.status_class}: {self.requests}"


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
    public = models.BooleanField(default=False, help_text="Workspaces may choose it themselves on the billing page.")
    description = models.CharField(max_length=300, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["is_default"], condition=models.Q(is_default=True), name="one_default_plan")
        ]

    def __str__(self) -> str:
        return self.name


# --- the money side: Stripe, documents (issue 9) ---------------------------------------------------------


class BillingAccount(models.Model):
    """A workspace's billing state: its Stripe customer and saved card, auto-recharge and the low-balance
    alert. Created on first use (billing.services.billing_account_for). Amounts are nano-USD."""

    workspace = models.OneToOneField("tenants.Workspace", on_delete=models.PROTECT, related_name="billing_account")
    stripe_customer_id = models.CharField(max_length=64, null=True, blank=True, unique=True)
    payment_method_id = models.CharField(max_length=64, blank=True, help_text="The saved card, for auto-recharge.")
    card_brand = models.CharField(max_length=20, blank=True)
    card_last4 = models.CharField(max_length=4, blank=True)
    card_exp_month = models.PositiveSmallIntegerField(null=True, blank=True)
    card_exp_year = models.PositiveSmallIntegerField(null=True, blank=True)
    auto_recharge_enabled = models.BooleanField(default=False)
    auto_recharge_threshold_nanos = models.BigIntegerField(default=0)
    auto_recharge_amount_nanos = models.BigIntegerField(default=0)
    auto_recharge_failures = models.PositiveSmallIntegerField(default=0)
    auto_recharge_last_error = models.CharField(max_length=300, blank=True)
    low_balance_threshold_nanos = models.BigIntegerField(null=True, blank=True)
    low_balance_alerted_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"billing account of workspace {self.workspace_id}"


class BillingProfile(models.Model):
    """Who the buyer is on invoices: edited by owners, admins and finance; every change audited."""

    workspace = models.OneToOneField("tenants.Workspace", on_delete=models.PROTECT, related_name="billing_profile")
    legal_name = models.CharField(max_length=200, blank=True)
    address_line1 = models.CharField(max_length=200, blank=True)
    address_line2 = models.CharField(max_length=200, blank=True)
    postal_code = models.CharField(max_length=20, blank=True)
    city = models.CharField(max_length=100, blank=True)
    region = models.CharField(max_length=100, blank=True)
    country = models.CharField(max_length=2, blank=True, help_text="ISO 3166-1 alpha-2, upper case.")
    tax_id = models.CharField(max_length=32, blank=True, help_text="VAT or other tax ID, as entered (normalised).")
    billing_emails = models.JSONField(default=list, blank=True)
    updated_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"billing profile of workspace {self.workspace_id}"


class TopUp(models.Model):
    """One purchase of credit: a Checkout session a member started, or an off-session auto-recharge.

    The ledger is credited once, from a verified webhook (or the auto-recharge task's own confirmed
    PaymentIntent), in the transaction that sets `ledger_entry`. `amount_nanos` is the credit; the
    customer paid `amount_nanos` plus `tax_cents` (cents)."""

    class Source(models.TextChoices):
        CHECKOUT = "checkout", "Checkout"
        AUTO_RECHARGE = "auto_recharge", "Auto-recharge"

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        PAID = "paid", "Paid"
        FAILED = "failed", "Failed"
        EXPIRED = "expired", "Expired"

    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    workspace = models.ForeignKey("tenants.Workspace", on_delete=models.PROTECT, related_name="topups")
    source = models.CharField(max_length=16, choices=Source.choices)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    amount_nanos = models.BigIntegerField(help_text="The credit bought, nano-USD (whole cents).")
    tax_cents = models.BigIntegerField(default=0)
    tax_rate = models.DecimalField(max_digits=6, decimal_places=4, default=0)
    reverse_charge = models.BooleanField(default=False)
    currency = models.CharField(max_length=3, default="USD")
    stripe_checkout_session_id = models.CharField(max_length=255, null=True, blank=True, unique=True)
    stripe_payment_intent_id = models.CharField(max_length=255, null=True, blank=True, unique=True)
    stripe_charge_id = models.CharField(max_length=255, blank=True)
    ledger_entry = models.OneToOneField(
        LedgerEntry, null=True, blank=True, on_delete=models.PROTECT, related_name="topup"
    )
    refunded_cents = models.BigIntegerField(default=0)
    disputed_cents = models.BigIntegerField(default=0)
    failure_message = models.CharField(max_length=300, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)
    paid_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["workspace", "created_at"])]
        constraints = [
            models.UniqueConstraint(
                fields=["workspace"],
                condition=models.Q(source="auto_recharge", status="pending"),
                name="one_auto_recharge_in_flight",
            )
        ]

    def __str__(self) -> str:
        return f"top-up {self.public_id} ({self.status})"

    @property
    def amount_cents(self) -> int:
        return self.amount_nanos // 10_000_000

    @property
    def total_cents(self) -> int:
        return self.amount_cents + self.tax_cents


class StripeEvent(models.Model):
    """A webhook event handled: its id is unique, so a re-delivery is recognised and handled once."""

    event_id = models.CharField(max_length=255, unique=True)
    type = models.CharField(max_length=100)
    workspace_id = models.BigIntegerField(null=True, blank=True, db_index=True)
    outcome = models.CharField(max_length=300, blank=True)
    received_at = models.DateTimeField(default=timezone.now, db_index=True)

    def __str__(self) -> str:
        return f"{self.event_id} {self.type}"


class DocumentSequence(models.Model):
    """The last number used per issuing entity, document series and year: numbers are taken under this
    row's lock at finalization, in the finalizing transaction, so they are sequential and gapless."""

    issuer = models.CharField(max_length=16)
    series = models.CharField(max_length=16)  # "invoice" or "credit_note"
    year = models.PositiveSmallIntegerField()
    last_value = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["issuer", "series", "year"], name="documentsequence_unique")]

    def __str__(self) -> str:
        return f"{self.issuer} {self.series} {self.year}: {self.last_value}"


class Invoice(models.Model):
    """An invoice (receipt) for a paid top-up, or a credit note correcting one. Amounts in cents.

    Immutable once finalized: `number` is assigned at finalization (DocumentSequence) and the seller and
    buyer are snapshots taken then, so later profile edits never change an issued document."""

    class Kind(models.TextChoices):
        INVOICE = "invoice", "Invoice"
        CREDIT_NOTE = "credit_note", "Credit note"

    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    workspace = models.ForeignKey("tenants.Workspace", on_delete=models.PROTECT, related_name="invoices")
    kind = models.CharField(max_length=16, choices=Kind.choices, default=Kind.INVOICE)
    topup = models.ForeignKey(TopUp, on_delete=models.PROTECT, related_name="invoices")
    corrects = models.ForeignKey("self", null=True, blank=True, on_delete=models.PROTECT, related_name="corrections")
    number = models.CharField(max_length=32, unique=True)
    issuer = models.CharField(max_length=16)
    issued_at = models.DateTimeField(default=timezone.now)
    seller = models.JSONField(default=dict)
    buyer = models.JSONField(default=dict)
    description = models.CharField(max_length=300)
    currency = models.CharField(max_length=3, default="USD")
    net_cents = models.BigIntegerField()
    tax_rate = models.DecimalField(max_digits=6, decimal_places=4, default=0)
    tax_cents = models.BigIntegerField(default=0)
    total_cents = models.BigIntegerField()
    reverse_charge = models.BooleanField(default=False)
    tax_note = models.CharField(max_length=300, blank=True)
    payment_reference = models.CharField(max_length=255, blank=True)
    idempotency_key = models.CharField(max_length=200, unique=True)

    class Meta:
        ordering = ["-issued_at", "-id"]
        indexes = [models.Index(fields=["workspace", "issued_at"])]

    def __str__(self) -> str:
        return self.number

    def save(self, *args: Any, **kwargs: Any) -> None:
        if self.pk is not None:
            raise ValueError("a finalized invoice is immutable; issue a credit note instead")
        super().save(*args, **kwargs)


class Statement(models.Model):
    """A usage statement of one workspace for [period_start, period_end) (UTC): monthly, issued by beat
    on the first of the month, or month-to-date on demand (not numbered, regenerated each time).
    Every amount in cents under the rounding rule in billing/statements.py and docs/billing.md."""

    class Kind(models.TextChoices):
        MONTHLY = "monthly", "Monthly"
        TO_DATE = "to_date", "Month to date"

    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    workspace = models.ForeignKey("tenants.Workspace", on_delete=models.PROTECT, related_name="statements")
    kind = models.CharField(max_length=16, choices=Kind.choices)
    period_start = models.DateTimeField()
    period_end = models.DateTimeField()
    opening_cents = models.BigIntegerField()
    closing_cents = models.BigIntegerField()
    totals = models.JSONField(default=dict, help_text="Cents per ledger kind, and the exact nano-USD behind them.")
    lines = models.JSONField(default=list, help_text="Usage lines: provider, model, token type, tokens, price, cents.")
    issued_at = models.DateTimeField(default=timezone.now)
    emailed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-period_start", "-issued_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["workspace", "period_start"], condition=models.Q(kind="monthly"), name="one_monthly_statement"
            )
        ]

    def __str__(self) -> str:
        return f"{self.kind} statement {self.period_start:%Y-%m} of workspace {self.workspace_id}"


class RequestBody(models.Model):
    """The request and response bodies of one proxied request, stored only when the workspace (or the
    gateway key) opted in and the request did not opt out (docs/request-log.md). Each body is cut at
    `contracts.events.BODY_MAX_BYTES`; headers are never stored. Raw bytes (bytea), as the client and the
    provider sent them: nothing is decoded or re-encoded on the way in, a NUL byte included.

    Deleted by `billing.tasks.purge_request_bodies` once older than the workspace's retention."""

    request_id = models.CharField(max_length=64, unique=True)
    workspace = models.ForeignKey("tenants.Workspace", on_delete=models.PROTECT, related_name="+")
    started_at = models.DateTimeField()
    request = models.BinaryField(default=bytes)
    response = models.BinaryField(default=bytes)
    request_truncated = models.BooleanField(default=False)
    response_truncated = models.BooleanField(default=False)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        indexes = [models.Index(fields=["workspace", "started_at"])]

    def __str__(self) -> str:
        return f"bodies of {self.request_id}"


class UsageExport(models.Model):
    """A CSV export of the request log built by a Celery task (billing.exports) for filters that match
    too many rows to stream in one response. The file is kept in Postgres, in parts (UsageExportPart),
    so every web process can serve it whichever host built it."""

    class Status(models.TextChoices):
        PENDING = "pending", "Queued"
        RUNNING = "running", "Building"
        READY = "ready", "Ready"
        FAILED = "failed", "Failed"

    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    workspace = models.ForeignKey("tenants.Workspace", on_delete=models.PROTECT, related_name="+")
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    filters = models.JSONField(default=dict, help_text="The request log filters, as the query string had them.")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    rows = models.BigIntegerField(default=0)
    size_bytes = models.BigIntegerField(default=0)
    error = models.CharField(max_length=300, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["workspace", "created_at"])]

    def __str__(self) -> str:
        return f"export {self.public_id} ({self.status})"


class UsageExportPart(models.Model):
    """One gzip member of an export's CSV, in order; concatenated they are one valid .csv.gz file."""

    export = models.ForeignKey(UsageExport, on_delete=models.CASCADE, related_name="parts")
    seq = models.PositiveIntegerField()
    data = models.BinaryField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["export", "seq"], name="usageexportpart_unique")]

    def __str__(self) -> str:
        return f"part {self.seq} of export {self.export_id}"
