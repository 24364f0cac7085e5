"""Dead letters of usage ingestion: stream entries that can never be stored, kept for an operator.

An entry becomes a dead letter (billing.ingest decides) when Postgres refuses it even alone in its batch
(a data or integrity error), when it cannot be decoded at all, or when it was delivered more than
`billing.ingest.MAX_DELIVERIES` times without a verdict (e.g. it crashes the worker). Each one appears in:

    billing_usagedeadletter   one row per entry (unique entry id): raw fields as ASCII JSON text, the
                              error, the workspace and charge if known; Django admin lists them
    tp:usage:dead             Redis stream, one entry per dead letter (`entry`, `letter` = JSON), capped
                              at about 100,000 entries (contracts.events.USAGE_DEAD_STREAM)
    tp:metrics                Redis hash, field `ingest_dead_letters`: a counter (contracts.events)
    the log                   one ERROR line per dead letter: entry id, workspace, charge, error

Steps: `dead_letters_record` writes the rows in a transaction of their own and logs; then the ingester's
ACK script (contracts.balance.ACK) acknowledges each entry and, only if it acknowledged it now, releases
its charge from the workspace's `pending`, appends it to `tp:usage:dead` and counts it. A crash between the
two leaves the entry pending: it is dead-lettered again (the row is not duplicated; the log line is).
The released charge was never debited: the operator decides whether to charge it (docs/).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

from django.db import transaction

from billing.models import UsageDeadLetter

log = logging.getLogger("turnpike.billing.ingest")

RAW_FIELDS_MAX_CHARS = 64 * 1024
ERROR_MAX_CHARS = 2000


@dataclass(frozen=True, slots=True)
class DeadLetter:
    entry_id: str
    workspace_id: int | None
    charge_nanos: int  # what the ACK releases from the workspace's pending (0 if unknown)
    error: str
    raw_fields: str  # raw_fields_text(...) of the stream entry
    request_id: str = ""
    deliveries: int = 1

    def letter(self) -> str:
        """The `letter` field of its tp:usage:dead entry (ASCII JSON)."""
        return json.dumps(
            {
                "workspace_id": self.workspace_id,
                "charge_nanos": self.charge_nanos,
                "request_id": self.request_id,
                "deliveries": self.deliveries,
                "error": self.error,
                "fields": self.raw_fields,
            },
            separators=(",", ":"),
        )


def raw_fields_text(fields: dict[Any, Any]) -> str:
    """Stream fields as ASCII JSON text that Postgres always accepts: bytes that are not UTF-8 appear as
    backslash escapes, NUL and other control characters as \\u escapes; cut at RAW_FIELDS_MAX_CHARS."""
    text = json.dumps({_text(k): _text(v) for k, v in fields.items()}, ensure_ascii=True, separators=(",", ":"))
    if len(text) > RAW_FIELDS_MAX_CHARS:
        return text[:RAW_FIELDS_MAX_CHARS] + f"... ({len(text)} characters)"
    return text


def error_text(exc: BaseException | str) -> str:
    text = exc if isinstance(exc, str) else f"{type(exc).__name__}: {exc}".strip()
    text = text.encode("utf-8", "replace").decode("utf-8").replace("\x00", "\\0")
    return text[:ERROR_MAX_CHARS]


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "backslashreplace")
    return str(value)


def dead_letters_record(*, letters: list[DeadLetter]) -> None:
    """Store the dead letters (one transaction of their own; an entry already recorded is left as it is)
    and log each one. Raises only what Postgres being unreachable raises: every value here fits."""
    if not letters:
        return
    with transaction.atomic():
        UsageDeadLetter.objects.bulk_create(
            [
                UsageDeadLetter(
                    entry_id=letter.entry_id,
                    request_id=letter.request_id,
                    workspace_id=letter.workspace_id,
                    charge_nanos=letter.charge_nanos,
                    error=letter.error,
                    raw_fields=letter.raw_fields,
                    deliveries=letter.deliveries,
                )
                for letter in letters
            ],
            ignore_conflicts=True,
        )
    for letter in letters:
        log.error(
            "usage entry %s (request %s) of workspace %s dead-lettered after %d delivery(ies); "
            "%d nano-USD released from pending, not debited: %s",
            letter.entry_id,
            letter.request_id or "unknown",
            "unknown" if letter.workspace_id is None else letter.workspace_id,
            letter.deliveries,
            letter.charge_nanos,
            letter.error,
        )
