"""POST /v1/messages (and /v1/messages/count_tokens): Anthropic's Messages API, for apps written for the
`anthropic` SDK (Claude Code, agents) that point their base URL at Turnpike.

- Anthropic models: native pass-through. The body goes upstream as sent (model name resolved), with
  the client's `anthropic-version` and `anthropic-beta` headers, and Anthropic's bytes come back
  untouched, read for usage on the way (proxy.sse.AnthropicUsageTap).
- OpenAI-format, Azure and Gemini models: the request becomes an OpenAI chat request
  (proxy.providers.anthropic_compat), goes through the same targets as /v1/chat/completions, and the
  answer (or stream) is rendered back as an Anthropic message (or Anthropic stream events).
Errors use Anthropic's envelope, `{"type": "error", "error": {"type", "message"}}`.
"""

from __future__ import annotations

from typing import Any

import orjson

from contracts.pricing import Usage
from proxy.errors import ProxyError
from proxy.gateway import Exchange, ModelEndpoint, find_tool, search_estimate
from proxy.http import header, send_bytes
from proxy.providers import anthropic, anthropic_compat, targets
from proxy.routing import Route
from proxy.sse import AnthropicUsageTap
from proxy.streams import AnthropicSink, TranslatingTap, source_for
from proxy.tokens import count_text

COUNT_TOKENS_PATH = "/v1/messages/count_tokens"


def anthropic_headers(x: Exchange, secret: str) -> dict[str, str]:
    """Auth, plus the client's API version and beta flags (features such as prompt-caching betas)."""
    headers = anthropic.auth_headers(secret)
    version = header(x.scope, b"anthropic-version")
    if version:
        headers["anthropic-version"] = version
    beta = header(x.scope, b"anthropic-beta")
    if beta:
        headers["anthropic-beta"] = beta
    return headers


def text_of_request(body: dict[str, Any]) -> str:
    """Every piece of text in an Anthropic request (for counting tokens locally)."""
    parts: list[str] = []

    def walk(value: Any) -> None:
        if isinstance(value, str):
            parts.append(value)
        elif isinstance(value, list):
            for item in value:
                walk(item)
        elif isinstance(value, dict):
            if value.get("type") == "image":
                return
            for name in ("text", "content", "input", "thinking"):
                if name in value:
                    item = value[name]
                    walk(orjson.dumps(item).decode() if name == "input" else item)

    walk(body.get("system"))
    for message in body.get("messages") or []:
        if isinstance(message, dict):
            walk(message.get("content"))
    return "\n".join(parts)


class Messages(ModelEndpoint):
    path = "/v1/messages"
    families = frozenset({"anthropic", "openai", "azure", "google"})
    anthropic_errors = True

    def validate(self, body: dict[str, Any]) -> None:
        anthropic_compat.validate_messages_body(body)

    async def forward(self, x: Exchange) -> None:
        assert x.spec is not None
        if x.spec.family == "anthropic":
            await self._native(x)
        else:
            await self._translated(x)

    def web_searches_estimate(self, route: Route, body: dict[str, Any]) -> int:
        """Anthropic's web search tool (`web_search_20250305`, …) searches up to its `max_uses` times."""
        tool = find_tool(body.get("tools"), "web_search_")
        return 0 if tool is None else search_estimate(tool.get("max_uses"))

    def count_locally(self, x: Exchange) -> Usage:
        model = str(x.body.get("model", ""))
        return Usage(
            input=count_text(text_of_request(x.body), model=model),
            output=count_text(x.outcome.streamed_text, model=model),
        )

    async def _native(self, x: Exchange) -> None:
        assert x.route is not None
        route, outcome = x.route, x.outcome
        body = {**x.body, "model": route.model}
        url = anthropic.messages_url(route.base_url)
        response = await self.open_upstream(x, [(url, anthropic_headers(x, route.credential.secret))], body)
        try:
            if x.stream:

                def cost_of(usage: dict[str, Any]) -> dict[str, Any] | None:
                    reported = anthropic.usage_from_anthropic(usage)
                    return None if reported is None else x.cost_members(reported)

                tap = AnthropicUsageTap(cost=cost_of)
                await self.relay_stream(x, response, tap)
                outcome.model_served = tap.model
                reported = anthropic.usage_from_anthropic(tap.usage) if tap.usage is not None else None
                self.stream_finished(
                    x, usage=reported if tap.complete else None, partial=reported, text=tap.streamed_text
                )
                return
            data = await self.read_json(x, response)
            outcome.model_served = str(data.get("model") or route.model)
            usage = anthropic.usage_from_anthropic(data.get("usage"))
            await self.send_json(x, data, usage=usage, raw=response.content)
        finally:
            response.close()

    async def _translated(self, x: Exchange) -> None:
        assert x.route is not None and x.spec is not None
        route, outcome, family = x.route, x.outcome, x.spec.family
        chat_body = anthropic_compat.messages_to_chat(x.body)
        call = targets.chat_call(
            family, base_url=route.base_url, model=route.model, secret=route.credential.secret, chat_body=chat_body
        )
        response = await self.open_upstream(x, [(call.url, call.headers)], call.body)
        message_id = "msg_" + x.request_id.removeprefix("req_")
        try:
            if x.stream:
                source = source_for(family, model=route.model)
                sink = AnthropicSink(model=str(x.body["model"]), message_id=message_id, cost=x.cost_members)
                await self.relay_stream(x, response, TranslatingTap(source, sink))
                outcome.model_served = source.model
                self.stream_finished(
                    x, usage=source.final_usage, partial=source.partial_usage, text=source.streamed_text
                )
                return
            data = await self.read_json(x, response)
            chat, usage = targets.chat_result(family, data, model=route.model)
            outcome.model_served = str(chat.get("model") or route.model)
            message = anthropic_compat.chat_to_message(chat, usage, model=str(x.body["model"]))
            message["id"] = message_id
            await self.send_json(x, message, usage=usage)
        finally:
            response.close()


class CountTokens(ModelEndpoint):
    """Anthropic's token counting (`POST /v1/messages/count_tokens`). Free at Anthropic, so no usage event
    and no charge.

    Anthropic models: passed through to Anthropic. Other models (an Anthropic-SDK app such as Claude
    Code pointed at an OpenAI or Gemini model): counted locally with the OpenAI tokenizer over the
    request's text, tools included, and marked `x-turnpike-estimated: true`; a client that budgets its
    context with this endpoint keeps working instead of failing on a 400."""

    path = COUNT_TOKENS_PATH
    families = frozenset({"anthropic", "openai", "azure", "google"})
    anthropic_errors = True

    def validate(self, body: dict[str, Any]) -> None:
        model = body.get("model")
        if not isinstance(model, str) or not model.strip():
            raise ProxyError.invalid_request("model: Field required (a string).", param="model")
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise ProxyError.invalid_request("messages: Field required (a non-empty array).", param="messages")

    async def __call__(self, x: Exchange) -> None:
        try:
            self.validate(x.body)
            route, spec = self.route(x)
            headers = [(b"x-request-id", x.request_id.encode())]
            if spec.family == "anthropic":
                url = anthropic.messages_url(route.base_url) + "/count_tokens"
                body = {**x.body, "model": route.model}
                response = await self.open_upstream(x, [(url, anthropic_headers(x, route.credential.secret))], body)
                try:
                    await self.read_json(x, response)
                finally:
                    response.close()
                payload = response.content
            else:
                text = text_of_request(x.body) + "\n" + orjson.dumps(x.body.get("tools") or []).decode()
                payload = orjson.dumps({"input_tokens": count_text(text, model=route.model)})
                headers.append((b"x-turnpike-estimated", b"true"))
            await send_bytes(x.send, 200, payload, headers=headers)
        except ProxyError as error:
            await self.rt.send_error(x.send, error, request_id=x.request_id, anthropic=True)
