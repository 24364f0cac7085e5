"""The `openai` SDK over real sockets: /v1/responses (pass-through to OpenAI), /v1/embeddings (OpenAI
format, Azure, Gemini), and chat through Azure OpenAI deployments; each request priced and recorded."""

from __future__ import annotations

from decimal import Decimal

import openai
import pytest

from billing.models import ModelPrice
from contracts.events import USAGE_STREAM, UsageEvent
from contracts.pricing import Usage, cost_nanos

pytestmark = pytest.mark.django_db(transaction=True)

TOOLS = [
    {
        "type": "function",
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    }
]


def events(r) -> list[UsageEvent]:
    return [UsageEvent.from_fields({k.decode(): v.decode() for k, v in f.items()}) for _, f in r.xrange(USAGE_STREAM)]


def catalog_price(provider: str, model: str):
    return ModelPrice.objects.get(provider=provider, model=model).to_price()


@pytest.fixture
def sdk_for(make_tenant, start_proxy):
    """An SDK client for a fresh tenant whose one credential is `provider` at `base_url`."""
    opened: list[openai.OpenAI] = []

    def make(provider: str = "openai", base_url: str | None = None) -> tuple[openai.OpenAI, object]:
        tenant = make_tenant(provider=provider, base_url=base_url)
        proxy = start_proxy()
        sdk = openai.OpenAI(base_url=proxy.base_url, api_key=tenant.plaintext, max_retries=0, timeout=20)
        opened.append(sdk)
        return sdk, proxy

    yield make
    for sdk in opened:
        sdk.close()


# --- /v1/responses -------------------------------------------------------------------------------------------


def test_responses_non_streaming_passes_through_and_prices_cached_and_reasoning(sdk_for, r):
    sdk, proxy = sdk_for()
    raw = sdk.responses.with_raw_response.create(
        model="openai/o4-mini@cached=4;reasoning=3", input="Tell me about foxes", instructions="Be brief."
    )
    response = raw.parse()
    assert response.output_text and response.status == "completed"
    usage = response.usage
    assert usage.input_tokens_details.cached_tokens == 4 and usage.output_tokens_details.reasoning_tokens == 3
    proxy.drain()
    (event,) = events(r)
    assert (event.input_tokens, event.cached_input_tokens) == (usage.input_tokens - 4, 4)
    assert (event.output_tokens, event.reasoning_tokens) == (usage.output_tokens - 3, 3)
    assert event.status == 200 and not event.estimated and not event.stream
    # the model with its control suffix is not in the catalog: priced as unknown, never a silent $0
    assert not event.priced and raw.headers["x-turnpike-cost-usd"] == "unpriced"


def test_responses_priced_from_the_catalog(sdk_for, r):
    sdk, proxy = sdk_for()
    raw = sdk.responses.with_raw_response.create(model="gpt-4o-mini", input="Hello")
    usage = raw.parse().usage
    proxy.drain()
    (event,) = events(r)
    expected = cost_nanos(
        catalog_price("openai", "gpt-4o-mini"), Usage(input=usage.input_tokens, output=usage.output_tokens)
    )
    assert event.priced and event.cost_nanos == expected
    assert raw.headers["x-turnpike-cost-usd"] == format(Decimal(expected) / 10**9, "f")


def test_responses_streaming_events_arrive_and_usage_is_captured(sdk_for, r):
    sdk, proxy = sdk_for()
    kinds, text, completed = [], "", None
    for event in sdk.responses.create(model="gpt-4o-mini", input="Stream it", stream=True):
        kinds.append(event.type)
        if event.type == "response.output_text.delta":
            text += event.delta
        if event.type == "response.completed":
            completed = event.response
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    assert completed is not None and completed.output_text == text
    proxy.drain()
    (event,) = events(r)
    assert event.stream and not event.estimated
    assert event.output_tokens == completed.usage.output_tokens and event.input_tokens == completed.usage.input_tokens


def test_responses_tool_calls_pass_through(sdk_for):
    sdk, _ = sdk_for()
    response = sdk.responses.create(model="gpt-4o-mini", input="Weather in Paris?", tools=TOOLS)
    (call,) = [item for item in response.output if item.type == "function_call"]
    assert call.name == "get_weather" and '"city"' in call.arguments


def test_responses_for_an_anthropic_model_is_a_clear_400(sdk_for, fake_provider_url):
    sdk, _ = sdk_for(provider="anthropic", base_url=fake_provider_url)
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.responses.create(model="anthropic/claude-sonnet-4-5", input="Hi")
    body = caught.value.body
    assert body["code"] == "unsupported_provider" and body["param"] == "model"
    assert "/v1/chat/completions" in body["message"] and "Anthropic" in body["message"]


# --- /v1/embeddings ------------------------------------------------------------------------------------------


def test_embeddings_openai_pass_through_priced(sdk_for, r):
    sdk, proxy = sdk_for()
    raw = sdk.embeddings.with_raw_response.create(model="text-embedding-3-small", input=["a fox", "a dog"])
    result = raw.parse()
    assert [d.index for d in result.data] == [0, 1] and len(result.data[0].embedding) == 8
    proxy.drain()
    (event,) = events(r)
    price = catalog_price("openai", "text-embedding-3-small")
    assert event.input_tokens == result.usage.prompt_tokens and event.output_tokens == 0
    assert event.cost_nanos == cost_nanos(price, Usage(input=result.usage.prompt_tokens))


def test_embeddings_for_mistral_go_to_the_mistral_credential(sdk_for, fake_provider_url, r):
    sdk, proxy = sdk_for(provider="mistral", base_url=f"{fake_provider_url}/v1")
    result = sdk.embeddings.create(model="mistral/mistral-embed", input="bonjour")
    assert len(result.data) == 1
    proxy.drain()
    (event,) = events(r)
    assert event.provider == "mistral" and event.input_tokens == result.usage.prompt_tokens


def test_embeddings_bad_input_is_a_400_naming_the_field(sdk_for):
    sdk, _ = sdk_for()
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.embeddings.create(model="text-embedding-3-small", input=[{"text": "no"}])  # type: ignore[list-item]
    assert caught.value.body["param"] == "input"


def test_embeddings_for_an_anthropic_model_is_a_clear_400(sdk_for, fake_provider_url):
    sdk, _ = sdk_for(provider="anthropic", base_url=fake_provider_url)
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.embeddings.create(model="anthropic/claude-sonnet-4-5", input="hi")
    assert caught.value.body["code"] == "unsupported_provider"


# --- Azure OpenAI --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", ["", "/openai/v1"])
def test_azure_deployment_chat_priced_by_the_model_it_served(sdk_for, fake_provider_url, r, suffix):
    sdk, proxy = sdk_for(provider="azure_openai", base_url=fake_provider_url + suffix)
    raw = sdk.chat.completions.with_raw_response.create(
        model="azure_openai/prod-chat", messages=[{"role": "user", "content": "Hi"}]
    )
    completion = raw.parse()
    assert completion.choices[0].message.content and completion.model == "gpt-4o-mini-2024-07-18"
    proxy.drain()
    (event,) = events(r)
    usage = Usage(input=completion.usage.prompt_tokens, output=completion.usage.completion_tokens)
    assert event.provider == "azure_openai" and event.model_served == "gpt-4o-mini-2024-07-18"
    assert event.priced and event.cost_nanos == cost_nanos(catalog_price("openai", "gpt-4o-mini"), usage)


def test_azure_streaming_chat_with_usage(sdk_for, fake_provider_url, r):
    sdk, proxy = sdk_for(provider="azure_openai", base_url=fake_provider_url)
    chunks = list(
        sdk.chat.completions.create(
            model="azure_openai/prod-chat", messages=[{"role": "user", "content": "Hi"}], stream=True
        )
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert all(c.usage is None for c in chunks)  # the client did not ask for the usage chunk
    proxy.drain()
    (event,) = events(r)
    assert event.stream and event.priced and not event.estimated and event.output_tokens > 0


def test_azure_embeddings(sdk_for, fake_provider_url, r):
    sdk, proxy = sdk_for(provider="azure_openai", base_url=fake_provider_url)
    result = sdk.embeddings.create(model="azure_openai/text-embedding-3-small", input="hello")
    assert len(result.data[0].embedding) == 8
    proxy.drain()
    (event,) = events(r)
    assert event.provider == "azure_openai" and event.input_tokens == result.usage.prompt_tokens


def test_azure_rejected_key_is_a_502_naming_the_credential(make_tenant, start_proxy, fake_provider_url):
    tenant = make_tenant(provider="azure_openai", base_url=fake_provider_url)
    proxy = start_proxy()
    with (
        openai.OpenAI(base_url=proxy.base_url, api_key=tenant.plaintext, max_retries=0) as sdk,
        pytest.raises(openai.APIStatusError) as caught,
    ):
        sdk.chat.completions.create(model="azure_openai/prod@status=401", messages=[{"role": "user", "content": "Hi"}])
    assert caught.value.status_code == 502 and caught.value.body["code"] == "provider_auth_error"
