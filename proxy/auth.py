"""Gateway key -> workspace, credentials and prices, without Postgres on the warm path.

Three tiers:
1. in-process dicts, each entry living `auth_ttl` seconds (so a lost invalidation heals by itself);
2. Redis documents `tp:key:<sha256>` and `tp:ws:<id>` (no plaintext secret: credentials travel as
   their ciphertext plus the wrapped data key, decrypted only here, in process memory);
3. Postgres (proxy.store), only when Redis has no document (or Redis is down).

Invalidation: the web app, after committing a change to a key or credential, deletes the Redis
document and publishes `key:<sha256>` / `ws:<id>` on `INVALIDATION_CHANNEL`; every proxy worker's
listener drops its in-process entry, so the next request re-reads. A listener that reconnects drops
everything, because it may have missed messages while away.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from decimal import Decimal
from fnmatch import fnmatchcase
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from contracts import crypto
from contracts.cachekeys import INVALIDATION_CHANNEL, hash_token, key_doc_key, workspace_doc_key
from contracts.pricing import Price
from proxy.store import Store

log = logging.getLogger("turnpike.proxy.auth")

NEGATIVE_REDIS_TTL = 30


@dataclass(frozen=True, slots=True)
class Credential:
    id: int
    public_id: str
    provider: str
    slug: str
    label: str
    base_url: str
    secret: str = field(repr=False)
    kind: str = "byok"


@dataclass(frozen=True, slots=True)
class WorkspaceContext:
    workspace_id: int
    credentials: tuple[Credential, ...]
    prices: dict[tuple[str, str], Price]  # workspace overrides, (routing prefix, model) -> price
    byok_fee_rate: Decimal = Decimal(0)
    managed_markup_rate: Decimal = Decimal(0)

    def charge_rate(self, credential: Credential) -> Decimal:
        """Multiplier from provider cost to what the balance is charged (BRIEF: money model)."""
        return self.byok_fee_rate if credential.kind == "byok" else 1 + self.managed_markup_rate

    def credential_for(self, prefix: str) -> Credential | None:
        """The workspace's credential for a provider type or a credential slug (oldest first)."""
        for credential in self.credentials:
            if credential.slug == prefix:
                return credential
        for credential in self.credentials:
            if credential.provider == prefix:
                return credential
        return None


@dataclass(frozen=True, slots=True)
class KeyContext:
    key_id: int
    key_public_id: str
    workspace_id: int
    expires_at: float | None  # unix seconds
    workspace: WorkspaceContext
    allowed_models: tuple[str, ...] = ()  # model ids / glob patterns; empty = any model

    def expired(self, now: float | None = None) -> bool:
        return self.expires_at is not None and (now or time.time()) >= self.expires_at

    def allows(self, *model_ids: str) -> bool:
        """Whether this key may call a model known by any of `model_ids` (e.g. `openai/gpt-4o` and `gpt-4o`)."""
        if not self.allowed_models:
            return True
        return any(fnmatchcase(m, pattern) for m in model_ids for pattern in self.allowed_models)


class _TTLCache:
    __slots__ = ("_data", "_ttl")

    def __init__(self, ttl: float) -> None:
        self._ttl = ttl
        self._data: dict[Any, tuple[float, Any]] = {}

    def get(self, key: Any) -> tuple[bool, Any]:
        hit = self._data.get(key)
        if hit is None:
            return False, None
        if hit[0] < time.monotonic():
            self._data.pop(key, None)
            return False, None
        return True, hit[1]

    def put(self, key: Any, value: Any, ttl: float | None = None) -> None:
        self._data[key] = (time.monotonic() + (self._ttl if ttl is None else ttl), value)

    def pop(self, key: Any) -> None:
        self._data.pop(key, None)

    def clear(self) -> None:
        self._data.clear()

    def __len__(self) -> int:
        return len(self._data)


class KeyResolver:
    def __init__(
        self,
        *,
        redis: aioredis.Redis,
        store: Store,
        keyring: crypto.Keyring,
        auth_ttl: float,
        negative_ttl: float,
        redis_doc_ttl: int,
    ) -> None:
        self._redis = redis
        self._store = store
        self._keyring = keyring
        self._negative_ttl = negative_ttl
        self._redis_doc_ttl = redis_doc_ttl
        self._keys = _TTLCache(auth_ttl)
        self._workspaces = _TTLCache(auth_ttl)
        self._inflight: dict[Any, asyncio.Future[Any]] = {}

    # --- public -------------------------------------------------------------------------------------

    async def resolve(self, plaintext: str) -> KeyContext | None:
        """The key's context, or None for an unknown, revoked or expired key."""
        key_hash = hash_token(plaintext)
        found, doc = self._keys.get(key_hash)
        if not found:
            doc = await self._single_flight(("k", key_hash), lambda: self._load_key_doc(key_hash))
            self._keys.put(key_hash, doc, None if doc else self._negative_ttl)
        if not doc or doc.get("revoked"):
            return None
        expires_at = doc.get("expires_at")
        if expires_at is not None and time.time() >= expires_at:
            return None
        workspace = await self.workspace(doc["workspace_id"])
        return KeyContext(
            key_id=doc["key_id"],
            key_public_id=doc["key_public_id"],
            workspace_id=doc["workspace_id"],
            expires_at=expires_at,
            workspace=workspace,
            allowed_models=tuple(doc.get("allowed_models") or ()),
        )

    async def workspace(self, workspace_id: int) -> WorkspaceContext:
        found, ctx = self._workspaces.get(workspace_id)
        if found:
            return ctx  # type: ignore[no-any-return]
        ctx = await self._single_flight(("w", workspace_id), lambda: self._load_workspace(workspace_id))
        self._workspaces.put(workspace_id, ctx)
        return ctx  # type: ignore[no-any-return]

    def invalidate(self, message: str) -> None:
        kind, _, ident = message.partition(":")
        if kind == "key":
            self._keys.pop(ident)
        elif kind == "ws" and ident.isdigit():
            self._workspaces.pop(int(ident))
        else:
            self.clear()

    def clear(self) -> None:
        self._keys.clear()
        self._workspaces.clear()

    async def listen_for_invalidations(self, *, on_ready: Callable[[], None] | None = None) -> None:
        """Run forever: apply invalidation messages; after any (re)connect, drop everything."""
        backoff = 0.1
        while True:
            pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(INVALIDATION_CHANNEL)
                self.clear()
                backoff = 0.1
                if on_ready is not None:
                    on_ready()
                    on_ready = None
                async for message in pubsub.listen():
                    data = message.get("data")
                    if isinstance(data, bytes):
                        data = data.decode()
                    if isinstance(data, str):
                        self.invalidate(data)
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                log.warning("invalidation listener lost Redis (%s); retrying", exc)
                self.clear()
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()

    # --- loading --------------------------------------------------------------------------------------

    async def _single_flight(self, key: Any, load: Callable[[], Awaitable[Any]]) -> Any:
        """Concurrent misses for the same key share one load."""
        pending = self._inflight.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._inflight[key] = future
        try:
            result = await load()
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # mark retrieved: waiters re-raise it themselves
            raise
        else:
            future.set_result(result)
            return result
        finally:
            self._inflight.pop(key, None)

    async def _redis_get(self, name: str) -> dict[str, Any] | None:
        try:
            raw = await self._redis.get(name)
        except (RedisError, OSError) as exc:
            log.warning("Redis unavailable for %s (%s); reading Postgres", name.split(":")[1], exc)
            return None
        return json.loads(raw) if raw else None

    async def _redis_set(self, name: str, doc: dict[str, Any], ttl: int) -> None:
        with contextlib.suppress(RedisError, OSError):
            await self._redis.set(name, json.dumps(doc, separators=(",", ":")), ex=ttl)

    async def _load_key_doc(self, key_hash: str) -> dict[str, Any] | None:
        doc = await self._redis_get(key_doc_key(key_hash))
        if doc is None:
            row = await self._store.key_by_hash(key_hash)
            if row is None:
                doc = {"missing": True}
                await self._redis_set(key_doc_key(key_hash), doc, NEGATIVE_REDIS_TTL)
            else:
                doc = {
                    "key_id": row.key_id,
                    "key_public_id": row.key_public_id,
                    "workspace_id": row.workspace_id,
                    "expires_at": row.expires_at.timestamp() if row.expires_at else None,
                    "revoked": row.revoked_at is not None,
                    "allowed_models": list(row.allowed_models or []),
                }
                await self._redis_set(key_doc_key(key_hash), doc, self._redis_doc_ttl)
        return None if doc.get("missing") else doc

    async def _load_workspace(self, workspace_id: int) -> WorkspaceContext:
        doc = await self._redis_get(workspace_doc_key(workspace_id))
        if doc is None:
            doc = await self._workspace_doc_from_store(workspace_id)
            await self._redis_set(workspace_doc_key(workspace_id), doc, self._redis_doc_ttl)
        return self._decrypt_workspace(doc)

    async def _workspace_doc_from_store(self, workspace_id: int) -> dict[str, Any]:
        credentials = await self._store.credentials(workspace_id)
        data_key = await self._store.data_key(workspace_id)
        prices = await self._store.workspace_prices(workspace_id)
        # The workspace public id is needed to unwrap the data key (it is the associated data).
        row = await self._store.workspace(workspace_id)
        managed = await self._store.platform_credentials() if row.managed_access else []
        return {
            "workspace_id": workspace_id,
            "workspace_public_id": row.public_id,
            "byok_fee_rate": str(row.byok_fee_rate),
            "managed_markup_rate": str(row.managed_markup_rate),
            "data_key": None
            if data_key is None
            else {"master_key_id": data_key[0], "wrapped": base64.b64encode(data_key[1]).decode()},
            "credentials": [
                {
                    "id": c.id,
                    "public_id": c.public_id,
                    "provider": c.provider,
                    "slug": c.slug,
                    "label": c.label,
                    "base_url": c.base_url,
                    "ciphertext": base64.b64encode(c.secret_ciphertext).decode(),
                }
                for c in credentials
            ],
            "prices": [[provider, model, price.as_dict()] for (provider, model), price in prices.items()],
            # managed credentials travel as ciphertext too, each with its own wrapped data key
            "managed": [
                {
                    "id": m.id,
                    "public_id": m.public_id,
                    "provider": m.provider,
                    "label": m.label,
                    "base_url": m.base_url,
                    "master_key_id": m.master_key_id,
                    "wrapped": base64.b64encode(m.wrapped_key).decode(),
                    "ciphertext": base64.b64encode(m.secret_ciphertext).decode(),
                }
                for m in managed
            ],
        }

    def _decrypt_workspace(self, doc: dict[str, Any]) -> WorkspaceContext:
        credentials: list[Credential] = []
        if doc["data_key"] is not None and doc["credentials"]:
            dek = crypto.unwrap_data_key(
                master_key_id=doc["data_key"]["master_key_id"],
                wrapped=base64.b64decode(doc["data_key"]["wrapped"]),
                workspace_public_id=doc["workspace_public_id"],
                ring=self._keyring,
            )
            for c in doc["credentials"]:
                try:
                    secret = crypto.decrypt_secret(
                        dek=dek, ciphertext=base64.b64decode(c["ciphertext"]), credential_public_id=c["public_id"]
                    )
                except crypto.CryptoError:
                    log.error("credential %s of workspace %s does not decrypt; skipped", c["id"], doc["workspace_id"])
                    continue
                credentials.append(
                    Credential(
                        id=c["id"],
                        public_id=c["public_id"],
                        provider=c["provider"],
                        slug=c["slug"],
                        label=c["label"],
                        base_url=c["base_url"],
                        secret=secret,
                    )
                )
        own = {c.provider for c in credentials}
        for m in doc.get("managed", []):
            if m["provider"] in own:
                continue  # the workspace's own key always wins (BYOK)
            try:
                dek = crypto.unwrap_data_key(
                    master_key_id=m["master_key_id"],
                    wrapped=base64.b64decode(m["wrapped"]),
                    workspace_public_id=f"platform:{m['public_id']}",
                    ring=self._keyring,
                )
                secret = crypto.decrypt_secret(
                    dek=dek, ciphertext=base64.b64decode(m["ciphertext"]), credential_public_id=m["public_id"]
                )
            except crypto.CryptoError:
                log.error("managed credential %s does not decrypt; skipped", m["id"])
                continue
            credentials.append(
                Credential(
                    id=m["id"],
                    public_id=m["public_id"],
                    provider=m["provider"],
                    slug=m["provider"],
                    label=m["label"],
                    base_url=m["base_url"],
                    secret=secret,
                    kind="managed",
                )
            )
        prices = {(p, m): Price.from_dict(price) for p, m, price in doc.get("prices", [])}
        return WorkspaceContext(
            workspace_id=doc["workspace_id"],
            credentials=tuple(credentials),
            prices=prices,
            byok_fee_rate=Decimal(doc.get("byok_fee_rate", "0")),
            managed_markup_rate=Decimal(doc.get("managed_markup_rate", "0")),
        )
