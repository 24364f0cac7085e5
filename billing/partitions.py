"""Monthly partitions of billing_usageevent: create the months ahead, drop the months past retention.

The table is range-partitioned by `started_at` (migration 0009). Each month is one partition named
`billing_usageevent_pYYYYMM`, holding [first of the month, first of the next) in UTC; a DEFAULT partition
takes whatever no month holds (an event stamped years away by a skewed clock), so an insert never fails
for want of a partition.

`usage_partitions_ensure` (beat, daily) creates the current month and MONTHS_AHEAD more. Postgres refuses
to create a month while the DEFAULT partition holds rows of it, so those rows are moved into the new month
in the same transaction (they are few: only events stamped in a month nobody created yet).

`usage_partitions_drop_expired` drops every month that ended more than
`settings.TURNPIKE_USAGE_EVENT_RETENTION_DAYS` ago: a whole-table drop, instant and without bloat, where a
DELETE of millions of rows would take hours and leave dead tuples behind. Rollups and the ledger are kept
forever, so charts, balances, invoices and statements of those months stay exact. 0 keeps every month.
"""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.db import connection, transaction

log = logging.getLogger("turnpike.billing.partitions")

TABLE = "billing_usageevent"
MONTHS_AHEAD = 3
_PARTITION = re.compile(rf"^{TABLE}_p(\d{{4}})(\d{{2}})$")


def month_start(year: int, month: int) -> datetime:
    """The first instant of the month (month may overflow either way: month 13 is January next year)."""
    year, month = year + (month - 1) // 12, (month - 1) % 12 + 1
    return datetime(year, month, 1, tzinfo=UTC)


def partitions_list() -> dict[str, datetime]:
    """The monthly partitions, by name, with the month each holds."""
    with connection.cursor() as cur:
        cur.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = %s::regclass",
            [TABLE],
        )
        names = [row[0] for row in cur.fetchall()]
    months = {}
    for name in names:
        match = _PARTITION.match(name)
        if match:
            months[name] = month_start(int(match[1]), int(match[2]))
    return months


def usage_partitions_ensure(*, now: datetime | None = None, months_ahead: int = MONTHS_AHEAD) -> list[str]:
    """Create the missing monthly partitions from the current month to `months_ahead` months ahead;
    returns the names created."""
    now = now or datetime.now(tz=UTC)
    existing = set(partitions_list())
    created = []
    for offset in range(months_ahead + 1):
        start = month_start(now.year, now.month + offset)
        name = f"{TABLE}_p{start:%Y%m}"
        if name in existing:
            continue
        _create(name, start, month_start(start.year, start.month + 1))
        created.append(name)
    if created:
        log.info("created usage event partitions %s", ", ".join(created))
    return created


def _create(name: str, start: datetime, end: datetime) -> None:
    with transaction.atomic(), connection.cursor() as cur:
        # Lock out inserts into the default partition while its rows of this month move.
        cur.execute(f"LOCK TABLE {TABLE}_default IN ACCESS EXCLUSIVE MODE")
        cur.execute(f"CREATE TABLE {name} (LIKE {TABLE} INCLUDING DEFAULTS INCLUDING CONSTRAINTS)")
        cur.execute(
            f"WITH moved AS (DELETE FROM {TABLE}_default WHERE started_at >= %s AND started_at < %s RETURNING *) "  # noqa: S608 (fixed names)
            f"INSERT INTO {name} SELECT * FROM moved",
            [start, end],
        )
        cur.execute(f"ALTER TABLE {TABLE} ATTACH PARTITION {name} FOR VALUES FROM (%s) TO (%s)", [start, end])


def usage_partitions_drop_expired(*, now: datetime | None = None, retention_days: int | None = None) -> list[str]:
    """Drop the monthly partitions whose whole month ended more than `retention_days` ago (0: none)."""
    days = settings.TURNPIKE_USAGE_EVENT_RETENTION_DAYS if retention_days is None else retention_days
    if days <= 0:
        return []
    now = now or datetime.now(tz=UTC)
    cutoff = now - timedelta(days=days)
    dropped = []
    for name, start in sorted(partitions_list().items(), key=lambda kv: kv[1]):
        if month_start(start.year, start.month + 1) > cutoff:
            continue
        with transaction.atomic(), connection.cursor() as cur:
            # deferred foreign-key checks of rows written earlier in the same transaction run now, not
            # at commit (a table with pending trigger events cannot be dropped)
            cur.execute("SET CONSTRAINTS ALL IMMEDIATE")
            cur.execute(f"ALTER TABLE {TABLE} DETACH PARTITION {name}")
            cur.execute(f"DROP TABLE {name}")
        dropped.append(name)
    if dropped:
        log.info("dropped usage event partitions past %d days: %s", days, ", ".join(dropped))
    return dropped
