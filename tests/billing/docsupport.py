"""Helpers for the document tests: workspaces, paid top-ups, usage posted the way the ingester posts it,
and the text of a PDF as a reader sees it (fpdf2's Type0 fonts decoded through their ToUnicode maps)."""

from __future__ import annotations

import itertools
import re
import secrets
import uuid
import zlib
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from django.db import transaction

from billing.models import LedgerEntry, TopUp, UsageEvent
from billing.services import ledger_post
from tenants.models import GatewayKey, User, Workspace

_seq = itertools.count(1)


def make_workspace(name: str = "Acme") -> Workspace:
    n = next(_seq)
    return Workspace.objects.create(name=name, slug=f"ws-{n}-{secrets.token_hex(3)}")


def make_key(workspace: Workspace) -> GatewayKey:
    return GatewayKey.objects.create(workspace=workspace, name="k", prefix="tpk_live_x", key_hash=secrets.token_hex(32))


def paid_topup(
    workspace: Workspace,
    *,
    cents: int = 10_000,
    tax_cents: int = 0,
    tax_rate: str = "0",
    reverse_charge: bool = False,
    user: User | None = None,
) -> TopUp:
    return TopUp.objects.create(
        workspace=workspace,
        source=TopUp.Source.CHECKOUT,
        status=TopUp.Status.PAID,
        amount_nanos=cents * 10_000_000,
        tax_cents=tax_cents,
        tax_rate=Decimal(tax_rate),
        reverse_charge=reverse_charge,
        stripe_checkout_session_id=f"cs_test_{uuid.uuid4().hex}",
        stripe_payment_intent_id=f"pi_test_{uuid.uuid4().hex}",
        created_by=user,
    )


@dataclass(frozen=True)
class Ev:
    provider: str
    model: str
    credential_kind: str
    input: int = 0
    cached_input: int = 0
    cache_write: int = 0
    output: int = 0
    reasoning: int = 0
    charge_nanos: int = 0


def post_usage_batch(workspace: Workspace, key: GatewayKey, events: list[Ev], *, at: datetime) -> int:
    """Store events and their one usage debit as billing.ingest does: the debit's created_at is the events'
    ingested_at, and it is -sum(charges) (no debit when that is 0), in one transaction. Returns the debit."""
    with transaction.atomic():
        return _usage_batch(workspace, key, events, at=at)


def _usage_batch(workspace: Workspace, key: GatewayKey, events: list[Ev], *, at: datetime) -> int:
    total = 0
    for e in events:
        UsageEvent.objects.create(
            request_id=f"req_{uuid.uuid4().hex}",
            workspace=workspace,
            key=key,
            provider=e.provider,
            credential_kind=e.credential_kind,
            model_requested=e.model,
            model_served=e.model,
            status=200,
            input_tokens=e.input,
            cached_input_tokens=e.cached_input,
            cache_write_tokens=e.cache_write,
            output_tokens=e.output,
            reasoning_tokens=e.reasoning,
            cost_nanos=e.charge_nanos,
            charge_nanos=e.charge_nanos,
            started_at=at,
            finished_at=at,
            ingested_at=at,
        )
        total += e.charge_nanos
    if total:
        ledger_post(
            workspace_id=workspace.pk,
            kind=LedgerEntry.Kind.USAGE,
            amount_nanos=-total,
            idempotency_key=f"usage:{workspace.pk}:{uuid.uuid4().hex}",
            created_at=at,
        )
    return -total


def post(workspace: Workspace, kind: str, nanos: int, *, at: datetime) -> None:
    with transaction.atomic():
        ledger_post(
            workspace_id=workspace.pk, kind=kind, amount_nanos=nanos, idempotency_key=uuid.uuid4().hex, created_at=at
        )


# --- PDF text --------------------------------------------------------------------------------------------------

_OBJ_START = re.compile(rb"(\d+) 0 obj\s*")
_LENGTH = re.compile(rb"/Length (\d+)")
_HEX = re.compile(rb"<([0-9A-Fa-f]+)>")
_ESCAPES = {ord("n"): b"\n", ord("r"): b"\r", ord("t"): b"\t", ord("b"): b"\b", ord("f"): b"\f"}


def _streams(pdf: bytes) -> dict[int, tuple[bytes, bytes]]:
    """{object number: (dictionary, decoded stream or b"")}. A stream is cut by its /Length, never by
    searching for `endstream`/`endobj`: compressed bytes can contain those words (or end in a newline)."""
    out: dict[int, tuple[bytes, bytes]] = {}
    position = 0
    while (match := _OBJ_START.search(pdf, position)) is not None:
        start = match.end()
        end = pdf.find(b"endobj", start)
        stream_at = pdf.find(b"stream", start)
        length = _LENGTH.search(pdf, start, stream_at) if stream_at != -1 else None
        if stream_at == -1 or (end != -1 and stream_at > end) or length is None:
            out[int(match.group(1))] = (pdf[start:end], b"")
            position = end + len(b"endobj")
            continue
        head = pdf[start:stream_at]
        data_start = stream_at + len(b"stream")
        data_start += 2 if pdf[data_start : data_start + 2] == b"\r\n" else 1
        size = int(length.group(1))
        data = pdf[data_start : data_start + size]
        if b"/FlateDecode" in head:
            data = zlib.decompress(data)
        out[int(match.group(1))] = (head, data)
        position = pdf.find(b"endobj", data_start + size) + len(b"endobj")
    return out


def _cmap(data: bytes) -> dict[int, str]:
    mapping: dict[int, str] = {}
    for block in re.findall(rb"beginbfchar(.*?)endbfchar", data, re.S):
        pairs = _HEX.findall(block)
        for src, dst in zip(pairs[::2], pairs[1::2], strict=True):
            mapping[int(src, 16)] = bytes.fromhex(dst.decode()).decode("utf-16-be")
    for block in re.findall(rb"beginbfrange(.*?)endbfrange", data, re.S):
        values = _HEX.findall(block)
        for lo, hi, dst in zip(values[::3], values[1::3], values[2::3], strict=True):
            base = int(dst, 16)
            for offset, code in enumerate(range(int(lo, 16), int(hi, 16) + 1)):
                mapping[code] = chr(base + offset)
    return mapping


def _literal(data: bytes, i: int) -> tuple[bytes, int]:
    """The PDF literal string starting at data[i] == '('; returns (bytes, index after it)."""
    out, depth, i = bytearray(), 1, i + 1
    while True:
        c = data[i]
        if c == ord("\\"):
            nxt = data[i + 1]
            if nxt in _ESCAPES:
                out += _ESCAPES[nxt]
                i += 2
            elif ord("0") <= nxt <= ord("7"):
                digits = re.match(rb"[0-7]{1,3}", data[i + 1 : i + 4])
                assert digits
                out.append(int(digits.group(0), 8) & 0xFF)
                i += 1 + len(digits.group(0))
            elif nxt in b"\r\n":
                i += 2
            else:
                out.append(nxt)
                i += 2
            continue
        if c == ord("("):
            depth += 1
        elif c == ord(")"):
            depth -= 1
            if depth == 0:
                return bytes(out), i + 1
        out.append(c)
        i += 1


def pdf_text(pdf: bytes) -> str:
    """The text of every page, one line per text object."""
    objects = _streams(pdf)
    fonts: dict[bytes, dict[int, str]] = {}
    for name, number in re.findall(rb"/(F\d+)\s+(\d+)\s+0\s+R", b"".join(h for h, _ in objects.values())):
        head = objects.get(int(number), (b"", b""))[0]
        to_unicode = re.search(rb"/ToUnicode\s+(\d+)\s+0\s+R", head)
        if to_unicode:
            fonts[name] = _cmap(objects[int(to_unicode.group(1))][1])
    lines: list[str] = []
    for head, data in objects.values():
        if b"BT" not in data or b"beginbfchar" in data or b"/Subtype" in head:
            continue
        font: dict[int, str] = {}
        current: list[str] = []
        i = 0
        while i < len(data):
            if data[i] == ord("("):
                raw, i = _literal(data, i)
                current.append(
                    "".join(font.get(int.from_bytes(raw[j : j + 2], "big"), "") for j in range(0, len(raw), 2))
                )
                continue
            selected = re.match(rb"/(F\d+)\s+[\d.]+\s+Tf", data[i : i + 40])
            if selected:
                font = fonts.get(selected.group(1), {})
                i += selected.end()
                continue
            if data[i : i + 2] == b"ET" and (i + 2 == len(data) or data[i + 2] in b" \r\n"):
                if current:
                    lines.append("".join(current))
                current = []
            i += 1
    return "\n".join(lines)
