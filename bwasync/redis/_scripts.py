"""The Lua scripts of the shared limiter. Each runs atomically in Redis, in one round trip.

Keys (``P`` is ``{namespace}:{{account}}``, the braces keeping every key of one account in one
Redis Cluster slot):

* ``P:state`` (hash): the account bucket and the controller's state. ``tat`` is the GCRA
  theoretical arrival time; ``ceiling`` (0 = none) and ``burst_s`` (burst in seconds of rate)
  are the configuration; ``rate`` (0 = unthrottled) and ``ctl`` (the controller's state, JSON;
  see ``_control``) change only through ``CAS``, which bumps ``ver``.
* ``P:live`` (sorted set): limiter id -> time its liveness expires.
* ``P:sender:NUMBER`` (string): that number's GCRA ``tat``, expiring when its bucket is empty.

Times are seconds of Redis's clock (``TIME``), so machines with skewed clocks agree; ARGV[1] may
carry a time instead (tests drive a controlled clock through it). Numbers go back to the client as
strings: Redis truncates Lua numbers to integers.
"""

from __future__ import annotations

__all__ = ["ACQUIRE", "CAS", "CONFIGURE", "GIVE_BACK", "READ"]

_PRELUDE = """
local now = tonumber(ARGV[1])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local function num(x) return string.format('%.17g', x) end
"""

#: Initialise the state from this limiter's configuration when the hash is missing (first use,
#: or a Redis that lost its data): ceiling (0 = none), burst seconds.
_INIT = """
local function init(ceiling, burst_s)
  if redis.call('EXISTS', KEYS[1]) == 0 then
    redis.call('HSET', KEYS[1], 'rate', ceiling, 'ceiling', ceiling, 'burst_s', burst_s, 'ver', 1)
  end
end
"""

#: Apply this limiter's configuration (the last limiter started sets the ceiling and burst); keep
#: the adaptive state unless the current rate is above the new ceiling.
#: KEYS: state. ARGV: now, ceiling, burst_s.
CONFIGURE = (
    _PRELUDE
    + _INIT
    + """
init(ARGV[2], ARGV[3])
local ceiling = tonumber(ARGV[2])
local rate = tonumber(redis.call('HGET', KEYS[1], 'rate')) or 0
redis.call('HSET', KEYS[1], 'ceiling', ARGV[2], 'burst_s', ARGV[3])
if ceiling > 0 and (rate == 0 or rate > ceiling) then redis.call('HSET', KEYS[1], 'rate', ARGV[2]) end
redis.call('HINCRBY', KEYS[1], 'ver', 1)
return num(now)
"""
)

#: One acquisition: heartbeat; the sender's bucket (when KEYS[3] is given) must have room for the
#: cost; then, unless the caller's lease already covers the cost, lease ``want`` segments (at
#: least the cost) from the account bucket, giving back the caller's unspent ones first. Either
#: both buckets are charged, or neither and the reply says how long to wait.
#: KEYS: state, live[, sender]. ARGV: now, id, cost, want, covered (0/1), live_ttl,
#: per_sender_rate, per_sender_burst, give_back, ceiling, burst_s.
#: Reply: granted, wait (s), rate, live, now, ver.
ACQUIRE = (
    _PRELUDE
    + _INIT
    + """
local id, cost, want = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local covered = ARGV[5] == '1'
local eps = 0.000001
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[6]), id)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
local live = redis.call('ZCARD', KEYS[2])
init(ARGV[10], ARGV[11])
local s = redis.call('HMGET', KEYS[1], 'rate', 'burst_s', 'tat', 'ver')
local rate = tonumber(s[1]) or 0
local burst_s = tonumber(s[2]) or 1
local tat = tonumber(s[3]) or 0
local ver = s[4] or '0'
local function reply(granted, wait)
  return {num(granted), num(wait), num(rate), live, num(now), ver}
end
local back = tonumber(ARGV[9])
if rate > 0 and back > 0 and tat > now then
  tat = math.max(tat - back / rate, now)
  redis.call('HSET', KEYS[1], 'tat', num(tat))
end
local s_tat, s_int
if KEYS[3] then
  local ps_rate, ps_burst = tonumber(ARGV[7]), tonumber(ARGV[8])
  s_int = 1 / ps_rate
  s_tat = math.max(tonumber(redis.call('GET', KEYS[3])) or now, now)
  local ready = s_tat
  if cost <= ps_burst then ready = s_tat - ps_burst * s_int + cost * s_int end
  if ready > now + eps then return reply(0, ready - now) end
end
local granted = 0
if not covered then
  if rate > 0 then
    local int = 1 / rate
    local burst = math.max(1, rate * burst_s)
    local tau = burst * int
    if tat < now then tat = now end
    local room = (now + tau - tat) / int
    if room + eps < cost and tat > now + eps then
      local ready = tat
      if cost <= burst then ready = tat - tau + math.max(cost, math.min(want, burst)) * int end
      return reply(0, ready - now)
    end
    granted = math.max(cost, math.min(want, math.floor(room + eps)))
    redis.call('HSET', KEYS[1], 'tat', num(tat + granted * int))
  else
    granted = want
  end
end
if KEYS[3] then
  local new = s_tat + cost * s_int
  redis.call('SET', KEYS[3], num(new), 'PX', math.ceil((new - now) * 1000) + 1)
end
return reply(granted, 0)
"""
)

#: Give back unspent leased segments and, optionally, leave the live set (a limiter closing).
#: KEYS: state, live. ARGV: now, amount, id ('' to stay live).
GIVE_BACK = (
    _PRELUDE
    + """
local rate = tonumber(redis.call('HGET', KEYS[1], 'rate')) or 0
local tat = tonumber(redis.call('HGET', KEYS[1], 'tat')) or 0
local back = tonumber(ARGV[2])
if rate > 0 and back > 0 and tat > now then
  redis.call('HSET', KEYS[1], 'tat', num(math.max(tat - back / rate, now)))
end
if ARGV[3] ~= '' then redis.call('ZREM', KEYS[2], ARGV[3]) end
return num(now)
"""
)

#: The whole state and the time, for a controller decision. KEYS: state. ARGV: now.
READ = (
    _PRELUDE
    + """
return {num(now), redis.call('HGETALL', KEYS[1])}
"""
)

#: Write the controller back if nobody else wrote it since it was read (``ver`` unchanged).
#: The bucket keeps its level in segments across a rate change; ``exhaust`` drops its burst
#: credit (a cut: the queue is full, no burst on top of it) and caps the level at ``carry``
#: bursts of the new rate (``CUT_CARRY_BURSTS``, as ``TokenBucket._exhaust``).
#: KEYS: state. ARGV: now, ver, rate (0 = unthrottled), ctl, exhaust (0/1), carry.
#: Reply: 1 written, 0 lost the race (or the state is gone: the next acquisition re-creates it).
CAS = (
    _PRELUDE
    + """
local s = redis.call('HMGET', KEYS[1], 'rate', 'burst_s', 'tat', 'ver')
if not s[4] or s[4] ~= ARGV[2] then return 0 end
local old, new = tonumber(s[1]) or 0, tonumber(ARGV[3])
local burst_s = tonumber(s[2]) or 1
local tat = tonumber(s[3]) or 0
if old > 0 and new > 0 and tat > now then tat = now + (tat - now) * old / new end
if ARGV[5] == '1' and new > 0 then
  local tau = math.max(1, new * burst_s) / new
  tat = math.min(math.max(tat, now + tau), now + ARGV[6] * tau)
end
redis.call('HSET', KEYS[1], 'rate', ARGV[3], 'ctl', ARGV[4], 'tat', num(tat))
redis.call('HINCRBY', KEYS[1], 'ver', 1)
return 1
"""
)
