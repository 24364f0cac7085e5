"""Opt-in bodies: a workspace that chose to store bodies gets each request's request and response body
stored beside its usage event (streams as sent, cut at 32 KiB, never a header); a request with
`x-turnpike-log-bodies: off` and a key that opted out store nothing; a workspace that never opted in
stores nothing."""

from __future__ import annotations

import httpx
import orjson
import pytest

from billing.ingest import run_ingest
from billing.models import RequestBody, UsageEvent
from contracts.bodies import BODY_MAX_BYTES
from tenants.models import GatewayKey, Workspace
from tenants.services import gateway_key_create

pytestmark = pytest.mark.django_db(transaction=True)

MODEL = "openai/gpt-4o-mini"


def ask(proxy, key: str, text: str, **extra) -> httpx.Response:
    headers = {"authorization": f"Bearer {key}", **extra.pop("headers", {})}
    body = {"model": MODEL, "messages": [{"role": "user", "content": text}], **extra}
    with httpx.Client(timeout=20) as http:
        return http.post(f"{proxy.url}/v1/chat/completions", headers=headers, json=body)


def test_bodies_are_stored_only_when_opted_in_and_not_opted_out(make_tenant, start_proxy):
    quiet, logged = make_tenant(), make_tenant()
    Workspace.objects.filter(pk=logged.workspace.pk).update(log_bodies=True)
    silent_key, silent_plaintext = gateway_key_create(
        workspace=logged.workspace, name="silent", acting_user=logged.owner
    )
    GatewayKey.objects.filter(pk=silent_key.pk).update(log_bodies=False)
    proxy = start_proxy()

    plain = ask(proxy, logged.plaintext, "what is a turnpike?")
    streamed = ask(proxy, logged.plaintext, "stream it", stream=True)
    opted_out = ask(proxy, logged.plaintext, "do not keep this", headers={"x-turnpike-log-bodies": "off"})
    by_key = ask(proxy, silent_plaintext, "nor this")
    elsewhere = ask(proxy, quiet.plaintext, "not opted in")
    for response in (plain, streamed, opted_out, by_key, elsewhere):
        assert response.status_code == 200, response.text
    proxy.drain()
    run_ingest()

    ids = {name: r.headers["x-request-id"] for name, r in locals().items() if isinstance(r, httpx.Response)}
    assert UsageEvent.objects.filter(request_id__in=ids.values()).count() == 5  # every request is counted
    stored = {b.request_id: b for b in RequestBody.objects.all()}
    assert set(stored) == {ids["plain"], ids["streamed"]}

    first = stored[ids["plain"]]
    assert first.workspace_id == logged.workspace.pk
    assert orjson.loads(bytes(first.request))["messages"][0]["content"] == "what is a turnpike?"
    assert bytes(first.response) == plain.content  # what the client received, cost fields included
    assert b"authorization" not in bytes(first.request).lower() and logged.plaintext.encode() not in bytes(
        first.request
    )
    assert not first.request_truncated and not first.response_truncated

    stream = stored[ids["streamed"]]
    assert bytes(stream.response) == streamed.content and b"data: [DONE]" in bytes(stream.response)


def test_a_large_body_is_cut_at_the_documented_size(make_tenant, start_proxy):
    tenant = make_tenant()
    Workspace.objects.filter(pk=tenant.workspace.pk).update(log_bodies=True)
    proxy = start_proxy()
    long_text = "x" * (BODY_MAX_BYTES + 5000)
    response = ask(proxy, tenant.plaintext, long_text)
    assert response.status_code == 200
    proxy.drain()
    run_ingest()
    body = RequestBody.objects.get(request_id=response.headers["x-request-id"])
    assert len(bytes(body.request)) == BODY_MAX_BYTES and body.request_truncated
    assert bytes(body.response) == response.content and not body.response_truncated
