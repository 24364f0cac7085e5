"""Stored request/response bodies (opt-in) and request log exports built in the background."""

import uuid

import django.db.models.deletion
import django.utils.timezone
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("billing", "0010_rollup_histograms"),
        ("tenants", "0006_gatewaykey_log_bodies_workspace_body_retention_days_and_more"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name='RequestBody',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('request_id', models.CharField(max_length=64, unique=True)),
                ('started_at', models.DateTimeField()),
                ('request', models.BinaryField(default=bytes)),
                ('response', models.BinaryField(default=bytes)),
                ('request_truncated', models.BooleanField(default=False)),
                ('response_truncated', models.BooleanField(default=False)),
                ('created_at', models.DateTimeField(default=django.utils.timezone.now)),
            ],
        ),
        migrations.CreateModel(
            name='UsageExport',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('public_id', models.UUIDField(default=uuid.uuid4, editable=False, unique=True)),
                ('filters', models.JSONField(default=dict, help_text='The request log filters, as the query string had them.')),
                ('status', models.CharField(choices=[('pending', 'Queued'), ('running', 'Building'), ('ready', 'Ready'), ('failed', 'Failed')], default='pending', max_length=16)),
                ('rows', models.BigIntegerField(default=0)),
                ('size_bytes', models.BigIntegerField(default=0)),
                ('error', models.CharField(blank=True, max_length=300)),
                ('created_at', models.DateTimeField(default=django.utils.timezone.now)),
                ('finished_at', models.DateTimeField(blank=True, null=True)),
            ],
            options={
                'ordering': ['-created_at'],
            },
        ),
        migrations.CreateModel(
            name='UsageExportPart',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('seq', models.PositiveIntegerField()),
                ('data', models.BinaryField()),
            ],
        ),
        migrations.AddField(
            model_name='requestbody',
            name='workspace',
            field=models.ForeignKey(on_delete=django.db.models.deletion.PROTECT, related_name='+', to='tenants.workspace'),
        ),
        migrations.AddField(
            model_name='usageexport',
            name='requested_by',
            field=models.ForeignKey(null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='+', to=settings.AUTH_USER_MODEL),
        ),
        migrations.AddField(
            model_name='usageexport',
            name='workspace',
            field=models.ForeignKey(on_delete=django.db.models.deletion.PROTECT, related_name='+', to='tenants.workspace'),
        ),
        migrations.AddField(
            model_name='usageexportpart',
            name='export',
            field=models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='parts', to='billing.usageexport'),
        ),
        migrations.AddIndex(
            model_name='requestbody',
            index=models.Index(fields=['workspace', 'started_at'], name='billing_req_workspa_3ff2b5_idx'),
        ),
        migrations.AddIndex(
            model_name='usageexport',
            index=models.Index(fields=['workspace', 'created_at'], name='billing_usa_workspa_7d8c42_idx'),
        ),
        migrations.AddConstraint(
            model_name='usageexportpart',
            constraint=models.UniqueConstraint(fields=('export', 'seq'), name='usageexportpart_unique'),
        ),
    ]
