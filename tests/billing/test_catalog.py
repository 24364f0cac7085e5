"""The shipped price catalog loads, is exact, and loading is idempotent and strict."""

from decimal import Decimal

import pytest
from django.core.management import CommandError, call_command

from billing.catalog import DEFAULT_CATALOG_PATH, parse_catalog, price_catalog_load
from billing.models import ModelPrice
from config.errors import ApplicationError

pytestmark = pytest.mark.django_db


def test_shipped_catalog_covers_every_major_provider_with_exact_prices():
    version, rows = parse_catalog(DEFAULT_CATALOG_PATH.read_text())
    assert version
    providers = {row["provider"] for row in rows}
    assert {"openai", "anthropic", "google", "groq", "deepinfra", "mistral", "xai", "together"} <= providers
    for row in rows:
        assert isinstance(row["input_usd_per_mtok"], Decimal)
        assert isinstance(row["output_usd_per_mtok"], Decimal)


def test_load_is_idempotent_and_reports_changes(tmp_path):
    first = price_catalog_load()
    assert first.created > 0 and first.updated == 0
    again = price_catalog_load()
    assert again.created == 0 and again.updated == 0 and again.unchanged == first.created
    assert ModelPrice.objects.count() == first.created


def test_changed_price_is_updated_and_missing_model_kept_unless_pruned(tmp_path):
    path = tmp_path / "catalog.toml"
    path.write_text(
        'version = "t1"\n'
        '[[models]]\nprovider = "openai"\nmodel = "m-a"\ninput = "1.00"\noutput = "2.00"\n'
        '[[models]]\nprovider = "openai"\nmodel = "m-b"\ninput = "1"\noutput = "2"\ncached_input = "0.5"\n'
    )
    price_catalog_load(path=path)
    path.write_text('version = "t2"\n[[models]]\nprovider = "openai"\nmodel = "m-a"\ninput = "1.10"\noutput = "2"\n')
    result = price_catalog_load(path=path)
    assert result.updated == 1
    assert result.kept_not_in_file == ["openai/m-b"]
    assert ModelPrice.objects.get(model="m-a").input_usd_per_mtok == Decimal("1.10")
    pruned = price_catalog_load(path=path, prune=True)
    assert pruned.removed == 1
    assert not ModelPrice.objects.filter(model="m-b").exists()


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('[[models]]\nprovider = "openai"\nmodel = "x"\ninput = 0.15\noutput = "1"\n', "must be a string"),
        ('[[models]]\nprovider = "openai"\nmodel = "x"\ninput = "-1"\noutput = "1"\n', "non-negative"),
        ('[[models]]\nprovider = "openai"\nmodel = "x"\noutput = "1"\n', "missing input"),
        ('[[models]]\nprovider = "nope"\nmodel = "x"\ninput = "1"\noutput = "1"\n', "known provider"),
        (
            '[[models]]\nprovider = "openai"\nmodel = "x"\ninput = "1"\noutput = "1"\n'
            '[[models]]\nprovider = "openai"\nmodel = "y"\ninput = "1"\noutput = "1"\naliases = ["x"]\n',
            "listed twice",
        ),
        ("not toml ===", "not valid TOML"),
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
