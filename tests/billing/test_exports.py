"""Background exports of the request log and the retention of stored bodies: an export is requested (audited,
at most three at a time), built into gzip parts whose concatenation gunzips to the very CSV the streamed
download gives, downloaded only by its workspace; expired bodies and old exports are purged, nothing else."""

from __future__ import annotations

import gzip
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.utils import timezone

from billing import tasks
from billing.bodies import request_bodies_purge
from billing.exports import MAX_ACTIVE_EXPORTS, exports_purge, usage_export_build, usage_export_request
from billing.models import RequestBody, UsageExport, UsageExportPart
from billing.requestlog import UsageFilter
from config.errors import ApplicationError
from tenants.models import AuditLog
from tests.dashboard.conftest import SECRET_A, SECRET_B, World, build_world, client_for
from tests.dashboard.test_requestlog import NOW_MS, ev, ingest
from tests.proxy.conftest import running_database_url
from tests.servers import celery_worker_args, celery_worker_env, process, wait_until


@pytest.fixture
def world_a(db: Any, fake_provider_url: str) -> World:
    return build_world("Alpha", SECRET_A, fake_provider_url)


@pytest.fixture
def world_b(db: Any, fake_provider_url: str) -> World:
    return build_world("Bravo", SECRET_B, fake_provider_url)


def streamed_csv(client: Any, slug: str, **params: str) -> bytes:
    response = client.get(f"/w/{slug}/requests.csv", params)
    assert response.status_code == 200
    return b"".join(response.streaming_content)


def download(client: Any, slug: str, export: UsageExport) -> Any:
    return client.get(f"/w/{slug}/requests/exports/{export.public_id}/")


@pytest.mark.django_db
def test_export_round_trip_parts_gunzip_to_the_streamed_csv(world_a, world_b):
    ingest(*(ev(world_a, at_ms=NOW_MS - 1000 * (i % 50), user=f"user-{i}") for i in range(600)), ev(world_b))
    client, slug = client_for(world_a.owner), world_a.workspace.slug
    response = client.post(f"/w/{slug}/requests/exports/", {"range": "7d", "provider": "openai"})
    assert response.status_code == 302 and "#exports" in response["Location"]
    export = UsageExport.objects.get(workspace=world_a.workspace)
    assert export.status == UsageExport.Status.PENDING and export.requested_by == world_a.owner
    assert AuditLog.objects.filter(workspace=world_a.workspace, action="usage.export_requested").count() == 1

    assert usage_export_build(export_id=export.pk, part_bytes=20_000) == UsageExport.Status.READY  # several parts
    export.refresh_from_db()
    assert export.rows == 600 and export.finished_at is not None
    assert UsageExportPart.objects.filter(export=export).count() > 3
    response = download(client, slug, export)
    assert response["Content-Type"] == "application/gzip"
    assert f"requests-{export.created_at:%Y-%m-%d}.csv.gz" in response["Content-Disposition"]
    data = b"".join(response.streaming_content)
    assert len(data) == export.size_bytes
    frozen = UsageFilter.from_json(export.filters)
    expected = b"".join(frozen.csv_chunks(world_a.workspace))
    assert gzip.decompress(data) == expected
    assert gzip.decompress(data) == streamed_csv(client, slug, range="7d", provider="openai")

    page = client.get(f"/w/{slug}/requests/").content.decode()
    assert f"/requests/exports/{export.public_id}/" in page and "Ready" in page and "provider openai" in page
    # B cannot download A's export, under either slug
    other = client_for(world_b.owner)
    assert download(other, world_b.workspace.slug, export).status_code == 404
    assert download(other, slug, export).status_code == 404


@pytest.mark.django_db
def test_at_most_three_exports_at_a_time_then_a_clear_message(world_a):
    filters, _ = UsageFilter.parse({})
    for _ in range(MAX_ACTIVE_EXPORTS):
        usage_export_request(workspace=world_a.workspace, user=world_a.owner, filters=filters)
    with pytest.raises(ApplicationError, match="at most 3 at a time"):
        usage_export_request(workspace=world_a.workspace, user=world_a.owner, filters=filters)
    client = client_for(world_a.owner)
    page = client.post(f"/w/{world_a.workspace.slug}/requests/exports/", {}, follow=True).content.decode()
    assert "at most 3 at a time" in page
    assert UsageExport.objects.filter(workspace=world_a.workspace).count() == MAX_ACTIVE_EXPORTS
    # one finishes: a new one may start
    first = UsageExport.objects.filter(workspace=world_a.workspace).order_by("created_at").first()
    assert first is not None
    usage_export_build(export_id=first.pk)
    usage_export_request(workspace=world_a.workspace, user=world_a.owner, filters=filters)


@pytest.mark.django_db
def test_a_failed_build_says_so_and_keeps_no_parts(world_a):
    export = UsageExport.objects.create(workspace=world_a.workspace, requested_by=world_a.owner, filters={"x": 1})
    assert usage_export_build(export_id=export.pk) == UsageExport.Status.FAILED  # no time range stored
    export.refresh_from_db()
    assert export.status == UsageExport.Status.FAILED and "failed" in export.error
    assert not UsageExportPart.objects.filter(export=export).exists()
    assert download(client_for(world_a.owner), world_a.workspace.slug, export).status_code == 404
    assert "Failed" in client_for(world_a.owner).get(f"/w/{world_a.workspace.slug}/requests/").content.decode()


@pytest.mark.django_db
def test_an_empty_export_is_a_header_only_csv(world_a):
    filters, _ = UsageFilter.parse({"model": "no-such-model"})
    export = usage_export_request(workspace=world_a.workspace, user=world_a.owner, filters=filters)
    tasks.build_usage_export(export.pk)  # the task body, run inline
    export.refresh_from_db()
    data = b"".join(download(client_for(world_a.owner), world_a.workspace.slug, export).streaming_content)
    assert export.rows == 0 and gzip.decompress(data).decode().startswith("request_id,started_at_utc,")


def body(world, *, age: timedelta) -> RequestBody:
    return RequestBody.objects.create(
        request_id=f"req_{uuid.uuid4().hex}",
        workspace=world.workspace,
        started_at=datetime.now(tz=UTC) - age,
        request=b"{}",
        response=b"{}",
    )


@pytest.mark.django_db
def test_purge_deletes_only_bodies_past_their_workspaces_retention_and_old_exports(world_a, world_b):
    world_a.workspace.body_retention_days = 1
    world_a.workspace.save(update_fields=["body_retention_days"])  # B keeps the default 30 days
    a_old, a_new = body(world_a, age=timedelta(days=2)), body(world_a, age=timedelta(hours=12))
    b_mid, b_old = body(world_b, age=timedelta(days=2)), body(world_b, age=timedelta(days=31))
    recent = UsageExport.objects.create(workspace=world_a.workspace, filters={}, status="ready")
    stale = UsageExport.objects.create(
        workspace=world_a.workspace, filters={}, status="ready", created_at=timezone.now() - timedelta(days=8)
    )
    UsageExportPart.objects.create(export=stale, seq=0, data=b"x")
    stuck = UsageExport.objects.create(
        workspace=world_a.workspace, filters={}, status="running", created_at=timezone.now() - timedelta(days=1)
    )

    assert tasks.purge_request_bodies() == 2
    left = set(RequestBody.objects.values_list("request_id", flat=True))
    assert left == {a_new.request_id, b_mid.request_id}
    assert a_old.request_id not in left and b_old.request_id not in left
    assert set(UsageExport.objects.values_list("pk", flat=True)) == {recent.pk, stuck.pk}
    assert not UsageExportPart.objects.filter(export_id=stale.pk).exists()
    stuck.refresh_from_db()
    assert stuck.status == "failed" and "did not finish" in stuck.error
    assert request_bodies_purge(batch=1) == 0 and exports_purge() == 0


@pytest.mark.django_db
def test_purge_works_in_batches(world_a):
    world_a.workspace.body_retention_days = 1
    world_a.workspace.save(update_fields=["body_retention_days"])
    for _ in range(7):
        body(world_a, age=timedelta(days=3))
    keep = body(world_a, age=timedelta(minutes=1))
    assert request_bodies_purge(batch=3) == 7
    assert list(RequestBody.objects.values_list("request_id", flat=True)) == [keep.request_id]


@pytest.mark.django_db(transaction=True)
@pytest.mark.slow
def test_a_real_worker_builds_the_export_queued_by_the_page(fake_provider_url: str, tmp_path: Path):
    world = build_world("Exporter", SECRET_A, fake_provider_url)
    ingest(*(ev(world, at_ms=NOW_MS - 1000 * i) for i in range(40)))
    client, slug = client_for(world.owner), world.workspace.slug
    log_path = tmp_path / "worker.log"
    env = celery_worker_env(database_url=running_database_url(), redis_url=settings.REDIS_URL, name="exports")
    with process(celery_worker_args(log_path=log_path, name="exports", beat=False), env=env, log_path=log_path):
        assert client.post(f"/w/{slug}/requests/exports/", {"range": "24h"}).status_code == 302

        def ready() -> UsageExport | None:
            return UsageExport.objects.filter(workspace=world.workspace, status="ready").first()

        export = wait_until(ready, timeout=30, what="the worker's export")
    data = b"".join(download(client, slug, export).streaming_content)
    assert gzip.decompress(data) == streamed_csv(client, slug, range="24h")
    assert export.rows == 40
    assert "billing.build_usage_export" in log_path.read_text()
