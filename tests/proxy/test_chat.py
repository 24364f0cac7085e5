"""POST /v1/chat/completions through the real proxy on a real socket, driven by the official `openai`
SDK the way a customer's app drives it: only the base URL and the key change."""

from __future__ import annotations

import json

import httpx
import openai
import pytest

from contracts.events import USAGE_STREAM, UsageEvent

pytestmark = pytest.mark.django_db(transaction=True)

MODEL = "openai/gpt-4o-mini"


def stream_events(r) -> list[UsageEvent]:
    return [UsageEvent.from_fields({k.decode(): v.decode() for k, v in f.items()}) for _, f in r.xrange(USAGE_STREAM)]


def test_non_streaming_completion_returns_the_providers_answer_and_records_usage(client, proxy, tenant, r):
    raw = client.chat.completions.with_raw_response.create(
        model=MODEL, messages=[{"role": "user", "content": "Say hello"}], user="end-user-7"
    )
    completion = raw.parse()

    assert completion.choices[0].message.role == "assistant"
    assert completion.choices[0].message.content
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage.prompt_tokens > 0 and completion.usage.completion_tokens > 0
    request_id = raw.headers["x-request-id"]
    assert request_id.startswith("req_")
    assert raw.headers["x-turnpike-cost-usd"] not in ("", "unpriced")

    proxy.drain()
    (event,) = stream_events(r)
    assert event.request_id == request_id
    assert event.workspace_id == tenant.workspace.pk and event.key_id == tenant.key.pk
    assert (event.provider, event.model_requested, event.status) == ("openai", MODEL, 200)
    assert event.input_tokens == completion.usage.prompt_tokens
    assert event.output_tokens == completion.usage.completion_tokens
    assert event.priced and not event.estimated and not event.stream
    assert event.cost_nanos and event.cost_nanos > 0
    assert event.user == "end-user-7"


def test_bare_model_name_resolves_through_the_catalog(client, proxy, r):
    completion = client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
    assert completion.choices[0].message.content
    proxy.drain()
    (event,) = stream_events(r)
    assert event.provider == "openai" and event.priced


def test_streaming_passes_chunks_through_and_hides_the_usage_chunk_the_client_did_not_ask_for(client, proxy, r):
    chunks = list(
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Tell me"}], stream=True)
    )

    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert len(text.split()) >= 5
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert all(c.usage is None for c in chunks)  # the client did not ask for usage
    assert all(c.choices for c in chunks)  # and so gets no choices-less usage chunk

    proxy.drain()
    (event,) = stream_events(r)
    assert event.stream and not event.estimated  # usage came from the provider (include_usage upstream)
    assert event.output_tokens > 0 and event.input_tokens > 0


def test_streaming_with_include_usage_delivers_the_usage_chunk(client, proxy, r):
    chunks = list(
        client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "Tell me"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    usage = chunks[-1].usage
    assert usage is not None and chunks[-1].choices == []
    proxy.drain()
    (event,) = stream_events(r)
    assert (event.input_tokens, event.output_tokens) == (usage.prompt_tokens, usage.completion_tokens)


def test_tool_calls_round_trip_streaming_and_not(client):
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Weather for a city",
                "parameters": {
                    "type": "object",
                    "properties": {"city": {"type": "string"}},
                    "required": ["city"],
                },
            },
        }
    ]
    messages = [{"role": "user", "content": "Weather in Paris?"}]

    completion = client.chat.completions.create(model=MODEL, messages=messages, tools=tools)
    (call,) = completion.choices[0].message.tool_calls
    assert completion.choices[0].finish_reason == "tool_calls"
    assert call.function.name == "get_weather"
    arguments = json.loads(call.function.arguments)
    assert isinstance(arguments["city"], str)

    streamed_name, streamed_args, call_id = "", "", None
    for chunk in client.chat.completions.create(model=MODEL, messages=messages, tools=tools, stream=True):
        for delta in (chunk.choices[0].delta.tool_calls or []) if chunk.choices else []:
            call_id = call_id or delta.id
            streamed_name += (delta.function.name or "") if delta.function else ""
            streamed_args += (delta.function.arguments or "") if delta.function else ""
    assert call_id and streamed_name == "get_weather"
    assert json.loads(streamed_args) == arguments

    followup = client.chat.completions.create(
        model=MODEL,
        messages=[
            *messages,
            completion.choices[0].message.model_dump(exclude_none=True),
            {"role": "tool", "tool_call_id": call.id, "content": '{"temp_c": 18}'},
        ],
        tools=tools,
    )
    assert followup.choices[0].message.content


def test_metadata_header_tags_land_on_the_event(client, proxy, r):
    client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "hi"}],
        extra_headers={"x-turnpike-metadata": json.dumps({"feature": "search", "tenant": "t-42"})},
    )
    proxy.drain()
    (event,) = stream_events(r)
    assert event.metadata == {"feature": "search", "tenant": "t-42"}


def test_x_api_key_header_is_accepted(proxy, tenant):
    response = httpx.post(
        f"{proxy.base_url}/chat/completions",
        headers={"x-api-key": tenant.plaintext},
        json={"model": MODEL, "messages": [{"role": "user", "content": "hi"}]},
    )
    assert response.status_code == 200, response.text
    assert response.json()["object"] == "chat.completion"


def test_unknown_model_of_a_known_provider_is_forwarded_and_marked_unpriced(client, proxy, r):
    raw = client.chat.completions.with_raw_response.create(
        model="openai/house-model-v9", messages=[{"role": "user", "content": "hi"}]
    )
    assert raw.parse().choices[0].message.content
    assert raw.headers.get("x-turnpike-cost-usd", "unpriced") == "unpriced"
    proxy.drain()
    (event,) = stream_events(r)
    assert not event.priced and event.cost_nanos is None and event.charge_nanos == 0


def test_models_lists_what_the_key_may_call(client):
    ids = {m.id for m in client.models.list()}
    assert "openai/gpt-4o-mini" in ids
    assert not any(i.startswith("anthropic/") for i in ids)  # no Anthropic credential in this workspace


def test_openai_compatible_models_are_discovered_and_addressed_by_slug(make_tenant, start_proxy):
    tenant = make_tenant(provider="openai_compatible", label="Local vLLM")
    proxy = start_proxy()
    with openai.OpenAI(base_url=proxy.base_url, api_key=tenant.plaintext, max_retries=0) as sdk:
        ids = [m.id for m in sdk.models.list()]
        slug = tenant.credential.slug
        assert ids and all(i.startswith(f"{slug}/") for i in ids)
        completion = sdk.chat.completions.create(model=ids[0], messages=[{"role": "user", "content": "hi"}])
    assert completion.choices[0].message.content


def test_health_and_readiness(proxy):
    assert httpx.get(f"{proxy.url}/healthz").json() == {"status": "ok"}
    ready = httpx.get(f"{proxy.url}/readyz")
    assert ready.status_code == 200 and ready.json()["checks"]["redis"] == "ok"
