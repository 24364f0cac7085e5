"""Load or update the published price catalog from the shipped TOML file (or another path)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from billing.catalog import DEFAULT_CATALOG_PATH, price_catalog_load
from config.errors import ApplicationError


class Command(BaseCommand):
    help = "Load billing/data/price_catalog.toml (or --path) into the price catalog. Idempotent."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--path", type=Path, default=DEFAULT_CATALOG_PATH)
        parser.add_argument("--prune", action="store_true", help="delete models no longer in the file")

    def handle(self, *args: Any, **opts: Any) -> None:
        path: Path = opts["path"]
        if not path.is_file():
            raise CommandError(f"no catalog file at {path}")
        try:
            result = price_catalog_load(path=path, prune=opts["prune"])
        except ApplicationError as exc:
            raise CommandError(exc.message) from exc
        self.stdout.write(
            f"price catalog {result.version}: {result.created} created, {result.updated} updated, "
            f"{result.unchanged} unchanged, {result.removed} removed"
        )
        if result.kept_not_in_file:
            self.stdout.write(f"kept (not in file; --prune removes): {', '.join(result.kept_not_in_file)}")
