"""The Lua scripts of the shared limiter. Each runs atomically in Redis, in one round trip.

Keys (``P`` is ``{namespace}:{{account}}``, the braces keeping every key of one account in one
Redis Cluster slot):

* ``P:state`` (hash): the account bucket and the controller's state. ``tat`` is the GCRA
  theoretical arrival time; ``rate`` (0 = unthrottled), ``ceiling`` (0 = none), ``burst_s``
  (burst in seconds of rate), ``step``, ``episode_end``, ``grow_from``, ``paused`` belong to the
  controller (``_control``) and change only through ``CAS``, which bumps ``ver``; ``win_end``,
  ``win_count``, ``prev_count``, ``prev_start`` count admitted segments for the achieved rate.
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
#: or a Redis that lost its data): ARGV[n..n+2] = ceiling (0 = none), burst seconds, step.
_INIT = """
local function init(ceiling, burst_s, step)
  if redis.call('EXISTS', KEYS[1]) == 0 then
    redis.call('HSET', KEYS[1], 'rate', ceiling, 'ceiling', ceiling, 'burst_s', burst_s,
      'step', step, 'ver', 1)
  end
end
"""

#: Apply this limiter's configuration (the last limiter started sets the ceiling and burst); keep
#: the adaptive state unless the current rate is above the new ceiling.
#: KEYS: state. ARGV: now, ceiling, burst_s, step.
CONFIGURE = (
    _PRELUDE
    + _INIT
    + """
init(ARGV[2], ARGV[3], ARGV[4])
local ceiling = tonumber(ARGV[2])
local rate = tonumber(redis.call('HGET', KEYS[1], 'rate')) or 0
redis.call('HSET', KEYS[1], 'ceiling', ARGV[2], 'burst_s', ARGV[3])
if ceiling > 0 then
  redis.call('HSET', KEYS[1], 'step', ARGV[4])
  if rate == 0 or rate > ceiling then redis.call('HSET', KEYS[1], 'rate', ARGV[2]) end
end
redis.call('HINCRBY', KEYS[1], 'ver', 1)
return num(now)
"""
)

#: One acquisition: heartbeat; the sender's bucket (when KEYS[3] is given) must have room for the
#: cost; then, unless the caller's lease already covers the cost, lease ``want`` segments (at
#: least the cost) from the account bucket, giving back the caller's unspent ones first. Either
#: both buckets are charged, or neither and the reply says how long to wait.
#: KEYS: state, live[, sender]. ARGV: now, id, cost, want, covered (0/1), live_ttl,
#: per_sender_rate, per_sender_burst, give_back, ceiling, burst_s, step, window.
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
init(ARGV[10], ARGV[11], ARGV[12])
local s = redis.call('HMGET', KEYS[1], 'rate', 'burst_s', 'tat', 'paused', 'ver',
  'win_end', 'win_count', 'prev_count', 'prev_start')
local rate = tonumber(s[1]) or 0
local burst_s = tonumber(s[2]) or 1
local tat = tonumber(s[3]) or 0
local paused = tonumber(s[4]) or 0
local ver = s[5] or '0'
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
    if paused > now then return reply(0, paused - now) end
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
  local window = tonumber(ARGV[13])
  local win_end, win_count = tonumber(s[6]) or 0, tonumber(s[7]) or 0
  local prev_count, prev_start = tonumber(s[8]) or 0, tonumber(s[9]) or 0
  if now >= win_end then
    if now < win_end + window then
      prev_count, prev_start, win_end = win_count, win_end - window, win_end + window
    else
      prev_count, prev_start, win_end = 0, now, now + window
    end
    win_count = 0
  end
  redis.call('HSET', KEYS[1], 'win_end', num(win_end), 'win_count', num(win_count + granted),
    'prev_count', num(prev_count), 'prev_start', num(prev_start))
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

#: Write a controller decision if nobody else wrote one since it was read (``ver`` unchanged).
#: The bucket keeps its level in segments across a rate change; ``exhaust`` drops its burst
#: credit (the queue is full: no burst on top of a cut).
#: KEYS: state. ARGV: now, ver, rate, step, episode_end, grow_from, paused, exhaust (0/1).
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
if ARGV[8] == '1' and new > 0 then tat = math.max(tat, now + math.max(1, new * burst_s) / new) end
redis.call('HSET', KEYS[1], 'rate', ARGV[3], 'step', ARGV[4], 'episode_end', ARGV[5],
  'grow_from', ARGV[6], 'paused', ARGV[7], 'tat', num(tat))
redis.call('HINCRBY', KEYS[1], 'ver', 1)
return 1
"""
)
