"""POST /v1/embeddings: OpenAI's embeddings API, to OpenAI-format providers (OpenAI, Mistral, DeepInfra,
Together, …; the provider decides whether it serves the model), Azure OpenAI deployments and Gemini.

OpenAI-format and Azure: passed through, usage from `usage.prompt_tokens`. Gemini: translated to
`batchEmbedContents` and back (proxy.providers.gemini); Gemini's answer carries no token counts, so
the input is counted locally and the event is flagged estimated. Anthropic has no embeddings API.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from contracts.pricing import Usage, charge_nanos, cost_nanos
from proxy.errors import ProxyError
from proxy.gateway import BYTES_PER_TOKEN_ESTIMATE, Exchange, ModelEndpoint
from proxy.providers import azure, gemini, openai_format
from proxy.routing import Route
from proxy.tokens import count_text


def _inputs(value: Any) -> list[str] | None:
    """The input as a list of strings, or None if it is token arrays (passed through as is)."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return list(value)
    return None


def validate_embeddings_body(body: dict[str, Any]) -> None:
    model = body.get("model")
    if not isinstance(model, str) or not model.strip():
        raise ProxyError.invalid_request("`model` is required and must be a string.", param="model")
    value = body.get("input")
    tokens = isinstance(value, list) and all(isinstance(item, int) and not isinstance(item, bool) for item in value)
    token_lists = isinstance(value, list) and all(
        isinstance(item, list) and all(isinstance(t, int) and not isinstance(t, bool) for t in item) for item in value
    )
    if value in (None, "", []) or not (_inputs(value) is not None or tokens or token_lists):
        raise ProxyError.invalid_request(
            "`input` is required: a string, an array of strings, or an array of token arrays.", param="input"
        )
    dimensions = body.get("dimensions")
    if dimensions is not None and (not isinstance(dimensions, int) or isinstance(dimensions, bool) or dimensions < 1):
        raise ProxyError.invalid_request("`dimensions` must be a positive integer.", param="dimensions")


class Embeddings(ModelEndpoint):
    path = "/v1/embeddings"
    families = frozenset({"openai", "azure", "google"})

    def validate(self, body: dict[str, Any]) -> None:
        validate_embeddings_body(body)

    def reservation(self, route: Route, body: dict[str, Any], body_bytes: int, rate: Decimal) -> int:
        if route.price is None:
            return 0
        usage = Usage(input=body_bytes // BYTES_PER_TOKEN_ESTIMATE + 1)
        return charge_nanos(cost_nanos(route.price, usage), rate=rate) or 0

    def count_locally(self, x: Exchange) -> Usage:
        texts = _inputs(x.body.get("input"))
        if texts is None:  # token arrays: their length is the count
            value = x.body.get("input") or []
            return Usage(input=sum(len(item) if isinstance(item, list) else 1 for item in value))
        model = str(x.body.get("model", ""))
        return Usage(input=sum(count_text(text, model=model) for text in texts))

    async def forward(self, x: Exchange) -> None:
        assert x.route is not None and x.spec is not None
        route, outcome, family = x.route, x.outcome, x.spec.family
        secret = route.credential.secret
        if family == "google":
            upstream = gemini.embeddings_to_gemini(x.body, upstream_model=route.model)
            url, headers = gemini.embed_url(route.base_url, route.model), gemini.auth_headers(secret)
        elif family == "azure":
            upstream = {**x.body, "model": route.model}
            url, headers = azure.url(route.base_url, route.model, "embeddings"), azure.auth_headers(secret)
        else:
            upstream = {**x.body, "model": route.model}
            url, headers = route.base_url.rstrip("/") + "/embeddings", openai_format.auth_headers(secret)
        response = await self.open_upstream(x, [(url, headers)], upstream)
        try:
            data = await self.read_json(x, response)
        finally:
            response.close()
        outcome.model_served = str(data.get("model") or route.model)
        if family == "google":
            usage = self.count_locally(x)
            outcome.estimated = True
            answer = gemini.gemini_to_embeddings(
                data, model=route.model, usage=usage, encoding_format=x.body.get("encoding_format")
            )
            await self.send_json(x, answer, usage=usage)
            return
        reported = openai_format.usage_from_embeddings(data.get("usage"))
        await self.send_json(x, data, usage=reported, raw=response.content)
