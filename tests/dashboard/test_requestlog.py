"""The request log as a member sees it: every request of the workspace (and only of it), newest first in keyset
pages, every filter, hostile input answered with a message (never a 500), one request's detail with cost per
token type and the stored bodies for roles allowed to read them, the CSV of everything a filter matches, and
the settings for stored bodies. Events are written by the real ingest code."""

from __future__ import annotations

import csv
import io
import re
import time
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from urllib.parse import parse_qsl

import pytest
import redis
from django.conf import settings
from django.test import override_settings

from billing.ingest import usage_ingest_batch
from billing.models import RequestBody, UsageEvent
from billing.requestlog import UsageFilter, encode_cursor
from config.errors import PermissionDenied
from contracts.cachekeys import TOMBSTONE, key_doc_key, workspace_doc_key
from contracts.events import UsageEvent as Event
from tenants.models import AuditLog, Workspace
from tenants.roles import Role
from tenants.services import gateway_key_create, gateway_key_logging_update, workspace_logging_update
from tests.dashboard.conftest import client_for

pytestmark = pytest.mark.django_db
ROW_ID = re.compile(r'<td class="mono"><a href="[^"]+">(req_[0-9a-f]+)</a>')
NOW_MS = int(time.time() * 1000)


def ev(world, *, at_ms: int | None = None, key=None, **fields) -> Event:
    at = NOW_MS - 60_000 if at_ms is None else at_ms
    values = {
        "provider": "openai",
        "credential_kind": "byok",
        "model_requested": "openai/gpt-4o-mini",
        "model_served": "gpt-4o-mini",
        "status": 200,
        "input_tokens": 1000,
        "output_tokens": 200,
        "cost_nanos": 270_000,
        "charge_nanos": 270_000,
        "latency_ms": 420,
        **fields,
    }
    return Event(
        request_id=f"req_{uuid.uuid4().hex}",
        workspace_id=world.workspace.pk,
        key_id=(key or world.key).pk,
        credential_id=world.credential.pk,
        started_at_ms=at,
        finished_at_ms=at + values["latency_ms"],
        **values,
    )


def ingest(*events: Event) -> list[str]:
    usage_ingest_batch(events=list(events))
    return [e.request_id for e in events]


def page_ids(response) -> list[str]:
    return ROW_ID.findall(response.content.decode())


def shown(client, slug: str, **params) -> set[str]:
    response = client.get(f"/w/{slug}/requests/", params)
    assert response.status_code == 200, response.content.decode()[:2000]
    return set(page_ids(response))


# --- the list and its pages ---------------------------------------------------------------------------------


def test_keyset_pages_walk_every_row_once_even_when_many_share_a_timestamp(world_a, world_b):
    # 130 requests over 7 distinct instants (many rows share a started_at) and one of B's in between
    events = [ev(world_a, at_ms=NOW_MS - 3_600_000 + (i % 7) * 1000) for i in range(130)]
    ingest(*events, ev(world_b, at_ms=NOW_MS - 3_600_000))
    expected = list(
        UsageEvent.objects.filter(workspace=world_a.workspace)
        .order_by("-started_at", "-id")
        .values_list("request_id", flat=True)
    )
    assert len(expected) == 130
    client, slug = client_for(world_a.owner), world_a.workspace.slug

    seen: list[str] = []
    url = f"/w/{slug}/requests/"
    pages = []
    while url:
        html = client.get(url).content.decode()
        ids = ROW_ID.findall(html)
        pages.append((url, ids))
        assert len(ids) <= 50
        seen += ids
        older = re.search(r'href="(\?[^"]*after=[^"]+)" rel="next"', html)
        url = f"/w/{slug}/requests/" + older.group(1).replace("&amp;", "&") if older else ""
    assert seen == expected  # newest first, no duplicates, no gaps
    assert [len(ids) for _, ids in pages] == [50, 50, 30]
    assert "OFFSET" not in str(UsageFilter.parse({})[0].queryset(world_a.workspace).query)

    # back from the last page with "Newer": the middle page again, exactly
    html = client.get(pages[-1][0]).content.decode()
    newer = re.search(r'href="(\?[^"]*before=[^"]+)" rel="prev"', html).group(1).replace("&amp;", "&")
    assert ROW_ID.findall(client.get(f"/w/{slug}/requests/{newer}").content.decode()) == pages[1][1]


def test_the_list_shows_the_columns_a_member_needs(world_a):
    ingest(
        ev(
            world_a,
            status=429,
            error_code="rate_limited",
            stream=True,
            estimated=True,
            input_tokens=77,
            output_tokens=5,
            cost_nanos=1_500,
            charge_nanos=3_000,
            latency_ms=1234,
        )
    )
    html = client_for(world_a.member.user).get(f"/w/{world_a.workspace.slug}/requests/").content.decode()
    for text in (
        "Alpha key",
        "openai/gpt-4o-mini",
        "429",
        "rate_limited",
        "77 / 5",
        "$0.0000015",
        "$0.000003",
        "1234 ms",
        "estimated",
        "stream",
    ):
        assert text in html, text


def test_another_workspaces_requests_never_show(world_a, world_b):
    mine = ingest(ev(world_a))
    theirs = ingest(ev(world_b))
    ids = shown(client_for(world_a.owner), world_a.workspace.slug)
    assert ids == set(mine)
    assert theirs[0] not in ids


# --- filters ------------------------------------------------------------------------------------------------


def test_every_filter_narrows_to_the_matching_requests(world_a):
    other_key, _ = gateway_key_create(workspace=world_a.workspace, name="Batch jobs", acting_user=world_a.owner)
    base = ev(world_a)
    by_key = ev(world_a, key=other_key)
    anthropic = ev(world_a, provider="anthropic", model_requested="anthropic/claude-x", model_served="claude-x")
    failed = ev(world_a, status=503, error_code="upstream_unavailable")
    limited = ev(world_a, status=429, error_code="rate_limited")
    user = ev(world_a, user="customer-42")
    tagged = ev(world_a, metadata={"team": "search", "env": "prod"})
    pricey = ev(world_a, cost_nanos=2_500_000_000, charge_nanos=2_500_000_000)
    slow = ev(world_a, latency_ms=9000)
    streamed = ev(world_a, stream=True)
    estimated = ev(world_a, estimated=True)
    old = ev(world_a, at_ms=NOW_MS - 3 * 86_400_000)
    ingest(base, by_key, anthropic, failed, limited, user, tagged, pricey, slow, streamed, estimated, old)
    client, slug = client_for(world_a.owner), world_a.workspace.slug

    def only(**params) -> set[str]:
        return shown(client, slug, **params)

    recent = {
        e.request_id
        for e in (base, by_key, anthropic, failed, limited, user, tagged, pricey, slow, streamed, estimated)
    }
    assert only() == recent  # default: the last 24 hours
    assert only(range="7d") == recent | {old.request_id}
    day = datetime.fromtimestamp(old.started_at_ms / 1000, tz=UTC).strftime("%Y-%m-%d")
    assert only(range="custom", **{"from": day, "to": day}) == {old.request_id}
    assert only(key=str(other_key.public_id)) == {by_key.request_id}
    assert only(provider="anthropic") == {anthropic.request_id}
    assert only(model="claude-x") == {anthropic.request_id}
    assert only(model="anthropic/claude-x") == {anthropic.request_id}
    assert only(status="5xx") == {failed.request_id}
    assert only(status="4xx") == {limited.request_id}
    assert only(status="429") == {limited.request_id}
    assert only(error="upstream_unavailable") == {failed.request_id}
    assert only(user="customer-42") == {user.request_id}
    assert only(tag="team=search") == {tagged.request_id}
    assert only(tag="team=other") == set()
    assert only(min_cost="2.5") == {pricey.request_id}
    assert only(min_cost="2.500000001") == set()
    assert only(min_latency="9000") == {slow.request_id}
    assert only(stream="yes") == {streamed.request_id}
    assert estimated.request_id not in only(estimated="no") and only(estimated="yes") == {estimated.request_id}
    assert only(provider="openai", status="2xx", stream="no") == recent - {
        anthropic.request_id,
        failed.request_id,
        limited.request_id,
        streamed.request_id,
    }


def test_a_request_id_jumps_straight_to_its_page(world_a, world_b):
    (mine,) = ingest(ev(world_a))
    (theirs,) = ingest(ev(world_b))
    client, slug = client_for(world_a.owner), world_a.workspace.slug
    response = client.get(f"/w/{slug}/requests/", {"request": mine})
    assert response.status_code == 302 and response["Location"] == f"/w/{slug}/requests/{mine}/"
    response = client.get(f"/w/{slug}/requests/", {"request": theirs})
    assert response.status_code == 400 and f"No request {theirs} in this workspace" in response.content.decode()


def test_another_workspaces_key_as_a_filter_shows_nothing(world_a, world_b):
    ingest(ev(world_a), ev(world_b))
    assert shown(client_for(world_a.owner), world_a.workspace.slug, key=str(world_b.key.public_id)) == set()


HOSTILE = [
    ({"model": "gpt\x00-4o"}, "Model: a NUL byte is not allowed"),
    ({"user": "x" * 10_000}, "End user: at most 256 characters"),
    ({"tag": "team\x00=x"}, "Tag: a NUL byte"),
    ({"tag": "no-equals-sign"}, "Tag: write it as name=value"),
    ({"min_cost": "abc"}, "Minimum cost: a USD amount"),
    ({"min_cost": "1e400"}, "Minimum cost: a USD amount"),
    ({"min_cost": "-1"}, "Minimum cost: a USD amount"),
    ({"min_cost": "NaN"}, "Minimum cost: a USD amount"),
    ({"min_cost": "0.0000000001"}, "Minimum cost: a USD amount"),
    ({"min_latency": "abc"}, "Minimum latency: a whole number"),
    ({"min_latency": "9" * 40}, "Minimum latency"),
    ({"status": "999999999999"}, "Status"),
    ({"status": "abc"}, "Status: use 2xx"),
    ({"key": "not-a-uuid"}, "Key: not a key of this workspace"),
    ({"key": "\x00"}, "Key: a NUL byte"),
    ({"stream": "maybe"}, "Streamed: yes or no"),
    ({"range": "\x00" * 50}, "Unknown range"),
    ({"range": "custom", "from": "2026-13-45", "to": "x" * 10_000}, "is not a date"),
    ({"after": "garbage!!"}, "That page link is not valid"),
    ({"after": "MTIz"}, "That page link is not valid"),  # base64 of "123": no id
    ({"before": "x" * 10_000}, "That page link is not valid"),
    ({"request": "req_\x00"}, "Request id: a NUL byte"),
]


@pytest.mark.parametrize(("params", "message"), HOSTILE, ids=[str(i) for i in range(len(HOSTILE))])
def test_hostile_input_is_a_message_and_the_filter_is_ignored(world_a, params, message):
    (rid,) = ingest(ev(world_a))
    client, slug = client_for(world_a.owner), world_a.workspace.slug
    response = client.get(f"/w/{slug}/requests/", params)
    html = response.content.decode()
    assert response.status_code == 400
    assert message in html.replace("&quot;", '"')
    assert rid in ROW_ID.findall(html)  # the bad filter is ignored; the rest of the page works
    csv_response = client.get(
        f"/w/{slug}/requests.csv", {k: v for k, v in params.items() if k not in ("after", "before")}
    )
    assert csv_response.status_code in (200, 400)


def test_a_cursor_from_the_future_or_past_only_pages(world_a):
    ingest(ev(world_a))
    client, slug = client_for(world_a.owner), world_a.workspace.slug
    ancient = encode_cursor(datetime(1970, 1, 1, tzinfo=UTC), 1)
    assert client.get(f"/w/{slug}/requests/", {"after": ancient}).status_code == 200
    assert page_ids(client.get(f"/w/{slug}/requests/", {"after": ancient})) == []


# --- detail ---------------------------------------------------------------------------------------------------


def test_detail_shows_every_field_and_the_cost_per_token_type(world_a):
    (rid,) = ingest(
        ev(
            world_a,
            input_tokens=1000,
            cached_input_tokens=400,
            output_tokens=200,
            reasoning_tokens=50,
            cost_nanos=1_234_567,
            charge_nanos=2_469_134,
            ttfb_ms=150,
            latency_ms=900,
            stream=True,
            user="customer-7",
            metadata={"team": "search", "n": 3},
            status=200,
        )
    )
    html = client_for(world_a.member.user).get(f"/w/{world_a.workspace.slug}/requests/{rid}/").content.decode()
    for text in (
        rid,
        "Alpha key",
        "Alpha OpenAI",
        "byok",
        "openai/gpt-4o-mini",
        "gpt-4o-mini",
        "customer-7",
        "150 ms",
        "900 ms",
        "team",
        "search",
        "Input",
        "Cached input",
        "Output",
        "Reasoning",
        "$0.001234567",
        "$0.002469134",
        "One attempt",
        "No bodies stored",
    ):
        assert text in html, text
    lines = re.findall(r"<tr><td>([A-Z][a-z ]+)</td><td class=\"num\">(\d*)</td>", html)
    assert ("Input", "1000") in lines and ("Cached input", "400") in lines and ("Reasoning", "50") in lines
    amounts = re.findall(r'<td class="num">\$([0-9.]+)</td><td class="num">\$([0-9.]+)</td></tr>', html)
    assert len(amounts) == 4  # input, cached input, output, reasoning
    assert sum(Decimal(c) for c, _ in amounts) == Decimal("0.001234567")  # the split adds up exactly
    assert sum(Decimal(c) for _, c in amounts) == Decimal("0.002469134")


def test_detail_of_another_workspaces_request_is_not_found(world_a, world_b):
    (theirs,) = ingest(ev(world_b))
    client = client_for(world_a.owner)
    assert client.get(f"/w/{world_a.workspace.slug}/requests/{theirs}/").status_code == 404
    assert client.get(f"/w/{world_b.workspace.slug}/requests/{theirs}/").status_code == 404
    assert client.get(f"/w/{world_a.workspace.slug}/requests/req_%00/").status_code == 404


@pytest.mark.parametrize(
    ("role", "sees"),
    [(Role.OWNER, True), (Role.ADMIN, True), (Role.DEVELOPER, True), (Role.FINANCE, False), (Role.VIEWER, False)],
)
def test_bodies_are_shown_only_to_roles_that_may_read_them(world_a, member_client, role, sees):
    (rid,) = ingest(ev(world_a))
    RequestBody.objects.create(
        request_id=rid,
        workspace=world_a.workspace,
        started_at=datetime.now(tz=UTC),
        request=b'{"messages":[{"role":"user","content":"the secret prompt"}]}',
        response=b"not json \xff\xfe the answer" + b"x" * 100,
        response_truncated=True,
    )
    client, _ = member_client(role)
    html = client.get(f"/w/{world_a.workspace.slug}/requests/{rid}/").content.decode()
    assert ("the secret prompt" in html) is sees
    assert ("the answer" in html) is sees
    if sees:
        assert "&quot;messages&quot;: [" in html  # pretty-printed JSON
        assert "\ufffd" in html  # invalid UTF-8 replaced, not a 500
        assert "Truncated at 32 KB" in html
    else:
        assert "your role cannot see them" in html


# --- CSV ------------------------------------------------------------------------------------------------------


def read_csv(response) -> list[dict[str, str]]:
    body = b"".join(response.streaming_content).decode()
    return list(csv.DictReader(io.StringIO(body)))


def test_csv_streams_exactly_the_rows_the_filter_shows_and_is_formula_safe(world_a, world_b):
    rows = [ev(world_a, at_ms=NOW_MS - 1000 * i, user='=HYPERLINK("http://evil")') for i in range(120)]
    rows.append(ev(world_a, status=500, error_code="upstream_error", cost_nanos=None, charge_nanos=0, priced=False))
    ingest(*rows, ev(world_b))
    client, slug = client_for(world_a.owner), world_a.workspace.slug
    response = client.get(f"/w/{slug}/requests.csv", {"status": "2xx"})
    assert response.status_code == 200 and response.streaming
    assert response["Content-Type"].startswith("text/csv")
    lines = read_csv(response)
    expected = list(
        UsageFilter.parse({"status": "2xx"})[0]
        .queryset(world_a.workspace)
        .order_by("-started_at", "-id")
        .values_list("request_id", flat=True)
    )
    assert [r["request_id"] for r in lines] == expected and len(expected) == 120
    first = lines[0]
    assert first["end_user"].startswith("'=")  # a spreadsheet shows it as text
    assert first["cost_usd"] == "0.000270000" and first["charge_usd"] == "0.000270000"
    assert first["key_name"] == "Alpha key" and first["key_id"] == str(world_a.key.public_id)
    assert first["input_tokens"] == "1000" and first["stream"] == "no"
    unpriced = read_csv(client.get(f"/w/{slug}/requests.csv", {"status": "500"}))
    assert len(unpriced) == 1 and unpriced[0]["cost_usd"] == "" and unpriced[0]["priced"] == "no"


def test_csv_slices_join_without_gaps_when_many_rows_share_a_timestamp(world_a):
    ingest(*(ev(world_a, at_ms=NOW_MS - 1000 * (i % 4)) for i in range(45)))
    filters, _ = UsageFilter.parse({})
    whole = b"".join(filters.csv_chunks(world_a.workspace))
    counts: dict[str, int] = {}
    sliced = b"".join(filters.csv_chunks(world_a.workspace, slice_rows=7, chunk_bytes=100, counts=counts))
    assert sliced == whole and counts["rows"] == 45
    ids = [row["request_id"] for row in csv.DictReader(io.StringIO(whole.decode()))]
    assert len(ids) == len(set(ids)) == 45


def test_csv_of_too_many_rows_sends_the_user_to_the_background_export(world_a):
    ingest(*(ev(world_a) for _ in range(3)))
    client, slug = client_for(world_a.owner), world_a.workspace.slug
    with override_settings(TURNPIKE_EXPORT_STREAM_MAX_ROWS=2):
        response = client.get(f"/w/{slug}/requests.csv", {"range": "7d"})
        assert response.status_code == 302 and "range=7d" in response["Location"]
        html = client.get(response["Location"]).content.decode()
    assert "more than 2 requests" in html and "Export in the background" in html
    with override_settings(TURNPIKE_EXPORT_STREAM_MAX_ROWS=3):
        assert len(read_csv(client.get(f"/w/{slug}/requests.csv"))) == 3


# --- settings for stored bodies -------------------------------------------------------------------------------


def test_owner_turns_bodies_on_with_retention_and_key_override_audited_and_invalidated(
    world_a, django_capture_on_commit_callbacks
):
    client, slug = client_for(world_a.owner), world_a.workspace.slug
    r = redis.Redis.from_url(settings.REDIS_URL)
    r.delete(workspace_doc_key(world_a.workspace.pk), key_doc_key(world_a.key.key_hash))
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(
            f"/w/{slug}/settings/request-log/",
            {"log_bodies": "on", "body_retention_days": "14", f"key_{world_a.key.public_id}": "off"},
        )
    assert response.status_code == 302
    ws = Workspace.objects.get(pk=world_a.workspace.pk)
    world_a.key.refresh_from_db()
    assert ws.log_bodies is True and ws.body_retention_days == 14 and world_a.key.log_bodies is False
    actions = set(AuditLog.objects.filter(workspace=ws).values_list("action", flat=True))
    assert {"workspace.logging_updated", "key.logging_updated"} <= actions
    assert r.get(workspace_doc_key(ws.pk)) == TOMBSTONE  # the proxy re-reads the workspace
    assert r.get(key_doc_key(world_a.key.key_hash)) == TOMBSTONE
    html = client.get(f"/w/{slug}/settings/").content.decode()
    assert "x-turnpike-log-bodies: off" in html and 'value="14"' in html and "32 KiB" in html
    audit_page = client.get(f"/w/{slug}/audit/").content.decode()
    assert "workspace.logging_updated" in audit_page and "key.logging_updated" in audit_page


@pytest.mark.parametrize("days", ["0", "366", "abc", "-1", "9" * 30])
def test_retention_out_of_range_is_refused_with_a_message(world_a, days):
    client, slug = client_for(world_a.owner), world_a.workspace.slug
    response = client.post(
        f"/w/{slug}/settings/request-log/", {"log_bodies": "on", "body_retention_days": days}, follow=True
    )
    assert "1 to 365" in response.content.decode()
    assert Workspace.objects.get(pk=world_a.workspace.pk).log_bodies is False


def test_only_owners_and_admins_change_logging(world_a, member_client):
    for role in (Role.DEVELOPER, Role.FINANCE, Role.VIEWER):
        client, user = member_client(role)
        response = client.post(f"/w/{world_a.workspace.slug}/settings/request-log/", {"log_bodies": "on"})
        assert response.status_code == 403
        with pytest.raises(PermissionDenied):
            workspace_logging_update(
                workspace=world_a.workspace, log_bodies=True, body_retention_days=30, acting_user=user
            )
        with pytest.raises(PermissionDenied):
            gateway_key_logging_update(key=world_a.key, log_bodies=True, acting_user=user)
        html = client.get(f"/w/{world_a.workspace.slug}/settings/").content.decode()
        assert "Bodies are <strong>not stored</strong>" in html and "Save request log settings" not in html
    assert Workspace.objects.get(pk=world_a.workspace.pk).log_bodies is False
    client, _ = member_client(Role.ADMIN)
    assert (
        client.post(
            f"/w/{world_a.workspace.slug}/settings/request-log/", {"log_bodies": "on", "body_retention_days": "30"}
        ).status_code
        == 302
    )
    assert Workspace.objects.get(pk=world_a.workspace.pk).log_bodies is True


def test_a_filter_link_carries_every_filter(world_a):
    filters, problems = UsageFilter.parse(
        {"range": "7d", "model": "gpt-4o", "tag": "team=a", "min_cost": "0.5", "min_latency": "10", "stream": "no"}
    )
    assert problems == []
    again, _ = UsageFilter.parse(dict(parse_qsl(filters.query())))
    assert again.model == "gpt-4o" and again.tag == ("team", "a") and again.min_cost_nanos == 500_000_000
    assert again.stream is False and again.min_latency == 10 and again.range.key == "7d"


def test_the_log_links_to_analytics_with_the_same_range_and_filters(world_a):
    ingest(ev(world_a))
    client = client_for(world_a.owner)
    page = client.get(
        f"/w/{world_a.workspace.slug}/requests/",
        {"range": "7d", "model": "gpt-4o-mini", "status": "429", "user": "alice", "key": str(world_a.key.public_id)},
    ).content.decode()
    href = re.search(r'id="chart-these" href="([^"]+)"', page)
    assert href, "no link to analytics"
    path, _, query = href.group(1).replace("&amp;", "&").partition("?")
    assert path == f"/w/{world_a.workspace.slug}/analytics/"
    # what analytics understands carries over (an exact status as its class); the rest it cannot filter on
    assert dict(parse_qsl(query)) == {
        "range": "7d",
        "model": "gpt-4o-mini",
        "status": "4xx",
        "key": str(world_a.key.public_id),
    }
    assert client.get(href.group(1).replace("&amp;", "&")).status_code == 200
