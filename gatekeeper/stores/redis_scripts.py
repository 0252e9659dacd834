"""The Redis store's Lua scripts: each reads and writes the one key it is given as ``KEYS[1]`` (so, on a Redis
Cluster, one slot), and answers from that server's clock where time matters."""

from __future__ import annotations

# KEYS[1] failure zset; ARGV: event id, time, window seconds. One event counts once.
_RECORD_FAILURE = """
redis.call('ZADD', KEYS[1], 'NX', ARGV[2], ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', tonumber(ARGV[2]) - tonumber(ARGV[3]))
redis.call('PEXPIRE', KEYS[1], math.ceil(tonumber(ARGV[3]) * 1000))
return redis.call('ZCARD', KEYS[1])
"""

# KEYS[1] claim; ARGV: record json, ttl ms. Claim or read in one step.
_CLAIM = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return {1, ARGV[1]} end
return {0, redis.call('GET', KEYS[1])}
"""

# KEYS[1] claim; ARGV: token, new state or '' to delete, result (base64 or ''), ttl ms.
# Only the owner (the token) may settle its claim; the fingerprint is kept as claimed.
_SETTLE = """
local v = redis.call('GET', KEYS[1])
if not v then return 0 end
local rec = cjson.decode(v)
if rec['token'] ~= ARGV[1] then return 0 end
if ARGV[2] == '' then redis.call('DEL', KEYS[1]) return 1 end
rec['state'] = ARGV[2]
if ARGV[3] ~= '' then rec['result'] = ARGV[3] end
redis.call('SET', KEYS[1], cjson.encode(rec), 'PX', ARGV[4])
return 1
"""

# KEYS[1] status hash; ARGV: rank, status, error code or '', time, to hash or '', ttl ms. Never moves back.
_APPLY_STATUS = """
local cur = redis.call('HGET', KEYS[1], 'rank')
if cur and tonumber(cur) >= tonumber(ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], 'rank', ARGV[1], 'status', ARGV[2], 'error_code', ARGV[3], 'at', ARGV[4], 'to', ARGV[5])
redis.call('PEXPIRE', KEYS[1], ARGV[6])
return 1
"""

# KEYS[1] status hash, KEYS[2] (one server only: another slot) the erasure index; ARGV: event id, then as
# _APPLY_STATUS, then the SID. A status callback whole: {0, 0} for an event seen already (nothing written), else
# {1, applied}; the event is remembered in the hash, which lives as the status does.
_STATUS_EVENT = """
if redis.call('HSETNX', KEYS[1], 'ev:' .. ARGV[1], 1) == 0 then return {0, 0} end
if KEYS[2] then
  redis.call('SADD', KEYS[2], ARGV[8])
  redis.call('PEXPIRE', KEYS[2], ARGV[7])
end
local cur = redis.call('HGET', KEYS[1], 'rank')
local applied = 0
if not cur or tonumber(cur) < tonumber(ARGV[2]) then
  redis.call('HSET', KEYS[1], 'rank', ARGV[2], 'status', ARGV[3], 'error_code', ARGV[4], 'at', ARGV[5], 'to', ARGV[6])
  applied = 1
end
redis.call('PEXPIRE', KEYS[1], ARGV[7])
return {1, applied}
"""

# KEYS[1] theoretical arrival time; ARGV: interval s, tolerance s. GCRA on the server's clock,
# so every host shares one budget whatever its own clock says. Returns the wait in microseconds.
_RESERVE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local wait = tat - tolerance - now
if wait < 0 then wait = 0 end
local new_tat = tat + interval
redis.call('SET', KEYS[1], string.format('%.6f', new_tat), 'PX', math.ceil((new_tat - now + tolerance + 1) * 1000))
return math.floor(wait * 1e6)
"""

# KEYS[1] opt-outs hash, KEYS[2] suppression marker, KEYS[3] failures zset (one subject: one slot); ARGV: the window's
# start (exclusive), then the scopes. A screening's reads in one command: {first scope opted out or '', the
# suppression reason or '', failures in the window}.
_SCREEN = """
local scope = ''
for i = 2, #ARGV do
  if redis.call('HEXISTS', KEYS[1], ARGV[i]) == 1 then scope = ARGV[i] break end
end
local reason = redis.call('GET', KEYS[2]) or ''
return {scope, reason, redis.call('ZCOUNT', KEYS[3], '(' .. ARGV[1], '+inf')}
"""

# KEYS[1] a window's zset; ARGV: event id, time, window seconds, limit. One event counted once; {count in the window,
# when a new event would fit (as text) or ''}.
_HIT = """
redis.call('ZADD', KEYS[1], 'NX', ARGV[2], ARGV[1])
local w = tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', tonumber(ARGV[2]) - w)
redis.call('PEXPIRE', KEYS[1], math.ceil(w * 1000))
local count = redis.call('ZCARD', KEYS[1])
local limit = tonumber(ARGV[4])
if count <= limit then return {count, ''} end
local oldest = redis.call('ZRANGE', KEYS[1], count - limit, count - limit, 'WITHSCORES')
return {count, string.format('%.6f', tonumber(oldest[2]) + w)}
"""

# KEYS: the totals (one hash tag: one slot); ARGV: amount, ttl ms, then each key's cap. All or none: 0 when every
# total stays within its cap (all added), else the index of the first it would pass (nothing added).
_SPEND = """
local amount = tonumber(ARGV[1])
for i = 1, #KEYS do
  if tonumber(redis.call('GET', KEYS[i]) or 0) + amount > tonumber(ARGV[i + 2]) then return i end
end
for i = 1, #KEYS do
  redis.call('INCRBYFLOAT', KEYS[i], ARGV[1])
  redis.call('PEXPIRE', KEYS[i], ARGV[2])
end
return 0
"""

# KEYS[1] theoretical arrival time, KEYS[2] pause end (same hash tag: one slot); ARGV: interval s, tolerance s,
# max wait s. One GCRA permit on the server's clock, taken only if due within the wait; a pause's end comes first.
# Returns {taken 0|1, wait in seconds as text} (Lua numbers would be truncated to integers).
_TAKE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local paused = tonumber(redis.call('GET', KEYS[2]) or 0)
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
local base = math.max(tat, now, paused + tolerance)
local wait = math.max(0, base - tolerance - now)
if wait > tonumber(ARGV[3]) then return {0, string.format('%.6f', wait)} end
local new_tat = base + interval
redis.call('SET', KEYS[1], string.format('%.6f', new_tat), 'PX', math.ceil((new_tat - now + tolerance + 1) * 1000))
return {1, string.format('%.6f', wait)}
"""

# KEYS[1] pause end; ARGV: seconds from now (<= 0 lifts it). Kept on the server's clock, as _TAKE reads it.
_PAUSE = """
local secs = tonumber(ARGV[1])
if secs <= 0 then redis.call('DEL', KEYS[1]) return 0 end
local t = redis.call('TIME')
local untilv = tonumber(t[1]) + tonumber(t[2]) / 1e6 + secs
redis.call('SET', KEYS[1], string.format('%.6f', untilv), 'PX', math.ceil(secs * 1000) + 1000)
return 1
"""

# KEYS[1] pause end. The seconds left of it on the server's clock, as text ('0' when none).
_PAUSE_LEFT = """
local v = redis.call('GET', KEYS[1])
if not v then return '0' end
local t = redis.call('TIME')
local left = tonumber(v) - (tonumber(t[1]) + tonumber(t[2]) / 1e6)
if left < 0 then left = 0 end
return string.format('%.6f', left)
"""

# KEYS[1] audit stream; ARGV: max entries, max age ms or '', then one record json per entry (a batch: one command).
# The stream IDs and the retention cutoff are both Redis's clock (see RedisVerbs._record); with a retention the
# stream expires when its newest record ages out.
_RECORD = """
local id
for i = 3, #ARGV do
  id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'e', ARGV[i])
end
if id and ARGV[2] ~= '' then
  local cutoff = tonumber(string.match(id, '^%d+')) - tonumber(ARGV[2])
  redis.call('XTRIM', KEYS[1], 'MINID', string.format('%d', cutoff))
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return #ARGV - 2
"""
# KEYS[1] audit stream; ARGV: count, max age ms. The newest records no older than that on this server's clock (the
# clock of the stream IDs: on a cluster, the stream's node, which TIME sent apart could not name), their 'e' fields.
_RECENT = """
local t = redis.call('TIME')
local cutoff = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) - tonumber(ARGV[2])
local rows = redis.call('XREVRANGE', KEYS[1], '+', string.format('%d', cutoff), 'COUNT', ARGV[1])
local out = {}
for _, row in ipairs(rows) do
  for i = 1, #row[2], 2 do
    if row[2][i] == 'e' then out[#out + 1] = row[2][i + 1] end
  end
end
return out
"""

SCRIPTS = {
    "record_failure": _RECORD_FAILURE,
    "claim": _CLAIM,
    "settle": _SETTLE,
    "apply_status": _APPLY_STATUS,
    "status_event": _STATUS_EVENT,
    "reserve": _RESERVE,
    "take": _TAKE,
    "screen": _SCREEN,
    "hit": _HIT,
    "spend": _SPEND,
    "pause": _PAUSE,
    "pause_left": _PAUSE_LEFT,
    "record": _RECORD,
    "recent": _RECENT,
}
