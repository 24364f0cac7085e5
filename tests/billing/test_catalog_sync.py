"""`manage.py sync_price_catalog`: the public price source over a real HTTP server (or a file) becomes our
catalog; the diff is shown; nothing is written without --write; floats, NaN and inexact prices are refused."""

from __future__ import annotations

import hashlib
import io
import json
import re
import shutil
import threading
from collections.abc import Iterator
from decimal import Decimal
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from billing.catalog import DEFAULT_CATALOG_PATH, read_catalog, read_catalog_file
from billing.catalog_sync import (
    DEFAULT_OVERRIDES_PATH,
    SNAPSHOT_PATH,
    apply_overrides,
    convert_litellm,
    parse_source_json,
    read_overrides,
)
from billing.models import ModelPrice
from config.errors import ApplicationError
from contracts.pricing import Tier

pytestmark = pytest.mark.django_db


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A directory served over HTTP on 127.0.0.1: (directory, base URL)."""
    root = tmp_path / "www"
    root.mkdir()
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(QuietHandler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def json_with_decimals(data: object) -> str:
    """JSON whose numbers are the Decimals' own text (never through float)."""
    text = json.dumps(data, default=lambda value: f"<dec:{value}>")
    return re.sub(r'"<dec:([^>]+)>"', r"\1", text)


def sync(*args: str) -> str:
    out = io.StringIO()
    call_command("sync_price_catalog", *args, stdout=out)
    return out.getvalue()


@pytest.fixture
def catalog_copy(tmp_path: Path) -> Path:
    path = tmp_path / "price_catalog.toml"
    shutil.copyfile(DEFAULT_CATALOG_PATH, path)
    return path


def test_vendored_snapshot_is_the_recorded_file():
    readme = (SNAPSHOT_PATH.parent / "README.md").read_text()
    assert hashlib.sha256(SNAPSHOT_PATH.read_bytes()).hexdigest() in readme


def test_syncing_the_snapshot_over_http_reproduces_the_shipped_catalog(served, catalog_copy):
    root, url = served
    shutil.copyfile(SNAPSHOT_PATH, root / "prices.json")
    before = catalog_copy.read_bytes()
    out = sync("--source", f"{url}/prices.json", "--catalog", str(catalog_copy))
    assert f"source: {url}/prices.json" in out
    assert "0 added, 0 removed, 0 changed" in out  # the shipped catalog is exactly what the sync generates
    counts = read_catalog_file(DEFAULT_CATALOG_PATH)
    assert f"catalog: {len(counts.entries)} models across" in out
    assert "dry run: nothing written" in out
    assert catalog_copy.read_bytes() == before


def test_a_changed_source_shows_the_diff_and_writes_only_with_write(served, catalog_copy):
    root, url = served
    data = json.loads(SNAPSHOT_PATH.read_bytes(), parse_float=Decimal)
    data["gpt-4o"]["input_cost_per_token"] = Decimal("0.000003")  # 2.5 -> 3 per 1M tokens
    del data["o3-mini"]
    data["gpt-brand-new"] = {
        "litellm_provider": "openai",
        "mode": "chat",
        "input_cost_per_token": Decimal("1.5E-7"),
        "output_cost_per_token": Decimal("6E-7"),
        "max_input_tokens": 128000,
    }
    (root / "prices.json").write_text(json_with_decimals(data))
    source = f"{url}/prices.json"

    out = sync("--source", source, "--catalog", str(catalog_copy))
    assert "~ openai/gpt-4o: input 2.5 -> 3" in out
    assert "- openai/o3-mini: in 1.1, out 4.4, cached 0.55" in out
    assert "+ openai/gpt-brand-new: in 0.15, out 0.6" in out
    assert read_catalog(catalog_copy.read_text()).version == read_catalog_file(DEFAULT_CATALOG_PATH).version

    out = sync("--source", source, "--catalog", str(catalog_copy), "--write", "--catalog-version", "t-2")
    assert f"wrote {catalog_copy}" in out
    written = {e.key: e for e in read_catalog(catalog_copy.read_text()).entries}
    assert written[("openai", "gpt-4o")].price.input == Decimal(3)
    assert ("openai", "o3-mini") not in written and ("openai", "gpt-brand-new") in written
    assert "0 added, 0 removed, 0 changed" in sync("--source", source, "--catalog", str(catalog_copy))


def test_apply_writes_and_loads_into_the_database(served, catalog_copy):
    root, url = served
    shutil.copyfile(SNAPSHOT_PATH, root / "prices.json")
    catalog_copy.unlink()
    out = sync("--source", f"{url}/prices.json", "--catalog", str(catalog_copy), "--apply", "--load")
    assert "loaded:" in out
    assert ModelPrice.objects.filter(provider="openrouter").exists()
    assert ModelPrice.objects.count() == len(read_catalog(catalog_copy.read_text()).entries)


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_a_source_holding_nan_or_infinity_is_refused_whole(served, catalog_copy, constant):
    root, url = served
    (root / "bad.json").write_text(
        '{"m": {"litellm_provider": "openai", "mode": "chat", "input_cost_per_token": CONSTANT, '
        '"output_cost_per_token": 1e-6}}'.replace("CONSTANT", constant)
    )
    with pytest.raises(CommandError, match="not a number"):
        sync("--source", f"{url}/bad.json", "--catalog", str(catalog_copy))


def test_unreachable_source_says_how_to_sync_offline(served, catalog_copy):
    _, url = served
    with pytest.raises(CommandError, match=r"--source .*litellm_model_prices\.json"):
        sync("--source", f"{url}/missing.json", "--catalog", str(catalog_copy))


def test_prices_that_are_not_exact_are_refused_per_model_and_the_rest_imported(tmp_path):
    source = tmp_path / "source.json"
    source.write_text(
        json.dumps(
            {
                "good": {"litellm_provider": "openai", "mode": "chat"},
                "float-residue": {"litellm_provider": "openai", "mode": "chat"},
                "negative": {"litellm_provider": "openai", "mode": "chat"},
                "text-price": {"litellm_provider": "openai", "mode": "chat"},
                "too-precise": {"litellm_provider": "openai", "mode": "chat"},
            }
        )
        .replace('"good": {', '"good": {"input_cost_per_token": 1.5e-7, "output_cost_per_token": 6E-7, ')
        .replace(
            '"float-residue": {',
            '"float-residue": {"input_cost_per_token": 1.6000000000000001e-06, "output_cost_per_token": 1e-6, ',
        )
        .replace('"negative": {', '"negative": {"input_cost_per_token": -1e-6, "output_cost_per_token": 1e-6, ')
        .replace('"text-price": {', '"text-price": {"input_cost_per_token": "1e-6", "output_cost_per_token": 1e-6, ')
        .replace('"too-precise": {', '"too-precise": {"input_cost_per_token": 1e-16, "output_cost_per_token": 1e-6, ')
    )
    overrides = tmp_path / "overrides.toml"
    overrides.write_text("")
    catalog = tmp_path / "catalog.toml"
    out = sync("--source", str(source), "--overrides", str(overrides), "--catalog", str(catalog), "--write")
    assert "refused (4;" in out
    for name in ("float-residue: input_cost_per_token", "negative: input_cost_per_token", "text-price", "too-precise"):
        assert name in out
    (entry,) = read_catalog(catalog.read_text()).entries
    assert entry.model == "good" and entry.price.input == Decimal("0.15") and entry.price.output == Decimal("0.6")


def test_tiers_cache_write_variants_and_fees_are_converted_exactly():
    data = parse_source_json(
        b"""{
        "gemini/gemini-x-pro": {"litellm_provider": "gemini", "mode": "chat",
            "input_cost_per_token": 1.25e-06, "output_cost_per_token": 1e-05,
            "cache_read_input_token_cost": 1.25e-07,
            "input_cost_per_token_above_200k_tokens": 2.5e-06, "output_cost_per_token_above_200k_tokens": 1.5e-05,
            "cache_read_input_token_cost_above_200k_tokens": 2.5e-07,
            "input_cost_per_token_priority": 9e-06, "input_cost_per_audio_token": 1e-06,
            "search_context_cost_per_query": {"search_context_size_low": 0.035, "search_context_size_medium": 0.035,
                                              "search_context_size_high": 0.035},
            "output_cost_per_image": 0.039, "supports_vision": true, "max_input_tokens": 1048576},
        "claude-x": {"litellm_provider": "anthropic", "mode": "chat",
            "input_cost_per_token": 3e-06, "output_cost_per_token": 1.5e-05,
            "cache_creation_input_token_cost": 3.75e-06, "cache_creation_input_token_cost_above_1hr": 6e-06,
            "cache_read_input_token_cost": 3e-07},
        "dashscope/qwen-x": {"litellm_provider": "dashscope", "mode": "chat", "tiered_pricing": [
            {"input_cost_per_token": 5e-08, "output_cost_per_token": 4e-07, "range": [0, 256000.0]},
            {"input_cost_per_token": 2.5e-07, "output_cost_per_token": 2e-06, "range": [256000.0, 1000000.0]}]},
        "claude-latest-x": {"alias_of": "claude-x"},
        "azure/eu/gpt-4o": {"litellm_provider": "azure", "mode": "chat",
            "input_cost_per_token": 2.75e-06, "output_cost_per_token": 1.1e-05},
        "dall-e-x": {"litellm_provider": "openai", "mode": "image_generation", "output_cost_per_image": 0.04}
    }"""
    )
    entries, report = convert_litellm(data)
    by_key = {e.key: e for e in entries}
    gemini = by_key[("google", "gemini-x-pro")]
    assert gemini.price.tiers == (
        Tier(above_input_tokens=200_000, input=Decimal("2.5"), output=Decimal("15"), cached_input=Decimal("0.25")),
    )
    assert gemini.price.cached_input == Decimal("0.125")
    assert dict(gemini.price.fees) == {"web_search": Decimal("0.035"), "image_output": Decimal("0.039")}
    assert gemini.extra_prices == {"input_audio": Decimal(1)}
    assert gemini.modality == "text+image->text" and gemini.context_window == 1_048_576
    claude = by_key[("anthropic", "claude-x")]
    assert claude.price.cache_write == Decimal("3.75") and claude.extra_prices == {"cache_write_1h": Decimal(6)}
    assert claude.aliases == ["claude-latest-x"]
    qwen = by_key[("dashscope", "qwen-x")]
    assert (qwen.price.input, qwen.price.output) == (Decimal("0.05"), Decimal("0.4"))
    assert qwen.price.tiers == (Tier(above_input_tokens=256_000, input=Decimal("0.25"), output=Decimal(2)),)
    assert set(by_key) == {("google", "gemini-x-pro"), ("anthropic", "claude-x"), ("dashscope", "qwen-x")}
    assert (
        report.skipped["regional, deployment-type or generic id"] == 1 and report.skipped["mode image_generation"] == 1
    )


def test_overrides_pin_add_exclude_and_fold_aliases():
    entries, _ = convert_litellm(
        parse_source_json(
            b"""{
            "m-1": {"litellm_provider": "openai", "mode": "chat", "input_cost_per_token": 1e-06,
                    "output_cost_per_token": 2e-06,
                    "search_context_cost_per_query": {"search_context_size_medium": 0.01}},
            "m-1-2026-01-01": {"litellm_provider": "openai", "mode": "chat", "input_cost_per_token": 1e-06,
                    "output_cost_per_token": 2e-06},
            "m-2": {"litellm_provider": "openai", "mode": "chat", "input_cost_per_token": 1e-06,
                    "output_cost_per_token": 2e-06}
        }"""
        )
    )
    overrides = read_overrides(
        """
[[models]]
provider = "openai"
model = "m-1"
input = "1.10"
output = "2"
aliases = ["m-1-2026-01-01"]
reason = "hand-checked"

[[models]]
provider = "openai"
model = "m-2"
exclude = true
reason = "wrong in the source"

[[models]]
provider = "groq"
model = "only-ours"
input = "0.05"
output = "0.08"
reason = "not in the source"
"""
    )
    merged, report = apply_overrides(entries, overrides)
    by_key = {e.key: e for e in merged}
    assert set(by_key) == {("openai", "m-1"), ("groq", "only-ours")}
    pinned = by_key[("openai", "m-1")]
    assert pinned.price.input == Decimal("1.10") and pinned.source == "litellm+override"
    assert dict(pinned.price.fees) == {"web_search": Decimal("0.01")}  # fees stay the source's
    assert pinned.aliases == ["m-1-2026-01-01"]
    assert [label for label, _, _ in report.pinned] == ["openai/m-1"]
    assert report.excluded == ["openai/m-2: wrong in the source"] and report.added == ["groq/only-ours"]
    assert report.folded == ["openai/m-1-2026-01-01 -> alias of m-1 (the source priced it in 1, out 2)"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[[models]]\nprovider = "openai"\nmodel = "m"\ninput = "1"\noutput = "1"\n', "says why"),
        ('[[models]]\nprovider = "openai"\nmodel = "m"\ninput = 1.5\noutput = "1"\nreason = "x"\n', "must be a string"),
        ('[[models]]\nprovider = "openai"\nmodel = "m"\ninput = "1"\nreason = "x"\n', "missing output"),
        (
            '[[models]]\nprovider = "openai"\nmodel = "m"\naliases=["a"]\nreason = "x"\n'
            '[[models]]\nprovider = "openai"\nmodel = "m"\naliases=["b"]\nreason = "y"\n',
            "overridden twice",
        ),
    ],
)
def test_bad_overrides_are_refused(text, message):
    with pytest.raises(ApplicationError, match=message):
        read_overrides(text)


def test_an_override_for_a_model_the_source_lacks_needs_prices():
    with pytest.raises(ApplicationError, match="needs prices"):
        apply_overrides(
            [], read_overrides('[[models]]\nprovider = "openai"\nmodel = "m"\naliases = ["a"]\nreason = "x"\n')
        )


def test_shipped_overrides_parse():
    assert read_overrides(DEFAULT_OVERRIDES_PATH.read_text())
