"""The public model catalog page: no login, searchable, exact prices, tiers and fees shown, accessible markup."""

from __future__ import annotations

import re

import pytest
from django.test import Client

from billing.catalog import price_catalog_load

pytestmark = pytest.mark.django_db

URL = "/models/"


@pytest.fixture(autouse=True)
def catalog() -> None:
    price_catalog_load()


def page(client: Client, **params: str) -> str:
    response = client.get(URL, params)
    assert response.status_code == 200
    return response.content.decode()


def row_of(html: str, model: str) -> str:
    """The table row whose header cell is `model`."""
    match = re.search(
        r'<tr>\s*<th scope="row"><span class="model-id">' + re.escape(model) + r"</span>.*?</tr>", html, re.S
    )
    assert match, f"no row for {model}"
    return match.group(0)


def cells(row: str) -> list[str]:
    return [re.sub(r"<[^>]+>", "", c).strip() for c in re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)]


def test_anyone_can_see_the_catalog_without_logging_in(client):
    html = page(client)
    assert "Models and prices" in html
    assert re.search(r"\d,?\d{3} models from \d+ providers", html)
    assert 'rel="next"' in html  # paged: a hundred models at a time


def test_search_finds_a_model_and_shows_its_prices_exactly(client):
    html = page(client, q="gpt-4o-mini", provider="openai")
    row = cells(row_of(html, "gpt-4o-mini"))
    # provider, modality, context, max output, input, cached input, cache write, output, reasoning, extras
    assert row[0] == "OpenAI"
    assert row[2:9] == ["128,000", "16,384", "$0.15", "$0.075", "—", "$0.60", "—"]
    assert "gpt-4o-mini-2024-07-18" in row_of(html, "gpt-4o-mini")  # its alias is listed with it
    assert "gpt-4.1" not in html


def test_search_matches_aliases_and_several_words(client):
    html = page(client, q="claude-sonnet-4-5-20250929")
    assert '<span class="model-id">claude-sonnet-4-5</span>' in html
    html = page(client, q="anthropic haiku")
    assert "claude-haiku-4-5" in html and "claude-sonnet-4-5" not in html


def test_tiers_fees_and_cache_write_variants_are_shown(client):
    html = page(client, q="gemini-2.5-pro", provider="google")
    row = row_of(html, "gemini-2.5-pro")
    assert "Prompts over 200,000 tokens: input $2.50, cached $0.625, output $15.00" in row
    assert "$0.035 per web search" in row
    html = page(client, q="claude-sonnet-4-5", provider="anthropic")
    row = row_of(html, "claude-sonnet-4-5")
    assert cells(row)[4:8] == ["$3.00", "$0.30", "$3.75", "$15.00"]
    assert "Prompts over 200,000 tokens: input $6.00, cached $0.60, cache write $7.50, output $22.50" in row
    assert "1-hour cache write $6.00 / 1M" in row


def test_provider_and_modality_filters(client):
    html = page(client, provider="groq")
    providers = {cells(r)[0] for r in re.findall(r"<tr>\s*<th scope=\"row\">.*?</tr>", html, re.S)}
    assert providers == {"Groq"}
    html = page(client, provider="openai", modality="embedding")
    models = re.findall(r'<span class="model-id">([^<]+)</span>', html)
    assert "text-embedding-3-small" in models and all("embedding" in m for m in models)
    html = page(client, provider="google", modality="audio")
    assert "gemini-2.5-flash" in html


def test_no_match_and_hostile_input_are_handled(client):
    html = page(client, q="<script>alert(1)</script>")
    assert "No model matches" in html and "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;" in html
    for params in (
        {"provider": "nope"},
        {"modality": "smell"},
        {"page": "99999999999"},
        {"page": "-1"},
        {"q": "a\x00b"},
    ):
        assert page(client, **params)
    assert client.post(URL).status_code == 405


def test_markup_is_keyboard_and_screen_reader_friendly(client):
    html = page(client)
    assert '<label for="catalog-q">Search</label>' in html and 'id="catalog-q"' in html
    assert '<label for="catalog-provider">' in html and '<label for="catalog-modality">' in html
    assert html.count('<th scope="col">') == 11
    assert '<caption id="catalog-caption">' in html
    assert 'class="table-scroll" tabindex="0" role="region" aria-labelledby="catalog-caption"' in html


def test_logged_in_users_see_the_same_page(client, django_user_model):
    user = django_user_model.objects.create_user(email="someone@example.com", password="x" * 16)
    client.force_login(user)
    assert "Models and prices" in page(client, q="gpt-5")
