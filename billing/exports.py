"""Background CSV exports of the request log, for filters that match too many rows to stream in one response.

1. `usage_export_request` (the dashboard's POST): checks the member may see usage, allows at most
   MAX_ACTIVE_EXPORTS queued or building exports per workspace (the workspace row is locked while counting,
   so two clicks cannot both pass), stores a `UsageExport` (status pending) with the filter and its absolute
   time range, writes an audit row in the same transaction, and queues `billing.build_usage_export` on commit.
2. `usage_export_build` (the Celery task): marks it running, reads the matching rows with Postgres COPY in keyset
   slices (billing.requestlog, the same filter as the page), and stores the CSV as gzip members of about
   PART_RAW_BYTES of CSV each (`UsageExportPart`, in order); concatenated they are one valid .csv.gz. Then
   rows / size / status ready. Any failure: the parts are deleted and the export is `failed` with a message.
   A crash mid-build leaves it running; `exports_purge` fails such exports after STALE_AFTER, and a retry of
   the task starts over (parts are replaced).
3. `exports_purge` (hourly, from billing.bodies.request_bodies_purge): deletes exports older than
   EXPORT_RETENTION (parts cascade).
"""

from __future__ import annotations

import gzip
import logging
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

from django.db import transaction
from django.utils import timezone

from billing.models import UsageExport, UsageExportPart
from billing.requestlog import UsageFilter
from config.errors import ApplicationError
from tenants.models import User, Workspace
from tenants.roles import Perm
from tenants.services import audit, require_permission

log = logging.getLogger("turnpike.billing.exports")

MAX_ACTIVE_EXPORTS = 3
PART_RAW_BYTES = 8 * 1024 * 1024  # CSV text per gzip member (about 1-2 MB compressed)
EXPORT_RETENTION = timedelta(days=7)
STALE_AFTER = timedelta(hours=6)
ACTIVE = (UsageExport.Status.PENDING, UsageExport.Status.RUNNING)


@transaction.atomic
def usage_export_request(
    *, workspace: Workspace, user: User, filters: UsageFilter, ip: str | None = None
) -> UsageExport:
    """Queue a background export of what `filters` matches in `workspace`."""
    require_permission(workspace=workspace, user=user, perm=Perm.USAGE_VIEW)
    Workspace.objects.select_for_update().filter(pk=workspace.pk).first()
    active = UsageExport.objects.filter(
        workspace=workspace, status__in=ACTIVE, created_at__gte=timezone.now() - STALE_AFTER
    ).count()
    if active >= MAX_ACTIVE_EXPORTS:
        raise ApplicationError(
            f"This workspace already has {active} exports being built (at most {MAX_ACTIVE_EXPORTS} at a time). "
            "Wait for one to finish, then try again."
        )
    export = UsageExport.objects.create(workspace=workspace, requested_by=user, filters=filters.to_json())
    audit(
        workspace=workspace,
        actor=user,
        action="usage.export_requested",
        target=export,
        ip=ip,
        metadata={"filters": filters.describe()},
    )
    transaction.on_commit(lambda: _queue(export.pk))
    return export


def _queue(export_id: int) -> None:
    from billing import tasks

    try:
        tasks.build_usage_export.delay(export_id)
    except Exception as exc:  # the broker is unreachable: say so rather than leave it queued forever
        log.warning("could not queue export %s: %s", export_id, exc)
        UsageExport.objects.filter(pk=export_id, status=UsageExport.Status.PENDING).update(
            status=UsageExport.Status.FAILED,
            error="The export could not be queued; please try again in a minute.",
            finished_at=timezone.now(),
        )


def _members(chunks: Iterator[bytes], *, part_bytes: int) -> Iterator[bytes]:
    """gzip members of about `part_bytes` of CSV each."""
    pending: list[bytes] = []
    size = 0
    for chunk in chunks:
        pending.append(chunk)
        size += len(chunk)
        if size >= part_bytes:
            yield gzip.compress(b"".join(pending), compresslevel=6)
            pending, size = [], 0
    if pending:
        yield gzip.compress(b"".join(pending), compresslevel=6)


def usage_export_build(*, export_id: int, part_bytes: int = PART_RAW_BYTES) -> str:
    """Build one export (the task body). Returns its final status."""
    claimed = UsageExport.objects.filter(pk=export_id, status__in=ACTIVE).update(status=UsageExport.Status.RUNNING)
    if not claimed:
        return "gone"
    export = UsageExport.objects.get(pk=export_id)
    UsageExportPart.objects.filter(export=export).delete()  # a retried build starts over
    counts: dict[str, int] = {"rows": 0}
    size = seq = 0
    try:
        filters = UsageFilter.from_json(export.filters)
        chunks = filters.csv_chunks(export.workspace_id, chunk_bytes=max(4096, part_bytes // 8), counts=counts)
        for data in _members(chunks, part_bytes=part_bytes):
            UsageExportPart.objects.create(export=export, seq=seq, data=data)
            seq += 1
            size += len(data)
    except Exception as exc:
        log.exception("export %s failed", export_id)
        UsageExportPart.objects.filter(export=export).delete()
        UsageExport.objects.filter(pk=export_id).update(
            status=UsageExport.Status.FAILED,
            error=f"The export failed ({type(exc).__name__}); please try again."[:300],
            finished_at=timezone.now(),
        )
        return UsageExport.Status.FAILED
    UsageExport.objects.filter(pk=export_id).update(
        status=UsageExport.Status.READY,
        rows=counts["rows"],
        size_bytes=size,
        finished_at=timezone.now(),
    )
    return UsageExport.Status.READY


def usage_export_parts(*, export: UsageExport) -> Iterator[bytes]:
    """The stored gzip members in order, one at a time (never the whole file in memory)."""
    ids = list(UsageExportPart.objects.filter(export=export).order_by("seq").values_list("pk", flat=True))
    for pk in ids:
        data: Any = UsageExportPart.objects.filter(pk=pk).values_list("data", flat=True).first()
        if data is not None:
            yield bytes(data)


def exports_purge(*, now: Any = None) -> int:
    """Delete exports older than EXPORT_RETENTION; fail the ones a dead worker left building. Returns how
    many were deleted."""
    now = now or timezone.now()
    UsageExport.objects.filter(status__in=ACTIVE, created_at__lt=now - STALE_AFTER).update(
        status=UsageExport.Status.FAILED, error="The export did not finish; please try again.", finished_at=now
    )
    deleted = 0
    while True:
        ids = list(UsageExport.objects.filter(created_at__lt=now - EXPORT_RETENTION).values_list("pk", flat=True)[:100])
        if not ids:
            return deleted
        UsageExportPart.objects.filter(export_id__in=ids).delete()
        deleted += UsageExport.objects.filter(pk__in=ids).delete()[1].get("billing.UsageExport", 0)
