"""Azure OpenAI request building (proxy/providers/azure.py, via proxy/providers/targets.py)."""

from __future__ import annotations

from proxy.providers import azure
from proxy.providers.targets import chat_call


def test_deployment_urls_carry_the_api_version_and_quote_the_name():
    base = "https://acme.openai.azure.com/"
    assert azure.url(base, "prod-gpt4o", "chat/completions") == (
        "https://acme.openai.azure.com/openai/deployments/prod-gpt4o/chat/completions?api-version=2024-10-21"
    )
    assert azure.url(base, "a b/c", "embeddings") == (
        "https://acme.openai.azure.com/openai/deployments/a%20b%2Fc/embeddings?api-version=2024-10-21"
    )


def test_a_v1_base_url_uses_the_v1_api_with_the_deployment_in_the_body():
    call = chat_call(
        "azure",
        base_url="https://acme.openai.azure.com/openai/v1",
        model="prod-gpt4o",
        secret="k",
        chat_body={"model": "azure_openai/prod-gpt4o", "messages": [], "stream": True},
    )
    assert call.url == "https://acme.openai.azure.com/openai/v1/chat/completions"
    assert call.headers == {"api-key": "k"}
    assert call.body["model"] == "prod-gpt4o" and call.body["stream_options"] == {"include_usage": True}
