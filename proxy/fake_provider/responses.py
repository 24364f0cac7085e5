"""The fake provider's OpenAI Responses API (`POST /v1/responses`, and Azure's `/openai/v1/responses`):
a response object with output items and usage, or the streaming event sequence, per OpenAI's public
API reference. Deterministic like the rest of the fake provider. With a `web_search` tool offered it
searches (`max_tool_calls` times, default once) before answering: one `web_search_call` output item per
search, and the answer cites it."""

from __future__ import annotations

from typing import Any

import orjson

from proxy.fake_provider import app as fake
from proxy.types import Send


def _input_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    parts: list[str] = []
    if isinstance(value, list):
        for item in value:
            if isinstance(item, dict):
                content = item.get("content")
                if isinstance(content, str):
                    parts.append(content)
                elif isinstance(content, list):
                    parts.extend(str(p.get("text", "")) for p in content if isinstance(p, dict))
                if isinstance(item.get("output"), str):
                    parts.append(item["output"])
    return " ".join(parts)


def _function_call(payload: dict[str, Any]) -> dict[str, Any] | None:
    """A call of the first function tool, when the last input item is the user's (not a tool output)."""
    tools = [t for t in payload.get("tools") or [] if isinstance(t, dict) and t.get("type") == "function"]
    items = payload.get("input")
    if not tools or (isinstance(items, list) and items and isinstance(items[-1], dict) and "output" in items[-1]):
        return None
    name = str(tools[0].get("name") or "tool")
    arguments = orjson.dumps(fake._example_value(tools[0].get("parameters") or {"type": "object"})).decode()
    call_id = f"call_{fake._digest(name, arguments)[:20]}"
    return {
        "type": "function_call",
        "id": f"fc_{fake._digest(call_id)}",
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
        "status": "completed",
    }


def _web_searches(payload: dict[str, Any]) -> int:
    """Web searches to run: with a `web_search` (or `web_search_preview`) tool offered, `max_tool_calls`
    of them (default 1) when the last input item is the user's; none otherwise."""
    tools = [
        t for t in payload.get("tools") or [] if isinstance(t, dict) and str(t.get("type", "")).startswith("web_search")
    ]
    items = payload.get("input")
    if not tools or (isinstance(items, list) and items and isinstance(items[-1], dict) and "output" in items[-1]):
        return 0
    cap = payload.get("max_tool_calls")
    return cap if isinstance(cap, int) and not isinstance(cap, bool) and cap > 0 else 1


def _web_search_calls(payload: dict[str, Any], searches: int) -> list[dict[str, Any]]:
    """One `web_search_call` output item per search (what OpenAI bills as a web search tool call)."""
    query = _input_text(payload.get("input"))[:200] or "search"
    return [
        {
            "type": "web_search_call",
            "id": f"ws_{fake._digest('search', query, n)}",
            "status": "completed",
            "action": {"type": "search", "query": query},
        }
        for n in range(searches)
    ]


def _usage(prompt: int, output: int, controls: fake.Controls) -> dict[str, Any]:
    cached = min(controls.num("cached"), prompt)
    reasoning = min(controls.num("reasoning"), output)
    return {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": cached},
        "output_tokens": output,
        "output_tokens_details": {"reasoning_tokens": reasoning},
        "total_tokens": prompt + output,
    }


def _base(payload: dict[str, Any], controls: fake.Controls, response_id: str) -> dict[str, Any]:
    return {
        "id": response_id,
        "object": "response",
        "created_at": fake.CREATED,
        "status": "in_progress",
        "error": None,
        "incomplete_details": None,
        "instructions": payload.get("instructions"),
        "max_output_tokens": payload.get("max_output_tokens"),
        "model": controls.model or "gpt-4o-mini",
        "output": [],
        "parallel_tool_calls": True,
        "previous_response_id": payload.get("previous_response_id"),
        "temperature": payload.get("temperature", 1.0),
        "tool_choice": payload.get("tool_choice", "auto"),
        "tools": payload.get("tools") or [],
        "top_p": payload.get("top_p", 1.0),
        "usage": None,
        "metadata": payload.get("metadata") or {},
    }


def response(payload: dict[str, Any], controls: fake.Controls) -> dict[str, Any]:
    text_in = _input_text(payload.get("input")) + " " + str(payload.get("instructions") or "")
    response_id = f"resp_{fake._digest(controls.model, text_in)}"
    body = _base(payload, controls, response_id)
    searches = _web_searches(payload)
    body["output"] = _web_search_calls(payload, searches)
    call = _function_call(payload)
    if call is not None:
        body["output"].append(call)
        output_tokens = fake._tokens(call["arguments"]) + 5
    else:
        text = fake._answer([{"role": "user", "content": _input_text(payload.get("input"))}], controls.num("words", 12))
        annotations: list[dict[str, Any]] = []
        if searches:  # the answer cites what the search found
            url = f"https://example.com/search/{fake._digest(response_id)[:12]}"
            annotations.append(
                {"type": "url_citation", "start_index": 0, "end_index": len(text), "url": url, "title": "Result 1"}
            )
        body["output"].append(
            {
                "type": "message",
                "id": f"msg_{fake._digest(response_id)}",
                "status": "completed",
                "role": "assistant",
                "content": [{"type": "output_text", "text": text, "annotations": annotations}],
            }
        )
        output_tokens = len(text.split())
    body["status"] = "completed"
    body["usage"] = _usage(fake._tokens(text_in.strip()), output_tokens, controls)
    return body


async def stream(send: Send, payload: dict[str, Any], controls: fake.Controls) -> None:
    final = response(payload, controls)
    started = {**final, "status": "in_progress", "output": [], "usage": None}
    sequence = 0
    frames: list[bytes] = []

    def event(kind: str, data: dict[str, Any]) -> None:
        nonlocal sequence
        frames.append(
            f"event: {kind}\n".encode()
            + b"data: "
            + orjson.dumps({"type": kind, **data, "sequence_number": sequence})
            + b"\n\n"
        )
        sequence += 1

    event("response.created", {"response": started})
    event("response.in_progress", {"response": started})
    for index, item in enumerate(final["output"]):
        if item["type"] == "web_search_call":
            event("response.output_item.added", {"output_index": index, "item": {**item, "status": "in_progress"}})
            for stage in ("in_progress", "searching", "completed"):
                event(f"response.web_search_call.{stage}", {"output_index": index, "item_id": item["id"]})
            event("response.output_item.done", {"output_index": index, "item": item})
            continue
        if item["type"] == "function_call":
            event(
                "response.output_item.added",
                {"output_index": index, "item": {**item, "arguments": "", "status": "in_progress"}},
            )
            arguments = item["arguments"]
            for i in range(0, len(arguments), 8):
                event(
                    "response.function_call_arguments.delta",
                    {"output_index": index, "item_id": item["id"], "delta": arguments[i : i + 8]},
                )
            event(
                "response.function_call_arguments.done",
                {"output_index": index, "item_id": item["id"], "arguments": arguments},
            )
            event("response.output_item.done", {"output_index": index, "item": item})
            continue
        text = item["content"][0]["text"]
        event(
            "response.output_item.added",
            {"output_index": index, "item": {**item, "status": "in_progress", "content": []}},
        )
        part: dict[str, Any] = {"type": "output_text", "text": "", "annotations": []}
        event(
            "response.content_part.added",
            {"output_index": index, "item_id": item["id"], "content_index": 0, "part": part},
        )
        for i, word in enumerate(text.split(" ")):
            delta = word if i == 0 else " " + word
            event(
                "response.output_text.delta",
                {"output_index": index, "item_id": item["id"], "content_index": 0, "delta": delta},
            )
        event(
            "response.output_text.done",
            {"output_index": index, "item_id": item["id"], "content_index": 0, "text": text},
        )
        done_part = {**part, "text": text, "annotations": item["content"][0]["annotations"]}
        event(
            "response.content_part.done",
            {"output_index": index, "item_id": item["id"], "content_index": 0, "part": done_part},
        )
        event("response.output_item.done", {"output_index": index, "item": item})
    if controls.flag("no_usage"):
        final = {**final, "usage": None}
    event("response.completed", {"response": final})
    await fake._stream_start(send, controls)
    await fake._stream_frames(send, frames, controls)


def azure_served_model(deployment: str) -> str:
    """What Azure reports as `model`: the model behind the deployment (dated, as Azure does)."""
    name = deployment.partition("@")[0]
    dated = {"gpt-4o-mini": "gpt-4o-mini-2024-07-18", "gpt-4o": "gpt-4o-2024-08-06"}
    if name in dated:
        return dated[name]
    return name if name in fake.OPENAI_MODELS else dated["gpt-4o-mini"]
