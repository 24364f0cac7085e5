"""Retention of stored request and response bodies (billing.RequestBody) and of request log exports.

`request_bodies_purge` (Celery beat, hourly: billing.tasks.purge_request_bodies) deletes the bodies whose
request started more than its workspace's `body_retention_days` ago, in batches of PURGE_BATCH rows (each
its own short statement, so a large backlog never holds long locks), then calls
billing.exports.exports_purge for exports older than seven days.
"""

from __future__ import annotations

import logging

from django.db import connection

from billing.exports import exports_purge

log = logging.getLogger("turnpike.billing.bodies")

PURGE_BATCH = 5000

_PURGE_SQL = """
DELETE FROM billing_requestbody WHERE id IN (
    SELECT b.id FROM billing_requestbody b JOIN tenants_workspace w ON w.id = b.workspace_id
    WHERE b.started_at < now() - make_interval(days => w.body_retention_days)
    LIMIT %s
)
"""


def request_bodies_purge(*, batch: int = PURGE_BATCH) -> int:
    """Delete expired bodies (and old exports). Returns how many bodies were deleted."""
    deleted = 0
    while True:
        with connection.cursor() as cur:
            cur.execute(_PURGE_SQL, [batch])
            count = cur.rowcount
        deleted += count
        if count < batch:
            break
    exports = exports_purge()
    if deleted or exports:
        log.info("purged %s stored bodies and %s exports", deleted, exports)
    return deleted
