"""The shipped price catalog loads, is exact, covers every provider we route to, and loading is idempotent,
strict and done in bulk."""

from decimal import Decimal

import pytest
from django.core.management import CommandError, call_command

from billing.catalog import (
    DEFAULT_CATALOG_PATH,
    parse_catalog,
    price_catalog_load,
    read_catalog,
    read_catalog_file,
    render_catalog,
)
from billing.models import ModelPrice
from config.errors import ApplicationError
from contracts.pricing import Usage, cost_nanos
from contracts.providers import PROVIDERS

pytestmark = pytest.mark.django_db

# The 43 models of the hand-checked catalog of 2026-11-22 (input, cached input, cache write, output; None =
# no price of its own), with their aliases: every name stays priced, at these prices.
HAND_CHECKED = {
    ("openai", "gpt-5"): ("1.25", "0.125", None, "10"),
    ("openai", "gpt-5-mini"): ("0.25", "0.025", None, "2"),
    ("openai", "gpt-5-nano"): ("0.05", "0.005", None, "0.4"),
    ("openai", "gpt-4.1"): ("2", "0.5", None, "8"),
    ("openai", "gpt-4.1-2025-04-14"): ("2", "0.5", None, "8"),
    ("openai", "gpt-4.1-mini"): ("0.4", "0.1", None, "1.6"),
    ("openai", "gpt-4.1-mini-2025-04-14"): ("0.4", "0.1", None, "1.6"),
    ("openai", "gpt-4.1-nano"): ("0.1", "0.025", None, "0.4"),
    ("openai", "gpt-4.1-nano-2025-04-14"): ("0.1", "0.025", None, "0.4"),
    ("openai", "gpt-4o"): ("2.5", "1.25", None, "10"),
    ("openai", "gpt-4o-2024-08-06"): ("2.5", "1.25", None, "10"),
    ("openai", "gpt-4o-2024-11-20"): ("2.5", "1.25", None, "10"),
    ("openai", "gpt-4o-mini"): ("0.15", "0.075", None, "0.6"),
    ("openai", "gpt-4o-mini-2024-07-18"): ("0.15", "0.075", None, "0.6"),
    ("openai", "o3"): ("2", "0.5", None, "8"),
    ("openai", "o4-mini"): ("1.1", "0.275", None, "4.4"),
    ("openai", "o3-mini"): ("1.1", "0.55", None, "4.4"),
    ("openai", "text-embedding-3-small"): ("0.02", None, None, "0"),
    ("openai", "text-embedding-3-large"): ("0.13", None, None, "0"),
    ("anthropic", "claude-opus-4-1"): ("15", "1.5", "18.75", "75"),
    ("anthropic", "claude-opus-4-1-20250805"): ("15", "1.5", "18.75", "75"),
    ("anthropic", "claude-opus-4-5"): ("5", "0.5", "6.25", "25"),
    ("anthropic", "claude-opus-4-5-20251101"): ("5", "0.5", "6.25", "25"),
    ("anthropic", "claude-sonnet-4-5"): ("3", "0.3", "3.75", "15"),
    ("anthropic", "claude-sonnet-4-5-20250929"): ("3", "0.3", "3.75", "15"),
    ("anthropic", "claude-sonnet-4-0"): ("3", "0.3", "3.75", "15"),
    ("anthropic", "claude-sonnet-4-20250514"): ("3", "0.3", "3.75", "15"),
    ("anthropic", "claude-3-7-sonnet-latest"): ("3", "0.3", "3.75", "15"),
    ("anthropic", "claude-3-7-sonnet-20250219"): ("3", "0.3", "3.75", "15"),
    ("anthropic", "claude-haiku-4-5"): ("1", "0.1", "1.25", "5"),
    ("anthropic", "claude-haiku-4-5-20251001"): ("1", "0.1", "1.25", "5"),
    ("anthropic", "claude-3-5-haiku-latest"): ("0.8", "0.08", "1", "4"),
    ("anthropic", "claude-3-5-haiku-20241022"): ("0.8", "0.08", "1", "4"),
    ("google", "gemini-2.5-pro"): ("1.25", "0.31", None, "10"),
    ("google", "gemini-2.5-flash"): ("0.3", "0.075", None, "2.5"),
    ("google", "gemini-2.5-flash-lite"): ("0.1", "0.025", None, "0.4"),
    ("google", "gemini-2.0-flash"): ("0.1", "0.025", None, "0.4"),
    ("google", "gemini-2.0-flash-lite"): ("0.075", None, None, "0.3"),
    ("google", "gemini-embedding-001"): ("0.15", None, None, "0"),
    ("groq", "llama-3.3-70b-versatile"): ("0.59", None, None, "0.79"),
    ("groq", "llama-3.1-8b-instant"): ("0.05", None, None, "0.08"),
    ("groq", "openai/gpt-oss-120b"): ("0.15", None, None, "0.75"),
    ("groq", "openai/gpt-oss-20b"): ("0.1", None, None, "0.5"),
    ("deepinfra", "meta-llama/Llama-3.3-70B-Instruct-Turbo"): ("0.13", None, None, "0.39"),
    ("deepinfra", "meta-llama/Meta-Llama-3.1-8B-Instruct"): ("0.03", None, None, "0.05"),
    ("deepinfra", "BAAI/bge-m3"): ("0.01", None, None, "0"),
    ("together", "meta-llama/Llama-3.3-70B-Instruct-Turbo"): ("0.88", None, None, "0.88"),
    ("together", "deepseek-ai/DeepSeek-V3"): ("1.25", None, None, "1.25"),
    ("mistral", "mistral-large-latest"): ("2", None, None, "6"),
    ("mistral", "mistral-medium-latest"): ("0.4", None, None, "2"),
    ("mistral", "mistral-small-latest"): ("0.1", None, None, "0.3"),
    ("mistral", "codestral-latest"): ("0.3", None, None, "0.9"),
    ("mistral", "mistral-embed"): ("0.1", None, None, "0"),
    ("xai", "grok-4"): ("3", "0.75", None, "15"),
    ("xai", "grok-4-0709"): ("3", "0.75", None, "15"),
    ("xai", "grok-3"): ("3", "0.75", None, "15"),
    ("xai", "grok-3-mini"): ("0.3", "0.075", None, "0.5"),
}


def shipped_prices() -> dict[tuple[str, str], object]:
    catalog = read_catalog_file(DEFAULT_CATALOG_PATH)
    return {(e.provider, name): e.price for e in catalog.entries for name in (e.model, *e.aliases)}


def test_shipped_catalog_has_600_models_from_20_providers_including_every_one_we_route_to():
    version, rows = parse_catalog(DEFAULT_CATALOG_PATH.read_text())
    assert version
    providers = {row["provider"] for row in rows}
    assert len(rows) >= 600 and len(providers) >= 20
    routed = {p for p, spec in PROVIDERS.items() if not spec.requires_base_url} | {"azure_openai"}
    assert routed <= providers  # openai_compatible servers are self-hosted: priced per workspace
    for row in rows:
        assert isinstance(row["input_usd_per_mtok"], Decimal)
        assert isinstance(row["output_usd_per_mtok"], Decimal)
        for tier in row["tiers"]:
            assert all(isinstance(v, str) for k, v in tier.items() if k != "above_input_tokens")


def test_hand_checked_prices_and_aliases_are_kept():
    prices = shipped_prices()
    for key, (input_price, cached, write, output) in HAND_CHECKED.items():
        price = prices.get(key)
        assert price is not None, f"{key} is no longer priced"
        expected = [None if v is None else Decimal(v) for v in (input_price, cached, write, output)]
        assert [price.input, price.cached_input, price.cache_write, price.output] == expected, key


def test_long_context_tiers_and_cache_write_variants_are_in_the_shipped_catalog():
    prices = shipped_prices()
    gemini = prices[("google", "gemini-2.5-pro")]
    assert [(t.above_input_tokens, t.input, t.output) for t in gemini.tiers] == [
        (200_000, Decimal("2.5"), Decimal("15"))
    ]
    sonnet = prices[("anthropic", "claude-sonnet-4-5-20250929")]
    assert sonnet.tiers[0].cache_write == Decimal("7.5")
    # 250k prompt tokens: every token at the long-context rate, output too
    assert cost_nanos(sonnet, Usage(input=250_000, output=1_000)) == 1_522_500_000
    row = next(e for e in read_catalog_file(DEFAULT_CATALOG_PATH).entries if e.model == "claude-sonnet-4-5")
    assert row.extra_prices["cache_write_1h"] == Decimal("6")  # stored, while cache_write is the 5-minute rate
    assert dict(sonnet.fees)["web_search"] == Decimal("0.01")


def test_rendering_and_reading_the_catalog_gives_back_the_same_entries():
    catalog = read_catalog_file(DEFAULT_CATALOG_PATH)
    again = read_catalog(render_catalog(catalog))
    assert again.version == catalog.version and again.source == catalog.source
    assert sorted(again.entries, key=lambda e: e.key) == sorted(catalog.entries, key=lambda e: e.key)


def test_load_is_idempotent_bulk_and_reports_changes(django_assert_max_num_queries):
    with django_assert_max_num_queries(20):  # a few bulk statements, not one per model
        first = price_catalog_load()
    assert first.created >= 600 and first.updated == 0
    with django_assert_max_num_queries(5):
        again = price_catalog_load()
    assert again.created == 0 and again.updated == 0 and again.unchanged == first.created
    assert ModelPrice.objects.count() == first.created
    stored = ModelPrice.objects.get(provider="google", model="gemini-2.5-pro")
    assert stored.tiers == [{"above_input_tokens": 200000, "input": "2.5", "cached_input": "0.625", "output": "15"}]
    assert stored.to_price() == shipped_prices()[("google", "gemini-2.5-pro")]


def test_changed_price_is_updated_and_missing_model_kept_unless_pruned(tmp_path):
    path = tmp_path / "catalog.toml"
    path.write_text(
        'version = "t1"\n'
        '[[models]]\nprovider = "openai"\nmodel = "m-a"\ninput = "1.00"\noutput = "2.00"\n'
        '[[models]]\nprovider = "openai"\nmodel = "m-b"\ninput = "1"\noutput = "2"\ncached_input = "0.5"\n'
    )
    price_catalog_load(path=path)
    path.write_text(
        'version = "t2"\n[[models]]\nprovider = "openai"\nmodel = "m-a"\ninput = "1.10"\noutput = "2"\n'
        'tiers = [{ above_input_tokens = 1000, input = "2.2", output = "4" }]\n'
    )
    result = price_catalog_load(path=path)
    assert result.updated == 1
    assert result.kept_not_in_file == ["openai/m-b"]
    updated = ModelPrice.objects.get(model="m-a")
    assert updated.input_usd_per_mtok == Decimal("1.10") and updated.tiers[0]["input"] == "2.2"
    pruned = price_catalog_load(path=path, prune=True)
    assert pruned.removed == 1
    assert not ModelPrice.objects.filter(model="m-b").exists()


ENTRY = '[[models]]\nprovider = "openai"\nmodel = "x"\n'


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (ENTRY + 'input = 0.15\noutput = "1"\n', "must be a string"),
        (ENTRY + 'input = "-1"\noutput = "1"\n', "non-negative"),
        (ENTRY + 'input = "NaN"\noutput = "1"\n', "finite"),
        (ENTRY + 'input = "Infinity"\noutput = "1"\n', "finite"),
        (ENTRY + 'input = "1e400"\noutput = "1"\n', "9 decimal places or 9 digits"),
        (ENTRY + 'input = "0.0000000001"\noutput = "1"\n', "9 decimal places"),
        (ENTRY + 'input = "one"\noutput = "1"\n', "not a decimal"),
        (ENTRY + 'output = "1"\n', "missing input"),
        (
            ENTRY + 'input = "1"\noutput = "1"\ntiers = [{ above_input_tokens = 10, input = "2" }]\n',
            "needs input and output",
        ),
        (
            ENTRY + 'input = "1"\noutput = "1"\ntiers = [{ above_input_tokens = 1.5, input = "2", output = "2" }]\n',
            "integer",
        ),
        (
            ENTRY + 'input = "1"\noutput = "1"\ntiers = [{ above_input_tokens = 10, input = "2", output = "2" }, '
            '{ above_input_tokens = 10, input = "3", output = "3" }]\n',
            "share a threshold",
        ),
        (ENTRY + 'input = "1"\noutput = "1"\nfees = { web_search = 0.01 }\n', "must be a string"),
        (ENTRY + 'input = "1"\noutput = "1"\ncolour = "blue"\n', "unknown key"),
        (ENTRY + 'input = "1"\noutput = "1"\ncontext_window = -5\n', "positive integer"),
        ('[[models]]\nprovider = "nope"\nmodel = "x"\ninput = "1"\noutput = "1"\n', "known provider"),
        ('[[models]]\nprovider = "openai"\nmodel = "has space"\ninput = "1"\noutput = "1"\n', "no spaces"),
        (
            ENTRY + 'input = "1"\noutput = "1"\n[[models]]\nprovider = "openai"\nmodel = "y"\ninput = "1"\n'
            'output = "1"\naliases = ["x"]\n',
            "listed twice",
        ),
        ("not toml ===", "not valid TOML"),
        ('version = "v"\n', "lists no models"),
    ],
)
def test_bad_catalog_is_refused_with_a_reason_and_nothing_loaded(tmp_path, body, message):
    path = tmp_path / "bad.toml"
    path.write_text(body)
    with pytest.raises(ApplicationError, match=message):
        price_catalog_load(path=path)
    assert ModelPrice.objects.count() == 0


def test_command_loads_and_rejects_missing_file(tmp_path, capsys):
    call_command("load_price_catalog")
    assert "created" in capsys.readouterr().out
    with pytest.raises(CommandError, match="no catalog file"):
        call_command("load_price_catalog", "--path", str(tmp_path / "missing.toml"))
