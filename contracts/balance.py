"""The prepaid balance in Redis: atomic checks, reservations, and usage emission (Lua).

Redis layout, per workspace W (the `{…}` hash tag keeps one workspace's keys in one cluster slot):

    tp:bal:{W}   hash  ledger    = the ledger balance in nano-USD as of `version` (from Postgres)
                       version   = WorkspaceBalance.version that `ledger` reflects (strictly increasing)
                       pending   = charges emitted to the usage stream and not yet ingested
                       inflight  = sum of open reservations
    tp:infl:{W}  zset  request id -> reservation expiry (ms); expired reservations are released lazily
    tp:infla:{W} hash  request id -> reserved nano-USD

    available = ledger - pending - inflight

Flows (each step one Lua script, so it is atomic with respect to every other proxy worker):
- RESERVE before forwarding: refuse (402) when available <= 0, else reserve the request's estimated
  cost. A workspace whose `ledger` is unknown here (first use, or Redis lost its data) answers MISS and
  the proxy fills it from Postgres (`FILL`), then retries.
- SETTLE_AND_EMIT when the request ends: release the reservation, add the real charge to `pending`
  and append the usage event to the stream, in one step: a charge is pending exactly when its event
  is in the stream.
- ACK (Celery ingester, after its Postgres transaction committed the events and the ledger debit):
  for each stream entry, XACK and, only if that XACK acknowledged it now, subtract its charge from
  `pending`; then move `ledger` forward to the committed balance if its version is newer. A batch
  re-delivered after a crash is acknowledged once, so `pending` is decremented once.
- FILL / PUBLISH: set `ledger` to a Postgres balance if its version is newer than what Redis has.
  Top-ups and grants publish after commit; the proxy fills on MISS.

If Redis loses its data, the stream and `pending` are lost together, and the next request fills
`ledger` from Postgres: no charge is counted twice, and nothing is granted beyond the lost events.
"""

from __future__ import annotations

from dataclasses import dataclass

RESERVATION_TTL_MS = 15 * 60 * 1000  # longer than any request may run (see proxy timeouts)


def bal_key(workspace_id: int) -> str:
    return f"tp:bal:{{{workspace_id}}}"


def inflight_keys(workspace_id: int) -> tuple[str, str]:
    return f"tp:infl:{{{workspace_id}}}", f"tp:infla:{{{workspace_id}}}"


_RELEASE_EXPIRED = """
local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV_NOW)
for _, rid in ipairs(expired) do
  local amt = tonumber(redis.call('HGET', KEYS[3], rid) or '0')
  redis.call('HINCRBY', KEYS[1], 'inflight', -amt)
  redis.call('HDEL', KEYS[3], rid)
  redis.call('ZREM', KEYS[2], rid)
end
"""

# KEYS: bal, infl, infla   ARGV: request_id, amount, now_ms, ttl_ms
# -> {status, available}: status 1 = reserved, 0 = insufficient balance, -1 = MISS (fill first)
RESERVE = (
    """
if redis.call('HEXISTS', KEYS[1], 'ledger') == 0 then return {-1, 0} end
"""
    + _RELEASE_EXPIRED.replace("ARGV_NOW", "ARGV[3]")
    + """
local h = redis.call('HMGET', KEYS[1], 'ledger', 'pending', 'inflight')
local available = tonumber(h[1]) - tonumber(h[2] or '0') - tonumber(h[3] or '0')
if available <= 0 then return {0, available} end
local amount = tonumber(ARGV[2])
if amount > 0 then
  redis.call('ZADD', KEYS[2], tonumber(ARGV[3]) + tonumber(ARGV[4]), ARGV[1])
  redis.call('HSET', KEYS[3], ARGV[1], amount)
  redis.call('HINCRBY', KEYS[1], 'inflight', amount)
end
return {1, available}
"""
)

# KEYS: bal, infl, infla, stream   ARGV: request_id, charge, then field/value pairs of the event
# -> the stream entry id
SETTLE_AND_EMIT = """
local amt = redis.call('HGET', KEYS[3], ARGV[1])
if amt then
  redis.call('HINCRBY', KEYS[1], 'inflight', -tonumber(amt))
  redis.call('HDEL', KEYS[3], ARGV[1])
  redis.call('ZREM', KEYS[2], ARGV[1])
end
local charge = tonumber(ARGV[2])
if charge ~= 0 then redis.call('HINCRBY', KEYS[1], 'pending', charge) end
local fields = {}
for i = 3, #ARGV do fields[#fields + 1] = ARGV[i] end
return redis.call('XADD', KEYS[4], '*', unpack(fields))
"""

# KEYS: bal   ARGV: ledger, version   -> 1 if applied, 0 if Redis already had this or a newer version
FILL = """
local current = tonumber(redis.call('HGET', KEYS[1], 'version') or '-1')
if tonumber(ARGV[2]) > current then
  redis.call('HSET', KEYS[1], 'ledger', ARGV[1], 'version', ARGV[2])
  return 1
end
return 0
"""

# KEYS: stream, bal_1 … bal_n   ARGV: group, n_entries, then per entry (entry_id, bal index 2..n+1, charge),
# then per workspace bal index i (ledger, version) pairs in KEYS order 2..n+1 ("" "" when unknown)
# -> number of entries acknowledged now
ACK = """
local group = ARGV[1]
local n = tonumber(ARGV[2])
local acked = 0
for i = 0, n - 1 do
  local id = ARGV[3 + i * 3]
  local idx = tonumber(ARGV[4 + i * 3])
  local charge = tonumber(ARGV[5 + i * 3])
  if redis.call('XACK', KEYS[1], group, id) == 1 then
    acked = acked + 1
    if charge ~= 0 then redis.call('HINCRBY', KEYS[idx], 'pending', -charge) end
    redis.call('XDEL', KEYS[1], id)
  end
end
local base = 3 + n * 3
for k = 2, #KEYS do
  local ledger = ARGV[base + (k - 2) * 2]
  local version = ARGV[base + (k - 2) * 2 + 1]
  if ledger ~= '' and tonumber(version) > tonumber(redis.call('HGET', KEYS[k], 'version') or '-1') then
    redis.call('HSET', KEYS[k], 'ledger', ledger, 'version', version)
  end
end
return acked
"""


@dataclass(frozen=True, slots=True)
class ReserveResult:
    status: int  # 1 reserved, 0 insufficient, -1 miss
    available_nanos: int

    @property
    def reserved(self) -> bool:
        return self.status == 1

    @property
    def miss(self) -> bool:
        return self.status == -1
