"""Gateway key -> workspace, credentials and prices, without Postgres on the warm path.

Three tiers:
1. in-process LRUs, each entry living `auth_ttl` seconds (so a lost invalidation heals by itself):
   known keys (`key_cache_size`), workspaces (`workspace_cache_size`), and unknown keys apart
   (`negative_cache_size`, `negative_ttl`), so a flood of random keys evicts only other unknown keys;
2. Redis documents `tp:key:<sha256>` and `tp:ws:<id>` (contracts/cachekeys.py; no plaintext secret:
   credentials travel as their ciphertext plus the wrapped data key, decrypted only here, in process
   memory). An unknown key is remembered as `{"missing":true}` for NEGATIVE_REDIS_TTL;
3. Postgres (proxy.store), only when Redis has no document, holds a tombstone, or is down.

Before any of that, a string that does not have the shape of a Turnpike key (`looks_like_gateway_key`)
is refused: no cache entry, no Redis, no Postgres. A key already known unknown costs neither a Postgres
query nor a Redis write (the in-process negative entry, else the Redis one). What a flood of distinct
well-formed unknown keys costs per key: one Redis GET, one indexed Postgres SELECT, one Redis `SET NX`
with a 30 s TTL, one negative LRU slot. Postgres work is bounded: concurrent misses for one key share
one load (single flight), the Store's pool runs at most 4 queries at a time, and at most
`max_pending_key_loads` keys per worker may wait for Postgres; one more raises `AuthBusy` (503 with
Retry-After) without queueing anything.

Invalidation protocol. Web app (tenants/cache.py), after the transaction that changes a key,
credential or workspace commits:
  W1. SET tp:key:<hash> | tp:ws:<id>  TOMBSTONE  EX TOMBSTONE_TTL (10 s)   (over whatever is there)
  W2. PUBLISH tp:invalidate "key:<hash>" | "ws:<id>"                     (same connection, after W1)
  Platform-wide changes: W0. INCR tp:ws-epoch; W1'. SCAN tp:ws:* and SET each to TOMBSTONE EX 10;
  W2'. PUBLISH "all".
Proxy worker, on an in-process miss (single flight: one load per key or workspace at a time):
  P0. note the worker's invalidation sequence number and the monotonic time t0 (`_begin`);
  P1. read Redis (`_read`: GET; a workspace MGETs its document and tp:ws-epoch, one round trip);
      a document: use it, go to P4; a tombstone, or a workspace document of another version
      (WORKSPACE_DOC_VERSION: an earlier release's shape): P2, then P4 (no P3); nothing: P2, P3, P4;
  P2. read Postgres;
  P3. fill Redis with `SET … NX EX` (`_fill`; a workspace's fill is a script that sets only if
      tp:ws-epoch still equals what P1 read), and not at all if more than TOMBSTONE_TTL/2 passed since t0;
  P4. store in process (`_remember_*`), unless an invalidation of this key or workspace, an "all",
      or a listener (re)connect was applied after P0.
Listener, per message: bump the sequence number, note it against the key/workspace (a bounded map;
what falls out raises a floor that stales every older load), drop the in-process entry, and detach
the in-flight load so that later requests start a fresh one. "all" and every (re)connect drop
everything and raise the floor.

Why every interleaving ends with the new state (revoked key, removed credential) within 1 s:
- Redis. Only a load whose P2 read the old row can write a stale document. That read began before the
  commit, so its P1 and t0 came before W1. If its P3 runs after W1, NX finds the tombstone and writes
  nothing (the tombstone is still there: P3 runs within TOMBSTONE_TTL/2 of t0, and t0 < W1). If its P3
  runs before W1, W1 overwrites it. For "all": a fill whose P1 came before W0 and whose P3 runs after
  W0 fails the epoch check; one whose P3 ran before W0 left a document that existed during the whole
  SCAN, so W1' tombstoned it. After W1, Redis holds the tombstone and then only documents whose P1
  came after W1, i.e. read from Postgres after the commit.
- In process. W2 reaches every listener within milliseconds and drops the entry; a load under way
  then is not stored (P4); a load that begins after it does its P1 after W1 (Redis ran W1 before
  delivering W2), so it reads the tombstone, or a document filled after the commit, and Postgres
  after the commit. A request that arrives after the message is applied never sees the old state.
- A lost message: the listener drops everything when it reconnects; without a reconnect an entry
  lives at most `auth_ttl`, and the tombstone sends the reload to Postgres.
- The web app cannot reach Redis when it commits (no tombstone, no message): workers that cannot
  reach Redis either read Postgres after `auth_ttl`; a worker that still reaches Redis serves the old
  document until its `redis_doc_ttl` (300 s). This is the one case slower than 1 s.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from decimal import Decimal
from enum import Enum
from fnmatch import fnmatchcase
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from contracts import crypto
from contracts.cachekeys import (
    INVALIDATION_CHANNEL,
    TOMBSTONE,
    TOMBSTONE_TTL,
    WORKSPACE_DOC_VERSION,
    WORKSPACE_EPOCH_KEY,
    hash_token,
    key_doc_key,
    looks_like_gateway_key,
    workspace_doc_key,
)
from contracts.pricing import Price
from proxy.config import (
    DEFAULT_KEY_CACHE_SIZE,
    DEFAULT_MAX_PENDING_KEY_LOADS,
    DEFAULT_NEGATIVE_CACHE_SIZE,
    DEFAULT_WORKSPACE_CACHE_SIZE,
)
from proxy.store import Store

log = logging.getLogger("turnpike.proxy.auth")

NEGATIVE_REDIS_TTL = 30  # seconds Redis remembers a key Postgres does not know (creating it tombstones this)
MAX_FILL_AGE = TOMBSTONE_TTL / 2  # a load older than this never fills Redis (see the protocol above)
INVALIDATION_MEMORY = 1024  # invalidated keys/workspaces remembered for loads under way

_MISSING = {"missing": True}

# P3 for a workspace: set the document only if no platform-wide invalidation happened since P1.
FILL_WORKSPACE = """
local epoch = redis.call('GET', KEYS[2]) or ''
if epoch ~= ARGV[3] then return 0 end
if redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2], 'NX') then return 1 end
return 0
"""


class AuthBusy(Exception):
    """Too many unknown keys are waiting for Postgres in this worker; the caller should retry shortly."""


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
    slug: str = ""  # the dashboard's name for the workspace (/w/<slug>/); never changes
    log_bodies: bool = False  # store request and response bodies (docs/request-log.md)

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
    log_bodies: bool | None = None  # store bodies of this key's requests; None: as the workspace says

    @property
    def logs_bodies(self) -> bool:
        return self.workspace.log_bodies if self.log_bodies is None else self.log_bodies

    def expired(self, now: float | None = None) -> bool:
        return self.expires_at is not None and (now or time.time()) >= self.expires_at

    def allows(self, *model_ids: str) -> bool:
        """Whether this key may call a model known by any of `model_ids` (e.g. `openai/gpt-4o` and `gpt-4o`)."""
        if not self.allowed_models:
            return True
        return any(fnmatchcase(m, pattern) for m in model_ids for pattern in self.allowed_models)


class Found(Enum):
    DOCUMENT = "document"
    TOMBSTONE = "tombstone"  # changed recently: read Postgres, leave Redis alone
    NOTHING = "nothing"  # read Postgres, then fill
    UNREACHABLE = "unreachable"  # Redis is down: read Postgres


@dataclass(frozen=True, slots=True)
class Load:
    """Where a load began: the invalidation sequence number and the monotonic time (P0)."""

    seq: int
    started: float


class _LRU:
    """A bounded map whose entries also expire; the least recently used entry goes first."""

    __slots__ = ("_data", "_max", "_ttl")

    def __init__(self, *, ttl: float, max_size: int) -> None:
        self._ttl = ttl
        self._max = max(1, max_size)
        self._data: OrderedDict[Any, tuple[float, Any]] = OrderedDict()

    def get(self, key: Any) -> tuple[bool, Any]:
        hit = self._data.get(key)
        if hit is None:
            return False, None
        if hit[0] < time.monotonic():
            del self._data[key]
            return False, None
        self._data.move_to_end(key)
        return True, hit[1]

    def put(self, key: Any, value: Any) -> None:
        self._data[key] = (time.monotonic() + self._ttl, value)
        self._data.move_to_end(key)
        if len(self._data) > self._max:
            self._data.popitem(last=False)

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
        key_cache_size: int = DEFAULT_KEY_CACHE_SIZE,
        workspace_cache_size: int = DEFAULT_WORKSPACE_CACHE_SIZE,
        negative_cache_size: int = DEFAULT_NEGATIVE_CACHE_SIZE,
        max_pending_key_loads: int = DEFAULT_MAX_PENDING_KEY_LOADS,
    ) -> None:
        self._redis = redis
        self._store = store
        self._keyring = keyring
        self._redis_doc_ttl = redis_doc_ttl
        self._keys = _LRU(ttl=auth_ttl, max_size=key_cache_size)
        self._unknown = _LRU(ttl=negative_ttl, max_size=negative_cache_size)
        self._workspaces = _LRU(ttl=auth_ttl, max_size=workspace_cache_size)
        self._inflight: dict[Any, asyncio.Future[Any]] = {}
        self._fill_workspace = redis.register_script(FILL_WORKSPACE)
        self._max_pending_key_loads = max_pending_key_loads
        self.pending_key_loads = 0  # keys waiting for Postgres now
        # In-process invalidation bookkeeping (P0, P4): a load stores its result only if nothing that
        # concerns it was applied after it began.
        self._seq = 0
        self._floor = 0
        self._touched: OrderedDict[Any, int] = OrderedDict()

    # --- public -------------------------------------------------------------------------------------

    async def resolve(self, plaintext: str) -> KeyContext | None:
        """The key's context, or None for a malformed, unknown, revoked or expired key.
        Raises AuthBusy when the key needs Postgres and too many keys are already waiting for it."""
        if not looks_like_gateway_key(plaintext):
            return None
        key_hash = hash_token(plaintext)
        found, doc = self._keys.get(key_hash)
        if not found:
            if self._unknown.get(key_hash)[0]:
                return None
            doc = await self._single_flight(("k", key_hash), lambda: self._load_key(key_hash))
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
            log_bodies=doc.get("log_bodies"),
        )

    async def workspace(self, workspace_id: int) -> WorkspaceContext:
        found, ctx = self._workspaces.get(workspace_id)
        if found:
            return ctx  # type: ignore[no-any-return]
        return await self._single_flight(("w", workspace_id), lambda: self._load_workspace(workspace_id))  # type: ignore[no-any-return]

    def invalidate(self, message: str) -> None:
        kind, _, ident = message.partition(":")
        if kind == "key":
            self._keys.pop(ident)
            self._unknown.pop(ident)
            self._touch(("k", ident))
        elif kind == "ws" and ident.isdigit():
            self._workspaces.pop(int(ident))
            self._touch(("w", int(ident)))
        else:
            self.clear()

    def clear(self) -> None:
        """Drop everything, and refuse to store any load that is under way."""
        self._keys.clear()
        self._unknown.clear()
        self._workspaces.clear()
        self._seq += 1
        self._floor = self._seq
        self._touched.clear()
        self._inflight.clear()

    def cache_sizes(self) -> dict[str, int]:
        return {"keys": len(self._keys), "unknown_keys": len(self._unknown), "workspaces": len(self._workspaces)}

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

    # --- in-process bookkeeping (P0, P4) ---------------------------------------------------------------

    def _begin(self) -> Load:
        return Load(self._seq, time.monotonic())

    def _touch(self, ident: Any) -> None:
        self._seq += 1
        self._touched[ident] = self._seq
        self._touched.move_to_end(ident)
        if len(self._touched) > INVALIDATION_MEMORY:
            _, seq = self._touched.popitem(last=False)
            self._floor = max(self._floor, seq)  # forgotten: treat every load older than it as stale
        self._inflight.pop(ident, None)  # later requests start a fresh load; its waiters keep theirs

    def _stale(self, ident: Any, load: Load) -> bool:
        return load.seq < self._floor or self._touched.get(ident, 0) > load.seq

    def _remember_key(self, key_hash: str, doc: dict[str, Any] | None, load: Load) -> None:
        if self._stale(("k", key_hash), load):
            return
        if doc is None:
            self._unknown.put(key_hash, None)
        else:
            self._keys.put(key_hash, doc)

    def _remember_workspace(self, workspace_id: int, ctx: WorkspaceContext, load: Load) -> None:
        if not self._stale(("w", workspace_id), load):
            self._workspaces.put(workspace_id, ctx)

    # --- loading (P1-P3) --------------------------------------------------------------------------------

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
            if self._inflight.get(key) is future:  # an invalidation may have detached it already
                del self._inflight[key]

    async def _load_key(self, key_hash: str) -> dict[str, Any] | None:
        load = self._begin()
        name = key_doc_key(key_hash)
        found, doc, _ = await self._read(name)
        if found is not Found.DOCUMENT:
            doc = await self._key_doc_from_store(key_hash)
            if found is Found.NOTHING:
                await self._fill(name, doc or _MISSING, load, ttl=self._redis_doc_ttl if doc else NEGATIVE_REDIS_TTL)
        elif doc is not None and doc.get("missing"):
            doc = None
        self._remember_key(key_hash, doc, load)
        return doc

    async def _load_workspace(self, workspace_id: int) -> WorkspaceContext:
        load = self._begin()
        name = workspace_doc_key(workspace_id)
        found, doc, epoch = await self._read(name, epoch=True)
        if found is Found.DOCUMENT and (doc is None or doc.get("v") != WORKSPACE_DOC_VERSION):
            found = Found.TOMBSTONE  # another release's shape: read Postgres, leave it to expire
        if found is not Found.DOCUMENT or doc is None:
            doc = await self._workspace_doc_from_store(workspace_id)
            if found is Found.NOTHING:
                await self._fill(name, doc, load, ttl=self._redis_doc_ttl, epoch=epoch)
        ctx = self._decrypt_workspace(doc)
        self._remember_workspace(workspace_id, ctx, load)
        return ctx

    async def _read(self, name: str, *, epoch: bool = False) -> tuple[Found, dict[str, Any] | None, str]:
        """P1: what Redis holds under `name` (and, for a workspace, tp:ws-epoch; "" when unset)."""
        try:
            if epoch:
                raw, seen = await self._redis.mget(name, WORKSPACE_EPOCH_KEY)
            else:
                raw, seen = await self._redis.get(name), None
        except (RedisError, OSError) as exc:
            log.warning("Redis unavailable for %s (%s); reading Postgres", name.split(":")[1], exc)
            return Found.UNREACHABLE, None, ""
        epoch_seen = seen.decode() if isinstance(seen, bytes) else ""
        if raw is None:
            return Found.NOTHING, None, epoch_seen
        if raw == TOMBSTONE:
            return Found.TOMBSTONE, None, epoch_seen
        try:
            doc = json.loads(raw)
        except ValueError:
            log.error("unreadable document in Redis under %s; reading Postgres", name.split(":")[1])
            return Found.TOMBSTONE, None, epoch_seen
        return Found.DOCUMENT, doc, epoch_seen

    async def _fill(self, name: str, doc: dict[str, Any], load: Load, *, ttl: int, epoch: str | None = None) -> bool:
        """P3: write a document Redis did not have, never over a tombstone or a newer document."""
        if time.monotonic() - load.started > MAX_FILL_AGE:
            return False  # a tombstone written after this load began may already have expired
        value = json.dumps(doc, separators=(",", ":"))
        try:
            if epoch is None:
                return bool(await self._redis.set(name, value, ex=ttl, nx=True))
            return bool(await self._fill_workspace(keys=[name, WORKSPACE_EPOCH_KEY], args=[value, ttl, epoch]))
        except (RedisError, OSError):
            return False

    async def _key_doc_from_store(self, key_hash: str) -> dict[str, Any] | None:
        """P2 for a key, under the per-worker bound on keys waiting for Postgres."""
        if self.pending_key_loads >= self._max_pending_key_loads:
            raise AuthBusy
        self.pending_key_loads += 1
        try:
            row = await self._store.key_by_hash(key_hash)
        finally:
            self.pending_key_loads -= 1
        if row is None:
            return None
        return {
            "key_id": row.key_id,
            "key_public_id": row.key_public_id,
            "workspace_id": row.workspace_id,
            "expires_at": row.expires_at.timestamp() if row.expires_at else None,
            "revoked": row.revoked_at is not None,
            "allowed_models": list(row.allowed_models or []),
            "log_bodies": row.log_bodies,
        }

    async def _workspace_doc_from_store(self, workspace_id: int) -> dict[str, Any]:
        credentials = await self._store.credentials(workspace_id)
        data_key = await self._store.data_key(workspace_id)
        prices = await self._store.workspace_prices(workspace_id)
        # The workspace public id is needed to unwrap the data key (it is the associated data).
        row = await self._store.workspace(workspace_id)
        managed = await self._store.platform_credentials() if row.managed_access else []
        return {
            "v": WORKSPACE_DOC_VERSION,
            "workspace_id": workspace_id,
            "workspace_public_id": row.public_id,
            "workspace_slug": row.slug,
            "byok_fee_rate": str(row.byok_fee_rate),
            "managed_markup_rate": str(row.managed_markup_rate),
            "log_bodies": row.log_bodies,
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
            slug=str(doc.get("workspace_slug") or ""),
            log_bodies=doc.get("log_bodies") is True,
        )
