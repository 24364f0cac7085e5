"""Celery tasks of billing: thin wrappers around services."""

from __future__ import annotations

from celery import shared_task

from billing.ingest import run_ingest


@shared_task(name="billing.ingest_usage", ignore_result=True)
def ingest_usage() -> dict[str, int]:
    result = run_ingest()
    return {"read": result.read, "inserted": result.inserted, "acked": result.acked}
