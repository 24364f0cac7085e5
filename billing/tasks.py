"""Celery tasks of billing: thin wrappers around services."""

from __future__ import annotations

import logging

import redis
from celery import shared_task
from django.db import InterfaceError, OperationalError

from billing.ingest import is_outage, run_ingest
from billing.services import topups

log = logging.getLogger("turnpike.billing.ingest")


# A trigger, not a record: the entries it drains stay in the stream's consumer group until stored, so
# the message is acknowledged on receipt (never re-delivered after a crash; the next trigger follows).
@shared_task(name="billing.ingest_usage", ignore_result=True, acks_late=False)
def ingest_usage() -> dict[str, int]:
    try:
        result = run_ingest()
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        # Redis is restarting or unreachable: nothing was acknowledged, the next trigger drains again.
        log.warning("usage stream unreachable (%s); ingestion resumes when Redis answers", exc)
        return {"read": 0, "inserted": 0, "acked": 0, "dead": 0}
    except (OperationalError, InterfaceError) as exc:
        if not is_outage(exc):
            raise  # e.g. a statement timeout: worth its traceback
        # Postgres is restarting or unreachable: the batch rolled back and its entries stay pending in the
        # stream (billing.ingest hands their delivery back); one line a second, not a traceback.
        log.warning("Postgres unreachable (%s); ingestion resumes when it answers", str(exc).strip()[:200])
        return {"read": 0, "inserted": 0, "acked": 0, "dead": 0}
    return {"read": result.read, "inserted": result.inserted, "acked": result.acked, "dead": result.dead}


@shared_task(name="billing.auto_recharge", ignore_result=True)
def auto_recharge(workspace_id: int) -> str:
    """Charge the saved card off-session if the balance is below the threshold (idempotent)."""
    return topups.auto_recharge_run(workspace_id=workspace_id)


@shared_task(name="billing.auto_recharge_sweep", ignore_result=True)
def auto_recharge_sweep() -> int:
    """Resolve charges a dead worker left pending, then recharge anyone below threshold the hook missed."""
    return topups.auto_recharge_sweep() + topups.auto_recharge_scan()


@shared_task(name="billing.low_balance_alert", ignore_result=True)
def low_balance_alert(workspace_id: int) -> None:
    topups.low_balance_alert_send(workspace_id=workspace_id)


@shared_task(name="billing.issue_monthly_statements", ignore_result=True)
def issue_monthly_statements() -> dict[str, int]:
    """Beat, hourly: the previous UTC month's statement of every active workspace, issued once and emailed."""
    from billing.statements import monthly_statements_issue

    return monthly_statements_issue()


@shared_task(name="billing.usage_partitions", ignore_result=True)
def usage_partitions() -> dict[str, list[str]]:
    """Beat: create the usage event months ahead, drop the months past retention (billing.partitions)."""
    from billing.partitions import usage_partitions_drop_expired, usage_partitions_ensure

    return {"created": usage_partitions_ensure(), "dropped": usage_partitions_drop_expired()}


@shared_task(name="billing.purge_request_bodies", ignore_result=True)
def purge_request_bodies() -> int:
    """Beat, hourly: delete stored bodies older than their workspace's retention."""
    from billing.bodies import request_bodies_purge

    return request_bodies_purge()


@shared_task(name="billing.build_usage_export", ignore_result=True)
def build_usage_export(export_id: int) -> str:
    """Build a request log CSV export into gzip parts (billing.exports)."""
    from billing.exports import usage_export_build

    return usage_export_build(export_id=export_id)
