"""Poison, end to end: one workspace sends everything that used to jam the meter (NUL in `user` and in
metadata tags, absurd `max_tokens` and `n`, token counts above 2^63 from its own OpenAI-compatible server)
through the real proxy, Redis stream and a real Celery worker, while another workspace's normal requests
are ingested within seconds. The poisoned requests are stored cleaned (nothing dead-lettered, nothing
held in `pending`), and the poisoning workspace's balance is still enforced afterwards."""

from __future__ import annotations

from decimal import Decimal

import httpx
import orjson
import pytest
import redis

from billing.models import Plan, UsageDeadLetter, UsageEvent
from contracts import balance
from contracts.events import MAX_TOKENS
from tenants.services import workspace_billing_update
from tests.proxy.test_pipeline import celery_worker
from tests.redis_server import RedisServer
from tests.servers import wait_until

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

MODEL = "openai/gpt-4o-mini"
HI = [{"role": "user", "content": "hi"}]


def post(http: httpx.Client, url: str, key: str, body: dict, **headers: str) -> httpx.Response:
    response = http.post(f"{url}/v1/chat/completions", headers={"authorization": f"Bearer {key}", **headers}, json=body)
    response.read()
    return response


def test_one_workspaces_poison_neither_jams_ingestion_nor_disables_its_balance(make_tenant, start_proxy, tmp_path):
    plan = Plan.objects.create(code="metered-poison", name="Metered", byok_fee_rate=Decimal(1))
    poisoner = make_tenant(credit_usd="0.001")
    neighbour = make_tenant(credit_usd="10")
    for tenant in (poisoner, neighbour):
        tenant.workspace.plan = plan
        workspace_billing_update(workspace=tenant.workspace, fields=["plan"])
    server = RedisServer(tmp_path / "redis").start()
    try:
        proxy = start_proxy(redis_url=server.url)
        r = redis.Redis.from_url(server.url)
        with celery_worker(server.url, tmp_path / "worker.log", "poison"), httpx.Client(timeout=20) as http:
            poison = [
                post(
                    http,
                    proxy.url,
                    poisoner.plaintext,
                    {"model": MODEL, "messages": HI, "max_tokens": 20, "user": "x\u0000y"},
                ),
                post(
                    http,
                    proxy.url,
                    poisoner.plaintext,
                    {"model": MODEL, "messages": HI, "max_tokens": 20},
                    **{"x-turnpike-metadata": orjson.dumps({"team": "a\u0000b", "k\u0000": 1}).decode()},
                ),
                post(
                    http, proxy.url, poisoner.plaintext, {"model": f"{MODEL}@usage_tokens={2**63 + 5}", "messages": HI}
                ),
                post(http, proxy.url, poisoner.plaintext, {"model": MODEL, "messages": HI, "max_tokens": 10**17}),
                post(http, proxy.url, poisoner.plaintext, {"model": MODEL, "messages": HI, "n": 10**6}),
            ]
            assert [p.status_code for p in poison] == [200, 200, 200, 400, 400]
            normal = [
                post(http, proxy.url, neighbour.plaintext, {"model": MODEL, "messages": HI, "max_tokens": 30})
                for _ in range(10)
            ]
            assert all(n.status_code == 200 for n in normal)
            normal_ids = {n.headers["x-request-id"] for n in normal}

            def stored(ids: set[str]) -> bool:
                return set(UsageEvent.objects.filter(request_id__in=ids).values_list("request_id", flat=True)) == ids

            wait_until(lambda: stored(normal_ids), timeout=15, what="the neighbour's events in Postgres")
            poison_ids = {p.headers["x-request-id"] for p in poison}
            wait_until(lambda: stored(poison_ids), timeout=15, what="the poisoned events, cleaned, in Postgres")

            by_id = {e.request_id: e for e in UsageEvent.objects.filter(request_id__in=poison_ids)}
            nul_user, nul_tags, huge, cap, n = (by_id[p.headers["x-request-id"]] for p in poison)
            assert nul_user.end_user == "xy" and nul_user.clamped
            assert nul_tags.metadata == {"team": "ab", "k": 1} and nul_tags.clamped
            assert huge.input_tokens == huge.output_tokens == MAX_TOKENS and huge.clamped and not huge.priced
            assert (cap.status, n.status) == (400, 400) and cap.charge_nanos == n.charge_nanos == 0
            assert not UsageDeadLetter.objects.exists()
            for tenant in (poisoner, neighbour):
                key = balance.bal_key(tenant.workspace.pk)
                wait_until(lambda key=key: int(r.hget(key, "pending") or 0) == 0, timeout=10, what="pending 0")
                assert int(r.hget(key, "inflight") or 0) == 0

            # the poisoner's balance still holds: $0.001 covers a short answer, not a 4,096-token estimate
            refused = post(http, proxy.url, poisoner.plaintext, {"model": MODEL, "messages": HI})
            assert refused.status_code == 402 and refused.json()["error"]["code"] == "insufficient_balance"
            served = post(http, proxy.url, poisoner.plaintext, {"model": MODEL, "messages": HI, "max_tokens": 20})
            assert served.status_code == 200
    finally:
        server.stop()
