"""Google's Gemini API (generateContent / streamGenerateContent / batchEmbedContents), and its
translation to and from OpenAI's chat completions and embeddings. Pure functions and one small state
machine (the stream translator); no I/O.

URLs: `{base}/v1beta/models/{model}:generateContent`, `:streamGenerateContent?alt=sse` (server-sent
events, one GenerateContentResponse per `data:` line), `:batchEmbedContents`; key in `x-goog-api-key`.

Usage normalisation (docs/providers.md): `promptTokenCount` INCLUDES `cachedContentTokenCount`;
`candidatesTokenCount` EXCLUDES `thoughtsTokenCount` (thinking is reported and billed apart, at the
output price); `toolUsePromptTokenCount` (tool results fed back by built-in tools) is billed as
input. So input = prompt − cached + tool-use prompt, cached input = cached, output = candidates,
reasoning = thoughts, cache write = 0 (Gemini bills cache storage by time, not per request).

Grounding fees (the catalog's `fees`, ai.google.dev/gemini-api/docs/pricing): a client asks for grounding
with a built-in tool in `tools` (`{"type": "google_search"}` → `googleSearch`, `{"type": "google_maps"}` →
`googleMaps`). What is billed depends on the model's generation (`grounding_units`):
- Gemini 1.x / 2.x (PER_PROMPT_GROUNDING): per grounded prompt. A response whose `groundingMetadata` lists
  `webSearchQueries` is one `web_search`; one with Maps grounding (`googleMapsWidgetContextToken` or a
  `maps` grounding chunk) is one `maps_grounding`, however many candidates or queries it has.
- Gemini 3 and later: per search query, `web_search` = the `webSearchQueries` of every candidate. Maps
  grounding is billed per query too, but the response does not report how many Maps queries ran, so it
  is not counted (the `maps_grounding` fee of those models is stored, not charged).
Streams carry `groundingMetadata` on their candidates (usually the last chunk); the latest seen per
candidate counts.

Schemas: function parameters and JSON-schema response formats go to Gemini's OpenAPI-subset
`Schema`: keys Gemini does not accept (`additionalProperties`, `$schema`, `strict`, …) are removed,
`type: [x, "null"]` becomes `nullable`, and type names are upper-cased.
"""

from __future__ import annotations

import base64
import hashlib
import re
import struct
import time
from typing import Any
from urllib.parse import quote

import orjson

from contracts.pricing import WEB_SEARCH, Usage
from proxy.errors import ProxyError
from proxy.providers.anthropic import parse_sse as _parse_typed_sse

API_VERSION = "v1beta"

# Billable unit of Grounding with Google Maps (the catalog's fee name).
MAPS_GROUNDING = "maps_grounding"
# Models that bill grounding per grounded prompt (Gemini 1.x and 2.x); later ones bill per search query.
PER_PROMPT_GROUNDING = re.compile(r"(?:models/)?gemini-[12](?:[.-]|$)")
# OpenAI-style built-in tool types in `tools` → Gemini's grounding tools.
GROUNDING_TOOLS = {"google_search": "googleSearch", "google_maps": "googleMaps"}

# reasoning_effort -> thinkingBudget (tokens). "none" turns thinking off where the model allows it.
THINKING_BUDGETS = {"none": 0, "minimal": 512, "low": 1024, "medium": 8192, "high": 24576}

FINISH_REASONS = {
    "STOP": "stop",
    "MAX_TOKENS": "length",
    "SAFETY": "content_filter",
    "RECITATION": "content_filter",
    "BLOCKLIST": "content_filter",
    "PROHIBITED_CONTENT": "content_filter",
    "SPII": "content_filter",
    "IMAGE_SAFETY": "content_filter",
    "LANGUAGE": "content_filter",
    "MALFORMED_FUNCTION_CALL": "stop",
    "OTHER": "stop",
    "FINISH_REASON_UNSPECIFIED": "stop",
}

_SCHEMA_KEYS = {
    "type",
    "format",
    "title",
    "description",
    "nullable",
    "enum",
    "maxItems",
    "minItems",
    "properties",
    "required",
    "minProperties",
    "maxProperties",
    "minLength",
    "maxLength",
    "pattern",
    "example",
    "anyOf",
    "propertyOrdering",
    "default",
    "items",
    "minimum",
    "maximum",
}

_TRANSLATED = {
    "model",
    "messages",
    "max_tokens",
    "max_completion_tokens",
    "temperature",
    "top_p",
    "stop",
    "stream",
    "stream_options",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "response_format",
    "reasoning_effort",
    "user",
    "n",
    "seed",
    "presence_penalty",
    "frequency_penalty",
}
_IGNORED = {"store", "metadata", "service_tier"}  # OpenAI-side bookkeeping with no effect on the answer


def _model_id(model: str) -> str:
    return model.removeprefix("models/")


def generate_url(base_url: str, model: str, *, stream: bool) -> str:
    base = f"{base_url.rstrip('/')}/{API_VERSION}/models/{quote(_model_id(model), safe='')}"
    return f"{base}:streamGenerateContent?alt=sse" if stream else f"{base}:generateContent"


def embed_url(base_url: str, model: str) -> str:
    return f"{base_url.rstrip('/')}/{API_VERSION}/models/{quote(_model_id(model), safe='')}:batchEmbedContents"


def auth_headers(secret: str) -> dict[str, str]:
    return {"x-goog-api-key": secret}


def _unsupported(param: str, detail: str = "") -> ProxyError:
    return ProxyError.invalid_request(
        f"`{param}` is not supported for Gemini models through /v1/chat/completions{detail}.",
        param=param,
        code="unsupported_parameter",
    )


def _bad(message: str, param: str) -> ProxyError:
    return ProxyError.invalid_request(message, param=param)


# --- schemas -----------------------------------------------------------------------------------------------


def to_schema(schema: Any, *, param: str) -> dict[str, Any]:
    """A JSON Schema as Gemini's OpenAPI-subset Schema (see the module docstring)."""
    if not isinstance(schema, dict):
        raise _bad(f"`{param}` must be a JSON Schema object.", param)
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key not in _SCHEMA_KEYS:
            continue
        if key == "type":
            types = value if isinstance(value, list) else [value]
            named = [t for t in types if isinstance(t, str) and t != "null"]
            if len(named) != 1:
                raise _unsupported(param, f" (a schema type of {value!r})")
            out["type"] = named[0].upper()
            if "null" in types:
                out["nullable"] = True
        elif key == "properties":
            if not isinstance(value, dict):
                raise _bad(f"`{param}.properties` must be an object.", param)
            out[key] = {name: to_schema(sub, param=f"{param}.properties.{name}") for name, sub in value.items()}
        elif key == "items":
            out[key] = to_schema(value, param=f"{param}.items")
        elif key == "anyOf":
            if not isinstance(value, list):
                raise _bad(f"`{param}.anyOf` must be an array.", param)
            out[key] = [to_schema(sub, param=f"{param}.anyOf") for sub in value]
        else:
            out[key] = value
    return out


# --- request: OpenAI chat -> Gemini ------------------------------------------------------------------------


def _text_of(content: Any, *, param: str) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise _bad(f"`{param}` may only hold text parts here.", param)
            parts.append(part["text"])
        return "\n\n".join(parts)
    raise _bad(f"`{param}` must be a string or an array of content parts.", param)


_MIME_BY_EXTENSION = {
    "png": "image/png",
    "jpg": "image/jpeg",
    "jpeg": "image/jpeg",
    "webp": "image/webp",
    "gif": "image/gif",
    "heic": "image/heic",
    "heif": "image/heif",
}


def _image_part(part: dict[str, Any], *, param: str) -> dict[str, Any]:
    image = part.get("image_url")
    url = image.get("url") if isinstance(image, dict) else image
    if not isinstance(url, str) or not url:
        raise _bad(f"`{param}.image_url.url` is required.", param)
    if url.startswith("data:"):
        header, sep, data = url[5:].partition(",")
        mime, _, encoding = header.partition(";")
        if not sep or encoding != "base64" or not mime:
            raise _bad(f"`{param}` must be a base64 data URL (data:<mime>;base64,<data>).", param)
        return {"inlineData": {"mimeType": mime, "data": data}}
    if url.startswith(("https://", "http://", "gs://")):
        extension = url.split("?")[0].rsplit(".", 1)[-1].lower()
        return {"fileData": {"mimeType": _MIME_BY_EXTENSION.get(extension, "image/jpeg"), "fileUri": url}}
    raise _bad(f"`{param}.image_url.url` must be an http(s) URL or a base64 data URL.", param)


def _user_parts(content: Any, *, param: str) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"text": content}]
    if not isinstance(content, list):
        raise _bad(f"`{param}` must be a string or an array of content parts.", param)
    parts: list[dict[str, Any]] = []
    for index, part in enumerate(content):
        where = f"{param}[{index}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and isinstance(part.get("text"), str):  # type: ignore[union-attr]
            parts.append({"text": part["text"]})  # type: ignore[index]
        elif kind == "image_url":
            parts.append(_image_part(part, param=where))  # type: ignore[arg-type]
        else:
            raise _unsupported(where, f" (content part type {kind!r})")
    return parts


def _append(contents: list[dict[str, Any]], role: str, parts: list[dict[str, Any]]) -> None:
    """Gemini wants alternating turns: consecutive parts of one role go into one turn."""
    if not parts:
        return
    if contents and contents[-1]["role"] == role:
        contents[-1]["parts"].extend(parts)
    else:
        contents.append({"role": role, "parts": parts})


def _contents(messages: list[Any]) -> tuple[str, list[dict[str, Any]]]:
    system: list[str] = []
    contents: list[dict[str, Any]] = []
    names_by_call: dict[str, str] = {}
    for index, message in enumerate(messages):
        param = f"messages[{index}]"
        role = message.get("role")
        if role in ("system", "developer"):
            system.append(_text_of(message.get("content"), param=f"{param}.content"))
        elif role == "user":
            _append(contents, "user", _user_parts(message.get("content"), param=f"{param}.content"))
        elif role == "assistant":
            parts: list[dict[str, Any]] = []
            text = _text_of(message.get("content"), param=f"{param}.content")
            if text:
                parts.append({"text": text})
            for position, call in enumerate(message.get("tool_calls") or []):
                where = f"{param}.tool_calls[{position}]"
                function = call.get("function") if isinstance(call, dict) else None
                if not isinstance(function, dict) or not isinstance(function.get("name"), str):
                    raise _bad(f"`{where}.function.name` is required.", where)
                try:
                    args = orjson.loads(function.get("arguments") or "{}")
                except orjson.JSONDecodeError:
                    raise _bad(f"`{where}.function.arguments` is not valid JSON.", where) from None
                if not isinstance(args, dict):
                    raise _bad(f"`{where}.function.arguments` must be a JSON object.", where)
                if isinstance(call.get("id"), str):
                    names_by_call[call["id"]] = function["name"]
                parts.append({"functionCall": {"name": function["name"], "args": args}})
            _append(contents, "model", parts)
        elif role == "tool":
            call_id = message.get("tool_call_id")
            if not isinstance(call_id, str) or call_id not in names_by_call:
                raise _bad(
                    f"`{param}.tool_call_id` must name a tool call made by an earlier assistant message.",
                    f"{param}.tool_call_id",
                )
            text = _text_of(message.get("content"), param=f"{param}.content")
            try:
                parsed = orjson.loads(text) if text else {}
            except orjson.JSONDecodeError:
                parsed = text
            response = parsed if isinstance(parsed, dict) else {"result": parsed}
            _append(contents, "user", [{"functionResponse": {"name": names_by_call[call_id], "response": response}}])
        else:
            raise _bad(f"`{param}.role` {role!r} is not a chat role.", f"{param}.role")
    return "\n\n".join(s for s in system if s), contents


def _tools(tools: Any) -> list[dict[str, Any]]:
    """Function tools as one `functionDeclarations` tool; `{"type": "google_search"}` and
    `{"type": "google_maps"}` as Gemini's grounding tools (GROUNDING_TOOLS)."""
    if not isinstance(tools, list):
        raise _bad("`tools` must be an array.", "tools")
    declarations = []
    grounding: list[dict[str, Any]] = []
    for index, tool in enumerate(tools):
        param = f"tools[{index}]"
        kind = tool.get("type") if isinstance(tool, dict) else None
        if isinstance(kind, str) and kind in GROUNDING_TOOLS:
            options = {k: v for k, v in tool.items() if k != "type"}  # type: ignore[union-attr]
            if options:
                raise _unsupported(f"{param}.{next(iter(options))}", f" (a {kind} tool takes no options here)")
            if not any(GROUNDING_TOOLS[kind] in g for g in grounding):
                grounding.append({GROUNDING_TOOLS[kind]: {}})
            continue
        if not isinstance(tool, dict) or kind != "function" or not isinstance(tool.get("function"), dict):
            raise _unsupported(param, " (only function, google_search and google_maps tools)")
        function = tool["function"]
        if not isinstance(function.get("name"), str):
            raise _bad(f"`{param}.function.name` is required.", param)
        declaration: dict[str, Any] = {"name": function["name"]}
        if isinstance(function.get("description"), str):
            declaration["description"] = function["description"]
        if function.get("parameters") is not None:
            declaration["parameters"] = to_schema(function["parameters"], param=f"{param}.function.parameters")
        declarations.append(declaration)
    return ([{"functionDeclarations": declarations}] if declarations else []) + grounding


def _tool_config(choice: Any) -> dict[str, Any] | None:
    if choice is None:
        return None
    if choice == "auto":
        return {"functionCallingConfig": {"mode": "AUTO"}}
    if choice == "none":
        return {"functionCallingConfig": {"mode": "NONE"}}
    if choice == "required":
        return {"functionCallingConfig": {"mode": "ANY"}}
    if isinstance(choice, dict) and isinstance((choice.get("function") or {}).get("name"), str):
        return {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": [choice["function"]["name"]]}}
    raise _bad("`tool_choice` must be auto, none, required or a named function.", "tool_choice")


def _number(body: dict[str, Any], name: str) -> float | int | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise _bad(f"`{name}` must be a number.", name)
    return value


def chat_to_gemini(body: dict[str, Any], *, upstream_model: str) -> dict[str, Any]:
    """An OpenAI chat request as a Gemini GenerateContentRequest (the model goes in the URL)."""
    for name in body:
        if name not in _TRANSLATED and name not in _IGNORED and body[name] is not None:
            raise _unsupported(name)
    if body.get("parallel_tool_calls") is False:
        raise _unsupported("parallel_tool_calls", " (Gemini decides how many calls to make; false cannot be enforced)")
    system, contents = _contents(body["messages"])
    if not contents:
        raise _bad("`messages` needs at least one user or assistant message for Gemini models.", "messages")
    out: dict[str, Any] = {"contents": contents}
    if system:
        out["systemInstruction"] = {"parts": [{"text": system}]}
    if body.get("tools"):
        out["tools"] = _tools(body["tools"])
    config = _tool_config(body.get("tool_choice"))
    if config is not None:
        out["toolConfig"] = config
    generation: dict[str, Any] = {}
    for openai_name, gemini_name in (
        ("temperature", "temperature"),
        ("top_p", "topP"),
        ("presence_penalty", "presencePenalty"),
        ("frequency_penalty", "frequencyPenalty"),
    ):
        value = _number(body, openai_name)
        if value is not None:
            generation[gemini_name] = value
    cap = body.get("max_completion_tokens") or body.get("max_tokens")
    if cap is not None:
        generation["maxOutputTokens"] = cap
    if body.get("n") is not None and body["n"] != 1:
        generation["candidateCount"] = body["n"]
    if body.get("seed") is not None:
        if not isinstance(body["seed"], int) or isinstance(body["seed"], bool):
            raise _bad("`seed` must be an integer.", "seed")
        generation["seed"] = body["seed"]
    stop = body.get("stop")
    if stop is not None:
        stops = [stop] if isinstance(stop, str) else stop
        if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
            raise _bad("`stop` must be a string or an array of strings.", "stop")
        if stops:
            generation["stopSequences"] = stops
    response_format = body.get("response_format")
    if response_format is not None:
        kind = response_format.get("type") if isinstance(response_format, dict) else None
        if kind == "json_object":
            generation["responseMimeType"] = "application/json"
        elif kind == "json_schema":
            spec = response_format.get("json_schema")  # type: ignore[union-attr]
            if not isinstance(spec, dict) or not isinstance(spec.get("schema"), dict):
                raise _bad("`response_format.json_schema.schema` is required.", "response_format")
            generation["responseMimeType"] = "application/json"
            generation["responseSchema"] = to_schema(spec["schema"], param="response_format.json_schema.schema")
        elif kind != "text":
            raise _bad("`response_format.type` must be text, json_object or json_schema.", "response_format")
    effort = body.get("reasoning_effort")
    if effort is not None:
        if not isinstance(effort, str) or effort not in THINKING_BUDGETS:
            raise _bad(f"`reasoning_effort` must be one of {', '.join(THINKING_BUDGETS)}.", "reasoning_effort")
        generation["thinkingConfig"] = {"thinkingBudget": THINKING_BUDGETS[effort]}
    if generation:
        out["generationConfig"] = generation
    return out


# --- usage -------------------------------------------------------------------------------------------------


def _n(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def bills_grounding_per_prompt(model: str) -> bool:
    """Whether `model` bills grounding per grounded prompt (Gemini 1.x / 2.x), not per search query."""
    return PER_PROMPT_GROUNDING.match(model) is not None


def offers_google_search(tools: Any) -> bool:
    """Whether a chat request's `tools` ask for Grounding with Google Search (for its reservation)."""
    return isinstance(tools, list) and any(isinstance(t, dict) and t.get("type") == "google_search" for t in tools)


def _grounding(metadata: Any) -> tuple[list[str], bool]:
    """The search queries and whether Maps grounded, in one candidate's `groundingMetadata`."""
    if not isinstance(metadata, dict):
        return [], False
    queries = metadata.get("webSearchQueries")
    searched = [q for q in queries if isinstance(q, str)] if isinstance(queries, list) else []
    chunks = metadata.get("groundingChunks")
    maps = bool(metadata.get("googleMapsWidgetContextToken")) or (
        isinstance(chunks, list) and any(isinstance(c, dict) and isinstance(c.get("maps"), dict) for c in chunks)
    )
    return searched, maps


def grounding_units(metadata: list[Any], *, model: str) -> tuple[tuple[str, int], ...]:
    """Billable grounding units of a response, from each candidate's `groundingMetadata` (see the module
    docstring): per grounded prompt for Gemini 1.x / 2.x, per search query (Search only) after."""
    searches = 0
    maps = False
    for item in metadata:
        queries, mapped = _grounding(item)
        searches += len(queries)
        maps = maps or mapped
    if bills_grounding_per_prompt(model):
        return tuple((unit, 1) for unit, used in ((MAPS_GROUNDING, maps), (WEB_SEARCH, searches > 0)) if used)
    return ((WEB_SEARCH, searches),) if searches else ()


def usage_from_gemini(metadata: dict[str, Any] | None, *, units: tuple[tuple[str, int], ...] = ()) -> Usage | None:
    """Normalise a `usageMetadata` (None when absent), with the response's grounding `units`."""
    if not isinstance(metadata, dict):
        return None
    prompt = _n(metadata.get("promptTokenCount"))
    cached = min(_n(metadata.get("cachedContentTokenCount")), prompt)
    return Usage(
        input=prompt - cached + _n(metadata.get("toolUsePromptTokenCount")),
        cached_input=cached,
        output=_n(metadata.get("candidatesTokenCount")),
        reasoning=_n(metadata.get("thoughtsTokenCount")),
        units=units,
    )


def openai_usage(usage: Usage) -> dict[str, Any]:
    prompt = usage.input + usage.cached_input
    completion = usage.output + usage.reasoning
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": usage.cached_input},
        "completion_tokens_details": {"reasoning_tokens": usage.reasoning},
    }


# --- response: Gemini -> OpenAI chat -------------------------------------------------------------------------


def call_id(name: str, args: Any, position: int, given: Any = None) -> str:
    """Gemini may send no id for a function call; OpenAI clients need one to answer it."""
    if isinstance(given, str) and given:
        return given
    digest = hashlib.sha256(orjson.dumps([name, args, position])).hexdigest()[:24]
    return f"call_{digest}"


def _candidate_message(candidate: dict[str, Any]) -> tuple[dict[str, Any], str]:
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for part in (candidate.get("content") or {}).get("parts") or []:
        if not isinstance(part, dict) or part.get("thought"):
            continue
        if isinstance(part.get("text"), str):
            texts.append(part["text"])
        elif isinstance(part.get("functionCall"), dict):
            call = part["functionCall"]
            name, args = str(call.get("name") or ""), call.get("args") or {}
            calls.append(
                {
                    "id": call_id(name, args, len(calls), call.get("id")),
                    "type": "function",
                    "function": {"name": name, "arguments": orjson.dumps(args).decode()},
                }
            )
    message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts else None}
    if calls:
        message["tool_calls"] = calls
        return message, "tool_calls"
    return message, FINISH_REASONS.get(str(candidate.get("finishReason") or "STOP"), "stop")


def _index_of(candidate: dict[str, Any], position: int) -> int:
    index = candidate.get("index")
    return index if isinstance(index, int) and not isinstance(index, bool) else position


def response_to_chat(response: dict[str, Any], *, model: str) -> tuple[dict[str, Any], Usage | None]:
    """`model`: the model the request was sent to (it decides how grounding is billed)."""
    candidates = [c for c in response.get("candidates") or [] if isinstance(c, dict)]
    units = grounding_units([c.get("groundingMetadata") for c in candidates], model=_model_id(model))
    usage = usage_from_gemini(response.get("usageMetadata"), units=units)
    choices = []
    for position, candidate in enumerate(response.get("candidates") or []):
        if not isinstance(candidate, dict):
            continue
        message, finish = _candidate_message(candidate)
        index = _index_of(candidate, position)
        choices.append({"index": index, "message": message, "logprobs": None, "finish_reason": finish})
    if not choices:  # the prompt itself was blocked (promptFeedback.blockReason)
        choices.append(
            {
                "index": 0,
                "message": {"role": "assistant", "content": None},
                "logprobs": None,
                "finish_reason": "content_filter",
            }
        )
    chat: dict[str, Any] = {
        "id": f"chatcmpl-{response.get('responseId') or ''}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": str(response.get("modelVersion") or _model_id(model)),
        "choices": choices,
    }
    if usage is not None:
        chat["usage"] = openai_usage(usage)
    return chat, usage


# --- stream: Gemini chunks -> OpenAI chunks --------------------------------------------------------------------


def parse_sse(buffer: bytes) -> tuple[list[dict[str, Any]], bytes]:
    """Complete `data:` events in `buffer` (each one GenerateContentResponse), and the rest."""
    events, rest = _parse_typed_sse(buffer)
    return [data for _, data in events], rest


class StreamTranslator:
    """Feed Gemini stream chunks in order; get the OpenAI chunks to send. Gemini ends a stream by
    closing it, so `finish()` (called then) sends the finish_reason chunk and the usage chunk."""

    def __init__(self, *, include_usage: bool, model: str) -> None:
        self.include_usage = include_usage
        self.model = _model_id(model)
        self.requested_model = self.model  # decides how grounding is billed (modelVersion may differ)
        self._usage_metadata: dict[str, Any] | None = None
        self._grounding: dict[int, Any] = {}  # candidate index -> its latest groundingMetadata
        self.id = "chatcmpl-"
        self.created = int(time.time())
        self.text_parts: list[str] = []
        self.done = False
        self._started = False
        self._finish: dict[int, str] = {}
        self._tool_counts: dict[int, int] = {}

    @property
    def usage(self) -> Usage | None:
        """The latest (cumulative) usageMetadata, with the grounding of the candidates seen so far."""
        units = grounding_units(list(self._grounding.values()), model=self.requested_model)
        return usage_from_gemini(self._usage_metadata, units=units)

    def _chunk(self, index: int, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }

    def feed(self, data: dict[str, Any]) -> list[dict[str, Any]]:
        if isinstance(data.get("error"), dict):
            error = data["error"]
            return [{"error": {"message": str(error.get("message") or "upstream error"), "type": error.get("status")}}]
        if data.get("responseId") and self.id == "chatcmpl-":
            self.id = f"chatcmpl-{data['responseId']}"
        if data.get("modelVersion"):
            self.model = str(data["modelVersion"])
        if isinstance(data.get("usageMetadata"), dict):
            self._usage_metadata = data["usageMetadata"]  # cumulative: the latest is the total
        chunks: list[dict[str, Any]] = []
        if not self._started:
            self._started = True
            chunks.append(self._chunk(0, {"role": "assistant", "content": ""}))
        for position, candidate in enumerate(data.get("candidates") or []):
            if not isinstance(candidate, dict):
                continue
            index = _index_of(candidate, position)
            if isinstance(candidate.get("groundingMetadata"), dict):
                self._grounding[index] = candidate["groundingMetadata"]
            for part in (candidate.get("content") or {}).get("parts") or []:
                if not isinstance(part, dict) or part.get("thought"):
                    continue
                if isinstance(part.get("text"), str) and part["text"]:
                    self.text_parts.append(part["text"])
                    chunks.append(self._chunk(index, {"content": part["text"]}))
                elif isinstance(part.get("functionCall"), dict):
                    call = part["functionCall"]
                    name, args = str(call.get("name") or ""), call.get("args") or {}
                    arguments = orjson.dumps(args).decode()
                    slot = self._tool_counts.get(index, 0)
                    self._tool_counts[index] = slot + 1
                    self.text_parts.append(name + arguments)
                    delta = {
                        "tool_calls": [
                            {
                                "index": slot,
                                "id": call_id(name, args, slot, call.get("id")),
                                "type": "function",
                                "function": {"name": name, "arguments": arguments},
                            }
                        ]
                    }
                    chunks.append(self._chunk(index, delta))
            if candidate.get("finishReason"):
                self.done = True
                reason = FINISH_REASONS.get(str(candidate["finishReason"]), "stop")
                self._finish[index] = "tool_calls" if self._tool_counts.get(index) else reason
        if not data.get("candidates") and (data.get("promptFeedback") or {}).get("blockReason"):
            self.done = True
            self._finish[0] = "content_filter"
        return chunks

    def finish(self) -> list[dict[str, Any]]:
        chunks: list[dict[str, Any]] = []
        if not self._started:
            chunks.append(self._chunk(0, {"role": "assistant", "content": ""}))
            self._started = True
        for index in sorted(self._finish) or [0]:
            reason = self._finish.get(index, "tool_calls" if self._tool_counts.get(index) else "stop")
            chunks.append(self._chunk(index, {}, reason))
        if self.include_usage and self.usage is not None:
            chunks.append(
                {
                    "id": self.id,
                    "object": "chat.completion.chunk",
                    "created": self.created,
                    "model": self.model,
                    "choices": [],
                    "usage": openai_usage(self.usage),
                }
            )
        return chunks


# --- embeddings ---------------------------------------------------------------------------------------------


def _unsupported_embedding(param: str, detail: str = "") -> ProxyError:
    return ProxyError.invalid_request(
        f"`{param}` is not supported for Gemini models through /v1/embeddings{detail}.",
        param=param,
        code="unsupported_parameter",
    )


def embeddings_to_gemini(body: dict[str, Any], *, upstream_model: str) -> dict[str, Any]:
    value = body.get("input")
    texts = [value] if isinstance(value, str) else value
    if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
        raise _unsupported_embedding("input", " (Gemini embeds text: send a string or an array of strings)")
    if body.get("encoding_format") not in (None, "float", "base64"):
        raise ProxyError.invalid_request("`encoding_format` must be float or base64.", param="encoding_format")
    for name in body:
        if name not in ("model", "input", "dimensions", "encoding_format", "user"):
            raise _unsupported_embedding(name)
    model = f"models/{_model_id(upstream_model)}"
    request: dict[str, Any] = {"model": model}
    if body.get("dimensions") is not None:
        request["outputDimensionality"] = body["dimensions"]
    return {"requests": [{**request, "content": {"parts": [{"text": text}]}} for text in texts]}


def _encode(values: list[Any], encoding_format: Any) -> Any:
    """OpenAI's `encoding_format: base64` is the vector as little-endian float32 bytes, base64-encoded
    (the `openai` SDK asks for it by default and decodes it)."""
    floats = [float(v) for v in values]
    if encoding_format == "base64":
        return base64.b64encode(struct.pack(f"<{len(floats)}f", *floats)).decode()
    return floats


def gemini_to_embeddings(
    response: dict[str, Any], *, model: str, usage: Usage, encoding_format: Any = None
) -> dict[str, Any]:
    data = [
        {"object": "embedding", "index": index, "embedding": _encode(list(item.get("values") or []), encoding_format)}
        for index, item in enumerate(response.get("embeddings") or [])
        if isinstance(item, dict)
    ]
    return {
        "object": "list",
        "data": data,
        "model": _model_id(model),
        "usage": {"prompt_tokens": usage.input, "total_tokens": usage.input},
    }


def error_message(body: bytes) -> str | None:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    error = data.get("error") if isinstance(data, dict) else None
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        return str(error["message"])
    return None
