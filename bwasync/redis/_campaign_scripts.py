"""The Lua scripts that change a shared campaign's rows: each runs atomically inside Redis.

They know no row-state rule of their own: :func:`for_event` fills in, for one event of the one
transition table (:mod:`bwasync.campaign._rowstate`), the states a row may be in (``__SOURCES__``)
and the state it moves to (``__TARGET__``), and puts the move itself before each (``move``, in
``_PRELUDE``). Keys (see :class:`CampaignKeys`):
``status`` key -> state, ``rows`` key -> loaded row (JSON), ``lines`` key -> input line,
``results`` key -> result (JSON), ``marked`` key -> when its send was marked, ``counts`` state
-> rows (plus ``_total`` and ``_segments``), ``ids`` message id -> key, ``queue`` the stream of
sendable rows (consumer group ``GROUP``), ``flagged`` the flagged numbers, ``info`` the record.
"""

from __future__ import annotations

from typing import Final

__all__ = ["ADD", "MARK", "MOVE", "RESULT", "TOUCH", "for_event"]

#: Add a batch of loaded rows; idempotent by key and line.
#: KEYS: status rows lines counts queue flagged info
#: ARGV: loaded_through, then per row: key, line, status, row JSON, flagged JSON ('' if none).
#: A key already loaded from the same line is skipped (a replayed load); from another line it is
#: a duplicate key, stored as an ``invalid`` row under ``#<line>``. Pending rows join the queue.
#: Returns how many rows were new.
ADD: Final = """
local status, rows, lines, counts, queue, flagged, info = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7]
local added = 0
local function add(key, line, state, body)
  redis.call('HSET', status, key, state)
  redis.call('HSET', rows, key, body)
  redis.call('HSET', lines, key, line)
  redis.call('HINCRBY', counts, state, 1)
  redis.call('HINCRBY', counts, '_total', 1)
  if state == 'pending' then redis.call('XADD', queue, '*', 'k', key) end
  added = added + 1
end
for i = 2, #ARGV, 5 do
  local key, line, state, body, flags = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4]
  local first = redis.call('HGET', lines, key)
  if not first then
    add(key, line, state, body)
    if flags ~= '' then redis.call('RPUSH', flagged, flags) end
  elseif first ~= line then
    local synthetic = '#' .. line
    if redis.call('HEXISTS', lines, synthetic) == 0 then
      local row = cjson.decode(body)
      row['request'] = cjson.null
      row['segments'] = 0
      row['error'] = "duplicate key '" .. key .. "' (first on line " .. first .. ')'
      add(synthetic, line, 'invalid', cjson.encode(row))
    end
  end
end
local through = tonumber(ARGV[1])
if through > tonumber(redis.call('HGET', info, 'loaded_through') or '0') then
  redis.call('HSET', info, 'loaded_through', through)
end
return added
"""

#: Mark a row in flight, right before its request leaves; only by the consumer holding its entry.
#: KEYS: status counts marked queue info
#: ARGV: key, entry id, group, consumer, now
#: Returns 'ok', 'lost' (another consumer holds the entry now: do not send), 'gone' (the
#: campaign's record is gone: Redis lost it; do not send) or the row's state (the table refuses
#: the move: do not send).
MARK: Final = """
local status, counts, marked, queue, info = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local key, entry, group, consumer, now = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
if redis.call('HEXISTS', info, 'campaign_id') == 0 then return 'gone' end
local held = redis.call('XPENDING', queue, group, entry, entry, 1, consumer)
if #held == 0 then return 'lost' end
local current = redis.call('HGET', status, key)
if not current then return 'gone' end
if not sources[current] then return current end
move(status, counts, key, current)
redis.call('HSET', marked, key, now)
redis.call('HSETNX', info, 'started_at', now)
redis.call('XCLAIM', queue, group, consumer, 0, entry, 'JUSTID')
return 'ok'
"""

#: Record a row's result (a send's answer, a reconciliation's finding) and settle its entry.
#: KEYS: status counts results ids queue info
#: ARGV: key, entry id, group, result JSON ('' keeps the old), message id ('' if none),
#: segments, now, consumer. A row moved back to ``pending`` joins the queue anew, and only while
#: ``consumer`` still holds the entry (else 'lost', nothing changed): one entry per row, ever.
#: Returns 'ok', 'gone' (the campaign's record is gone: nothing changed), or the row's state when
#: the table refuses the move (the entry is settled anyway: the row's fate was decided elsewhere).
RESULT: Final = """
local status, counts, results, ids, queue, info = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local key, entry, group, body, mid = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local segments, now, consumer = ARGV[6], ARGV[7], ARGV[8]
if redis.call('HEXISTS', info, 'campaign_id') == 0 then return 'gone' end
local function settle()
  redis.call('XACK', queue, group, entry)
  redis.call('XDEL', queue, entry)
end
if target == 'pending' and #redis.call('XPENDING', queue, group, entry, entry, 1, consumer) == 0 then
  return 'lost'
end
local current = redis.call('HGET', status, key)
if not current or not sources[current] then
  settle()
  return current or 'gone'
end
if move(status, counts, key, current) and target == 'accepted' then
  redis.call('HINCRBY', counts, '_segments', segments)
end
if body ~= '' then redis.call('HSET', results, key, body) end
if mid ~= '' then redis.call('HSET', ids, mid, key) end
if target ~= 'pending' then redis.call('HSET', info, 'finished_at', now) end
settle()
if target == 'pending' then redis.call('XADD', queue, '*', 'k', key) end
return 'ok'
"""

#: Move rows in one state by one event, as the user asked: ``--retry-failed`` (REQUEUE: they
#: join the queue) or a new ``--opt-out`` list on resume (OPT_OUT: skipped, with the result).
#: KEYS: status counts queue results. ARGV: the state to move, the result JSON ('' for none),
#: then row keys. A row in another state by now is left alone (a second requeue finds it
#: pending; a row a worker marked meanwhile is on its way). Returns how many moved.
MOVE: Final = """
local status, counts, queue, results, wanted, body = KEYS[1], KEYS[2], KEYS[3], KEYS[4], ARGV[1], ARGV[2]
local moved = 0
for i = 3, #ARGV do
  local key = ARGV[i]
  local current = redis.call('HGET', status, key)
  if current == wanted and sources[current] then
    move(status, counts, key, current)
    if body ~= '' then redis.call('HSET', results, key, body) end
    if target == 'pending' then redis.call('XADD', queue, '*', 'k', key) end
    moved = moved + 1
  end
end
return moved
"""

#: Keep entries this consumer still holds from looking abandoned: reset their idle time.
#: KEYS: queue. ARGV: group, consumer, entry ids... Returns how many were still held.
TOUCH: Final = """
local queue, group, consumer = KEYS[1], ARGV[1], ARGV[2]
local held = 0
for i = 3, #ARGV do
  local p = redis.call('XPENDING', queue, group, ARGV[i], ARGV[i], 1, consumer)
  if #p > 0 then
    redis.call('XCLAIM', queue, group, consumer, 0, ARGV[i], 'JUSTID')
    held = held + 1
  end
end
return held
"""


#: What :func:`for_event` puts before each of ``MARK``, ``RESULT`` and ``MOVE``: the event's
#: target state, the states it may move a row from, and the move itself, the one place a script
#: changes a row's state: ``move(status, counts, key, current)`` sets the row's state to the
#: target and moves one from ``current``'s count to the target's; false if it was there already.
_PRELUDE: Final = """
local target, sources = '__TARGET__', {__SOURCES__}
local function move(status, counts, key, current)
  if current == target then return false end
  redis.call('HSET', status, key, target)
  redis.call('HINCRBY', counts, current, -1)
  redis.call('HINCRBY', counts, target, 1)
  return true
end
"""


def for_event(script: str, target: str, sources: list[str]) -> str:
    """``script`` (``MARK``, ``RESULT`` or ``MOVE``) applying one event: from ``sources`` to ``target``.

    The values are state names (``RowStatus`` values: lowercase letters and ``_``), so they are
    safe inside the Lua string and table literals.
    """
    for name in (target, *sources):
        if not name.replace("_", "").isalpha():
            raise ValueError(f"not a state name: {name!r}")
    table = ", ".join(f"{name} = true" for name in sources)
    return (_PRELUDE + script).replace("__TARGET__", target).replace("__SOURCES__", table)
