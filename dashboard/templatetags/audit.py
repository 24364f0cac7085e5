"""Showing an audit row's metadata to a person: field changes as "from → to", money in dollars (never
nano-USD), secrets never (services do not put them in metadata in the first place)."""

from __future__ import annotations

from typing import Any

from django import template

from contracts.money import usd_text

register = template.Library()

MAX_ITEMS = 8


def _value(name: str, value: Any) -> str:
    if value is None or value == "":
        return "—"
    if name.endswith("_nanos") and isinstance(value, int | str) and str(value).lstrip("-").isdigit():
        return usd_text(int(value))
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return ", ".join(str(v) for v in value) or "—"
    return str(value)[:120]


def _label(name: str) -> str:
    return name.removesuffix("_nanos").replace("_", " ")


@register.filter
def audit_details(metadata: Any) -> list[str]:
    """Lines like "plan: free → team", "amount: $25.00"."""
    if not isinstance(metadata, dict):
        return []
    lines: list[str] = []
    changes = metadata.get("changes")
    if isinstance(changes, dict):
        for name, change in changes.items():
            if isinstance(change, dict) and "to" in change:
                lines.append(f"{_label(name)}: {_value(name, change.get('from'))} → {_value(name, change.get('to'))}")
    for name, value in metadata.items():
        if name in ("changes", "operator") or isinstance(value, dict):
            continue
        lines.append(f"{_label(name)}: {_value(name, value)}")
    if metadata.get("operator"):
        lines.append("by a platform operator")
    return lines[:MAX_ITEMS]
