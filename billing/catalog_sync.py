"""Generating the price catalog from a maintained public price source plus our overrides.

The source is LiteLLM's `model_prices_and_context_window.json` (BerriAI/litellm, MIT): one JSON object per
model id, USD per token per token type, long-context tiers (`*_above_200k_tokens`), 5-minute and 1-hour
cache writes, per-image and server-side tool fees. It is refreshed upstream several times a week and
shipped inside every `litellm` wheel; a copy lives in billing/data/sources/ (see its README for the
version and checksum), since production and CI have no internet.

`manage.py sync_price_catalog` runs, in order:
1. fetch: `--source` is an http(s) URL or a local path; at most MAX_SOURCE_BYTES.
2. parse: JSON numbers become Decimal from their text (`parse_float=Decimal`), never binary floats;
   NaN/Infinity refuse the whole document. Per-model problems (negative, float residue such as
   `1.6000000000000001`, more than 9 decimal places per 1M tokens) refuse that model, listed in the report.
3. convert (`convert_litellm`): per-token → per-1M-token prices for the providers in SOURCE_PROVIDERS,
   the modes we price by token (chat, completion, responses, embedding).
4. merge (`apply_overrides`): billing/data/price_overrides.toml adds models the source lacks and pins
   prices it gets wrong; its prices replace the source's as a whole, its other fields replace field by field.
5. diff against the current catalog file, print it, and write only with --write/--apply.
"""

from __future__ import annotations

import hashlib
import json
import re
import tomllib
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx

from billing.catalog import (
    DATA_DIR,
    PRICE_FIELDS,
    CatalogFile,
    Entry,
    check_unique,
    decimal_text,
    entry_from_fields,
    parse_amount,
    parse_entry,
    tier_json,
)
from billing.models import ModelPrice
from config.errors import ApplicationError
from contracts.pricing import Price, Tier

DEFAULT_SOURCE_URL = "https://raw.githubusercontent.com/BerriAI/litellm/main/model_prices_and_context_window.json"
SNAPSHOT_PATH = DATA_DIR / "sources" / "litellm_model_prices.json"
DEFAULT_OVERRIDES_PATH = DATA_DIR / "price_overrides.toml"
MAX_SOURCE_BYTES = 64 * 1024 * 1024
FETCH_TIMEOUT = 30.0

# LiteLLM provider -> (our provider, key prefixes LiteLLM puts before the provider's own model id)
SOURCE_PROVIDERS: dict[str, tuple[str, tuple[str, ...]]] = {
    "openai": ("openai", ("openai/",)),
    "text-completion-openai": ("openai", ("text-completion-openai/",)),
    "anthropic": ("anthropic", ("anthropic/",)),
    "gemini": ("google", ("gemini/",)),
    "groq": ("groq", ("groq/",)),
    "deepinfra": ("deepinfra", ("deepinfra/",)),
    "together_ai": ("together", ("together_ai/",)),
    "mistral": ("mistral", ("mistral/",)),
    "xai": ("xai", ("xai/",)),
    "fireworks_ai": ("fireworks", ("fireworks_ai/",)),
    "fireworks_ai-embedding-models": ("fireworks", ("fireworks_ai/",)),
    "openrouter": ("openrouter", ("openrouter/",)),
    "azure": ("azure_openai", ("azure/",)),
    "azure_ai": ("azure_ai", ("azure_ai/",)),
    "bedrock": ("bedrock", ("bedrock/",)),
    "bedrock_converse": ("bedrock", ("bedrock/",)),
    "vertex_ai": ("vertex_ai", ("vertex_ai/",)),
    "vertex_ai-language-models": ("vertex_ai", ("vertex_ai/",)),
    "vertex_ai-anthropic_models": ("vertex_ai", ("vertex_ai/",)),
    "vertex_ai-mistral_models": ("vertex_ai", ("vertex_ai/",)),
    "vertex_ai-llama_models": ("vertex_ai", ("vertex_ai/",)),
    "vertex_ai-embedding-models": ("vertex_ai", ("vertex_ai/",)),
    "vertex_ai-ai21_models": ("vertex_ai", ("vertex_ai/",)),
    "vertex_ai-deepseek_models": ("vertex_ai", ("vertex_ai/",)),
    "vertex_ai-qwen_models": ("vertex_ai", ("vertex_ai/",)),
    "vertex_ai-openai_models": ("vertex_ai", ("vertex_ai/",)),
    "vertex_ai-zai_models": ("vertex_ai", ("vertex_ai/",)),
    "vertex_ai-minimax_models": ("vertex_ai", ("vertex_ai/",)),
    "vertex_ai-moonshot_models": ("vertex_ai", ("vertex_ai/",)),
    "deepseek": ("deepseek", ("deepseek/",)),
    "cohere": ("cohere", ("cohere/",)),
    "cohere_chat": ("cohere", ("cohere_chat/", "cohere/")),
    "perplexity": ("perplexity", ("perplexity/",)),
    "cerebras": ("cerebras", ("cerebras/",)),
    "sambanova": ("sambanova", ("sambanova/",)),
    "nebius": ("nebius", ("nebius/",)),
    "novita": ("novita", ("novita/",)),
    "hyperbolic": ("hyperbolic", ("hyperbolic/",)),
    "ai21": ("ai21", ("ai21/",)),
    "moonshot": ("moonshot", ("moonshot/",)),
    "zai": ("zai", ("zai/",)),
    "minimax": ("minimax", ("minimax/",)),
    "voyage": ("voyage", ("voyage/",)),
    "dashscope": ("dashscope", ("dashscope/",)),
}
# Providers whose remaining id holds no "/" of its own: a "/" there is a region or deployment type
# (`azure/eu/gpt-4o`, `bedrock/us-east-1/...`), priced differently and not a model id we route.
FLAT_IDS = frozenset({"azure_openai", "bedrock", "openai", "anthropic", "google", "xai", "mistral"})
GENERIC_IDS = re.compile(r"^(together|fireworks)-ai-")  # LiteLLM's by-size fallback buckets, not models
MODES = {
    "chat": ModelPrice.Mode.CHAT,
    "completion": ModelPrice.Mode.COMPLETION,
    "responses": ModelPrice.Mode.RESPONSES,
    "embedding": ModelPrice.Mode.EMBEDDING,
}
PER_TOKEN = {  # LiteLLM field -> our token type (USD per token in the source, per 1M tokens here)
    "input_cost_per_token": "input",
    "cache_read_input_token_cost": "cached_input",
    "cache_creation_input_token_cost": "cache_write",  # Anthropic's 5-minute write (the default TTL)
    "output_cost_per_token": "output",
    "output_cost_per_reasoning_token": "reasoning",
}
TIERED = re.compile(r"^(?P<field>" + "|".join(PER_TOKEN) + r")_above_(?P<k>\d+)k_tokens$")
EXTRA_PER_TOKEN = {  # token types our usage events do not carry: stored in extra_prices, per 1M tokens
    "cache_creation_input_token_cost_above_1hr": "cache_write_1h",
    "cache_creation_input_token_cost_above_12hr": "cache_write_12h",
    "input_cost_per_audio_token": "input_audio",
    "cache_read_input_audio_token_cost": "cached_input_audio",
    "cache_creation_input_audio_token_cost": "cache_write_audio",
    "output_cost_per_audio_token": "output_audio",
    "input_cost_per_image_token": "input_image",
    "cache_read_input_image_token_cost": "cached_input_image",
    "output_cost_per_image_token": "output_image",
    "input_cost_per_video_token": "input_video",
    "output_cost_per_video_token": "output_video",
}
EXTRA_TIERED = re.compile(r"^(?P<field>" + "|".join(EXTRA_PER_TOKEN) + r")_above_(?P<k>\d+)k_tokens$")
PER_UNIT = {  # LiteLLM field -> our fee name (USD per unit)
    "output_cost_per_image": "image_output",
    "input_cost_per_image": "image_input",
    "google_maps_grounding_cost_per_query": "maps_grounding",
    "code_interpreter_cost_per_session": "code_interpreter_session",
}
MILLION = 6  # scaleb exponent: USD per token -> USD per 1M tokens


class Refused(ValueError):
    """One source model that cannot be imported exactly; the rest of the source still is."""


def _refuse_constant(name: str) -> Any:
    raise ApplicationError(f"the price source holds {name}, which is not a number: refused")


def parse_source_json(raw: bytes) -> dict[str, Any]:
    """JSON with every number as a Decimal from its text; NaN and Infinity refuse the document."""
    try:
        data = json.loads(raw, parse_float=Decimal, parse_int=Decimal, parse_constant=_refuse_constant)
    except (ValueError, RecursionError) as exc:
        if isinstance(exc, ApplicationError):
            raise
        raise ApplicationError(f"the price source is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ApplicationError("the price source must be a JSON object keyed by model")
    return data


@dataclass
class Source:
    raw: bytes
    location: str

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.raw).hexdigest()


def fetch_source(location: str, *, timeout: float = FETCH_TIMEOUT) -> Source:
    """The source's bytes from an http(s) URL or a local path."""
    if location.startswith(("http://", "https://")):
        try:
            with httpx.stream("GET", location, timeout=timeout, follow_redirects=True) as response:
                response.raise_for_status()
                chunks: list[bytes] = []
                size = 0
                for chunk in response.iter_bytes():
                    size += len(chunk)
                    if size > MAX_SOURCE_BYTES:
                        raise ApplicationError(
                            f"the price source at {location} is larger than {MAX_SOURCE_BYTES} bytes"
                        )
                    chunks.append(chunk)
        except httpx.HTTPError as exc:
            raise ApplicationError(
                f"could not fetch the price source {location}: {exc}. Without internet, pass the vendored "
                f"snapshot: --source {SNAPSHOT_PATH}"
            ) from exc
        return Source(raw=b"".join(chunks), location=location)
    path = Path(location)
    if not path.is_file():
        raise ApplicationError(f"no price source file at {location}")
    if path.stat().st_size > MAX_SOURCE_BYTES:
        raise ApplicationError(f"the price source {location} is larger than {MAX_SOURCE_BYTES} bytes")
    return Source(raw=path.read_bytes(), location=str(path))


# --- LiteLLM -> entries ----------------------------------------------------------------------------------


def _number(key: str, name: str, value: Any) -> Decimal:
    if not isinstance(value, Decimal):
        raise Refused(f"{key}: {name} = {value!r} is not a JSON number")
    if not value.is_finite() or value < 0:
        raise Refused(f"{key}: {name} = {value} is not a finite, non-negative amount")
    return value


def _amount(key: str, name: str, value: Any, *, scale: int = 0) -> Decimal:
    amount = _number(key, name, value).scaleb(scale)
    try:
        parse_amount(key, name, decimal_text(amount))
    except ApplicationError as exc:
        raise Refused(f"{key}: {name} = {value} is not an exact price ({exc.message.split(': ', 1)[-1]})") from None
    return Decimal(decimal_text(amount))


def _int(value: Any) -> int | None:
    if isinstance(value, Decimal) and value.is_finite() and value == value.to_integral_value() and 0 < value < 2**31:
        return int(value)
    return None


def _modality(item: Mapping[str, Any], mode: str) -> str:
    given_in = item.get("supported_modalities") or []
    inputs = ["text"]
    for kind, flag in (
        ("image", "supports_vision"),
        ("audio", "supports_audio_input"),
        ("video", "supports_video_input"),
    ):
        if item.get(flag) is True or kind in given_in:
            inputs.append(kind)
    if mode == ModelPrice.Mode.EMBEDDING:
        return "+".join(inputs) + "->embedding"
    outputs = [o for o in (item.get("supported_output_modalities") or ["text"]) if isinstance(o, str)] or ["text"]
    if item.get("supports_audio_output") is True and "audio" not in outputs:
        outputs.append("audio")
    return ("+".join(inputs) + "->" + "+".join(outputs))[:64]


def _tiers(key: str, item: Mapping[str, Any]) -> tuple[Tier, ...]:
    found: dict[int, dict[str, Decimal]] = {}
    for name, value in item.items():
        match = TIERED.match(name)
        if match:
            threshold = int(match["k"]) * 1000
            found.setdefault(threshold, {})[PER_TOKEN[match["field"]]] = _amount(key, name, value, scale=MILLION)
    ranges = item.get("tiered_pricing")
    if isinstance(ranges, list):
        for band in ranges:
            if not isinstance(band, Mapping) or not isinstance(band.get("range"), list) or not band["range"]:
                raise Refused(f"{key}: tiered_pricing has a band without a range")
            start = band["range"][0]
            band_start = _int(start) if isinstance(start, Decimal) and start else None
            if not isinstance(start, Decimal) or (start and band_start is None):
                raise Refused(f"{key}: tiered_pricing range starts at {start!r}")
            if band_start is None:
                continue  # the band from 0 is the base price (the top-level prices, see _with_base_band)
            prices = found.setdefault(band_start, {})
            for name, value in band.items():
                if name in PER_TOKEN:
                    prices[PER_TOKEN[name]] = _amount(key, f"tiered_pricing {name}", value, scale=MILLION)
    tiers = []
    for threshold, prices in sorted(found.items()):
        if "input" not in prices or "output" not in prices:
            raise Refused(f"{key}: the tier above {threshold} tokens lacks an input or output price")
        tiers.append(Tier(above_input_tokens=threshold, **prices))
    return tuple(tiers)


def _fees(key: str, item: Mapping[str, Any]) -> dict[str, Decimal]:
    fees = {fee: _amount(key, name, item[name]) for name, fee in PER_UNIT.items() if name in item}
    if "file_search_cost_per_1k_calls" in item:
        fees["file_search_call"] = _amount(
            key, "file_search_cost_per_1k_calls", item["file_search_cost_per_1k_calls"], scale=-3
        )
    search = item.get("search_context_cost_per_query")
    if isinstance(search, Mapping):
        sizes = {
            size: _amount(key, f"search_context_cost_per_query.{size}", search[f"search_context_size_{size}"])
            for size in ("low", "medium", "high")
            if f"search_context_size_{size}" in search
        }
        if sizes:
            fees["web_search"] = sizes.get("medium") or next(iter(sizes.values()))
            if len(set(sizes.values())) > 1:
                fees.update({f"web_search_{size}": amount for size, amount in sizes.items() if size != "medium"})
    return {name: amount for name, amount in fees.items() if amount}


def _extra_prices(key: str, item: Mapping[str, Any]) -> dict[str, Decimal]:
    extra = {}
    for name, value in item.items():
        if name in EXTRA_PER_TOKEN:
            extra[EXTRA_PER_TOKEN[name]] = _amount(key, name, value, scale=MILLION)
            continue
        match = EXTRA_TIERED.match(name)
        if match:
            extra[f"{EXTRA_PER_TOKEN[match['field']]}_above_{match['k']}k"] = _amount(key, name, value, scale=MILLION)
    return extra


def model_id(key: str, provider: str, prefixes: tuple[str, ...]) -> str | None:
    """The provider's own model id for a LiteLLM key, or None for keys that are not a routable id."""
    model = key
    for prefix in prefixes:
        if model.startswith(prefix):
            model = model[len(prefix) :]
            break
    if not model or GENERIC_IDS.match(model) or any(c.isspace() for c in model) or len(model) > 200:
        return None
    if provider in FLAT_IDS and "/" in model:
        return None
    return model


def _with_base_band(key: str, item: Mapping[str, Any]) -> Mapping[str, Any]:
    """A model priced only by `tiered_pricing` bands takes its base prices from the band starting at 0."""
    bands = item.get("tiered_pricing")
    if "input_cost_per_token" in item or not isinstance(bands, list):
        return item
    for band in bands:
        if (
            isinstance(band, Mapping)
            and isinstance(band.get("range"), list)
            and band["range"]
            and band["range"][0] == 0
        ):
            return {**item, **{name: value for name, value in band.items() if name in PER_TOKEN}}
    return item


def convert_item(key: str, item: Mapping[str, Any], provider: str, model: str) -> Entry:
    """One LiteLLM model as a catalog entry (Refused if a price cannot be taken exactly)."""
    mode = MODES[item["mode"]]
    item = _with_base_band(key, item)
    if "input_cost_per_token" not in item:
        raise Refused(f"{key}: not priced per token")
    if "output_cost_per_token" not in item and mode != ModelPrice.Mode.EMBEDDING:
        raise Refused(f"{key}: has no output price")
    prices = {ours: _amount(key, name, item[name], scale=MILLION) for name, ours in PER_TOKEN.items() if name in item}
    prices.setdefault("output", Decimal(0))
    request_fee = (
        _amount(key, "input_cost_per_request", item["input_cost_per_request"])
        if "input_cost_per_request" in item
        else Decimal(0)
    )
    price = Price(**prices, request_fee=request_fee, tiers=_tiers(key, item), fees=tuple(_fees(key, item).items()))
    notes = ""
    deprecation = item.get("deprecation_date")
    if isinstance(deprecation, str) and re.fullmatch(r"\d{4}-\d{2}-\d{2}", deprecation):
        notes = f"deprecation date {deprecation}"
    return Entry(
        provider=provider,
        model=model,
        price=price,
        mode=mode,
        modality=_modality(item, mode),
        context_window=_int(item.get("max_input_tokens")) or _int(item.get("max_tokens")),
        max_output_tokens=_int(item.get("max_output_tokens")) if mode != ModelPrice.Mode.EMBEDDING else None,
        extra_prices=_extra_prices(key, item),
        notes=notes,
        source="litellm",
    )


@dataclass
class ConvertReport:
    converted: int = 0
    skipped: Counter[str] = field(default_factory=Counter)  # reason -> count (not ours to price)
    refused: list[str] = field(default_factory=list)  # models whose prices cannot be taken exactly
    duplicates: list[str] = field(default_factory=list)  # two source keys naming one model, prices differ


def convert_litellm(data: Mapping[str, Any]) -> tuple[list[Entry], ConvertReport]:
    report = ConvertReport()
    entries: dict[tuple[str, str], Entry] = {}
    aliases: list[tuple[str, str]] = []
    for key, item in data.items():
        if not isinstance(item, Mapping) or key == "sample_spec":
            report.skipped["not a model"] += 1
            continue
        if "alias_of" in item and "litellm_provider" not in item:
            aliases.append((key, str(item["alias_of"])))
            continue
        mapping = SOURCE_PROVIDERS.get(str(item.get("litellm_provider")))
        if mapping is None:
            report.skipped["provider not listed"] += 1
            continue
        if item.get("mode") not in MODES:
            report.skipped[f"mode {item.get('mode')}"] += 1
            continue
        provider, prefixes = mapping
        model = model_id(key, provider, prefixes)
        if model is None:
            report.skipped["regional, deployment-type or generic id"] += 1
            continue
        try:
            entry = convert_item(key, item, provider, model)
        except Refused as exc:
            report.refused.append(str(exc))
            continue
        other = entries.get(entry.key)
        if other is not None:
            if other.price != entry.price:
                report.duplicates.append(f"{key} names {provider}/{model} again with other prices: kept the first")
            continue
        entries[entry.key] = entry
    by_source_key = {}
    for key, item in data.items():
        if isinstance(item, Mapping) and str(item.get("litellm_provider")) in SOURCE_PROVIDERS:
            provider, prefixes = SOURCE_PROVIDERS[str(item["litellm_provider"])]
            model = model_id(key, provider, prefixes)
            if model is not None:
                by_source_key[key] = (provider, model, prefixes)
    for alias_key, target_key in aliases:
        target = by_source_key.get(target_key)
        if target is None or (target[0], target[1]) not in entries:
            report.skipped["alias of a model not imported"] += 1
            continue
        provider, model, prefixes = target
        alias = model_id(alias_key, provider, prefixes)
        if alias is None or (provider, alias) in entries:
            report.skipped["alias of a model not imported"] += 1
            continue
        entries[(provider, model)].aliases.append(alias)
    report.converted = len(entries)
    return list(entries.values()), report


# --- overrides -------------------------------------------------------------------------------------------


@dataclass
class Override:
    fields: dict[str, Any]
    reason: str
    exclude: bool = False

    @property
    def key(self) -> tuple[str, str]:
        return (self.fields["provider"], self.fields["model"])


def read_overrides(text: str) -> list[Override]:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ApplicationError(f"price overrides are not valid TOML: {exc}") from exc
    overrides = []
    seen: set[tuple[str, str]] = set()
    for index, item in enumerate(data.get("models", [])):
        where = f"overrides models[{index}]"
        if not isinstance(item, Mapping):
            raise ApplicationError(f"{where}: must be a table")
        reason, exclude = item.get("reason"), item.get("exclude", False)
        if not isinstance(reason, str) or not reason.strip():
            raise ApplicationError(f'{where}: every override says why (reason = "...")')
        if not isinstance(exclude, bool):
            raise ApplicationError(f"{where}: exclude must be true or false")
        fields = {k: v for k, v in item.items() if k not in ("reason", "exclude")}
        override = Override(fields=parse_entry(fields, where, partial=True), reason=reason.strip(), exclude=exclude)
        if override.key in seen:
            raise ApplicationError(f"{where}: {override.key[0]}/{override.key[1]} is overridden twice")
        seen.add(override.key)
        overrides.append(override)
    return overrides


PRICE_KEYS = (*PRICE_FIELDS, "tiers", "fees")


@dataclass
class MergeReport:
    added: list[str] = field(default_factory=list)  # models only the overrides list
    pinned: list[tuple[str, Price, Price]] = field(default_factory=list)  # (model, source price, our price)
    excluded: list[str] = field(default_factory=list)
    folded: list[str] = field(default_factory=list)  # source models that are an alias of another model


def _price_from(fields: Mapping[str, Any], base: Price | None) -> Price:
    """An override's prices replace the source's as a whole; fees, if not given, stay the source's."""
    fees = fields.get("fees")
    return Price(
        input=fields["input"],
        output=fields["output"],
        cached_input=fields.get("cached_input"),
        cache_write=fields.get("cache_write"),
        reasoning=fields.get("reasoning"),
        request_fee=fields.get("request_fee") or Decimal(0),
        tiers=fields.get("tiers", ()),
        fees=tuple(fees.items()) if fees is not None else (base.fees if base else ()),
    )


def effective_prices(price: Price) -> tuple[Any, ...]:
    """What a price charges per token type, fallbacks resolved (fees aside): two prices with equal
    effective prices bill every Usage the same."""

    def resolved(rates: Price | Tier) -> tuple[Decimal, ...]:
        return (
            rates.input,
            rates.input if rates.cached_input is None else rates.cached_input,
            rates.input if rates.cache_write is None else rates.cache_write,
            rates.output,
            rates.output if rates.reasoning is None else rates.reasoning,
        )

    return (resolved(price), price.request_fee, tuple((t.above_input_tokens, resolved(t)) for t in price.tiers))


def apply_overrides(entries: Iterable[Entry], overrides: Iterable[Override]) -> tuple[list[Entry], MergeReport]:
    report = MergeReport()
    merged = {entry.key: entry for entry in entries}
    for override in overrides:
        key, fields = override.key, override.fields
        label = f"{key[0]}/{key[1]}"
        if override.exclude:
            if merged.pop(key, None) is not None:
                report.excluded.append(f"{label}: {override.reason}")
            continue
        current = merged.get(key)
        has_price = "input" in fields
        if current is None:
            if not has_price:
                raise ApplicationError(f"override {label}: the source does not list it, so it needs prices")
            entry = entry_from_fields(fields)
            entry.source = "override"
            merged[key] = entry
            report.added.append(label)
            continue
        entry = replace(current, aliases=list(current.aliases), extra_prices=dict(current.extra_prices))
        if has_price:
            entry.price = _price_from(fields, current.price)
            if effective_prices(entry.price) != effective_prices(current.price):
                report.pinned.append((label, current.price, entry.price))
            entry.source = "litellm+override"
        for name in ("mode", "modality", "context_window", "max_output_tokens", "notes"):
            if name in fields:
                setattr(entry, name, fields[name])
        if "extra_prices" in fields:
            entry.extra_prices = dict(fields["extra_prices"])
        for alias in fields.get("aliases", []):
            if alias not in entry.aliases:
                entry.aliases.append(alias)
        merged[key] = entry
    # a model id an override names as an alias of another model is that model, not a second row
    claimed = {(e.provider, alias): e.key for e in merged.values() for alias in e.aliases}
    for alias_key, owner in claimed.items():
        if alias_key in merged and alias_key != owner:
            folded = merged.pop(alias_key)
            note = ""
            if effective_prices(folded.price) != effective_prices(merged[owner].price):
                note = f" (the source priced it {price_summary(folded.price)})"
            report.folded.append(f"{alias_key[0]}/{alias_key[1]} -> alias of {owner[1]}{note}")
    result = sorted(merged.values(), key=lambda e: e.key)
    check_unique(result)
    return result, report


# --- diff ------------------------------------------------------------------------------------------------


def price_summary(price: Price) -> str:
    parts = [f"in {decimal_text(price.input)}", f"out {decimal_text(price.output)}"]
    for key, label in (("cached_input", "cached"), ("cache_write", "cache write"), ("reasoning", "reasoning")):
        value = getattr(price, key)
        if value is not None:
            parts.append(f"{label} {decimal_text(value)}")
    if price.request_fee:
        parts.append(f"per request {decimal_text(price.request_fee)}")
    for tier in price.tiers:
        shown = [f"{label} {decimal_text(value)}" for label, value in _labelled(tier) if value is not None]
        parts.append(f"above {tier.above_input_tokens}: " + " ".join(shown))
    return ", ".join(parts)


def _labelled(rates: Price | Tier) -> list[tuple[str, Decimal | None]]:
    return [
        ("in", rates.input),
        ("out", rates.output),
        ("cached", rates.cached_input),
        ("cache write", rates.cache_write),
        ("reasoning", rates.reasoning),
    ]


def _compared(entry: Entry) -> dict[str, Any]:
    price = entry.price
    data: dict[str, Any] = {key: getattr(price, key) for key in PRICE_FIELDS}
    data["tiers"] = [tier_json(tier) for tier in price.tiers]
    data["fees"] = {name: decimal_text(amount) for name, amount in price.fees}
    data["extra_prices"] = {name: decimal_text(amount) for name, amount in sorted(entry.extra_prices.items())}
    for name in ("mode", "modality", "context_window", "max_output_tokens", "notes", "source"):
        data[name] = getattr(entry, name)
    data["aliases"] = sorted(entry.aliases)
    return data


def _shown(value: Any) -> str:
    if isinstance(value, Decimal):
        return decimal_text(value)
    if value is None:
        return "-"
    if isinstance(value, list | dict):
        return json.dumps(value, sort_keys=True, default=str)
    return str(value)


@dataclass
class CatalogDiff:
    added: list[Entry] = field(default_factory=list)
    removed: list[Entry] = field(default_factory=list)
    changed: list[tuple[str, list[tuple[str, str, str]]]] = field(default_factory=list)  # model, [(field, old, new)]

    @property
    def empty(self) -> bool:
        return not (self.added or self.removed or self.changed)

    def lines(self) -> list[str]:
        out = [f"+ {e.provider}/{e.model}: {price_summary(e.price)}" for e in self.added]
        out += [f"- {e.provider}/{e.model}: {price_summary(e.price)}" for e in self.removed]
        for label, changes in self.changed:
            out.append(f"~ {label}: " + "; ".join(f"{name} {old} -> {new}" for name, old, new in changes))
        return out


def diff_catalogs(old: Iterable[Entry], new: Iterable[Entry]) -> CatalogDiff:
    before = {e.key: e for e in old}
    after = {e.key: e for e in new}
    diff = CatalogDiff()
    diff.added = [after[k] for k in sorted(after.keys() - before.keys())]
    diff.removed = [before[k] for k in sorted(before.keys() - after.keys())]
    for key in sorted(before.keys() & after.keys()):
        a, b = _compared(before[key]), _compared(after[key])
        changes = [(name, _shown(a[name]), _shown(b[name])) for name in a if a[name] != b[name]]
        if changes:
            diff.changed.append((f"{key[0]}/{key[1]}", changes))
    return diff


# --- the whole sync --------------------------------------------------------------------------------------


@dataclass
class SyncResult:
    catalog: CatalogFile
    convert: ConvertReport
    merge: MergeReport


def build_catalog(source: Source, *, overrides_text: str, version: str, retrieved: str) -> SyncResult:
    entries, convert_report = convert_litellm(parse_source_json(source.raw))
    merged, merge_report = apply_overrides(entries, read_overrides(overrides_text))
    meta = {
        "name": "litellm model_prices_and_context_window.json",
        "location": source.location,
        "sha256": source.sha256,
        "retrieved": retrieved,
    }
    snapshot_readme = SNAPSHOT_PATH.parent / "README.md"
    if Path(source.location).resolve() == SNAPSHOT_PATH.resolve() and snapshot_readme.is_file():
        found = re.search(r"litellm (\d+\.\d+\.\d+)", snapshot_readme.read_text())
        if found:
            meta["version"] = f"litellm {found.group(1)}"
    catalog = CatalogFile(version=version, entries=merged, source=meta)
    return SyncResult(catalog=catalog, convert=convert_report, merge=merge_report)


def provider_counts(entries: Iterable[Entry]) -> Counter[str]:
    return Counter(entry.provider for entry in entries)
