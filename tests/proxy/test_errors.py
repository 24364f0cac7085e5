"""Every error the proxy returns, as the official `openai` SDK sees it: the status code picks the SDK's
exception class and the OpenAI envelope carries message, type, param and code. Never a 500."""

from __future__ import annotations

import httpx
import openai
import pytest

from tenants.services import provider_credential_create
from tests.servers import free_port

pytestmark = pytest.mark.django_db(transaction=True)

HI = [{"role": "user", "content": "hi"}]


def envelope(response: httpx.Response) -> dict:
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) >= {"message", "type", "param", "code"}
    assert body["error"]["message"]
    return body["error"]


@pytest.mark.parametrize(
    ("content", "param"),
    [
        (b"{not json", None),
        (b"[]", None),
        (b'{"messages": [{"role": "user", "content": "hi"}]}', "model"),
        (b'{"model": "openai/gpt-4o-mini"}', "messages"),
        (b'{"model": "openai/gpt-4o-mini", "messages": "hi"}', "messages"),
        (b'{"model": 7, "messages": [{"role": "user", "content": "hi"}]}', "model"),
        (b'{"model": "openai/gpt-4o-mini", "messages": [{"role": "user", "content": "x"}], "stream": "yes"}', "stream"),
        (b'{"model": "openai/gpt-4o-mini", "messages": [{"role": "user", "content": "x"}], "n": 0}', "n"),
        (b'{"model": "openai/gpt-4o", "messages": [{"role": "user", "content": "x"}], "max_tokens": -1}', "max_tokens"),
    ],
)
def test_malformed_requests_get_400_with_the_offending_param(proxy, tenant, content, param):
    response = httpx.post(
        f"{proxy.base_url}/chat/completions",
        content=content,
        headers={"authorization": f"Bearer {tenant.plaintext}", "content-type": "application/json"},
    )
    assert response.status_code == 400
    error = envelope(response)
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert response.headers["x-request-id"].startswith("req_")


def test_sdk_raises_bad_request_for_wrong_types(client):
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="openai/gpt-4o-mini", messages="hello")  # type: ignore[arg-type]
    assert caught.value.param == "messages"


@pytest.mark.parametrize("key", ["tpk_live_not-a-real-key", "sk-an-openai-key"])
def test_unknown_key_is_401(proxy, tenant, key):
    with (
        openai.OpenAI(base_url=proxy.base_url, api_key=key, max_retries=0) as sdk,
        pytest.raises(openai.AuthenticationError) as caught,
    ):
        sdk.chat.completions.create(model="openai/gpt-4o-mini", messages=HI)
    assert caught.value.code == "invalid_api_key"


def test_missing_key_is_401(proxy):
    response = httpx.post(f"{proxy.base_url}/chat/completions", json={"model": "x", "messages": HI})
    assert response.status_code == 401
    assert "Authorization" in envelope(response)["message"]


def test_model_of_a_provider_without_credential_is_404(client):
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="anthropic/claude-sonnet-4-5", messages=HI)
    assert "credential" in caught.value.message.lower()


def test_unknown_path_is_404_in_the_openai_envelope(proxy, tenant):
    response = httpx.get(f"{proxy.base_url}/nothing-here", headers={"authorization": f"Bearer {tenant.plaintext}"})
    assert response.status_code == 404
    envelope(response)


def test_body_over_the_limit_is_413(start_proxy, tenant):
    proxy = start_proxy(max_body_bytes=2_000)
    with (
        openai.OpenAI(base_url=proxy.base_url, api_key=tenant.plaintext, max_retries=0) as sdk,
        pytest.raises(openai.APIStatusError) as caught,
    ):
        sdk.chat.completions.create(model="openai/gpt-4o-mini", messages=[{"role": "user", "content": "x" * 5_000}])
    assert caught.value.status_code == 413
    assert caught.value.code == "request_too_large"


def test_upstream_rate_limit_is_429_with_retry_after(client):
    with pytest.raises(openai.RateLimitError) as caught:
        client.chat.completions.create(model="openai/gpt-4o-mini@status=429;retry_after=7", messages=HI)
    assert caught.value.response.headers["retry-after"] == "7"


@pytest.mark.parametrize(
    ("upstream_status", "status", "code"),
    [
        (500, 502, "upstream_error"),
        (503, 503, None),
        (504, 504, None),
        (401, 502, "provider_auth_error"),
    ],
)
def test_upstream_failures_map_to_5xx(client, upstream_status, status, code):
    with pytest.raises(openai.InternalServerError) as caught:
        client.chat.completions.create(model=f"openai/gpt-4o-mini@status={upstream_status}", messages=HI)
    assert caught.value.status_code == status
    if code:
        assert caught.value.code == code


def test_upstream_400_is_passed_on_as_the_callers_400(client):
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="openai/gpt-4o-mini@status=400", messages=HI)
    assert "rejected the request" in caught.value.message


def test_upstream_that_does_not_answer_in_time_is_504(start_proxy, tenant):
    proxy = start_proxy(read_timeout=0.3)
    with (
        openai.OpenAI(base_url=proxy.base_url, api_key=tenant.plaintext, max_retries=0) as sdk,
        pytest.raises(openai.InternalServerError) as caught,
    ):
        sdk.chat.completions.create(model="openai/gpt-4o-mini@latency=3000", messages=HI)
    assert caught.value.status_code == 504


def test_unreachable_upstream_is_502(client, tenant):
    provider_credential_create(
        workspace=tenant.workspace,
        provider="groq",
        label="",
        secret="gsk-unreachable-key",
        base_url=f"http://127.0.0.1:{free_port()}/openai/v1",
        acting_user=tenant.owner,
        validate=False,
    )
    with pytest.raises(openai.InternalServerError) as caught:
        client.chat.completions.create(model="groq/llama-3.1-8b-instant", messages=HI)
    assert caught.value.status_code == 502
    assert caught.value.code == "upstream_unreachable"


def test_failed_requests_are_recorded_with_their_status_and_no_charge(client, proxy, r):
    from tests.proxy.test_chat import stream_events

    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(model="openai/gpt-4o-mini@status=429", messages=HI)
    proxy.drain()
    (event,) = stream_events(r)
    assert event.status == 429 and event.charge_nanos == 0 and event.error_code


def test_a_key_limited_to_some_models_gets_403_for_others(proxy, tenant):
    from tenants.services import gateway_key_create

    _, limited = gateway_key_create(
        workspace=tenant.workspace, name="mini only", allowed_models=["openai/gpt-4o-mini"], acting_user=tenant.owner
    )
    with openai.OpenAI(base_url=proxy.base_url, api_key=limited, max_retries=0) as sdk:
        assert sdk.chat.completions.create(model="openai/gpt-4o-mini", messages=HI).choices
        assert sdk.chat.completions.create(model="gpt-4o-mini", messages=HI).choices  # same model, bare name
        with pytest.raises(openai.PermissionDeniedError) as caught:
            sdk.chat.completions.create(model="openai/gpt-4o", messages=HI)
        assert caught.value.code == "model_not_allowed"
        assert [m.id for m in sdk.models.list()] == ["openai/gpt-4o-mini"]
