"""The request log: every request of the workspace, filtered (billing.requestlog.UsageFilter), newest first in
keyset pages; one request's detail (cost per token type, timings, tags, stored bodies); the CSV of everything
a filter matches, streamed, or built in the background (billing.exports) when it is too big; and the
settings for stored bodies (tenants.services.logging)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from fractions import Fraction
from typing import Any
from urllib.parse import urlencode

from django.conf import settings
from django.contrib import messages
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.http.response import HttpResponseBase
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from billing.exports import usage_export_parts, usage_export_request
from billing.models import RequestBody, UsageEvent, UsageExport
from billing.requestlog import CursorError, UsageFilter, decode_cursor, encode_cursor
from billing.statements import TOKEN_TYPE_LABELS, TOKEN_TYPES, _list_price, allocate
from config.errors import ApplicationError, NotFound
from contracts.bodies import BODY_MAX_BYTES
from contracts.money import usd_text
from contracts.pricing import Usage, cost_breakdown_usd
from dashboard.access import client_ip, forbidden, page_context, workspace_view
from tenants import services
from tenants.models import GatewayKey
from tenants.roles import Perm, role_allows

RECENT_EXPORTS = 10
_TOKEN_FIELDS = {
    "input": "input_tokens",
    "cached_input": "cached_input_tokens",
    "cache_write": "cache_write_tokens",
    "output": "output_tokens",
    "reasoning": "reasoning_tokens",
}


def _filters(request: HttpRequest) -> tuple[UsageFilter, list[str]]:
    return UsageFilter.parse(request.GET)


@workspace_view(Perm.USAGE_VIEW)
def requests_list(request: HttpRequest, slug: str) -> HttpResponse:
    workspace = request.workspace  # type: ignore[attr-defined]
    filters, problems = _filters(request)
    if filters.request:  # a request id: jump straight to it
        found = UsageEvent.objects.filter(workspace=workspace, request_id=filters.request).exists()
        if found:
            return redirect("dashboard:request_detail", slug, filters.request)
        problems.append(f"No request {filters.request[:64]} in this workspace.")
    after = before = None
    for name in ("after", "before"):
        text = request.GET.get(name, "")
        if text:
            try:
                cursor = decode_cursor(text)
            except CursorError:
                problems.append("That page link is not valid; showing the newest requests.")
                after = before = None
                break
            if name == "after":
                after = cursor
            else:
                before = cursor
    rows, has_newer, has_older = filters.page(workspace, after=after, before=before)
    query = filters.query()
    keys = (
        GatewayKey.objects.filter(workspace=workspace).order_by("name").values_list("public_id", "name", "revoked_at")
    )
    key_choices = [(str(pk), name, revoked) for pk, name, revoked in keys]
    exports = list(UsageExport.objects.filter(workspace=workspace).order_by("-created_at")[:RECENT_EXPORTS])
    for export in exports:
        try:
            export.described = UsageFilter.from_json(export.filters).describe()  # type: ignore[attr-defined]
        except (KeyError, ValueError):
            export.described = ""  # type: ignore[attr-defined]
    return render(
        request,
        "dashboard/requests.html",
        page_context(
            request,
            "requests",
            rows=rows,
            filters=filters,
            problems=problems,
            selected={name: request.GET.get(name, "")[:256].replace("\x00", "") for name in _FORM_FIELDS},
            keys=key_choices,
            query=query,
            newer=encode_cursor(rows[0].started_at, rows[0].pk) if rows and has_newer else "",
            older=encode_cursor(rows[-1].started_at, rows[-1].pk) if rows and has_older else "",
            paged=bool(after or before),
            exports=exports,
            analytics_query=_analytics_query(filters),
            stream_max=settings.TURNPIKE_EXPORT_STREAM_MAX_ROWS,
        ),
        status=400 if problems else 200,
    )


_FORM_FIELDS = (
    "range",
    "from",
    "to",
    "key",
    "provider",
    "model",
    "status",
    "error",
    "user",
    "tag",
    "request",
    "min_cost",
    "min_latency",
    "stream",
    "estimated",
)


def _lines(event: UsageEvent) -> tuple[list[dict[str, Any]], bool]:
    """Cost and charge per token type: the event's exact totals split in proportion to tokens x the
    model's current list price per type (as statements split them). Returns (lines, priced_split)."""
    tokens = {t: max(int(getattr(event, _TOKEN_FIELDS[t])), 0) for t in TOKEN_TYPES}
    price = _list_price(
        workspace_id=event.workspace_id, provider=event.provider, model=event.model_served or event.model_requested
    )
    weights: list[Fraction] = []
    if price is not None:
        units = tuple(sorted((k, int(v)) for k, v in (event.units or {}).items() if isinstance(v, int)))
        usage = Usage(
            input=tokens["input"],
            cached_input=tokens["cached_input"],
            cache_write=tokens["cache_write"],
            output=tokens["output"],
            reasoning=tokens["reasoning"],
            units=units,
        )
        breakdown = cost_breakdown_usd(price, usage)
        fees = sum((Fraction(v) for k, v in breakdown.items() if k not in TOKEN_TYPES), Fraction(0))
        weights = [Fraction(breakdown[t]) for t in TOKEN_TYPES] + [fees]
    priced_split = any(weights)
    if not priced_split:
        weights = [Fraction(tokens[t]) for t in TOKEN_TYPES] + [Fraction(0)]
    if not any(weights):
        weights = [Fraction(0)] * len(TOKEN_TYPES) + [Fraction(1)]
    costs = allocate(event.cost_nanos, weights) if event.cost_nanos is not None else [None] * len(weights)
    charges = allocate(event.charge_nanos, weights)
    labels = [TOKEN_TYPE_LABELS[t] for t in TOKEN_TYPES] + ["Per-request and unit fees"]
    quantities: list[int | None] = [tokens[t] for t in TOKEN_TYPES] + [None]
    lines = [
        {
            "label": label,
            "tokens": quantity,
            "cost": cost,
            "charge": charge,
            "cost_text": "unpriced" if cost is None else usd_text(cost),
            "charge_text": usd_text(charge),
        }
        for label, quantity, cost, charge in zip(labels, quantities, costs, charges, strict=True)
        if quantity or cost or charge
    ]
    return lines, priced_split


def _body_text(data: bytes) -> tuple[str, bool]:
    """The body as text (UTF-8 with replacement), pretty-printed if it is JSON; (text, is_json)."""
    text = data.decode("utf-8", errors="replace")
    try:
        return json.dumps(json.loads(text), indent=2, ensure_ascii=False), True
    except ValueError:
        return text, False


def _analytics_query(filters: UsageFilter) -> str:
    """The same range and the filters the analytics page understands (key, provider, model, status class)."""
    params = filters.params()
    names: tuple[str, ...] = ("range", "from", "to", "key", "provider", "model")
    keep: dict[str, str] = {name: params[name] for name in names if name in params}
    status = params.get("status", "")
    if status:
        keep["status"] = status if status.endswith("xx") else f"{status[0]}xx"
    return urlencode(keep)


@workspace_view(Perm.USAGE_VIEW)
def request_detail(request: HttpRequest, slug: str, request_id: str) -> HttpResponse:
    workspace = request.workspace  # type: ignore[attr-defined]
    if "\x00" in request_id or len(request_id) > 64:
        raise NotFound("No such request.")
    event = (
        UsageEvent.objects.filter(workspace=workspace, request_id=request_id)
        .select_related("key", "credential")
        .order_by("-started_at")
        .first()
    )
    if event is None:
        raise NotFound("No such request.")
    lines, priced_split = _lines(event)
    bodies: dict[str, Any] | None = None
    can_bodies = role_allows(request.membership.role, Perm.BODIES_VIEW)  # type: ignore[attr-defined]
    body_row = RequestBody.objects.filter(workspace=workspace, request_id=request_id).first()
    if body_row is not None and can_bodies:
        bodies = {}
        for part in ("request", "response"):
            text, is_json = _body_text(bytes(getattr(body_row, part)))
            bodies[part] = {"text": text, "json": is_json, "truncated": getattr(body_row, f"{part}_truncated")}
    return render(
        request,
        "dashboard/request_detail.html",
        page_context(
            request,
            "requests",
            e=event,
            lines=lines,
            priced_split=priced_split,
            cost_text="unpriced" if event.cost_nanos is None else usd_text(event.cost_nanos),
            charge_text=usd_text(event.charge_nanos),
            bodies=bodies,
            has_bodies=body_row is not None,
            body_kb=BODY_MAX_BYTES // 1024,
            metadata=sorted((str(k), v if isinstance(v, str) else json.dumps(v)) for k, v in event.metadata.items())
            if isinstance(event.metadata, dict)
            else [],
            units=sorted((event.units or {}).items()) if isinstance(event.units, dict) else [],
        ),
    )


@workspace_view(Perm.USAGE_VIEW)
def requests_csv(request: HttpRequest, slug: str) -> HttpResponseBase:
    """Every row the filter matches, streamed; too many rows: the user is sent to the background export."""
    workspace = request.workspace  # type: ignore[attr-defined]
    filters, problems = _filters(request)
    if problems:
        return HttpResponse(" ".join(problems), status=400, content_type="text/plain; charset=utf-8")
    limit = settings.TURNPIKE_EXPORT_STREAM_MAX_ROWS
    if filters.count_upto(workspace, limit + 1) > limit:
        messages.warning(
            request,
            f"This filter matches more than {limit:,} requests, too many to download at once. "
            "Use “Export in the background” below: you can download the file here when it is ready.",
        )
        return redirect(reverse("dashboard:requests", args=[slug]) + f"?{filters.query()}#exports")
    response = StreamingHttpResponse(filters.csv_chunks(workspace), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="requests-{filters.range.end:%Y-%m-%d}.csv"'
    return response


@workspace_view(Perm.USAGE_VIEW)
@require_POST
def export_start(request: HttpRequest, slug: str) -> HttpResponse:
    workspace = request.workspace  # type: ignore[attr-defined]
    filters, problems = UsageFilter.parse(request.POST)
    target = reverse("dashboard:requests", args=[slug]) + f"?{filters.query()}#exports"
    if problems:
        messages.error(request, "The export was not started: " + " ".join(problems))
        return redirect(target)
    try:
        usage_export_request(workspace=workspace, user=request.user, filters=filters, ip=client_ip(request))  # type: ignore[arg-type]
    except ApplicationError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, "Export queued. It appears below with a download link when it is ready.")
    return redirect(target)


@workspace_view(Perm.USAGE_VIEW)
def export_download(request: HttpRequest, slug: str, export_id: str) -> HttpResponseBase:
    workspace = request.workspace  # type: ignore[attr-defined]
    export = UsageExport.objects.filter(
        workspace=workspace, public_id=export_id, status=UsageExport.Status.READY
    ).first()
    if export is None:
        raise NotFound("No such export.")

    def parts() -> Iterator[bytes]:
        yield from usage_export_parts(export=export)

    response = StreamingHttpResponse(parts(), content_type="application/gzip")
    response["Content-Disposition"] = f'attachment; filename="requests-{export.created_at:%Y-%m-%d}.csv.gz"'
    if export.size_bytes:
        response["Content-Length"] = str(export.size_bytes)
    return response


_KEY_CHOICES = {"inherit": None, "on": True, "off": False}


@workspace_view(Perm.USAGE_VIEW)
@require_POST
def logging_settings(request: HttpRequest, slug: str) -> HttpResponse:
    """The stored-bodies settings form on the settings page: the workspace switch and retention, and one
    override per key (`key_<public id>` = inherit / on / off)."""
    workspace = request.workspace  # type: ignore[attr-defined]
    if not role_allows(request.membership.role, Perm.WORKSPACE_MANAGE):  # type: ignore[attr-defined]
        return forbidden(request, "Only owners and admins can change what the request log stores.")
    user, ip = request.user, client_ip(request)
    text = request.POST.get("body_retention_days", str(workspace.body_retention_days)).strip()
    if not text.isdigit() or len(text) > 4:
        messages.error(request, "Keep bodies for a whole number of days, 1 to 365.")
        return redirect(reverse("dashboard:settings", args=[slug]) + "#request-log")
    try:
        services.workspace_logging_update(
            workspace=workspace,
            log_bodies=request.POST.get("log_bodies") == "on",
            body_retention_days=int(text),
            acting_user=user,  # type: ignore[arg-type]
            ip=ip,
        )
        for key in GatewayKey.objects.filter(workspace=workspace, revoked_at__isnull=True):
            choice = request.POST.get(f"key_{key.public_id}")
            if choice in _KEY_CHOICES:
                services.gateway_key_logging_update(
                    key=key,
                    log_bodies=_KEY_CHOICES[choice],
                    acting_user=user,  # type: ignore[arg-type]
                    ip=ip,
                )
    except ApplicationError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, "Request log settings saved.")
    return redirect(reverse("dashboard:settings", args=[slug]) + "#request-log")
