"""The fake provider's Gemini API, per Google's public reference: `POST /v1beta/models/{model}:generateContent`,
`:streamGenerateContent?alt=sse`, `:embedContent`, `:batchEmbedContents`; and Anthropic's
`POST /v1/messages/count_tokens`. Deterministic like the rest of the fake provider; the same controls
(`@k=v` suffixes on the model in the URL, or `x-fake-*` headers) apply.

Grounding, only when the request offers the tool: with `googleSearch` each candidate carries a
`groundingMetadata` whose `webSearchQueries` has one query per question (`?`) in the last user turn (at
least one), with web grounding chunks and supports; with `googleMaps` it carries `maps` grounding chunks
(and `googleMapsWidgetContextToken` when the tool asks for `enableWidget`). Streams send it on each
candidate's last chunk, as Gemini does."""

from __future__ import annotations

import hashlib
from typing import Any
from urllib.parse import unquote

import orjson

from proxy.fake_provider import app as fake
from proxy.types import Send


def model_and_method(path: str) -> tuple[str, str] | None:
    """`/v1beta/models/gemini-2.5-flash:generateContent` → ("gemini-2.5-flash", "generateContent")."""
    prefix = "/v1beta/models/"
    if not path.startswith(prefix) or ":" not in path:
        return None
    model, _, method = unquote(path[len(prefix) :]).rpartition(":")
    return (model, method) if model and method else None


def invalid(payload: Any) -> str | None:
    """What Gemini refuses with 400 INVALID_ARGUMENT (the checks a translation bug would trip)."""
    if not isinstance(payload, dict):
        return "Invalid JSON payload received."
    contents = payload.get("contents")
    if not isinstance(contents, list) or not contents:
        return "* GenerateContentRequest.contents: contents is not specified"
    for index, turn in enumerate(contents):
        if not isinstance(turn, dict) or turn.get("role") not in ("user", "model"):
            return f"* GenerateContentRequest.contents[{index}].role: must be user or model"
        parts = turn.get("parts")
        if not isinstance(parts, list) or not parts:
            return f"* GenerateContentRequest.contents[{index}].parts: contents.parts must not be empty."
        for part in parts:
            if not isinstance(part, dict) or not (
                {"text", "inlineData", "fileData", "functionCall", "functionResponse"} & part.keys()
            ):
                return f"* GenerateContentRequest.contents[{index}].parts: unknown part"
    for index in range(1, len(contents)):
        if contents[index]["role"] == contents[index - 1]["role"]:
            return "Please ensure that multiturn requests alternate between user and model."
    return None


def _text(payload: dict[str, Any]) -> str:
    parts: list[str] = []
    system = payload.get("systemInstruction") or {}
    for part in system.get("parts") or []:
        if isinstance(part, dict) and isinstance(part.get("text"), str):
            parts.append(part["text"])
    for turn in payload.get("contents") or []:
        for part in turn.get("parts") or []:
            if isinstance(part.get("text"), str):
                parts.append(part["text"])
            elif "functionCall" in part or "functionResponse" in part:
                parts.append(orjson.dumps(part).decode())
    return " ".join(parts)


def _last_user_text(payload: dict[str, Any]) -> str:
    for turn in reversed(payload.get("contents") or []):
        if turn.get("role") == "user":
            return " ".join(str(p.get("text", "")) for p in turn.get("parts") or [] if isinstance(p, dict))
    return ""


def _function_call(payload: dict[str, Any]) -> dict[str, Any] | None:
    """A call of the first declared function when the last turn is the user's own text."""
    declarations = [d for tool in payload.get("tools") or [] for d in tool.get("functionDeclarations") or []]
    contents = payload.get("contents") or []
    mode = ((payload.get("toolConfig") or {}).get("functionCallingConfig") or {}).get("mode")
    if not declarations or mode == "NONE" or not contents or contents[-1].get("role") != "user":
        return None
    if any("functionResponse" in p for p in contents[-1].get("parts") or []):
        return None
    declaration = declarations[0]
    return {"name": declaration["name"], "args": fake._example_value(_lower_types(declaration.get("parameters")))}


def _lower_types(schema: Any) -> Any:
    """Gemini schemas spell types in capitals; the shared example builder expects JSON Schema's."""
    if isinstance(schema, dict):
        return {k: (v.lower() if k == "type" and isinstance(v, str) else _lower_types(v)) for k, v in schema.items()}
    if isinstance(schema, list):
        return [_lower_types(item) for item in schema]
    return schema or {"type": "object"}


def _grounding_tools(payload: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The grounding tools the request offers (`googleSearch`, `googleMaps`), with their options."""
    found: dict[str, dict[str, Any]] = {}
    for tool in payload.get("tools") or []:
        for name in ("googleSearch", "googleMaps"):
            if isinstance(tool, dict) and isinstance(tool.get(name), dict):
                found[name] = tool[name]
    return found


def search_queries(text: str) -> list[str]:
    """The queries the fake runs for a prompt: one per question in it (at least one)."""
    questions = [q.strip() for q in text.split("?")[:-1] if q.strip()]
    return [q[:80] for q in questions] or [text.strip()[:80] or "search"]


def _grounding_metadata(payload: dict[str, Any], answer: str) -> dict[str, Any] | None:
    tools = _grounding_tools(payload)
    if not tools or _function_call(payload) is not None:
        return None
    text = _last_user_text(payload)
    metadata: dict[str, Any] = {}
    chunks: list[dict[str, Any]] = []
    if "googleSearch" in tools:
        queries = search_queries(text)
        metadata["webSearchQueries"] = queries
        metadata["searchEntryPoint"] = {"renderedContent": f'<div class="gsi">{len(queries)} searches</div>'}
        chunks += [
            {"web": {"uri": f"https://vertexaisearch.example/grounding/{fake._digest(q)[:12]}", "title": f"{q}.com"}}
            for q in queries
        ]
    if "googleMaps" in tools:
        digest = fake._digest("maps", text)
        chunks.append(
            {
                "maps": {
                    "uri": f"https://maps.google.com/?cid={digest[:10]}",
                    "title": "A place",
                    "placeId": f"places/{digest[:16]}",
                }
            }
        )
        if tools["googleMaps"].get("enableWidget"):
            metadata["googleMapsWidgetContextToken"] = f"widgetcontent/{digest}"
    metadata["groundingChunks"] = chunks
    metadata["groundingSupports"] = [
        {
            "segment": {"startIndex": 0, "endIndex": len(answer.encode()), "text": answer},
            "groundingChunkIndices": list(range(len(chunks))),
        }
    ]
    return metadata


def _usage(prompt: int, output: int, controls: fake.Controls) -> dict[str, Any]:
    cached = min(controls.num("cached"), prompt)
    thoughts = controls.num("reasoning")
    usage: dict[str, Any] = {
        "promptTokenCount": prompt,
        "candidatesTokenCount": output,
        "totalTokenCount": prompt + output + thoughts,
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": prompt}],
    }
    if cached:
        usage["cachedContentTokenCount"] = cached
    if thoughts:
        usage["thoughtsTokenCount"] = thoughts
    return usage


def _candidates(payload: dict[str, Any], controls: fake.Controls) -> tuple[list[dict[str, Any]], int]:
    count = int((payload.get("generationConfig") or {}).get("candidateCount") or 1)
    call = _function_call(payload)
    candidates: list[dict[str, Any]] = []
    output = 0
    for index in range(count):
        parts: list[dict[str, Any]]
        if call is not None:
            parts = [{"functionCall": call}]
            output += fake._tokens(orjson.dumps(call).decode())
        else:
            text = fake._answer(
                [{"role": "user", "content": f"{_last_user_text(payload)} {index or ''}".strip()}],
                controls.num("words", 12),
            )
            parts = [{"text": text}]
            output += len(text.split())
        candidate: dict[str, Any] = {
            "content": {"role": "model", "parts": parts},
            "finishReason": "STOP",
            "index": index,
        }
        grounding = _grounding_metadata(payload, str(parts[0].get("text", "")))
        if grounding is not None:
            candidate["groundingMetadata"] = grounding
        candidates.append(candidate)
    return candidates, output


def generate(payload: dict[str, Any], model: str, controls: fake.Controls) -> dict[str, Any]:
    candidates, output = _candidates(payload, controls)
    return {
        "candidates": candidates,
        "usageMetadata": _usage(fake._tokens(_text(payload)), output, controls),
        "modelVersion": model,
        "responseId": fake._digest(model, _text(payload)),
    }


async def stream(send: Send, payload: dict[str, Any], model: str, controls: fake.Controls) -> None:
    """The text arrives in several chunks (each a GenerateContentResponse with cumulative usage); the
    last chunk carries finishReason. A function call arrives whole, as Gemini sends it."""
    full = generate(payload, model, controls)
    prompt = full["usageMetadata"]["promptTokenCount"]
    frames: list[bytes] = []

    def frame(candidates: list[dict[str, Any]], output: int) -> None:
        body: dict[str, Any] = {"candidates": candidates, "modelVersion": model, "responseId": full["responseId"]}
        if not controls.flag("no_usage"):
            body["usageMetadata"] = _usage(prompt, output, controls)
        frames.append(b"data: " + orjson.dumps(body) + b"\r\n\r\n")

    for candidate in full["candidates"]:
        part = candidate["content"]["parts"][0]
        index = candidate["index"]
        if "functionCall" in part:
            frame([{**candidate}], full["usageMetadata"]["candidatesTokenCount"])
            continue
        words = part["text"].split(" ")
        pieces = [" ".join(words[i : i + 3]) for i in range(0, len(words), 3)]
        sent = 0
        for position, piece in enumerate(pieces):
            text = piece if position == 0 else " " + piece
            sent += len(piece.split(" "))
            chunk: dict[str, Any] = {"content": {"role": "model", "parts": [{"text": text}]}, "index": index}
            if position == len(pieces) - 1:
                chunk["finishReason"] = "STOP"
                if "groundingMetadata" in candidate:
                    chunk["groundingMetadata"] = candidate["groundingMetadata"]
            frame([chunk], sent)
    await fake._stream_start(send, controls)
    await fake._stream_frames(send, frames, controls)


def _vector(text: str, dims: int) -> list[float]:
    seed = hashlib.sha256(text.encode()).digest()
    return [((seed[i % 32] + i) % 200 - 100) / 100 for i in range(dims)]


def _embed_one(request: Any) -> dict[str, Any] | None:
    if not isinstance(request, dict):
        return None
    parts = (request.get("content") or {}).get("parts") or []
    text = " ".join(str(p.get("text", "")) for p in parts if isinstance(p, dict))
    if not text:
        return None
    return {"values": _vector(text, int(request.get("outputDimensionality") or 8))}


def embed(payload: Any, method: str) -> tuple[int, dict[str, Any]]:
    if method == "embedContent":
        one = _embed_one(payload)
        if one is None:
            return 400, fake.google_error(400, "* EmbedContentRequest.content: contents is not specified")
        return 200, {"embedding": one}
    requests = payload.get("requests") if isinstance(payload, dict) else None
    if not isinstance(requests, list) or not requests:
        return 400, fake.google_error(400, "* BatchEmbedContentsRequest.requests: requests is not specified")
    embeddings = [_embed_one(r) for r in requests]
    if any(e is None for e in embeddings):
        return 400, fake.google_error(400, "* BatchEmbedContentsRequest.requests.content: contents is not specified")
    return 200, {"embeddings": embeddings}


def count_tokens(payload: dict[str, Any]) -> dict[str, Any]:
    """Anthropic's /v1/messages/count_tokens: the input count a message request would report."""
    return {"input_tokens": max(fake._tokens(fake._anthropic_text(payload)), 1)}
