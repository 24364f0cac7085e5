"""Partition billing_usageevent by month of started_at (native range partitioning).

Postgres cannot turn a table into a partitioned one in place: the rows move to a new partitioned table of
the same columns, defaults, checks and foreign keys; the old table is dropped. Unique keys of a partitioned
table must contain the partition key: the primary key becomes (id, started_at) in the database (Django still
addresses rows by id, which the identity sequence keeps unique) and request ids are unique per started_at
(see billing.models.UsageEvent). Monthly partitions cover the existing rows' months (up to three years back)
through three months ahead; a DEFAULT partition takes anything else, and billing.partitions keeps the months
ahead created (beat, daily). On a large table this migration rewrites every row: run it in a quiet hour.
"""

import django.contrib.postgres.indexes
from datetime import UTC, datetime

from django.db import migrations, models

TABLE = "billing_usageevent"
MONTHS_BACK = 36
MONTHS_AHEAD = 3


def _month(year: int, month: int) -> datetime:
    year, month = year + (month - 1) // 12, (month - 1) % 12 + 1
    return datetime(year, month, 1, tzinfo=UTC)


def partition(apps, schema_editor):
    with schema_editor.connection.cursor() as cur:
        cur.execute(
            "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = %s::regclass "
            "AND contype = 'f' ORDER BY conname",
            [TABLE],
        )
        foreign_keys = cur.fetchall()
        cur.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = current_schema() AND tablename = %s "
            "ORDER BY indexname",
            [TABLE],
        )
        # Kept as they are: the foreign keys' indexes, (workspace, ingested_at) and the BRIN. Dropped: the
        # primary key and request_id's unique key (both replaced below), and (workspace, started_at), which
        # (workspace, started_at, id) replaces.
        indexes = [
            (name, sql)
            for name, sql in cur.fetchall()
            if not name.endswith("_pkey") and "request_id" not in sql and name != "billing_usa_workspa_85a50b_idx"
        ]
        cur.execute("SELECT pg_get_serial_sequence(%s, 'id')", [TABLE])
        (sequence,) = cur.fetchone()
        cur.execute(f"ALTER SEQUENCE {sequence} RENAME TO billing_usageevent_old_id_seq")
        cur.execute(f"ALTER TABLE {TABLE} RENAME TO billing_usageevent_old")
        cur.execute(
            f"CREATE TABLE {TABLE} (LIKE billing_usageevent_old INCLUDING DEFAULTS INCLUDING IDENTITY "
            "INCLUDING CONSTRAINTS) PARTITION BY RANGE (started_at)"
        )
        now = datetime.now(tz=UTC)
        first = _month(now.year, now.month - MONTHS_BACK)
        cur.execute("SELECT min(started_at) FROM billing_usageevent_old WHERE started_at >= %s", [first])
        (oldest,) = cur.fetchone()
        start = _month(oldest.year, oldest.month) if oldest else _month(now.year, now.month)
        start = min(start, _month(now.year, now.month))
        cur.execute(f"CREATE TABLE {TABLE}_default PARTITION OF {TABLE} DEFAULT")
        month = start
        end = _month(now.year, now.month + MONTHS_AHEAD + 1)
        while month < end:
            following = _month(month.year, month.month + 1)
            cur.execute(
                f"CREATE TABLE {TABLE}_p{month:%Y%m} PARTITION OF {TABLE} FOR VALUES FROM (%s) TO (%s)",
                [month, following],
            )
            month = following
        cur.execute(f"INSERT INTO {TABLE} SELECT * FROM billing_usageevent_old")
        cur.execute(
            f"SELECT setval(pg_get_serial_sequence('{TABLE}', 'id'), "
            f"GREATEST((SELECT max(id) FROM {TABLE}), 1), (SELECT max(id) IS NOT NULL FROM {TABLE}))"
        )
        cur.execute("DROP TABLE billing_usageevent_old")
        for _name, sql in indexes:
            cur.execute(sql)
        cur.execute(f"ALTER TABLE {TABLE} ADD CONSTRAINT {TABLE}_pkey PRIMARY KEY (id, started_at)")
        cur.execute(f"ALTER TABLE {TABLE} ADD CONSTRAINT usageevent_request_unique UNIQUE (request_id, started_at)")
        cur.execute(f"CREATE INDEX usageevent_ws_started_id ON {TABLE} (workspace_id, started_at, id)")
        cur.execute(f"CREATE INDEX usageevent_ws_key_started ON {TABLE} (workspace_id, key_id, started_at)")
        cur.execute(
            f"CREATE INDEX usageevent_ws_user_started ON {TABLE} (workspace_id, end_user, started_at) "
            "WHERE NOT (end_user = '')"
        )
        cur.execute(f"CREATE INDEX usageevent_metadata_gin ON {TABLE} USING gin (metadata jsonb_path_ops)")
        for name, definition in foreign_keys:
            cur.execute(f"ALTER TABLE {TABLE} ADD CONSTRAINT {name} {definition}")


class Migration(migrations.Migration):
    atomic = True

    dependencies = [
        ("billing", "0008_usage_event_units"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.RemoveIndex(
                    model_name='usageevent',
                    name='billing_usa_workspa_85a50b_idx',
                ),
                migrations.AlterField(
                    model_name='usageevent',
                    name='request_id',
                    field=models.CharField(max_length=64),
                ),
                migrations.AddIndex(
                    model_name='usageevent',
                    index=models.Index(fields=['workspace', 'started_at', 'id'], name='usageevent_ws_started_id'),
                ),
                migrations.AddIndex(
                    model_name='usageevent',
                    index=models.Index(fields=['workspace', 'key', 'started_at'], name='usageevent_ws_key_started'),
                ),
                migrations.AddIndex(
                    model_name='usageevent',
                    index=models.Index(condition=models.Q(('end_user', ''), _negated=True), fields=['workspace', 'end_user', 'started_at'], name='usageevent_ws_user_started'),
                ),
                migrations.AddIndex(
                    model_name='usageevent',
                    index=django.contrib.postgres.indexes.GinIndex(fields=['metadata'], name='usageevent_metadata_gin', opclasses=['jsonb_path_ops']),
                ),
                migrations.AddConstraint(
                    model_name='usageevent',
                    constraint=models.UniqueConstraint(fields=('request_id', 'started_at'), name='usageevent_request_unique'),
                ),
            ],
            # irreversible: turning the partitioned table back into a plain one is a manual operation
            database_operations=[migrations.RunPython(partition)],
        ),
    ]
