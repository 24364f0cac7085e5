"""POST /v1/responses: OpenAI's Responses API, passed through to OpenAI (and to OpenAI-compatible
servers and Azure OpenAI's v1 API, which implement it), streaming and not, with usage captured.

The body goes upstream as sent (model name resolved); the provider's bytes come back untouched. Usage
is read from the response's `usage`, or, streaming, from the terminal event (`response.completed`,
`response.incomplete` or `response.failed`); its web searches are the `web_search_call` items of the
response's `output` (proxy.providers.openai_format), charged at the catalog's `web_search` fee. Other
providers get a 400 naming what is supported: translating the Responses API's server-side state (stored
responses, `previous_response_id`, built-in tools) onto another provider cannot be done faithfully.
"""

from __future__ import annotations

from typing import Any

from contracts.pricing import WEB_SEARCH, Usage
from contracts.providers import ProviderSpec
from proxy.errors import ProxyError
from proxy.gateway import Exchange, ModelEndpoint, find_tool, search_estimate
from proxy.providers import azure, openai_format
from proxy.routing import Route
from proxy.sse import ResponsesUsageTap
from proxy.tokens import count_text

SUPPORTED_PROVIDERS = frozenset({"openai", "openai_compatible", "azure_openai"})


def text_of_input(value: Any) -> str:
    """Text in a Responses `input` (a string, or a list of items with content parts)."""
    if isinstance(value, str):
        return value
    parts: list[str] = []
    if isinstance(value, list):
        for item in value:
            if isinstance(item, str):
                parts.append(item)
            elif isinstance(item, dict):
                for name in ("text", "arguments", "output"):
                    if isinstance(item.get(name), str):
                        parts.append(item[name])
                if "content" in item:
                    parts.append(text_of_input(item["content"]))
    return "\n".join(parts)


class Responses(ModelEndpoint):
    path = "/v1/responses"
    families = frozenset({"openai", "azure"})

    def validate(self, body: dict[str, Any]) -> None:
        model = body.get("model")
        if not isinstance(model, str) or not model.strip():
            raise ProxyError.invalid_request("`model` is required and must be a string.", param="model")
        if "input" in body and not isinstance(body["input"], str | list):
            raise ProxyError.invalid_request("`input` must be a string or an array of input items.", param="input")
        if "stream" in body and not isinstance(body["stream"], bool):
            raise ProxyError.invalid_request("`stream` must be a boolean.", param="stream")
        cap = body.get("max_output_tokens")
        if cap is not None and (not isinstance(cap, int) or isinstance(cap, bool) or cap < 1):
            raise ProxyError.invalid_request(
                "`max_output_tokens` must be a positive integer.", param="max_output_tokens"
            )

    def supports(self, spec: ProviderSpec) -> bool:
        return spec.type in SUPPORTED_PROVIDERS

    def unsupported(self, spec: ProviderSpec, model: str) -> ProxyError:
        return ProxyError.invalid_request(
            f"/v1/responses is available for OpenAI, Azure OpenAI and OpenAI-compatible servers; `{model}` is "
            f"served by {spec.label}. Use /v1/chat/completions (or /v1/messages) for this model.",
            param="model",
            code="unsupported_provider",
        )

    def web_searches_estimate(self, route: Route, body: dict[str, Any]) -> int:
        """The `web_search` tool (or `web_search_preview`) runs up to `max_tool_calls` times."""
        tool = find_tool(body.get("tools"), "web_search")
        return 0 if tool is None else search_estimate(body.get("max_tool_calls"))

    def count_locally(self, x: Exchange) -> Usage:
        model = str(x.body.get("model", ""))
        prompt = text_of_input(x.body.get("input")) + "\n" + str(x.body.get("instructions") or "")
        return Usage(input=count_text(prompt, model=model), output=count_text(x.outcome.streamed_text, model=model))

    async def forward(self, x: Exchange) -> None:
        assert x.route is not None and x.spec is not None
        route, outcome = x.route, x.outcome
        secret = route.credential.secret
        if x.spec.family == "azure":
            base = route.base_url if route.base_url.endswith("/openai/v1") else route.base_url + "/openai/v1"
            url, headers = azure.url(base, route.model, "responses"), azure.auth_headers(secret)
        else:
            url, headers = route.base_url.rstrip("/") + "/responses", openai_format.auth_headers(secret)
        response = await self.open_upstream(x, [(url, headers)], {**x.body, "model": route.model})
        try:
            if x.stream:

                def cost_of(usage: dict[str, Any]) -> dict[str, Any] | None:
                    reported = openai_format.usage_from_responses(usage, web_searches=tap.web_searches)
                    return None if reported is None else x.cost_members(reported)

                tap = ResponsesUsageTap(cost=cost_of)
                await self.relay_stream(x, response, tap)
                outcome.model_served = tap.model
                searches = tap.web_searches
                usage = (
                    openai_format.usage_from_responses(tap.usage, web_searches=searches)
                    if tap.complete and tap.usage
                    else None
                )
                # cut short: the searches already made are still charged (with an estimate of the tokens)
                partial = Usage(units=((WEB_SEARCH, searches),)) if searches else None
                self.stream_finished(x, usage=usage, partial=partial, text=tap.streamed_text)
                return
            data = await self.read_json(x, response)
            outcome.model_served = str(data.get("model") or route.model)
            searches = openai_format.web_search_calls(data.get("output"))
            usage = openai_format.usage_from_responses(data.get("usage"), web_searches=searches)
            await self.send_json(x, data, usage=usage, raw=response.content)
        finally:
            response.close()
