"""The prepaid balance in Redis: atomic checks, reservations, and usage emission (Lua).

Redis layout, per workspace W (the `{…}` hash tag keeps one workspace's keys in one cluster slot):

    tp:bal:{W}   hash  ledger    = the ledger balance in nano-USD as of `version` (from Postgres)
                       version   = WorkspaceBalance.version that `ledger` reflects (strictly increasing)
                       pending   = charges emitted to the usage stream and not yet ingested
                       inflight  = sum of open reservations
    tp:infl:{W}  zset  request id -> reservation expiry (ms); expired reservations are released lazily
    tp:infla:{W} hash  request id -> reserved nano-USD
    tp:gen:{W}:<request id>  string  the request's usage event (JSON, contracts.events `e`), for a while

    available = ledger - pending - inflight

Flows (each step one Lua script, so it is atomic with respect to every other proxy worker):
- RESERVE before forwarding: refuse (402) when available <= 0 or when the request's estimated maximum
  cost exceeds what is available (so no request can reserve more than exists, and the overshoot of a
  workspace is bounded by the estimates in flight), else reserve that estimate. A workspace whose
  `ledger` is unknown here (first use, or Redis lost its data) answers MISS and the proxy fills it from
  Postgres (`FILL`), then retries.
- SETTLE_AND_EMIT when the request ends: release the reservation (if there is one: a request that cannot
  cost money, at a charge rate of 0 or on an unpriced model, is served without one), add the real charge
  to `pending` and append the usage event to the stream, in one step: a charge is pending exactly when
  its event is in the stream. The proxy skips the reservation only when the charge is certain to be 0,
  so such a request settles with charge 0 and touches neither `inflight` nor `pending` (nor creates the
  hash: `pending` only ever grows in a hash whose `ledger` a reservation filled). Given a fifth key, the
  same step keeps the event's JSON under `tp:gen:{W}:<request id>` for a while (GENERATION_TTL_SECONDS
  by default), so `GET /v1/generation` answers before the event is ingested into Postgres.
- ACK (Celery ingester, after its Postgres transaction committed the events and the ledger debit):
  for each stream entry, XACK and, only if that XACK acknowledged it now, subtract its charge from
  `pending`; then move `ledger` forward to the committed balance if its version is newer. A batch
  re-delivered after a crash is acknowledged once, so `pending` is decremented once.
- FILL / PUBLISH: set `ledger` to a Postgres balance if its version is newer than what Redis has.
  Top-ups and grants publish after commit; the proxy fills on MISS.

Amounts: every script checks its amount arguments (decimal integer strings, at most 18 digits) before
its first write and refuses without writing anything; counters move only by HINCRBY on those strings.
Comparisons use Lua's doubles, exact below 2^53 nano-USD ($9M) and off by a few nano-USD above it.

If Redis loses its data, the stream and `pending` are lost together, and the next request fills
`ledger` from Postgres: no charge is counted twice, and nothing is granted beyond the lost events.
"""

from __future__ import annotations

from dataclasses import dataclass

RESERVATION_TTL_MS = 15 * 60 * 1000  # longer than any request may run (see proxy timeouts)
# Every amount that crosses into Lua is a decimal integer string of at most 18 digits (< 2^63), checked by
# the script before it writes anything. Lua numbers are doubles: an amount is never converted to a number
# and back (that is how 1e+17 once reached HINCRBY); arithmetic on counters is HINCRBY on the strings.
MAX_AMOUNT_NANOS = 10**18 - 1  # $1 billion: no single reservation or charge comes near it
# How long the settle script keeps a request's event for `GET /v1/generation` (the proxy's
# TURNPIKE_PROXY_GENERATION_TTL): long enough to outlast any ingest delay; after it, Postgres answers.
GENERATION_TTL_SECONDS = 3600


def bal_key(workspace_id: int) -> str:
    return f"tp:bal:{{{workspace_id}}}"


def inflight_keys(workspace_id: int) -> tuple[str, str]:
    return f"tp:infl:{{{workspace_id}}}", f"tp:infla:{{{workspace_id}}}"


def generation_key(workspace_id: int, request_id: str) -> str:
    """Where the settle script keeps a request's event for `GET /v1/generation` (same slot as the balance)."""
    return f"tp:gen:{{{workspace_id}}}:{request_id}"


def clamp_amount(nanos: int) -> int:
    """An amount as the scripts accept it: 0 .. MAX_AMOUNT_NANOS."""
    return min(max(int(nanos), 0), MAX_AMOUNT_NANOS)


# is_int(s): a decimal integer of at most 18 digits, optionally negative; neg(s): its negation, as a string
_LUA_HELPERS = """
local function is_int(s)
  if type(s) ~= 'string' or string.match(s, '^%-?%d+$') == nil then return false end
  return #s - (string.sub(s, 1, 1) == '-' and 1 or 0) <= 18
end
local function neg(s)
  if string.sub(s, 1, 1) == '-' then return string.sub(s, 2) end
  return '-' .. s
end
"""

_RELEASE_EXPIRED = """
local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV_NOW)
for _, rid in ipairs(expired) do
  local amt = redis.call('HGET', KEYS[3], rid)
  if amt and is_int(amt) and amt ~= '0' then redis.call('HINCRBY', KEYS[1], 'inflight', neg(amt)) end
  redis.call('HDEL', KEYS[3], rid)
  redis.call('ZREM', KEYS[2], rid)
end
"""

# KEYS: bal, infl, infla   ARGV: request_id, amount, now_ms, ttl_ms
# -> {status, available}: 1 = reserved; 0 = refused (available <= 0, or the amount exceeds what is
#    available); -1 = MISS (fill first); -2 = an argument is not an integer in range (nothing written)
RESERVE = (
    _LUA_HELPERS
    + """
if not (is_int(ARGV[2]) and is_int(ARGV[3]) and is_int(ARGV[4])) or string.sub(ARGV[2], 1, 1) == '-' then
  return {-2, 0}
end
if redis.call('HEXISTS', KEYS[1], 'ledger') == 0 then return {-1, 0} end
"""
    + _RELEASE_EXPIRED.replace("ARGV_NOW", "ARGV[3]")
    + """
local h = redis.call('HMGET', KEYS[1], 'ledger', 'pending', 'inflight')
local available = (tonumber(h[1]) or 0) - (tonumber(h[2] or '0') or 0) - (tonumber(h[3] or '0') or 0)
if available <= 0 then return {0, available} end
if tonumber(ARGV[2]) > available then return {0, available} end
if ARGV[2] ~= '0' then
  redis.call('ZADD', KEYS[2], ARGV[3] + ARGV[4], ARGV[1])
  redis.call('HSET', KEYS[3], ARGV[1], ARGV[2])
  redis.call('HINCRBY', KEYS[1], 'inflight', ARGV[2])
end
return {1, available}
"""
)


def settle_and_emit_script(generation_ttl_seconds: int = GENERATION_TTL_SECONDS) -> str:
    """SETTLE_AND_EMIT keeping generation records for `generation_ttl_seconds` (a positive integer).

    KEYS: bal, infl, infla, stream[, generation record]   ARGV: request_id, charge, then field/value pairs
    -> the stream entry id; an error reply (nothing written) when the charge is not an integer in range.
    A request without a reservation (served without one, or whose reservation expired) releases nothing;
    a charge of 0 leaves `pending` alone. With the fifth key (`generation_key`), the value of the event's
    `e` field is SET there with EX `generation_ttl_seconds`, in the same step."""
    ttl = int(generation_ttl_seconds)
    if ttl < 1:
        raise ValueError("the generation record TTL must be a positive number of seconds")
    return (
        _LUA_HELPERS
        + """
if not is_int(ARGV[2]) or string.sub(ARGV[2], 1, 1) == '-' then
  return redis.error_reply('ERR charge must be a non-negative integer of at most 18 digits')
end
local amt = redis.call('HGET', KEYS[3], ARGV[1])
if amt then
  if is_int(amt) and amt ~= '0' then redis.call('HINCRBY', KEYS[1], 'inflight', neg(amt)) end
  redis.call('HDEL', KEYS[3], ARGV[1])
  redis.call('ZREM', KEYS[2], ARGV[1])
end
if ARGV[2] ~= '0' then redis.call('HINCRBY', KEYS[1], 'pending', ARGV[2]) end
local fields = {}
for i = 3, #ARGV do fields[#fields + 1] = ARGV[i] end
local entry = redis.call('XADD', KEYS[4], '*', unpack(fields))
if KEYS[5] then
  for i = 3, #ARGV - 1, 2 do
    if ARGV[i] == 'e' then
      redis.call('SET', KEYS[5], ARGV[i + 1], 'EX', """
        + str(ttl)
        + """)
      break
    end
  end
end
return entry
"""
    )


SETTLE_AND_EMIT = settle_and_emit_script()

# KEYS: bal   ARGV: ledger, version   -> 1 if applied, 0 if Redis already had this or a newer version,
# -2 if an argument is not an integer (nothing written)
FILL = (
    _LUA_HELPERS
    + """
if not (is_int(ARGV[1]) and is_int(ARGV[2])) then return -2 end
local current = tonumber(redis.call('HGET', KEYS[1], 'version') or '-1')
if tonumber(ARGV[2]) > current then
  redis.call('HSET', KEYS[1], 'ledger', ARGV[1], 'version', ARGV[2])
  return 1
end
return 0
"""
)

# KEYS: stream, dead-letter stream, metrics hash, bal_1 … bal_n
# ARGV: group, metrics field, n_entries, then per entry (entry_id, bal index 4..n+3, charge, letter), then
#       per workspace (ledger, version) in KEYS order 4..n+3 ("" "" when unknown)
# For each entry: XACK, and only if that acknowledged it now: subtract its charge from `pending` (only while
# the hash still has `ledger`: a hash that was evicted or lost starts again from FILL, and subtracting from
# a fresh one would drive it negative; never below 0 either, for the same reason), append `letter` to the
# dead-letter stream and count it (when the entry is a dead letter: `letter` not ""), XDEL the entry.
# Then move each `ledger` forward to the committed balance if its version is newer.
# Every argument is checked before the first write: an error reply means nothing was written.
# -> number of entries acknowledged now
ACK = (
    _LUA_HELPERS
    + """
local group, metric, n = ARGV[1], ARGV[2], tonumber(ARGV[3])
if not is_int(ARGV[3]) or n < 0 or #KEYS < 4 or #ARGV ~= 3 + n * 4 + (#KEYS - 3) * 2 then
  return redis.error_reply('ERR ACK: wrong number of arguments')
end
for i = 0, n - 1 do
  local b = 4 + i * 4
  local idx = tonumber(ARGV[b + 1])
  if not string.match(ARGV[b], '^%d+%-%d+$') or not is_int(ARGV[b + 1]) or idx < 4 or idx > #KEYS
    or not is_int(ARGV[b + 2]) or string.sub(ARGV[b + 2], 1, 1) == '-' then
    return redis.error_reply('ERR ACK: entry ' .. (i + 1) .. ' is not (stream id, key index, charge >= 0)')
  end
end
local base = 4 + n * 4
for k = 4, #KEYS do
  local ledger, version = ARGV[base + (k - 4) * 2], ARGV[base + (k - 4) * 2 + 1]
  if not ((ledger == '' and version == '') or (is_int(ledger) and is_int(version))) then
    return redis.error_reply('ERR ACK: ledger and version must be integers (or both empty)')
  end
end
local acked = 0
for i = 0, n - 1 do
  local b = 4 + i * 4
  local id, bal, charge, letter = ARGV[b], KEYS[tonumber(ARGV[b + 1])], ARGV[b + 2], ARGV[b + 3]
  if redis.call('XACK', KEYS[1], group, id) == 1 then
    acked = acked + 1
    if charge ~= '0' and redis.call('HEXISTS', bal, 'ledger') == 1 then
      local pending = tonumber(redis.call('HGET', bal, 'pending') or '0') or 0
      if tonumber(charge) >= pending then
        redis.call('HSET', bal, 'pending', '0')
      else
        redis.call('HINCRBY', bal, 'pending', neg(charge))
      end
    end
    if letter ~= '' then
      redis.call('XADD', KEYS[2], 'MAXLEN', '~', '100000', '*', 'entry', id, 'letter', letter)
      redis.call('HINCRBY', KEYS[3], metric, 1)
    end
    redis.call('XDEL', KEYS[1], id)
  end
end
for k = 4, #KEYS do
  local ledger, version = ARGV[base + (k - 4) * 2], ARGV[base + (k - 4) * 2 + 1]
  if ledger ~= '' and tonumber(version) > tonumber(redis.call('HGET', KEYS[k], 'version') or '-1') then
    redis.call('HSET', KEYS[k], 'ledger', ledger, 'version', version)
  end
end
return acked
"""
)


@dataclass(frozen=True, slots=True)
class ReserveResult:
    status: int  # 1 reserved, 0 insufficient, -1 miss, -2 invalid argument
    available_nanos: int

    @property
    def reserved(self) -> bool:
        return self.status == 1

    @property
    def miss(self) -> bool:
        return self.status == -1
