"""Every answer tells its cost, as OpenRouter's do: `usage.cost` (what Turnpike charges the balance) and
`usage.cost_details.upstream_inference_cost` (what the provider charges), exact decimal JSON numbers,
equal to the charge and cost its usage event records; in non-streaming bodies of every endpoint, in the
final usage chunk of a stream whose client asked for usage, and in Anthropic's `message_delta`. The
official SDKs still parse every answer."""

from __future__ import annotations

import json
from decimal import ROUND_HALF_UP, Decimal

import anthropic
import httpx
import openai
import orjson
import pytest

from billing.models import Plan
from contracts.events import USAGE_STREAM
from contracts.events import UsageEvent as Event
from contracts.pricing import Price, Usage
from proxy.costs import Priced, splice_cost, usd_number
from tenants.services import workspace_billing_update

pytestmark = pytest.mark.django_db(transaction=True)

HI = [{"role": "user", "content": "Say hello"}]
NANO = Decimal(10) ** -9


def stream_events(r) -> list[Event]:
    return [Event.from_fields({k.decode(): v.decode() for k, v in f.items()}) for _, f in r.xrange(USAGE_STREAM)]


def exact(text: str) -> dict:
    """A JSON body with every number as Decimal: what the bytes say, not a float's approximation."""
    return json.loads(text, parse_float=Decimal, parse_int=Decimal)


def on_fee_plan(tenant, rate: str = "0.25") -> None:
    plan, _ = Plan.objects.get_or_create(
        code=f"cost-fee-{rate}", defaults={"name": f"Fee {rate}", "byok_fee_rate": Decimal(rate)}
    )
    tenant.workspace.plan = plan
    workspace_billing_update(workspace=tenant.workspace, fields=["plan"])


def assert_cost(usage: dict, event: Event) -> None:
    """`usage` (parsed exactly) carries the event's charge and provider cost, in USD."""
    assert usage["cost"] == event.charge_nanos * NANO
    assert usage["cost_details"] == {"upstream_inference_cost": event.cost_nanos * NANO}


@pytest.fixture
def fee_tenant(make_tenant):
    """A tenant whose BYOK requests are charged 25% of the provider cost (so cost and charge differ)."""

    def make(**kwargs):
        tenant = make_tenant(**kwargs)
        on_fee_plan(tenant)
        return tenant

    return make


# --- OpenAI format -----------------------------------------------------------------------------------------


def test_chat_completion_body_carries_the_charge_and_the_provider_cost(fee_tenant, start_proxy, r):
    tenant = fee_tenant()
    proxy = start_proxy()
    with openai.OpenAI(base_url=proxy.base_url, api_key=tenant.plaintext, max_retries=0) as sdk:
        raw = sdk.chat.completions.with_raw_response.create(model="openai/gpt-4o-mini@cached=3", messages=HI)
        completion = raw.parse()
        priced = sdk.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=HI)
    proxy.drain()
    unpriced_event, event = stream_events(r)
    # a model name with a control suffix is unpriced: charged 0, the provider's cost unknown (null)
    assert completion.usage.model_extra == {"cost": 0, "cost_details": {"upstream_inference_cost": None}}
    assert completion.usage.prompt_tokens_details.cached_tokens == 3  # the provider's fields untouched
    assert unpriced_event.charge_nanos == 0 and unpriced_event.cost_nanos is None

    body = exact(priced.text)
    assert_cost(body["usage"], event)
    assert event.charge_nanos == (Decimal(event.cost_nanos) / 4).quantize(Decimal(1), ROUND_HALF_UP)  # 25% fee
    assert priced.headers["x-turnpike-cost-usd"] == format(Decimal(event.cost_nanos) / 10**9, "f")
    usage = priced.parse().usage
    assert usage.model_extra["cost"] == float(event.charge_nanos * NANO)
    assert usage.model_extra["cost_details"]["upstream_inference_cost"] == float(event.cost_nanos * NANO)
    assert usage.prompt_tokens > 0 and usage.completion_tokens > 0


def test_chat_stream_usage_chunk_carries_the_cost_only_when_asked_for(fee_tenant, start_proxy, r):
    tenant = fee_tenant()
    proxy = start_proxy()
    with openai.OpenAI(base_url=proxy.base_url, api_key=tenant.plaintext, max_retries=0) as sdk:
        chunks = list(
            sdk.chat.completions.create(
                model="gpt-4o-mini", messages=HI, stream=True, stream_options={"include_usage": True}
            )
        )
        silent = list(sdk.chat.completions.create(model="gpt-4o-mini", messages=HI, stream=True))
    proxy.drain()
    asked, not_asked = stream_events(r)
    final = chunks[-1]
    assert final.choices == [] and final.usage is not None
    assert final.usage.model_extra["cost"] == float(asked.charge_nanos * NANO)
    assert final.usage.model_extra["cost_details"] == {"upstream_inference_cost": float(asked.cost_nanos * NANO)}
    assert all(chunk.usage is None for chunk in chunks[:-1])
    assert all(chunk.usage is None for chunk in silent)  # no usage chunk for a client that did not ask
    assert not_asked.charge_nanos > 0


def test_chat_stream_bytes_carry_the_exact_decimal(fee_tenant, start_proxy, r):
    tenant = fee_tenant()
    proxy = start_proxy()
    body = {"model": "gpt-4o-mini", "messages": HI, "stream": True, "stream_options": {"include_usage": True}}
    with httpx.Client(timeout=10) as http:
        text = http.post(
            f"{proxy.base_url}/chat/completions", headers={"authorization": f"Bearer {tenant.plaintext}"}, json=body
        ).text
    proxy.drain()
    (event,) = stream_events(r)
    frames = [line[6:] for line in text.splitlines() if line.startswith("data: ")]
    assert frames[-1] == "[DONE]"
    assert_cost(exact(frames[-2])["usage"], event)


def test_responses_and_embeddings_bodies_carry_the_cost(fee_tenant, start_proxy, r):
    tenant = fee_tenant()
    proxy = start_proxy()
    with openai.OpenAI(base_url=proxy.base_url, api_key=tenant.plaintext, max_retries=0) as sdk:
        response = sdk.responses.with_raw_response.create(model="gpt-4o-mini", input="Hello")
        embedding = sdk.embeddings.with_raw_response.create(model="text-embedding-3-small", input=["a fox", "a dog"])
        streamed = list(sdk.responses.create(model="gpt-4o-mini", input="Hello", stream=True))
    proxy.drain()
    response_event, embedding_event, stream_event = stream_events(r)
    assert_cost(exact(response.text)["usage"], response_event)
    assert response.parse().usage.model_extra["cost"] == float(response_event.charge_nanos * NANO)
    assert_cost(exact(embedding.text)["usage"], embedding_event)
    parsed = embedding.parse()
    assert len(parsed.data) == 2 and parsed.usage.model_extra["cost"] == float(embedding_event.charge_nanos * NANO)
    completed = streamed[-1]
    assert completed.type == "response.completed"
    assert completed.response.usage.model_extra["cost"] == float(stream_event.charge_nanos * NANO)


def test_chat_translated_to_anthropic_carries_the_cost(fee_tenant, start_proxy, fake_provider_url, r):
    tenant = fee_tenant(provider="anthropic", base_url=fake_provider_url)
    proxy = start_proxy()
    with openai.OpenAI(base_url=proxy.base_url, api_key=tenant.plaintext, max_retries=0) as sdk:
        raw = sdk.chat.completions.with_raw_response.create(model="anthropic/claude-sonnet-4-5", messages=HI)
        chunks = list(
            sdk.chat.completions.create(
                model="anthropic/claude-sonnet-4-5",
                messages=HI,
                stream=True,
                stream_options={"include_usage": True},
            )
        )
    proxy.drain()
    event, streamed = stream_events(r)
    assert_cost(exact(raw.text)["usage"], event)
    assert streamed.charge_nanos > 0
    assert chunks[-1].usage.model_extra["cost"] == float(streamed.charge_nanos * NANO)


def test_chat_stream_translated_from_gemini_carries_the_cost(fee_tenant, start_proxy, fake_provider_url, r):
    tenant = fee_tenant(provider="google", base_url=fake_provider_url)
    proxy = start_proxy()
    with openai.OpenAI(base_url=proxy.base_url, api_key=tenant.plaintext, max_retries=0) as sdk:
        chunks = list(
            sdk.chat.completions.create(
                model="gemini-2.5-flash", messages=HI, stream=True, stream_options={"include_usage": True}
            )
        )
    proxy.drain()
    (event,) = stream_events(r)
    assert event.charge_nanos > 0
    assert chunks[-1].usage.model_extra["cost"] == float(event.charge_nanos * NANO)


# --- Anthropic format --------------------------------------------------------------------------------------


def test_anthropic_native_message_and_stream_carry_the_cost(fee_tenant, start_proxy, fake_provider_url, r):
    tenant = fee_tenant(provider="anthropic", base_url=fake_provider_url)
    proxy = start_proxy()
    with anthropic.Anthropic(base_url=proxy.url, api_key=tenant.plaintext, max_retries=0) as sdk:
        raw = sdk.messages.with_raw_response.create(model="claude-haiku-4-5", max_tokens=100, messages=HI)
        message = raw.parse()
        deltas = [
            event
            for event in sdk.messages.create(model="claude-haiku-4-5", max_tokens=100, messages=HI, stream=True)
            if event.type == "message_delta"
        ]
    proxy.drain()
    event, streamed = stream_events(r)
    assert message.content[0].text and message.usage.input_tokens > 0
    assert message.usage.model_extra["cost"] == float(event.charge_nanos * NANO)
    assert_cost(exact(raw.http_response.text)["usage"], event)
    (delta,) = deltas
    assert delta.usage.output_tokens > 0
    assert delta.usage.model_extra["cost"] == float(streamed.charge_nanos * NANO)
    assert delta.usage.model_extra["cost_details"] == {"upstream_inference_cost": float(streamed.cost_nanos * NANO)}


def test_anthropic_client_on_an_openai_model_gets_the_cost(fee_tenant, start_proxy, r):
    tenant = fee_tenant()
    proxy = start_proxy()
    with anthropic.Anthropic(base_url=proxy.url, api_key=tenant.plaintext, max_retries=0) as sdk:
        message = sdk.messages.create(model="openai/gpt-4o-mini", max_tokens=100, messages=HI)
        deltas = [
            event
            for event in sdk.messages.create(model="openai/gpt-4o-mini", max_tokens=100, messages=HI, stream=True)
            if event.type == "message_delta"
        ]
    proxy.drain()
    event, streamed = stream_events(r)
    assert event.charge_nanos > 0 and streamed.charge_nanos > 0
    assert message.usage.model_extra["cost"] == float(event.charge_nanos * NANO)
    assert deltas[-1].usage.model_extra["cost"] == float(streamed.charge_nanos * NANO)


# --- splicing the provider's bytes -------------------------------------------------------------------------

PRICED = Priced(Usage(input=10, output=5), Price(input=Decimal(1), output=Decimal(2)), 20, 5)


def test_a_pretty_printed_provider_body_keeps_its_bytes_and_gains_the_cost():
    raw = b'{\n  "id": "x",\n  "usage": {\n    "prompt_tokens": 10,\n    "completion_tokens": 5\n  },\n  "n": 1.50\n}'
    out = splice_cost(raw, orjson.loads(raw), PRICED)
    assert out.replace(b'"cost":0.000000005,"cost_details":{"upstream_inference_cost":0.00000002},', b"") == raw
    usage = exact(out.decode())["usage"]
    assert usage["cost"] == Decimal("0.000000005") and usage["prompt_tokens"] == 10


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        (b'{"text": "the \\"usage\\": {", "usage": {"prompt_tokens": 1}}', "no literal second key"),
        (b'{"a": {"usage": {"x": 1}}, "usage": {"prompt_tokens": 1}}', "two usage keys"),
        (b'{"\\u0075sage": {"prompt_tokens": 1}, "m": {"usage": {}}}', "the key spelled with an escape"),
        (b'{"usage": {"prompt_tokens": 1, "cost": 99}}', "the provider's own cost"),
        (b'{"usage": {}}', "empty usage"),
    ],
)
def test_the_cost_lands_in_the_top_level_usage_whatever_the_body(raw, why):
    out = splice_cost(raw, orjson.loads(raw), PRICED)
    parsed = exact(out.decode())
    assert parsed["usage"]["cost"] == Decimal("0.000000005"), why
    assert parsed["usage"]["cost_details"] == {"upstream_inference_cost": Decimal("0.00000002")}, why
    nested = parsed.get("a", parsed.get("m", {})).get("usage", {})
    assert "cost" not in nested, why


def test_usd_numbers_are_exact_decimals():
    assert [usd_number(n) for n in (0, 1, 120, 1_500_000_000, 10**18 - 1)] == [
        b"0",
        b"0.000000001",
        b"0.00000012",
        b"1.5",
        b"999999999.999999999",
    ]
