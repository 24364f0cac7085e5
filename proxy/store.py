"""The proxy's only Postgres access: reads on a cache miss, never on the warm path.

Raw SQL against the tables Django owns (tenants_*, billing_*), so the proxy needs no Django import;
tests/proxy/test_store.py runs every query against the migrated schema, so a model change that
breaks one fails the suite rather than production.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from contracts.events import UsageEvent
from contracts.pricing import Price

KEY_SQL = """
SELECT k.id AS key_id, k.public_id::text AS key_public_id, k.name AS key_name, k.expires_at, k.revoked_at,
       k.allowed_models, k.log_bodies,
       w.id AS workspace_id, w.public_id::text AS workspace_public_id, w.slug AS workspace_slug
FROM tenants_gatewaykey k JOIN tenants_workspace w ON w.id = k.workspace_id
WHERE k.key_hash = %s
"""

CREDENTIALS_SQL = """
SELECT id, public_id::text AS public_id, provider, slug, label, base_url, secret_ciphertext
FROM tenants_providercredential
WHERE workspace_id = %s AND removed_at IS NULL
ORDER BY created_at, id
"""

DATA_KEY_SQL = "SELECT master_key_id, wrapped_key FROM tenants_workspacedatakey WHERE workspace_id = %s"

WORKSPACE_SQL = """
SELECT w.public_id::text AS public_id, w.slug, w.managed_access, w.log_bodies,
       COALESCE(p.byok_fee_rate, d.byok_fee_rate, 0) AS byok_fee_rate,
       COALESCE(p.managed_markup_rate, d.managed_markup_rate, 0) AS managed_markup_rate
FROM tenants_workspace w
LEFT JOIN billing_plan p ON p.id = w.plan_id
LEFT JOIN billing_plan d ON d.is_default
WHERE w.id = %s
"""

PLATFORM_CREDENTIALS_SQL = """
SELECT id, public_id::text AS public_id, provider, label, base_url, master_key_id, wrapped_key, secret_ciphertext
FROM tenants_platformcredential
WHERE is_active
ORDER BY id
"""

BALANCE_SQL = "SELECT balance_nanos, version FROM billing_workspacebalance WHERE workspace_id = %s"

CATALOG_SQL = """
SELECT provider, model, mode, aliases, context_window, max_output_tokens,
       input_usd_per_mtok, cached_input_usd_per_mtok, cache_write_usd_per_mtok, output_usd_per_mtok,
       reasoning_usd_per_mtok, request_fee_usd, tiers, fees
FROM billing_modelprice
"""

WORKSPACE_PRICES_SQL = """
SELECT provider, model,
       input_usd_per_mtok, cached_input_usd_per_mtok, cache_write_usd_per_mtok, output_usd_per_mtok,
       reasoning_usd_per_mtok, request_fee_usd
FROM billing_workspacemodelprice
WHERE workspace_id = %s
"""


@dataclass(frozen=True, slots=True)
class KeyRow:
    key_id: int
    key_public_id: str
    key_name: str
    expires_at: datetime | None
    revoked_at: datetime | None
    workspace_id: int
    workspace_public_id: str
    workspace_slug: str
    allowed_models: list[str]
    log_bodies: bool | None = None  # None: as the workspace says


@dataclass(frozen=True, slots=True)
class WorkspaceRow:
    public_id: str
    byok_fee_rate: Decimal
    managed_markup_rate: Decimal
    managed_access: bool = False
    slug: str = ""
    log_bodies: bool = False


@dataclass(frozen=True, slots=True)
class PlatformCredentialRow:
    id: int
    public_id: str
    provider: str
    label: str
    base_url: str
    master_key_id: str
    wrapped_key: bytes
    secret_ciphertext: bytes


@dataclass(frozen=True, slots=True)
class CredentialRow:
    id: int
    public_id: str
    provider: str
    slug: str
    label: str
    base_url: str
    secret_ciphertext: bytes


@dataclass(frozen=True, slots=True)
class CatalogRow:
    provider: str
    model: str
    mode: str
    aliases: tuple[str, ...]
    context_window: int | None
    price: Price
    max_output_tokens: int | None = None


def price_from_row(row: dict[str, Any]) -> Price:
    """A catalog or workspace price row as a Price; `tiers` and `fees` (JSON holding decimal strings) are
    optional, so a query that does not select them prices without tiers or fees."""
    return Price.from_dict(
        {
            "input": Decimal(row["input_usd_per_mtok"]),
            "output": Decimal(row["output_usd_per_mtok"]),
            "cached_input": row["cached_input_usd_per_mtok"],
            "cache_write": row["cache_write_usd_per_mtok"],
            "reasoning": row["reasoning_usd_per_mtok"],
            "request_fee": row["request_fee_usd"] or Decimal(0),
            "tiers": row.get("tiers") or [],
            "fees": row.get("fees") or {},
        }
    )


class Store:
    """A small async connection pool, opened lazily on the first miss."""

    def __init__(self, database_url: str, *, max_size: int = 4) -> None:
        self._pool = AsyncConnectionPool(
            database_url, min_size=0, max_size=max_size, open=False, kwargs={"autocommit": True}
        )
        self._opened = False
        self.queries = 0  # statements sent since start: cache misses are meant to be the only ones

    async def _ensure_open(self) -> None:
        if not self._opened:
            await self._pool.open(wait=False)
            self._opened = True

    async def close(self) -> None:
        if self._opened:
            await self._pool.close()
            self._opened = False

    async def _fetch(self, sql: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        await self._ensure_open()
        self.queries += 1
        async with self._pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(sql, params)  # type: ignore[arg-type]
            return await cur.fetchall()

    async def key_by_hash(self, key_hash: str) -> KeyRow | None:
        rows = await self._fetch(KEY_SQL, (key_hash,))
        return KeyRow(**rows[0]) if rows else None

    async def credentials(self, workspace_id: int) -> list[CredentialRow]:
        rows = await self._fetch(CREDENTIALS_SQL, (workspace_id,))
        return [CredentialRow(**{**row, "secret_ciphertext": bytes(row["secret_ciphertext"])}) for row in rows]

    async def data_key(self, workspace_id: int) -> tuple[str, bytes] | None:
        rows = await self._fetch(DATA_KEY_SQL, (workspace_id,))
        return (rows[0]["master_key_id"], bytes(rows[0]["wrapped_key"])) if rows else None

    async def workspace(self, workspace_id: int) -> WorkspaceRow:
        rows = await self._fetch(WORKSPACE_SQL, (workspace_id,))
        if not rows:
            raise LookupError(f"workspace {workspace_id} does not exist")
        return WorkspaceRow(
            public_id=rows[0]["public_id"],
            byok_fee_rate=Decimal(rows[0]["byok_fee_rate"]),
            managed_markup_rate=Decimal(rows[0]["managed_markup_rate"]),
            managed_access=bool(rows[0]["managed_access"]),
            slug=rows[0]["slug"],
            log_bodies=bool(rows[0]["log_bodies"]),
        )

    async def platform_credentials(self) -> list[PlatformCredentialRow]:
        rows = await self._fetch(PLATFORM_CREDENTIALS_SQL, ())
        return [
            PlatformCredentialRow(
                **{
                    **row,
                    "wrapped_key": bytes(row["wrapped_key"]),
                    "secret_ciphertext": bytes(row["secret_ciphertext"]),
                }
            )
            for row in rows
        ]

    async def balance(self, workspace_id: int) -> tuple[int, int]:
        """(ledger balance in nano-USD, version); (0, 0) for a workspace that never had a posting."""
        rows = await self._fetch(BALANCE_SQL, (workspace_id,))
        return (int(rows[0]["balance_nanos"]), int(rows[0]["version"])) if rows else (0, 0)

    async def catalog(self) -> list[CatalogRow]:
        rows = await self._fetch(CATALOG_SQL)
        return [
            CatalogRow(
                provider=row["provider"],
                model=row["model"],
                mode=row["mode"],
                aliases=tuple(row["aliases"] or ()),
                context_window=row["context_window"],
                price=price_from_row(row),
                max_output_tokens=row["max_output_tokens"],
            )
            for row in rows
        ]

    async def workspace_prices(self, workspace_id: int) -> dict[tuple[str, str], Price]:
        rows = await self._fetch(WORKSPACE_PRICES_SQL, (workspace_id,))
        return {(row["provider"], row["model"]): price_from_row(row) for row in rows}

    async def usage_event(self, *, workspace_id: int, request_id: str) -> UsageEvent | None:
        """A request's ingested usage event, if it is this workspace's (GET /v1/generation, after the
        short-lived Redis record expired). One indexed lookup on the unique request id."""
        rows = await self._fetch(
            """
            SELECT request_id, workspace_id, key_id, provider, credential_id, credential_kind, model_requested,
                   model_served, status, error_code, input_tokens, cached_input_tokens, cache_write_tokens,
                   output_tokens, reasoning_tokens, units, cost_nanos, charge_nanos, priced, estimated, stream,
                   latency_ms, ttfb_ms, started_at, finished_at
            FROM billing_usageevent
            WHERE request_id = %s AND workspace_id = %s
            """,
            (request_id, workspace_id),
        )
        if not rows:
            return None
        row = rows[0]
        started, finished = row.pop("started_at"), row.pop("finished_at")
        return UsageEvent(
            **row,
            started_at_ms=int(started.timestamp() * 1000),
            finished_at_ms=int(finished.timestamp() * 1000),
        )
