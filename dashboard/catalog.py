"""The public model catalog page (/models/): every published model and its prices, no login.

Server-rendered and searchable with plain GET parameters (`q`, `provider`, `modality`, `page`), so it works
without JavaScript and every result page has its own URL. Prices are shown exactly as the catalog stores
them (USD per 1M tokens, at least two decimals, never rounded away)."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any
from urllib.parse import urlencode

from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from billing.catalog import MODALITY_FILTERS, PROVIDER_LABELS, catalog_search
from billing.models import ModelPrice

PAGE_SIZE = 100
MAX_QUERY = 100

FEE_LABELS = {
    "web_search": "web search",
    "web_search_low": "web search (low context)",
    "web_search_high": "web search (high context)",
    "maps_grounding": "Google Maps grounding",
    "image_output": "generated image",
    "image_input": "input image",
    "code_interpreter_session": "code interpreter session",
    "file_search_call": "file search call",
}
EXTRA_LABELS = {
    "cache_write_1h": "1-hour cache write",
    "cache_write_12h": "12-hour cache write",
    "input_audio": "audio input",
    "cached_input_audio": "cached audio input",
    "cache_write_audio": "audio cache write",
    "output_audio": "audio output",
    "input_image": "image input tokens",
    "cached_input_image": "cached image input",
    "output_image": "image output tokens",
    "input_video": "video input",
    "output_video": "video output",
}


def usd(amount: Decimal | str | None) -> str:
    """`$0.15`, `$10.00`, `$0.0375`: every digit the catalog has, at least two decimals."""
    if amount is None:
        return "—"
    value = Decimal(amount).normalize()
    exponent = value.as_tuple().exponent
    if isinstance(exponent, int) and exponent > -2:
        value = value.quantize(Decimal("0.01"))
    return f"${value:,f}"


def tokens(count: int | None) -> str:
    return "—" if count is None else f"{count:,}"


def _extra_label(name: str) -> str:
    base, _, above = name.partition("_above_")
    label = EXTRA_LABELS.get(base, base.replace("_", " "))
    return f"{label} (prompts over {above.removesuffix('k')}k tokens)" if above else label


@dataclass
class ModelRow:
    provider: str
    provider_label: str
    model: str
    aliases: list[str]
    mode: str
    modality: str
    context_window: str
    max_output: str
    prices: list[str]  # input, cached input, cache write, output, reasoning
    tiers: list[str] = field(default_factory=list)
    fees: list[str] = field(default_factory=list)
    notes: str = ""


def model_row(price: ModelPrice) -> ModelRow:
    fees = [f"{usd(amount)} per {FEE_LABELS.get(name, name.replace('_', ' '))}" for name, amount in price.fees.items()]
    if price.request_fee_usd:
        fees.insert(0, f"{usd(price.request_fee_usd)} per request")
    fees += [f"{_extra_label(name)} {usd(amount)} / 1M" for name, amount in price.extra_prices.items()]
    tiers = []
    for tier in price.tiers:
        parts = [f"input {usd(tier['input'])}"]
        for key, label in (("cached_input", "cached"), ("cache_write", "cache write")):
            if key in tier:
                parts.append(f"{label} {usd(tier[key])}")
        parts.append(f"output {usd(tier['output'])}")
        if "reasoning" in tier:
            parts.append(f"reasoning {usd(tier['reasoning'])}")
        tiers.append(f"Prompts over {tier['above_input_tokens']:,} tokens: " + ", ".join(parts))
    return ModelRow(
        provider=price.provider,
        provider_label=PROVIDER_LABELS.get(price.provider, price.provider),
        model=price.model,
        aliases=list(price.aliases),
        mode=price.get_mode_display(),
        modality=price.modality.replace("->", " → ").replace("+", ", ") if price.modality else "—",
        context_window=tokens(price.context_window),
        max_output=tokens(price.max_output_tokens),
        prices=[
            usd(price.input_usd_per_mtok),
            usd(price.cached_input_usd_per_mtok),
            usd(price.cache_write_usd_per_mtok),
            usd(price.output_usd_per_mtok),
            usd(price.reasoning_usd_per_mtok),
        ],
        tiers=tiers,
        fees=fees,
        notes=price.notes,
    )


def _page_number(raw: str) -> int:
    return int(raw) if raw.isdigit() and 0 < len(raw) < 7 else 1


@require_GET
def models_page(request: HttpRequest) -> HttpResponse:
    q = request.GET.get("q", "").replace("\x00", "").strip()[:MAX_QUERY]
    provider = request.GET.get("provider", "")
    provider = provider if provider in PROVIDER_LABELS else ""
    modality = request.GET.get("modality", "")
    modality = modality if modality in MODALITY_FILTERS else ""
    paginator = Paginator(catalog_search(q=q, provider=provider, modality=modality), PAGE_SIZE)
    page = paginator.get_page(_page_number(request.GET.get("page", "1")))
    present = set(ModelPrice.objects.values_list("provider", flat=True).distinct())
    providers = sorted(((key, PROVIDER_LABELS[key]) for key in present if key in PROVIDER_LABELS), key=lambda p: p[1])
    base_query = {k: v for k, v in (("q", q), ("provider", provider), ("modality", modality)) if v}
    context: dict[str, Any] = {
        "rows": [model_row(price) for price in page.object_list],
        "page": page,
        "total": paginator.count,
        "q": q,
        "provider": provider,
        "modality": modality,
        "providers": providers,
        "provider_count": len(providers),
        "modalities": list(MODALITY_FILTERS.items()),
        "query_prefix": urlencode(base_query),
    }
    return render(request, "catalog/models.html", context)
