"""The Redis broker's data layout: its Lua scripts, and the values they store and return.

Every change to a queue is one atomic script call. Kept apart from
:mod:`celeriac.transports.redis` so that the layout, each script and the Python codecs of the
stored values (at the end) can be read side by side.

Every script takes the key prefix as ``ARGV[1]`` and builds its key names from it, so one call
can touch any number of queues (this rules out Redis Cluster, which a broker with cross-queue
claims could not use anyway). Time is Redis's own ``TIME``, so every client agrees on when a
lease ends or a delay is over, whatever their clocks say.

Layout, for a queue ``Q`` under prefix ``P``:

* ``P q:Q:ready``    sorted set of message ids ready now, score ``(9 - priority) * 2^40 + seq``:
  ``ZPOPMIN`` takes the highest priority first, and FIFO within one (``seq`` is a global
  counter bumped whenever a message becomes ready);
* ``P q:Q:delayed``  sorted set, score = due time (UNIX seconds);
* ``P q:Q:leased``   sorted set, score = lease expiry;
* ``P q:Q:data``     hash by id: ``"<priority>\\0<exchange>\\0<routing key>\\0"`` then the
  payload, as one value, so a publish writes one field per message copy;
* ``P q:Q:cnt``      hash by id: the delivery count. It doubles as the *lease token*: each lease
  raises it, so a holder whose lease expired and went to another consumer holds an old count;
* ``P q:Q:notify``   a list of at most one element, pushed whenever the queue gains ready (or
  earlier-due) messages, that idle consumers wait on with ``BLPOP``;
* ``P q:Q:clock``    sorted set: when the queue's messages became ready, to the second. A
  member is a UNIX second, its score the first ``seq`` made ready in the queue in that second,
  added at most once a second (by a publish, or a claim or requeue making messages ready), so a
  ready message's second is that of the last stamp at or below its ``seq``. ``AGE`` reads it
  and drops the stamps below the oldest ready message's (no later message needs them); past
  ``CLOCK_STAMPS`` stamps the oldest go;
* ``P dlq:Q``        list of dead letters, newest first: a JSON header line, then the raw payload;
* ``P topology`` (JSON), ``P topology:version`` (a random token set on every change) and
  ``P topology:epoch`` (a random token set once, when the topology is first stored: a new
  epoch means Redis lost its data, and every instance declares again what it declared);
  ``P seq``, one counter for message ids and ready order (both need only to grow);
* ``P dedup:K``      a publish's dedup key ``K`` (``Outgoing.dedup_key``), set with
  ``NX PX dedup_ttl`` by the publish script that stores the message;
* ``P sent:T``       a batch chunk's idempotency token (see ``PUBLISH``), for 10 minutes.

Floats go back to Python as strings: Redis truncates Lua numbers to integers in replies.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple

import orjson

from celeriac.errors import TransportError
from celeriac.routing import Binding
from celeriac.transports.base import DeadLetter, Delivery, Outgoing
from celeriac.transports.topology import Destination, QueueInfo, Topology

CHUNK_COPIES = 1000  # message copies per publish script call: keeps each call to a few ms
CHUNK_BYTES = 4 << 20

#: The keys (after the prefix) that :func:`decode_topology` reads, in its argument order.
TOPOLOGY_KEYS = ("topology:version", "topology", "topology:epoch")


class StoredTopology(NamedTuple):
    """The topology as last read from Redis, with the tokens that tell whether it changed."""

    version: str
    topology: Topology
    epoch: str


PRELUDE = r"""
local prefix = ARGV[1]
local SPAN = 1099511627776
local CLOCK_STAMPS = 86400
local function k(queue, suffix) return prefix .. 'q:' .. queue .. ':' .. suffix end
local function now()
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local function notify(queue)
  local key = k(queue, 'notify')
  if redis.call('LLEN', key) == 0 then redis.call('LPUSH', key, '1') end
end
local function priority_of(queue, id)
  local data = redis.call('HGET', k(queue, 'data'), id)
  if not data then return 0 end
  return tonumber(string.sub(data, 1, 1)) or 0
end
-- the payload of a stored value: what follows the third NUL of its header
local function payload_of(data)
  local at = 0
  for _ = 1, 3 do
    at = string.find(data, '\0', at + 1, true)
    if not at then return data end
  end
  return string.sub(data, at + 1)
end
-- note in the queue's clock that seq became ready at t, if nothing did in this second yet
local function stamp(queue, seq, t)
  local key = k(queue, 'clock')
  local second = tostring(math.floor(t))
  local last = redis.call('ZRANGE', key, -1, -1)
  if last[1] == second then return end
  redis.call('ZADD', key, seq, second)
  local over = redis.call('ZCARD', key) - CLOCK_STAMPS
  if over > 0 then redis.call('ZREMRANGEBYRANK', key, 0, over - 1) end
end
-- make ids ready, in the order given, each after every message already ready at its priority
local function make_ready(queue, ids, t)
  if #ids == 0 then return end
  local last = redis.call('INCRBY', prefix .. 'seq', #ids)
  stamp(queue, last - #ids + 1, t)
  local args = {}
  for i, id in ipairs(ids) do
    args[#args + 1] = (9 - priority_of(queue, id)) * SPAN + last - #ids + i
    args[#args + 1] = id
  end
  redis.call('ZADD', k(queue, 'ready'), unpack(args))
end
local function forget(queue, id)
  redis.call('HDEL', k(queue, 'data'), id)
  redis.call('HDEL', k(queue, 'cnt'), id)
  redis.call('HDEL', k(queue, 'lost'), id)
end
-- returns the dead-letter list entry written (false when the message's data was gone)
local function dead_letter(queue, id, reason, count, t)
  local data = redis.call('HGET', k(queue, 'data'), id)
  local entry = false
  if data then
    local header = cjson.encode({reason = reason, delivery_count = count,
                                 failed_at = string.format('%.6f', t), message_id = id})
    entry = header .. '\n' .. payload_of(data)
    redis.call('LPUSH', prefix .. 'dlq:' .. queue, entry)
  end
  forget(queue, id)
  return entry
end
"""

# ARGV: prefix, expected topology version, token or "", n, then n x (queue, due_at or "",
# header + payload), then (only when some items carry a dedup key) d and d x (the item's
# ordinal in the call, its first copy, its number of copies, key, ttl in ms). Returns -1 when
# the topology changed since the client routed the batch (it reloads and routes again), else
# n; or, when keyed items were dropped, {n, their ordinals...}. A token (a batch chunk's first
# and last message ids) makes the call idempotent for 10 minutes: a chunk sent again after its
# reply was lost (a dropped connection, a producer retry) is not stored twice. A keyed item is
# stored only if ``SET dedup:<key> NX PX ttl`` succeeds, in this same call, so no crash can
# separate the record from the store and two producers racing one key store it once.
PUBLISH = (
    PRELUDE
    + r"""
local current = redis.call('GET', prefix .. 'topology:version') or ''
if current ~= ARGV[2] then return -1 end
local n = tonumber(ARGV[4])
if n == 0 then return 0 end
if ARGV[3] ~= '' and not redis.call('SET', prefix .. 'sent:' .. ARGV[3], '1', 'NX', 'EX', 600)
then
  return n
end
local skip, dropped = nil, nil
local records = 5 + n * 3
if ARGV[records] then
  skip, dropped = {}, {n}
  for j = 0, tonumber(ARGV[records]) - 1 do
    local r = records + 1 + j * 5
    if not redis.call('SET', prefix .. 'dedup:' .. ARGV[r + 3], '1', 'NX', 'PX', ARGV[r + 4])
    then
      dropped[#dropped + 1] = ARGV[r]
      local first = tonumber(ARGV[r + 1])
      for c = first, first + tonumber(ARGV[r + 2]) - 1 do skip[c] = true end
    end
  end
end
local last_id = redis.call('INCRBY', prefix .. 'seq', n)
local t = now()
local per_queue = {}
local order = {}
for i = 0, n - 1 do
  if skip == nil or not skip[i] then
    local base = 5 + i * 3
    local queue = ARGV[base]
    local q = per_queue[queue]
    if not q then
      q = {data = {}, ready = {}, delayed = {}}
      per_queue[queue] = q
      order[#order + 1] = queue
    end
    local id = last_id - n + 1 + i
    q.data[#q.data + 1] = id
    local data = ARGV[base + 2]
    q.data[#q.data + 1] = data
    local due = ARGV[base + 1]
    if due ~= '' and tonumber(due) > t then
      q.delayed[#q.delayed + 1] = due
      q.delayed[#q.delayed + 1] = id
    else
      q.ready[#q.ready + 1] = (9 - (tonumber(string.sub(data, 1, 1)) or 0)) * SPAN + id
      q.ready[#q.ready + 1] = id
    end
  end
end
for _, queue in ipairs(order) do
  local q = per_queue[queue]
  redis.call('HSET', k(queue, 'data'), unpack(q.data))
  if #q.ready > 0 then
    redis.call('ZADD', k(queue, 'ready'), unpack(q.ready))
    stamp(queue, q.ready[2], t)
  end
  if #q.delayed > 0 then redis.call('ZADD', k(queue, 'delayed'), unpack(q.delayed)) end
  notify(queue)
end
if dropped and #dropped > 1 then return dropped end
return n
"""
)

# ARGV: prefix, lease seconds, max deliveries, max count, start index, queue names...
# Returns {next_due_in or "", topology epoch or "", then per delivery: queue index, id,
# delivery count, stored value}; a message dead-lettered on the way (past max deliveries) is
# listed the same way with its count negated and its dead-letter list entry as the value, so
# that the transport can report it (Transport.watch_dead_letters). next_due_in is "" while a
# queue still holds ready messages; once they are all taken, the time until a delayed message
# or a lease falls due, or "-" if none does (see drained()).
CLAIM = (
    PRELUDE
    + r"""
local lease = tonumber(ARGV[2])
local max_deliveries = tonumber(ARGV[3])
local max_count = tonumber(ARGV[4])
local queues = {}
for i = 6, #ARGV do queues[#queues + 1] = ARGV[i] end
local nq = #queues
local t = now()
local until_ = t + lease
for _, queue in ipairs(queues) do
  local due = redis.call('ZRANGEBYSCORE', k(queue, 'delayed'), '-inf', t, 'LIMIT', 0, 1000)
  if #due > 0 then
    redis.call('ZREM', k(queue, 'delayed'), unpack(due))
    make_ready(queue, due, t)
  end
  local expired = redis.call('ZRANGEBYSCORE', k(queue, 'leased'), '-inf', t, 'LIMIT', 0, 1000)
  if #expired > 0 then
    redis.call('ZREM', k(queue, 'leased'), unpack(expired))
    -- a lease that ran out was lost by its worker: that, not a requeue, counts toward the limit
    for _, id in ipairs(expired) do redis.call('HINCRBY', k(queue, 'lost'), id, 1) end
    make_ready(queue, expired, t)
  end
end
local out = {'', redis.call('GET', prefix .. 'topology:epoch') or ''}
local taken = 0
local function claim(qi, wanted)
  local queue = queues[qi]
  local got = 0
  while got < wanted do
    local popped = redis.call('ZPOPMIN', k(queue, 'ready'), math.min(wanted - got, 1000))
    if #popped == 0 then break end
    local ids = {}
    for j = 1, #popped, 2 do ids[#ids + 1] = popped[j] end
    local counts = redis.call('HMGET', k(queue, 'cnt'), unpack(ids))
    -- most claims find no lease that ran out: no hash, nothing to read per message
    local losses = {}
    if redis.call('EXISTS', k(queue, 'lost')) == 1 then
      losses = redis.call('HMGET', k(queue, 'lost'), unpack(ids))
    end
    local good, new_counts, leases = {}, {}, {}
    for j, id in ipairs(ids) do
      local count = tonumber(counts[j]) or 0
      local lost = tonumber(losses[j]) or 0
      if lost >= max_deliveries then
        local reason = 'delivered ' .. lost .. ' times without an ack (max_deliveries='
          .. max_deliveries .. ')'
        local entry = dead_letter(queue, id, reason, count, t)
        if entry then
          out[#out + 1] = qi
          out[#out + 1] = id
          out[#out + 1] = -count
          out[#out + 1] = entry
        end
      else
        good[#good + 1] = id
        new_counts[#new_counts + 1] = id
        new_counts[#new_counts + 1] = count + 1
        leases[#leases + 1] = until_
        leases[#leases + 1] = id
      end
    end
    if #good > 0 then
      redis.call('HSET', k(queue, 'cnt'), unpack(new_counts))
      redis.call('ZADD', k(queue, 'leased'), unpack(leases))
      local payloads = redis.call('HMGET', k(queue, 'data'), unpack(good))
      for j, id in ipairs(good) do
        if payloads[j] then
          out[#out + 1] = qi
          out[#out + 1] = id
          out[#out + 1] = new_counts[2 * j]
          out[#out + 1] = payloads[j]
          got = got + 1
        else
          redis.call('ZREM', k(queue, 'leased'), id)  -- data lost: drop the husk
          forget(queue, id)
        end
      end
    end
  end
  return got
end
local full = {}
for index = 0, nq - 1 do
  local wanted = max_count - taken
  if wanted <= 0 then break end
  local qi = (tonumber(ARGV[5]) + index) % nq + 1
  local share = math.ceil(wanted / (nq - index))
  local got = claim(qi, share)
  taken = taken + got
  if got >= share then full[#full + 1] = qi end
end
for _, qi in ipairs(full) do
  local wanted = max_count - taken
  if wanted <= 0 then break end
  taken = taken + claim(qi, wanted)
end
local more = false
if taken > 0 then
  for _, queue in ipairs(queues) do
    if redis.call('ZCARD', k(queue, 'ready')) > 0 then
      notify(queue)
      more = true
    end
  end
end
if taken < max_count or not more then
  -- every queue gave all it had: say so, and when the next one falls due, so the consumer can
  -- wait in BLPOP right away instead of claiming again first
  out[1] = '-'
  local earliest = nil
  for _, queue in ipairs(queues) do
    for _, suffix in ipairs({'delayed', 'leased'}) do
      local first = redis.call('ZRANGE', k(queue, suffix), 0, 0, 'WITHSCORES')
      if #first > 0 then
        local at = tonumber(first[2])
        if earliest == nil or at < earliest then earliest = at end
      end
    end
  end
  if earliest ~= nil then out[1] = string.format('%.6f', math.max(earliest - t, 0)) end
end
return out
"""
)

# ARGV: prefix, op (ack|requeue|return|reject|extend), argument (delay, reason or seconds),
# then triplets (queue, id, token). Acts only where the message is leased under that token;
# returns the ids that were not. ``return`` gives back a message claimed but never run: it goes
# back to its own place in the queue (its id is its first sequence number), not behind the
# messages that came after it as a requeue does; its delivery count is kept (the tokens of a
# message's leases only ever grow, so a stale settle cannot hit a later lease).
SETTLE = (
    PRELUDE
    + r"""
local op = ARGV[2]
-- an ack needs no clock: no TIME call for the commonest settle (measured: ~2.7 us of Redis CPU)
local t = 0
if op ~= 'ack' and op ~= 'return' then t = now() end
local stale = {}
local touched = {}
for i = 4, #ARGV, 3 do
  local queue, id, token = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local leased = k(queue, 'leased')
  local held = redis.call('ZSCORE', leased, id)
  if held then held = redis.call('HGET', k(queue, 'cnt'), id) == token end
  if not held then
    stale[#stale + 1] = id
  elseif op == 'extend' then
    redis.call('ZADD', leased, t + tonumber(ARGV[3]), id)
  else
    redis.call('ZREM', leased, id)
    if op == 'ack' then
      forget(queue, id)
    elseif op == 'return' then
      redis.call('ZADD', k(queue, 'ready'), (9 - priority_of(queue, id)) * SPAN + tonumber(id), id)
      touched[queue] = true
    elseif op == 'reject' then
      dead_letter(queue, id, ARGV[3], tonumber(token), t)
    else
      local delay = tonumber(ARGV[3])
      if delay > 0 then
        redis.call('ZADD', k(queue, 'delayed'), t + delay, id)
      else
        make_ready(queue, {id}, t)
      end
      touched[queue] = true
    end
  end
end
for queue in pairs(touched) do notify(queue) end
return stale
"""
)

# ARGV: prefix, queue. Waiting = ready, delayed, or leased with an expired lease.
SIZE = (
    PRELUDE
    + r"""
local queue = ARGV[2]
return redis.call('ZCARD', k(queue, 'ready')) + redis.call('ZCARD', k(queue, 'delayed'))
  + redis.call('ZCOUNT', k(queue, 'leased'), '-inf', now())
"""
)

# ARGV: prefix, queue. Returns the seconds since the longest-waiting ready message became
# deliverable ("" when the queue has ready messages older than its clock: made ready by a
# celeriac without one), "0" when none is ready. Ready ones: the lowest seq of each priority
# level (ten index seeks), then the clock; due delayed ones and expired leases (not made ready
# until a claim) from the heads of their sets, by their scores.
AGE = (
    PRELUDE
    + r"""
local queue = ARGV[2]
local t = now()
local since = nil
local first = nil
for level = 0, 9 do
  local head = redis.call('ZRANGEBYSCORE', k(queue, 'ready'), string.format('%d', level * SPAN),
                          '(' .. string.format('%d', (level + 1) * SPAN), 'LIMIT', 0, 1,
                          'WITHSCORES')
  if #head > 0 then
    local seq = tonumber(head[2]) - level * SPAN
    if first == nil or seq < first then first = seq end
  end
end
if first ~= nil then
  local clock = k(queue, 'clock')
  local at = redis.call('ZREVRANGEBYSCORE', clock, string.format('%d', first), '-inf',
                        'LIMIT', 0, 1, 'WITHSCORES')
  if #at > 0 then
    since = tonumber(at[1])
    redis.call('ZREMRANGEBYSCORE', clock, '-inf', '(' .. at[2])
  else
    local oldest = redis.call('ZRANGE', clock, 0, 0)
    if #oldest == 0 then return '' end
    since = tonumber(oldest[1])  -- older than every stamp kept: at least this old
  end
end
for _, suffix in ipairs({'delayed', 'leased'}) do
  local head = redis.call('ZRANGE', k(queue, suffix), 0, 0, 'WITHSCORES')
  if #head > 0 then
    local at = tonumber(head[2])
    if at <= t and (since == nil or at < since) then since = at end
  end
end
if since == nil then return '0' end
return string.format('%.6f', math.max(t - since, 0))
"""
)

# ARGV: prefix, queue. Removes every waiting message and its data; live leases stay.
PURGE = (
    PRELUDE
    + r"""
local queue = ARGV[2]
local t = now()
local live = redis.call('ZCOUNT', k(queue, 'leased'), '(' .. t, '+inf')
local removed = redis.call('ZCARD', k(queue, 'ready')) + redis.call('ZCARD', k(queue, 'delayed'))
  + redis.call('ZCOUNT', k(queue, 'leased'), '-inf', t)
if live == 0 then
  redis.call('UNLINK', k(queue, 'ready'), k(queue, 'delayed'), k(queue, 'leased'),
             k(queue, 'data'), k(queue, 'cnt'), k(queue, 'lost'), k(queue, 'clock'))
  return removed
end
local function drop(ids)
  for start = 1, #ids, 1000 do
    local chunk = {}
    for j = start, math.min(start + 999, #ids) do chunk[#chunk + 1] = ids[j] end
    for _, suffix in ipairs({'data', 'cnt', 'lost'}) do
      redis.call('HDEL', k(queue, suffix), unpack(chunk))
    end
  end
end
drop(redis.call('ZRANGE', k(queue, 'ready'), 0, -1))
drop(redis.call('ZRANGE', k(queue, 'delayed'), 0, -1))
local expired = redis.call('ZRANGEBYSCORE', k(queue, 'leased'), '-inf', t)
drop(expired)
redis.call('ZREMRANGEBYSCORE', k(queue, 'leased'), '-inf', t)
redis.call('UNLINK', k(queue, 'ready'), k(queue, 'delayed'))
return removed
"""
)

# ARGV: prefix, expected version, new version, topology JSON or "" (unchanged), queue to delete
# or "", a new epoch in case there is none. Compare-and-set: returns 0 (nothing done) when
# another client changed the topology, else the topology's epoch.
CHANGE_TOPOLOGY = (
    PRELUDE
    + r"""
local current = redis.call('GET', prefix .. 'topology:version') or ''
if current ~= ARGV[2] then return 0 end
if ARGV[4] ~= '' then
  redis.call('SET', prefix .. 'topology', ARGV[4])
  redis.call('SET', prefix .. 'topology:version', ARGV[3])
end
local queue = ARGV[5]
if queue ~= '' then
  redis.call('UNLINK', k(queue, 'ready'), k(queue, 'delayed'), k(queue, 'leased'),
             k(queue, 'data'), k(queue, 'cnt'), k(queue, 'lost'), k(queue, 'notify'),
             k(queue, 'clock'))
end
local epoch = redis.call('GET', prefix .. 'topology:epoch')
if not epoch then
  epoch = ARGV[6]
  redis.call('SET', prefix .. 'topology:epoch', epoch)
end
return epoch
"""
)


# -- the values the scripts store and return, as Python sees them ----------------------------
def stored_value(priority: int, item: Outgoing, payload: bytes) -> bytes:
    """The value stored per message copy: a small header (priority, exchange, routing key for
    ``Delivery.transport_data``) and the payload, so that one hash field holds it all."""
    if "\0" in item.exchange or "\0" in item.routing_key:
        raise TransportError("exchange names and routing keys may not contain NUL characters")
    return b"%d\0%s\0%s\0%s" % (
        priority,
        item.exchange.encode(),
        item.routing_key.encode(),
        payload,
    )


def encode_topology(topology: Topology) -> bytes:
    """The topology as stored: one JSON document, rewritten whole on each (rare) change."""
    return orjson.dumps(
        {
            "exchanges": topology.exchanges,
            "queues": [[q.name, q.max_priority, q.auto_delete] for q in topology.queues.values()],
            "bindings": [_binding_row(b) for b in topology.bindings()],
        }
    )


def _binding_row(binding: Binding) -> list[Any]:
    """A binding as stored: ``[exchange, queue, key]``, plus its arguments when it has some
    (headers exchanges); so a topology without any reads the same in older celeriacs."""
    row: list[Any] = [binding.exchange, binding.queue, binding.routing_key]
    if binding.arguments:
        row.append(binding.arguments)
    return row


def decode_topology(
    version: bytes | None, blob: bytes | None, epoch: bytes | None
) -> StoredTopology:
    """The topology from the values of :data:`TOPOLOGY_KEYS` (an empty one when none)."""
    topology = Topology()
    if blob:
        data = orjson.loads(blob)
        topology = Topology.from_rows(
            data["exchanges"].items(),
            [QueueInfo(name, int(p), bool(a)) for name, p, a in data["queues"]],
            [Binding(*row) for row in data["bindings"]],  # 3 items, or 4 with arguments
        )
    return StoredTopology((version or b"").decode(), topology, (epoch or b"").decode())


def dropped_items(reply: Any) -> tuple[int, list[int]]:
    """A PUBLISH reply as ``(n or -1, the ordinals in the call of the keyed items dropped)``."""
    if isinstance(reply, list):
        return int(reply[0]), [int(ordinal) for ordinal in reply[1:]]
    return int(reply), []


def publish_chunks(
    prefix: str,
    version: str,
    pending: list[int],
    plans: list[list[Destination]],
    items: Sequence[Outgoing],
    payloads: Sequence[bytes],
) -> Iterator[tuple[list[int], tuple[Any, ...]]]:
    """PUBLISH arguments for routed items, with the item indexes each call stores; built one
    call at a time, so that the first can be sent while the next is built.

    An item's copies never straddle two calls, so each item is stored whole or not at all; the
    names are checked here, before any call is built, so a bad one refuses the whole batch.
    """
    names = {(items[index].exchange, items[index].routing_key) for index in pending}
    for exchange, routing_key in names:
        if "\0" in exchange or "\0" in routing_key:
            raise TransportError("exchange names and routing keys may not contain NUL characters")
    return _chunks(prefix, version, pending, plans, items, payloads)


def _chunks(
    prefix: str,
    version: str,
    pending: list[int],
    plans: list[list[Destination]],
    items: Sequence[Outgoing],
    payloads: Sequence[bytes],
) -> Iterator[tuple[list[int], tuple[Any, ...]]]:
    indexes: list[int] = []
    copies: list[Any] = []
    dedup: list[Any] = []  # the keyed items' records (see PUBLISH); empty for a plain chunk
    count = size = 0
    # a batch has few (priority, exchange, routing key) triples: one value header for each
    headers: dict[tuple[int, str, str], bytes] = {}

    def call() -> tuple[Any, ...]:
        token = ""
        if len(items) > 1:  # a batch: its chunks are idempotent (see PUBLISH)
            first, last = items[indexes[0]].message.id, items[indexes[-1]].message.id
            token = f"{first}:{last}:{count}"
        if dedup:
            return (prefix, version, token, count, *copies, len(dedup) // 5, *dedup)
        return (prefix, version, token, count, *copies)

    for index, plan in zip(pending, plans, strict=True):
        if indexes and (count + len(plan) > CHUNK_COPIES or size > CHUNK_BYTES):
            yield indexes, call()
            indexes, copies, dedup, count, size = [], [], [], 0, 0
        indexes.append(index)
        item = items[index]
        payload = payloads[index]
        if item.dedup_key is not None and plan and item.dedup_ttl > 0:
            ttl_ms = max(1, math.ceil(item.dedup_ttl * 1000))
            dedup += (len(indexes) - 1, count, len(plan), item.dedup_key, ttl_ms)
        copies += _copies(item, payload, plan, headers)
        size += len(payload) * len(plan)
        count += len(plan)
    yield indexes, call()


def _copies(
    item: Outgoing,
    payload: bytes,
    plan: list[Destination],
    headers: dict[tuple[int, str, str], bytes],
) -> list[Any]:
    """An item's PUBLISH copies, ``(queue, due, stored value)`` for each destination;
    ``headers`` keeps each (priority, exchange, routing key)'s value header for the next item
    of a batch."""
    due = "" if item.due_at is None else repr(float(item.due_at))
    copies: list[Any] = []
    for dest in plan:
        key = (dest.priority, item.exchange, item.routing_key)
        header = headers.get(key)
        if header is None:
            header = headers[key] = stored_value(dest.priority, item, b"")
        copies += (dest.queue, due, header + payload)
    return copies


def publish_one(
    prefix: str, version: str, item: Outgoing, payload: bytes, plan: list[Destination]
) -> tuple[Any, ...]:
    """The PUBLISH arguments of one plain message (no dedup key): what :func:`publish_chunks`
    builds for a batch of one, without its chunking. Raises before anything is sent if the
    exchange or routing key holds a NUL."""
    copies = _copies(item, payload, plan, {})
    if not plan:
        stored_value(0, item, b"")  # the name check alone
    return (prefix, version, "", len(plan), *copies)


def claimed(reply: list[Any], queues: Sequence[str]) -> tuple[list[Delivery], list[DeadLetter]]:
    """The deliveries in a CLAIM reply (the tag is ``(message id, delivery count)``) and the
    messages it dead-lettered on the way."""
    deliveries = []
    dead = []
    for at in range(2, len(reply), 4):
        queue_index, message_id, count, stored = reply[at : at + 4]
        if int(count) < 0:
            dead.append(dead_letter(queues[int(queue_index) - 1], bytes(stored)))
            continue
        priority, exchange, routing_key, payload = split_value(bytes(stored))
        deliveries.append(
            Delivery(
                tag=(int(message_id), int(count)),
                queue=queues[int(queue_index) - 1],
                payload=payload,
                delivery_count=int(count),
                transport_data={
                    "exchange": exchange,
                    "routing_key": routing_key,
                    "priority": priority,
                },
            )
        )
    return deliveries, dead


def drained(reply: list[Any]) -> tuple[bool, float | None]:
    """Whether a CLAIM left its queues with no ready message, and if so the seconds until the
    next delayed message or lease falls due (None: none does)."""
    head = bytes(reply[0]) if reply[0] else b""
    if not head:
        return False, None
    return True, (None if head == b"-" else float(head))


def split_value(stored: bytes) -> tuple[int, str, str, bytes]:
    """``(priority, exchange, routing key, payload)`` of a value made by :func:`stored_value`."""
    priority, exchange, routing_key, payload = stored.split(b"\0", 3)
    return (
        int(priority or b"0"),
        exchange.decode(errors="replace"),
        routing_key.decode(errors="replace"),
        payload,
    )


def dead_letter(queue: str, entry: bytes) -> DeadLetter:
    """One entry of a dead-letter list: a JSON header line, then the payload as stored. Its
    id is :func:`entry_id` (the header names the message and the time, so no two entries
    are equal)."""
    header, _, payload = entry.partition(b"\n")
    meta = orjson.loads(header)
    return DeadLetter(
        queue,
        payload,
        str(meta["reason"]),
        int(meta["delivery_count"]),
        float(meta["failed_at"]),
        entry_id(entry),
    )


def entry_id(entry: bytes) -> str:
    """A dead-letter list entry's id: a digest of the entry, which is never rewritten."""
    return hashlib.sha256(entry).hexdigest()[:24]


__all__ = [
    "AGE",
    "CHANGE_TOPOLOGY",
    "CHUNK_BYTES",
    "CHUNK_COPIES",
    "CLAIM",
    "PUBLISH",
    "PURGE",
    "SETTLE",
    "SIZE",
    "TOPOLOGY_KEYS",
    "StoredTopology",
    "claimed",
    "dead_letter",
    "decode_topology",
    "dropped_items",
    "encode_topology",
    "entry_id",
    "publish_chunks",
    "split_value",
    "stored_value",
]
