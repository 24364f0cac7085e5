"""Auto-recharge as it runs in production: usage is ingested, the ingester notices the balance fell below the
threshold and queues `billing.auto_recharge`, and a real Celery worker (its own process) charges the saved
card off-session at the fake Stripe and credits the ledger, once."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from django.conf import settings

from billing.ingest import run_ingest
from billing.models import LedgerEntry, TopUp
from billing.selectors import workspace_balance
from billing.services.accounts import auto_recharge_update
from tests.billing.test_ingest import emit, make_event
from tests.billing.test_topups import start_and_pay, wait_paid
from tests.conftest import STRIPE_KEY, STRIPE_WEBHOOK_SECRET
from tests.dashboard.conftest import SECRET_A, build_world
from tests.proxy.conftest import running_database_url
from tests.servers import celery_worker_args, celery_worker_env, process, wait_until

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]
USD = 1_000_000_000


def test_the_ingester_queues_a_recharge_and_a_real_worker_charges_once(
    stripe_fake: Any, fake_stripe_url: str, fake_provider_url: str, r: Any, tmp_path: Path
) -> None:
    world = build_world("Recharge", SECRET_A, fake_provider_url)
    ws = world.workspace
    wait_paid(start_and_pay(world, stripe_fake, amount="10"))
    auto_recharge_update(workspace=ws, acting_user=world.owner, enabled=True, threshold_usd="5", amount_usd="20")

    log_path = tmp_path / "worker.log"
    env = celery_worker_env(
        database_url=running_database_url(),
        redis_url=settings.REDIS_URL,
        name="recharge",
        STRIPE_SECRET_KEY=STRIPE_KEY,
        STRIPE_WEBHOOK_SECRET=STRIPE_WEBHOOK_SECRET,
        STRIPE_API_BASE=fake_stripe_url,
    )
    with process(celery_worker_args(log_path=log_path, name="recharge", beat=False), env=env, log_path=log_path):
        for _ in range(3):  # $7 of usage: the balance falls from $10 to $3, below the $5 threshold
            emit(r, make_event(ws, world.key, charge=7 * USD // 3 + 1))
        run_ingest()

        def recharged() -> TopUp | None:
            return TopUp.objects.filter(workspace=ws, source="auto_recharge", status="paid").first()

        topup = wait_until(recharged, timeout=30, what="the worker's auto-recharge")
        assert topup.amount_nanos == 20 * USD and topup.stripe_payment_intent_id
        run_ingest()  # nothing new: no second recharge
        topups = list(LedgerEntry.objects.filter(workspace=ws, kind="topup").values_list("amount_nanos", flat=True))
        assert sorted(topups) == [10 * USD, 20 * USD]
        assert workspace_balance(workspace_id=ws.pk)[0] == 30 * USD - 3 * (7 * USD // 3 + 1)
    assert "billing.auto_recharge" in log_path.read_text()
