"""Rollups gain the error code as a dimension, a count of streamed requests and latency / time-to-first-
byte histograms (billing.histogram), and daily rows beside the hourly ones; both are rebuilt from the
events so every row carries them."""

from bisect import bisect_right
from datetime import UTC

import django.contrib.postgres.fields
import django.db.models.deletion
from django.db import migrations, models

# billing.histogram.BOUNDS_MS as of this migration (frozen: the stored histograms depend on it).
BOUNDS_MS = (
    1, 2, 3, 4, 5, 6, 7, 8, 9,
    10, 12, 15, 20, 25, 30, 35, 40, 50, 60, 70, 80, 90,
    100, 120, 150, 200, 250, 300, 350, 400, 500, 600, 700, 800, 900,
    1000, 1200, 1500, 2000, 2500, 3000, 3500, 4000, 5000, 6000, 7000, 8000, 9000,
    10000, 12000, 15000, 20000, 25000, 30000, 35000, 40000, 50000, 60000, 70000, 80000, 90000,
    100000, 120000, 150000, 200000, 250000, 300000, 350000, 400000, 500000, 600000, 700000, 800000, 900000,
    1000000,
)  # fmt: skip
TOKENS = ("input_tokens", "cached_input_tokens", "cache_write_tokens", "output_tokens", "reasoning_tokens")
SUMS = (
    "requests", "unpriced_requests", "estimated_requests", *TOKENS, "cost_nanos", "charge_nanos",
    "latency_ms_total", "stream_requests",
)  # fmt: skip
MAX_BIGINT = 2**63 - 1


def rebuild(apps, schema_editor):
    UsageEvent = apps.get_model("billing", "UsageEvent")
    hourly = apps.get_model("billing", "UsageRollup")
    daily = apps.get_model("billing", "UsageRollupDay")
    hourly.objects.all().delete()
    daily.objects.all().delete()
    rows = {}
    fields = (
        "workspace_id", "key_id", "provider", "model_served", "model_requested", "status", "error_code",
        "started_at", "priced", "estimated", *TOKENS, "cost_nanos", "charge_nanos", "latency_ms", "ttfb_ms",
        "stream",
    )  # fmt: skip
    for e in UsageEvent.objects.order_by().values(*fields).iterator(chunk_size=5000):
        hour = e["started_at"].astimezone(UTC).replace(minute=0, second=0, microsecond=0)
        dims = (
            e["workspace_id"], e["key_id"], e["provider"], e["model_served"] or e["model_requested"],
            f"{e['status'] // 100}xx", e["error_code"],
        )  # fmt: skip
        for key in ((*dims, "hour", hour), (*dims, "day", hour.date())):
            row = rows.get(key)
            if row is None:
                row = rows[key] = {name: 0 for name in SUMS} | {
                    "latency_hist": [0] * (len(BOUNDS_MS) + 1),
                    "ttfb_hist": [0] * (len(BOUNDS_MS) + 1),
                }
            row["requests"] += 1
            row["unpriced_requests"] += 0 if e["priced"] else 1
            row["estimated_requests"] += 1 if e["estimated"] else 0
            for name in TOKENS:
                row[name] += e[name]
            row["cost_nanos"] += e["cost_nanos"] or 0
            row["charge_nanos"] += e["charge_nanos"]
            row["latency_ms_total"] += e["latency_ms"]
            row["stream_requests"] += 1 if e["stream"] else 0
            row["latency_hist"][bisect_right(BOUNDS_MS, e["latency_ms"])] += 1
            if e["ttfb_ms"] is not None:
                row["ttfb_hist"][bisect_right(BOUNDS_MS, e["ttfb_ms"])] += 1
    for model, period in ((hourly, "hour"), (daily, "day")):
        model.objects.bulk_create(
            [
                model(
                    workspace_id=k[0], key_id=k[1], provider=k[2], model=k[3], status_class=k[4], error_code=k[5],
                    **{period: k[7]}, **{n: (min(v, MAX_BIGINT) if isinstance(v, int) else v) for n, v in row.items()},
                )  # fmt: skip
                for k, row in rows.items()
                if k[6] == period
            ],
            batch_size=2000,
        )


class Migration(migrations.Migration):
    dependencies = [
        ("billing", "0009_usage_event_partitioned"),
        ("tenants", "0006_gatewaykey_log_bodies_workspace_body_retention_days_and_more"),
    ]

    operations = [
        migrations.CreateModel(
            name='UsageRollupDay',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('provider', models.CharField(max_length=64)),
                ('model', models.CharField(max_length=200)),
                ('status_class', models.CharField(max_length=3)),
                ('error_code', models.CharField(blank=True, default='', max_length=64)),
                ('requests', models.BigIntegerField(default=0)),
                ('unpriced_requests', models.BigIntegerField(default=0)),
                ('estimated_requests', models.BigIntegerField(default=0)),
                ('input_tokens', models.BigIntegerField(default=0)),
                ('cached_input_tokens', models.BigIntegerField(default=0)),
                ('cache_write_tokens', models.BigIntegerField(default=0)),
                ('output_tokens', models.BigIntegerField(default=0)),
                ('reasoning_tokens', models.BigIntegerField(default=0)),
                ('cost_nanos', models.BigIntegerField(default=0)),
                ('charge_nanos', models.BigIntegerField(default=0)),
                ('latency_ms_total', models.BigIntegerField(default=0)),
                ('stream_requests', models.BigIntegerField(default=0)),
                ('latency_hist', django.contrib.postgres.fields.ArrayField(base_field=models.BigIntegerField(), blank=True, default=list, size=None)),
                ('ttfb_hist', django.contrib.postgres.fields.ArrayField(base_field=models.BigIntegerField(), blank=True, default=list, size=None)),
                ('day', models.DateField()),
            ],
        ),
        migrations.RemoveConstraint(
            model_name='usagerollup',
            name='usagerollup_unique',
        ),
        migrations.AddField(
            model_name='usagerollup',
            name='error_code',
            field=models.CharField(blank=True, default='', max_length=64),
        ),
        migrations.AddField(
            model_name='usagerollup',
            name='latency_hist',
            field=django.contrib.postgres.fields.ArrayField(base_field=models.BigIntegerField(), blank=True, default=list, size=None),
        ),
        migrations.AddField(
            model_name='usagerollup',
            name='stream_requests',
            field=models.BigIntegerField(default=0),
        ),
        migrations.AddField(
            model_name='usagerollup',
            name='ttfb_hist',
            field=django.contrib.postgres.fields.ArrayField(base_field=models.BigIntegerField(), blank=True, default=list, size=None),
        ),
        migrations.AddConstraint(
            model_name='usagerollup',
            constraint=models.UniqueConstraint(fields=('workspace', 'key', 'provider', 'model', 'status_class', 'error_code', 'hour'), name='usagerollup_unique_v2'),
        ),
        migrations.AddField(
            model_name='usagerollupday',
            name='key',
            field=models.ForeignKey(on_delete=django.db.models.deletion.PROTECT, related_name='+', to='tenants.gatewaykey'),
        ),
        migrations.AddField(
            model_name='usagerollupday',
            name='workspace',
            field=models.ForeignKey(on_delete=django.db.models.deletion.PROTECT, related_name='+', to='tenants.workspace'),
        ),
        migrations.AddIndex(
            model_name='usagerollupday',
            index=models.Index(fields=['workspace', 'day'], name='billing_usa_workspa_908a7a_idx'),
        ),
        migrations.AddConstraint(
            model_name='usagerollupday',
            constraint=models.UniqueConstraint(fields=('workspace', 'key', 'provider', 'model', 'status_class', 'error_code', 'day'), name='usagerollupday_unique'),
        ),
    
        migrations.RunPython(rebuild, migrations.RunPython.noop),
    ]
