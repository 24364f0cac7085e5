"""Tax on a top-up: which rate applies to a buyer, and when the reverse charge does.

Rules (docs/billing.md):
- The rate is TURNPIKE_TAX_RATES[buyer country] (0 for countries not listed, or no country).
- Reverse charge: the seller is in the EU, the buyer is in another EU country and gave a VAT ID whose
  format is valid for that country: no VAT is charged and the invoice carries the reverse-charge note.
  (Format only: VIES is not consulted; docs/billing.md says so.)
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

from django.conf import settings

EU_COUNTRIES = frozenset("AT BE BG CY CZ DE DK EE ES FI FR GR HR HU IE IT LT LU LV MT NL PL PT RO SE SI SK".split())
# VAT number formats after the country prefix (Greece uses the prefix EL).
_VAT_FORMATS = {
    "AT": r"U\d{8}",
    "BE": r"[01]\d{9}",
    "BG": r"\d{9,10}",
    "CY": r"\d{8}[A-Z]",
    "CZ": r"\d{8,10}",
    "DE": r"\d{9}",
    "DK": r"\d{8}",
    "EE": r"\d{9}",
    "ES": r"[A-Z0-9]\d{7}[A-Z0-9]",
    "FI": r"\d{8}",
    "FR": r"[A-HJ-NP-Z0-9]{2}\d{9}",
    "GR": r"\d{9}",
    "HR": r"\d{11}",
    "HU": r"\d{8}",
    "IE": r"\d[A-Z0-9+*]\d{5}[A-Z]{1,2}",
    "IT": r"\d{11}",
    "LT": r"(\d{9}|\d{12})",
    "LU": r"\d{8}",
    "LV": r"\d{11}",
    "MT": r"\d{8}",
    "NL": r"\d{9}B\d{2}",
    "PL": r"\d{10}",
    "PT": r"\d{9}",
    "RO": r"\d{2,10}",
    "SE": r"\d{12}",
    "SI": r"\d{8}",
    "SK": r"\d{10}",
}
REVERSE_CHARGE_NOTE = (
    "Reverse charge: VAT to be accounted for by the recipient (Article 196, Council Directive 2006/112/EC)."
)


def normalise_tax_id(value: str) -> str:
    return re.sub(r"[\s.\-]", "", value or "").upper()


def valid_eu_vat_id(tax_id: str, country: str) -> bool:
    """Whether `tax_id` has the format of a VAT number of EU `country` (prefix included)."""
    country = (country or "").upper()
    pattern = _VAT_FORMATS.get(country)
    if pattern is None:
        return False
    prefix = "EL" if country == "GR" else country
    return re.fullmatch(prefix + pattern, normalise_tax_id(tax_id)) is not None


@dataclass(frozen=True)
class TaxTreatment:
    rate: Decimal
    reverse_charge: bool
    note: str

    def tax_cents(self, net_cents: int) -> int:
        """Tax on a net amount, rounded half-up to the cent."""
        return int((self.rate * net_cents).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def _rates() -> dict[str, Decimal]:
    rates: dict[str, Decimal] = {}
    for pair in settings.TURNPIKE_TAX_RATES:
        country, _, rate = pair.partition("=")
        try:
            value = Decimal(rate.strip())
        except InvalidOperation as exc:
            raise ValueError(f"TURNPIKE_TAX_RATES: {pair!r} is not COUNTRY=rate") from exc
        if not value.is_finite() or not 0 <= value < 1:
            raise ValueError(f"TURNPIKE_TAX_RATES: the rate in {pair!r} must be at least 0 and below 1")
        rates[country.strip().upper()] = value
    return rates


def tax_treatment(*, country: str, tax_id: str) -> TaxTreatment:
    """The tax of a sale to a buyer in `country` with `tax_id` (may be empty)."""
    country = (country or "").upper()
    seller_country = settings.TURNPIKE_SELLER["country"].upper()
    if (
        seller_country in EU_COUNTRIES
        and country in EU_COUNTRIES
        and country != seller_country
        and valid_eu_vat_id(tax_id, country)
    ):
        return TaxTreatment(rate=Decimal(0), reverse_charge=True, note=REVERSE_CHARGE_NOTE)
    return TaxTreatment(rate=_rates().get(country, Decimal(0)), reverse_charge=False, note="")
