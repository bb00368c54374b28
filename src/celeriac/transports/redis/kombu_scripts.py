"""The Lua of the kombu layout: each change to kombu's keys is one atomic script call.

The names are kombu's (:mod:`celeriac.transports.redis.kombu_layout`): queue lists, the
``_kombu.binding.<exchange>`` sets, and the ack-emulation records ``unacked`` (a hash: delivery
tag -> ``[envelope, exchange, routing key]``) and ``unacked_index`` (a sorted set: delivery tag ->
the time the message was taken). A kombu consumer restores a record whose time is older than
``visibility_timeout``; so does :data:`CLAIM`.

celeriac keeps its delayed messages in those two keys as well, under fields ``celeriac-due:<list>:
<tag>`` scored ``due - visibility_timeout``: whichever consumer, celeriac's or Celery's, sweeps
the index when the message falls due moves it to its list. Every key name comes in ``ARGV``
(prefixes and all), so one call may touch any number of queues.
"""

from __future__ import annotations

PRELUDE = r"""
local SEP = '\6\22'
local DUE = 'celeriac-due:'
local function now()
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1000000
end
-- the envelope inside an unacked record written by this layout: '[' env ', "", "<queue>"]'
local function envelope_of(value)
  local at, last = 1, nil
  while true do
    local found = string.find(value, '}, "", "', at, true)
    if not found then break end
    last, at = found, found + 1
  end
  if string.byte(value, 1) ~= 91 or not last then return nil end
  return string.sub(value, 2, last)
end
local function record(env, queue) return '[' .. env .. ', "", ' .. cjson.encode(queue) .. ']' end
local function dead_entry(reason, id, t, payload)
  return cjson.encode({reason = reason, delivery_count = 0, message_id = id,
                       failed_at = string.format('%.6f', t)}) .. '\n' .. payload
end
-- call redis with a long argument list, at most 1000 values after the fixed ones at a time
local function batched(command, key, values, stride)
  local step = 1000 * stride
  for start = 1, #values, step do
    redis.call(command, key, unpack(values, start, math.min(start + step - 1, #values)))
  end
end
"""

# ARGV: own prefix, global prefix, visibility timeout, token or "", fanout channel prefix,
# unacked, unacked_index, r, r x (exchange, routing key, list suffix): the batch's routes,
# n, n x (head, envelope) where head is the item's route number (from 1), or
# "<route>:<due>:<tag>" for an item with a due time, then optionally d and
# d x (item ordinal, dedup key, ttl ms).
# Returns the number of queues each item reached (subscribers, for a fanout exchange), or
# {-1, exchange} when an item names an exchange nobody declared (nothing is stored then).
PUBLISH = (
    PRELUDE
    + r"""
local own, glob, vt = ARGV[1], ARGV[2], tonumber(ARGV[3])
local unacked, index = ARGV[6], ARGV[7]
local nr = tonumber(ARGV[8])
local first = 10 + nr * 3  -- the first item's head
local n = tonumber(ARGV[9 + nr * 3])
local sent = nil
if ARGV[4] ~= '' then
  sent = own .. 'sent:' .. ARGV[4]
  local done = redis.call('GET', sent)
  if done then return cjson.decode(done) end
end
local function split(m)
  local a = string.find(m, SEP, 1, true)
  if not a then return nil end
  local b = string.find(m, SEP, a + 2, true)
  if not b then return nil end
  return string.sub(m, 1, a - 1), string.sub(m, a + 2, b - 1), string.sub(m, b + 2)
end
local function words(s)
  local out, start = {}, 1
  if s == '' then return out end
  while true do
    local dot = string.find(s, '.', start, true)
    if not dot then out[#out + 1] = string.sub(s, start) return out end
    out[#out + 1] = string.sub(s, start, dot - 1)
    start = dot + 1
  end
end
-- AMQP's topic match (`*` one word, `#` any number), a dynamic programme over the key's words
local function topic(pattern, key)
  if not string.find(pattern, '[#*]') then return pattern == key end
  local kw = words(key)
  local reach = {[0] = true}
  for j = 1, #kw do reach[j] = false end
  for _, w in ipairs(words(pattern)) do
    if w == '#' then
      for j = 1, #kw do reach[j] = reach[j] or reach[j - 1] end
    else
      local next_ = {[0] = false}
      local any = false
      for j = 1, #kw do
        next_[j] = reach[j - 1] and (w == '*' or w == kw[j])
        any = any or next_[j]
      end
      if not any then return false end
      reach = next_
    end
  end
  return reach[#kw]
end
local routes = {}
local function route(ex, rk)
  if ex == '' then return {kind = 'direct', queues = {rk}} end
  local id = ex .. '\0' .. rk
  if routes[id] then return routes[id] end
  local kind = redis.call('HGET', own .. 'exchanges', ex)
  local members = redis.call('SMEMBERS', glob .. '_kombu.binding.' .. ex)
  if not kind then
    if #members == 0 then return nil end
    kind = 'direct'
    for _, m in ipairs(members) do
      local _, pattern = split(m)
      if pattern and pattern ~= '' then kind = 'topic' break end
    end
  end
  local seen, queues = {}, {}
  for _, m in ipairs(members) do
    local key, _, queue = split(m)
    if queue and not seen[queue] then
      local hit
      if kind == 'fanout' then hit = true
      elseif kind == 'topic' then hit = topic(key, rk)
      else hit = key == rk end
      if hit then seen[queue] = true queues[#queues + 1] = queue end
    end
  end
  routes[id] = {kind = kind, queues = queues}
  return routes[id]
end
local plan = {}
for j = 1, nr do
  local b = 9 + (j - 1) * 3
  local found = route(ARGV[b], ARGV[b + 1])
  if not found then return {-1, ARGV[b]} end
  plan[j] = {kind = found.kind, queues = found.queues, exchange = ARGV[b], key = ARGV[b + 1],
             suffix = ARGV[b + 2]}
end
-- keyed items: stored only if their key is not recorded, which they record once they reach
-- a queue (or a subscriber); an item that reaches nothing records nothing
local keyed = {}
local r = first + n * 2
if ARGV[r] then
  for j = 0, tonumber(ARGV[r]) - 1 do
    local at = r + 1 + j * 3
    keyed[tonumber(ARGV[at])] = {own .. 'dedup:' .. ARGV[at + 1], ARGV[at + 2]}
  end
end
local t = now()
local counts, pushes, order, fields, scores = {}, {}, {}, {}, {}
for i = 0, n - 1 do
  local head, env = ARGV[first + i * 2], ARGV[first + i * 2 + 1]
  local due, tag = '', ''
  local colon = string.find(head, ':', 1, true)
  if colon then
    local second = string.find(head, ':', colon + 1, true)
    due, tag = string.sub(head, colon + 1, second - 1), string.sub(head, second + 1)
    head = string.sub(head, 1, colon - 1)
  end
  local route_ = plan[tonumber(head)]
  local key = keyed[i]
  if key and redis.call('EXISTS', key[1]) == 1 then
    counts[i + 1] = 0
  elseif route_.kind == 'fanout' and due == '' then
    local channel = ARGV[5] .. route_.exchange
    if route_.key ~= '' then channel = channel .. '/' .. route_.key end
    counts[i + 1] = redis.call('PUBLISH', channel, env)
  else
    local later = due ~= '' and tonumber(due) > t
    for _, queue in ipairs(route_.queues) do
      local list = queue .. route_.suffix
      if later then
        local field = DUE .. list .. ':' .. tag
        fields[#fields + 1] = field
        fields[#fields + 1] = record(env, queue)
        scores[#scores + 1] = tonumber(due) - vt
        scores[#scores + 1] = field
      else
        if not pushes[list] then pushes[list] = {} order[#order + 1] = list end
        local p = pushes[list]
        p[#p + 1] = env
      end
    end
    counts[i + 1] = #route_.queues
  end
  if key and counts[i + 1] > 0 then redis.call('SET', key[1], '1', 'PX', key[2]) end
end
for _, list in ipairs(order) do batched('LPUSH', glob .. list, pushes[list], 1) end
if #fields > 0 then
  batched('HSET', unacked, fields, 2)
  batched('ZADD', index, scores, 2)
end
if sent then redis.call('SET', sent, cjson.encode(counts), 'EX', 600) end
return counts
"""
)

# ARGV: own prefix, global prefix, visibility timeout, unacked, unacked_index, max count,
# rotation, tag head, first tag number, s, s x list suffix (kombu's steps in serving order),
# then the queue names. Moves celeriac's delayed messages that fell due to their lists; takes up
# to max count messages (step by step, the queues sharing each step fairly), recording each in
# unacked/unacked_index under a fresh tag (a payload that is not a JSON object goes to celeriac's
# own poison hash instead, so that no kombu restore ever reads it); returns
# {next due in (seconds, or ""), e, e x (field, record) of expired leases for the caller to
# restore, then per message: queue index, tag, envelope}. When there are expired leases it
# claims nothing: the caller restores them, then claims them first in line.
CLAIM = (
    PRELUDE
    + r"""
local own, glob, vt = ARGV[1], ARGV[2], tonumber(ARGV[3])
local unacked, index = ARGV[4], ARGV[5]
local max_count, rotation = tonumber(ARGV[6]), tonumber(ARGV[7])
local head, counter = ARGV[8], tonumber(ARGV[9])
local ns = tonumber(ARGV[10])
local suffixes = {}
for i = 1, ns do suffixes[i] = ARGV[10 + i] end
local queues = {}
for i = 11 + ns, #ARGV do queues[#queues + 1] = ARGV[i] end
local nq = #queues
local t = now()
local out = {'', 0}
local due = redis.call('ZRANGEBYSCORE', index, '-inf', t - vt, 'LIMIT', 0, 100)
for _, field in ipairs(due) do
  local value = redis.call('HGET', unacked, field)
  if not value then
    redis.call('ZREM', index, field)
  elseif string.sub(field, 1, #DUE) == DUE then
    redis.call('HDEL', unacked, field)
    redis.call('ZREM', index, field)
    local list = string.sub(field, #DUE + 1, #field - 37)
    local env = envelope_of(value)
    if env then
      redis.call('LPUSH', glob .. list, env)
    else
      redis.call('LPUSH', own .. 'dlq:' .. list,
                 dead_entry('unreadable delayed record', field, t, value))
    end
  else
    out[#out + 1] = field
    out[#out + 1] = value
    out[2] = out[2] + 1
  end
end
if out[2] > 0 then
  out[1] = '0'
  return out  -- restored first (first in line, as kombu's), then claimed
end
local records, scores, poison = {}, {}, {}
local taken = 0
local function claim(qi, suffix, want)
  local got = redis.call('RPOP', glob .. queues[qi] .. suffix, want)
  if not got then return 0 end
  for _, env in ipairs(got) do
    local tag = head .. string.format('%012x', counter)
    counter = counter + 1
    if string.byte(env, 1) == 123 and string.byte(env, -1) == 125 then
      records[#records + 1] = tag
      records[#records + 1] = record(env, queues[qi])
      scores[#scores + 1] = t
      scores[#scores + 1] = tag
    else
      poison[#poison + 1] = tag
      poison[#poison + 1] = queues[qi] .. '\n' .. env
    end
    out[#out + 1] = qi
    out[#out + 1] = tag
    out[#out + 1] = env
  end
  return #got
end
for _, suffix in ipairs(suffixes) do
  if taken >= max_count then break end
  local full = {}
  for i = 0, nq - 1 do
    local want = max_count - taken
    if want <= 0 then break end
    local qi = (rotation + i) % nq + 1
    local share = math.ceil(want / (nq - i))
    local got = claim(qi, suffix, share)
    taken = taken + got
    if got >= share then full[#full + 1] = qi end
  end
  for _, qi in ipairs(full) do
    local want = max_count - taken
    if want <= 0 then break end
    taken = taken + claim(qi, suffix, want)
  end
end
if #records > 0 then
  batched('HSET', unacked, records, 2)
  batched('ZADD', index, scores, 2)
end
if #poison > 0 then batched('HSET', own .. 'poison', poison, 2) end
if taken < max_count then
  local first = redis.call('ZRANGE', index, 0, 0, 'WITHSCORES')
  if #first > 0 then
    out[1] = string.format('%.6f', math.max(tonumber(first[2]) + vt - t, 0))
  end
end
return out
"""
)

# ARGV: own prefix, global prefix, unacked, unacked_index, op, number, then triplets (tag, a, b):
#   ack:      -                                     (number unused)
#   extend:   -                                     (the record's time becomes now + number:
#                                                    the lease wanted minus the timeout)
#   reject:   a = dead-letter list, b = its entry
#   requeue:  a = list, b = envelope                (LPUSH: behind the waiting ones, as kombu)
#   delay:    a = due field, b = its record         (number = the delay in seconds minus the
#                                                    visibility timeout)
# Acts only on tags still recorded (in unacked, or celeriac's poison hash); returns the others.
SETTLE = (
    PRELUDE
    + r"""
local own, glob, unacked, index = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local op, number = ARGV[5], tonumber(ARGV[6])
local poison = own .. 'poison'
local t = now()
local stale = {}
for i = 7, #ARGV, 3 do
  local tag, a, b = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local held = redis.call('HEXISTS', unacked, tag) == 1
  local bad = not held and redis.call('HEXISTS', poison, tag) == 1
  if not held and not bad then
    stale[#stale + 1] = tag
  elseif op == 'extend' then
    if held then redis.call('ZADD', index, 'XX', t + number, tag) end
  else
    if held then
      redis.call('HDEL', unacked, tag)
      redis.call('ZREM', index, tag)
    else
      redis.call('HDEL', poison, tag)
    end
    if op == 'reject' then
      redis.call('LPUSH', a, b)
    elseif op == 'requeue' then
      redis.call('LPUSH', glob .. a, b)
    elseif op == 'delay' then
      redis.call('HSET', unacked, a, b)
      redis.call('ZADD', index, t + number, a)
    end
  end
end
return stale
"""
)

# ARGV: global prefix, unacked, unacked_index, visibility timeout, then records:
# (field, expected record, kind, m, m x destination, payload). kind "push": RPUSH the payload
# to each destination list (first in line, as kombu's restore); "dead": LPUSH it to the one
# destination (a dead-letter list). A record is restored only if it is still the one read and
# still expired (nobody acked, restored or extended it meanwhile). Returns how many were.
RESTORE = (
    PRELUDE
    + r"""
local glob, unacked, index, vt = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local t = now()
local done = 0
local i = 5
while i <= #ARGV do
  local field, expected, kind, m = ARGV[i], ARGV[i + 1], ARGV[i + 2], tonumber(ARGV[i + 3])
  local payload = ARGV[i + 4 + m]
  local score = redis.call('ZSCORE', index, field)
  if redis.call('HGET', unacked, field) == expected
    and (not score or tonumber(score) <= t - vt) then
    redis.call('HDEL', unacked, field)
    redis.call('ZREM', index, field)
    for j = 1, m do
      if kind == 'push' then
        redis.call('RPUSH', ARGV[i + 3 + j], payload)
      else
        redis.call('LPUSH', ARGV[i + 3 + j], payload)
      end
    end
    done = done + 1
  end
  i = i + 5 + m
end
return done
"""
)

# ARGV: unacked, unacked_index, "purge" or "size", the HSCAN pattern of the queue's delayed
# fields, l, l x list name (without the prefix: the delayed fields name them so), then the l
# list keys. Counts (and for "purge" removes) the waiting messages: the lists' and the
# delayed ones'; records of messages taken by a consumer stay.
WAITING = (
    PRELUDE
    + r"""
local unacked, index, op, pattern = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local l = tonumber(ARGV[5])
local mine = {}
for i = 1, l do mine[ARGV[5 + i]] = true end
local total = 0
for i = 6 + l, 5 + 2 * l do
  total = total + redis.call('LLEN', ARGV[i])
  if op == 'purge' then redis.call('UNLINK', ARGV[i]) end
end
local cursor = '0'
repeat
  local page = redis.call('HSCAN', unacked, cursor, 'MATCH', pattern, 'COUNT', 1000)
  cursor = page[1]
  for j = 1, #page[2], 2 do
    local field = page[2][j]
    if mine[string.sub(field, #DUE + 1, #field - 37)] then
      total = total + 1
      if op == 'purge' then
        redis.call('HDEL', unacked, field)
        redis.call('ZREM', index, field)
      end
    end
  end
until cursor == '0'
return total
"""
)

__all__ = ["CLAIM", "PUBLISH", "RESTORE", "SETTLE", "WAITING"]
