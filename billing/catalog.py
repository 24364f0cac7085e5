"""Reading and loading the shipped price catalog (billing/data/price_catalog.toml)."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from django.db import transaction
from django.utils import timezone

from billing.models import ModelPrice
from config.errors import ApplicationError

DEFAULT_CATALOG_PATH = Path(__file__).resolve().parent / "data" / "price_catalog.toml"
KNOWN_PROVIDERS = frozenset(
    {"openai", "anthropic", "google", "groq", "deepinfra", "together", "mistral", "xai", "fireworks", "openrouter"}
)
PRICE_FIELDS = {
    "input": "input_usd_per_mtok",
    "cached_input": "cached_input_usd_per_mtok",
    "cache_write": "cache_write_usd_per_mtok",
    "output": "output_usd_per_mtok",
    "reasoning": "reasoning_usd_per_mtok",
    "request_fee": "request_fee_usd",
}
REQUIRED_PRICES = ("input", "output")


@dataclass
class LoadResult:
    version: str
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    removed: int = 0
    kept_not_in_file: list[str] = field(default_factory=list)


def _decimal(entry: str, key: str, value: Any) -> Decimal:
    if not isinstance(value, str):
        raise ApplicationError(f"{entry}: {key} must be a string holding an exact decimal, got {value!r}")
    try:
        amount = Decimal(value)
    except InvalidOperation as exc:
        raise ApplicationError(f"{entry}: {key} = {value!r} is not a decimal") from exc
    if not amount.is_finite() or amount < 0:
        raise ApplicationError(f"{entry}: {key} must be a non-negative amount")
    return amount


def parse_catalog(text: str) -> tuple[str, list[dict[str, Any]]]:
    """Validate the TOML and return (version, rows ready for ModelPrice)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ApplicationError(f"price catalog is not valid TOML: {exc}") from exc
    version = str(data.get("version", ""))
    rows: list[dict[str, Any]] = []
    seen: set[tuple[str, str]] = set()
    for index, item in enumerate(data.get("models", [])):
        provider, model = item.get("provider"), item.get("model")
        entry = f"models[{index}] ({provider}/{model})"
        if provider not in KNOWN_PROVIDERS or not isinstance(model, str) or not model:
            raise ApplicationError(f"{entry}: needs a known provider and a model id")
        for key in REQUIRED_PRICES:
            if key not in item:
                raise ApplicationError(f"{entry}: missing {key} price")
        row: dict[str, Any] = {
            "provider": provider,
            "model": model,
            "mode": item.get("mode", ModelPrice.Mode.CHAT),
            "modality": item.get("modality", ""),
            "context_window": item.get("context_window"),
            "max_output_tokens": item.get("max_output_tokens"),
            "aliases": list(item.get("aliases", [])),
            "notes": item.get("notes", ""),
            "catalog_version": version,
            "request_fee_usd": Decimal(0),
        }
        if row["mode"] not in ModelPrice.Mode.values:
            raise ApplicationError(f"{entry}: unknown mode {row['mode']!r}")
        for key, column in PRICE_FIELDS.items():
            if key in item:
                row[column] = _decimal(entry, key, item[key])
        for name in [model, *row["aliases"]]:
            if (provider, name) in seen:
                raise ApplicationError(f"{entry}: {provider}/{name} is listed twice")
            seen.add((provider, name))
        rows.append(row)
    if not rows:
        raise ApplicationError("price catalog lists no models")
    return version, rows


@transaction.atomic
def price_catalog_load(*, path: Path = DEFAULT_CATALOG_PATH, prune: bool = False) -> LoadResult:
    """Upsert the catalog file into ModelPrice. Models missing from the file are kept (so history stays
    priced) unless `prune` is set."""
    version, rows = parse_catalog(path.read_text())
    result = LoadResult(version=version)
    existing = {(p.provider, p.model): p for p in ModelPrice.objects.select_for_update()}
    now = timezone.now()
    for row in rows:
        key = (row["provider"], row["model"])
        defaults = {column: None for column in PRICE_FIELDS.values()} | {"request_fee_usd": Decimal(0)} | row
        current = existing.pop(key, None)
        if current is None:
            ModelPrice.objects.create(**defaults, updated_at=now)
            result.created += 1
            continue
        changed = [name for name, value in defaults.items() if getattr(current, name) != value]
        if changed:
            for name in changed:
                setattr(current, name, defaults[name])
            current.updated_at = now
            current.save()
            result.updated += 1
        else:
            result.unchanged += 1
    leftovers = sorted(f"{p}/{m}" for p, m in existing)
    if prune and existing:
        result.removed = ModelPrice.objects.filter(pk__in=[p.pk for p in existing.values()]).delete()[0]
    else:
        result.kept_not_in_file = leftovers
    return result
