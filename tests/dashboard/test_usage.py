"""The overview shows the workspace's balance and its own usage, ingested by the real pipeline code,
and nothing of another workspace's."""

from __future__ import annotations

import time
import uuid

import pytest

from billing.ingest import usage_ingest_batch
from billing.services import ledger_grant_post
from contracts.events import UsageEvent
from tests.dashboard.conftest import client_for


def event(world, *, model: str, charge: int | None, status: int = 200) -> UsageEvent:
    now = int(time.time() * 1000)
    return UsageEvent(
        request_id=f"req_{uuid.uuid4().hex}",
        workspace_id=world.workspace.pk,
        key_id=world.key.pk,
        provider="openai",
        credential_id=world.credential.pk,
        credential_kind="byok",
        model_requested=f"openai/{model}",
        model_served=model,
        status=status,
        input_tokens=120,
        output_tokens=30,
        cost_nanos=charge,
        charge_nanos=charge or 0,
        priced=charge is not None,
        latency_ms=87,
        started_at_ms=now,
        finished_at_ms=now + 87,
    )


@pytest.mark.django_db
def test_overview_shows_balance_usage_and_recent_requests_of_this_workspace_only(world_a, world_b):
    ledger_grant_post(workspace=world_a.workspace, amount_usd="25", idempotency_key="grant-a")
    mine = [
        event(world_a, model="gpt-4o-mini", charge=1_250_000_000),
        event(world_a, model="gpt-4o-mini", charge=250_000_000, status=429),
        event(world_a, model="house-model", charge=None),
    ]
    theirs = event(world_b, model="gpt-4o", charge=9_000_000_000)
    usage_ingest_batch(events=[*mine, theirs])

    page = client_for(world_a.owner).get(f"/w/{world_a.workspace.slug}/").content.decode()

    assert "$23.50" in page  # 25 granted - 1.25 - 0.25 debited by the ingest batch
    assert "3 requests" in page and "$1.50 charged" in page
    assert "1 unpriced" in page
    for e in mine:
        assert e.request_id in page
    assert "unpriced" in page and "$1.250000" in page
    assert theirs.request_id not in page and "gpt-4o<" not in page
