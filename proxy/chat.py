"""POST /v1/chat/completions: OpenAI's chat API, to every provider family.

- OpenAI-format providers and Azure OpenAI: the body passes through (model name and the stream usage
  option adjusted) and the provider's bytes come back untouched, inspected for usage on the way (a
  search model's completion also carries its web search: proxy.providers.openai_format).
- Anthropic and Gemini: translated both ways (proxy.providers.anthropic / .gemini, via .targets),
  streams included (proxy.streams).
"""

from __future__ import annotations

import dataclasses
from decimal import Decimal
from typing import Any

from contracts.pricing import Usage
from contracts.providers import PROVIDERS
from proxy.errors import ProxyError
from proxy.gateway import Exchange, ModelEndpoint, search_estimate
from proxy.providers import gemini, openai_format, targets
from proxy.routing import Route
from proxy.sse import UsageTap
from proxy.streams import OpenAISink, TranslatingTap, source_for
from proxy.tokens import count_messages, count_text


def validate_chat_body(body: dict[str, Any]) -> None:
    model = body.get("model")
    if not isinstance(model, str) or not model.strip():
        raise ProxyError.invalid_request("`model` is required and must be a string.", param="model")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ProxyError.invalid_request("`messages` is required and must be a non-empty array.", param="messages")
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise ProxyError.invalid_request(
                f"`messages[{index}]` must be an object with a string `role`.", param=f"messages[{index}]"
            )
    if "stream" in body and not isinstance(body["stream"], bool):
        raise ProxyError.invalid_request("`stream` must be a boolean.", param="stream")
    for name in ("max_tokens", "max_completion_tokens", "n"):
        value = body.get(name)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            raise ProxyError.invalid_request(f"`{name}` must be a positive integer.", param=name)
    if "stream_options" in body and body["stream_options"] is not None and not isinstance(body["stream_options"], dict):
        raise ProxyError.invalid_request("`stream_options` must be an object.", param="stream_options")
    if "user" in body and body["user"] is not None and not isinstance(body["user"], str):
        raise ProxyError.invalid_request("`user` must be a string.", param="user")


def client_wants_usage(body: dict[str, Any]) -> bool:
    options = body.get("stream_options")
    return isinstance(options, dict) and bool(options.get("include_usage"))


class ChatCompletions(ModelEndpoint):
    path = "/v1/chat/completions"
    families = frozenset({"openai", "azure", "anthropic", "google"})

    def validate(self, body: dict[str, Any]) -> None:
        validate_chat_body(body)

    async def forward(self, x: Exchange) -> None:
        assert x.spec is not None
        if x.spec.family in ("openai", "azure"):
            await self._pass_through(x)
        else:
            await self._translated(x)

    def may_charge(self, route: Route, rate: Decimal) -> bool:
        if route.provider == "azure_openai" and route.price is None:
            return rate != 0  # priced after the answer, as the OpenAI model it served
        return super().may_charge(route, rate)

    def web_searches_estimate(self, route: Route, body: dict[str, Any]) -> int:
        """A search model's completion is one search; a Gemini request offering Google Search is one grounded
        prompt (Gemini 2.x) or up to search_estimate(None) queries (later models)."""
        if openai_format.is_search_model(route.model):
            return 1
        spec = PROVIDERS.get(route.provider)
        if spec is not None and spec.family == "google" and gemini.offers_google_search(body.get("tools")):
            return 1 if gemini.bills_grounding_per_prompt(route.model) else search_estimate(None)
        return 0

    def count_locally(self, x: Exchange) -> Usage:
        model = str(x.body.get("model", ""))
        return Usage(
            input=count_messages(x.body.get("messages"), model=model),
            output=count_text(x.outcome.streamed_text, model=model),
        )

    async def _pass_through(self, x: Exchange) -> None:
        """OpenAI-format upstreams: the provider's bytes go back as they came."""
        assert x.route is not None and x.spec is not None
        route, outcome = x.route, x.outcome
        call = targets.chat_call(
            x.spec.family, base_url=route.base_url, model=route.model, secret=route.credential.secret, chat_body=x.body
        )
        response = await self.open_upstream(x, [(call.url, call.headers)], call.body)
        try:
            if x.stream:

                def cost_of(chunk: dict[str, Any]) -> dict[str, Any] | None:
                    """The cost members of a usage chunk the client asked for (priced by the model it names)."""
                    outcome.model_served = str(chunk.get("model") or outcome.model_served)
                    usage = openai_format.usage_from_openai(
                        chunk.get("usage"), model=outcome.model_served or route.model
                    )
                    if usage is None:
                        return None
                    self._price_azure_by_served_model(x)
                    return x.cost_members(usage)

                tap = UsageTap(keep_usage_chunk=client_wants_usage(x.body), cost=cost_of)
                await self.relay_stream(x, response, tap)
                outcome.model_served = tap.model
                self._price_azure_by_served_model(x)
                served = tap.model or route.model
                usage = openai_format.usage_from_openai(tap.usage, model=served) if tap.usage is not None else None
                self.stream_finished(x, usage=usage, partial=None, text=tap.streamed_text)
                return
            data = await self.read_json(x, response)
            outcome.model_served = str(data.get("model") or route.model)
            self._price_azure_by_served_model(x)
            # the provider's bytes as they came, the cost spliced into `usage` (proxy.costs)
            usage = openai_format.usage_from_openai(data.get("usage"), model=outcome.model_served)
            await self.send_json(x, data, usage=usage, raw=response.content)
        finally:
            response.close()

    async def _translated(self, x: Exchange) -> None:
        """Anthropic and Gemini upstreams, OpenAI client: translated both ways."""
        assert x.route is not None and x.spec is not None
        route, outcome, family = x.route, x.outcome, x.spec.family
        call = targets.chat_call(
            family, base_url=route.base_url, model=route.model, secret=route.credential.secret, chat_body=x.body
        )
        response = await self.open_upstream(x, [(call.url, call.headers)], call.body)
        try:
            if x.stream:
                source = source_for(family, model=route.model)

                def cost_now() -> dict[str, Any] | None:
                    usage = source.final_usage
                    return None if usage is None else x.cost_members(usage)

                sink = OpenAISink(include_usage=client_wants_usage(x.body), cost=cost_now)
                await self.relay_stream(x, response, TranslatingTap(source, sink))
                outcome.model_served = source.model
                self.stream_finished(
                    x, usage=source.final_usage, partial=source.partial_usage, text=source.streamed_text
                )
                return
            data = await self.read_json(x, response)
            chat, usage = targets.chat_result(family, data, model=route.model)
            outcome.model_served = str(chat.get("model") or route.model)
            await self.send_json(x, chat, usage=usage)
        finally:
            response.close()

    def _price_azure_by_served_model(self, x: Exchange) -> None:
        """An Azure deployment without a workspace price is priced as the OpenAI model it served."""
        route = x.route
        if route is None or route.provider != "azure_openai" or route.price is not None or not x.outcome.model_served:
            return
        price = self.rt.catalog.price("openai", x.outcome.model_served)
        if price is not None:
            x.route = dataclasses.replace(route, price=price)
