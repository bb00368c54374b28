"""The Lua scripts of the Redis backend's Celery layout: each one step a Celery process also
takes, made atomic where Celery takes it in several round trips.

* :data:`STORE`: Celery's ``_store_result`` reads the record, refuses to overwrite a SUCCESS,
  then writes and publishes in a pipeline: a SUCCESS landing between its read and its write is
  overwritten. Here the look, the write and the PUBLISH are one step. The look reads the first
  64 bytes only (``GETRANGE``), where both Celery and this layout put ``status``.
* :data:`JOIN`: one chord header member finishing, with Celery 5.7's keys and rules (a member is
  recorded once per ``<id>:<index>`` in ``.d``; ``.j`` holds ``[1, id, state, result]`` entries,
  scored by header index; the chord is complete when the count reaches ``.s`` + ``.t``; the
  first to see it complete takes the dispatch claim ``.c``; a ``.c`` of ``done`` means the body
  was sent and the keys cleaned, and a late copy records nothing). celeriac's claim is named
  ``celeriac-<hex>`` and lives as long as the chord's keys, so a Celery worker never claims a
  chord a celeriac worker is sending (Celery's claim lease of ~10 s is for Celery's own crash
  recovery; celeriac's redelivered member recovers through the "body sent" mark instead).
* :data:`FINISH`: after celeriac sent the body: Celery's cleanup (delete ``.j .t .s .d``, mark
  ``.c`` done for a while), only if the claim is celeriac's.
"""

from __future__ import annotations

__all__ = ["CLAIM_PREFIX", "FINISH", "JOIN", "STORE"]

#: Prefix of celeriac's dispatch claims (Celery's are 32 hex digits).
CLAIM_PREFIX = "celeriac-"

# KEYS[1]: the record's key, which is also its channel. ARGV[1]: the record; ARGV[2]: ms to
# live ("" never; 0 or less: stored already expired, so deleted); ARGV[3]: how a stored SUCCESS
# shows in the record's first bytes ("json", "msgpack", or "" to store unconditionally).
STORE = r"""
local head = redis.call('GETRANGE', KEYS[1], 0, 63)
if head ~= '' then
  if ARGV[3] == 'json' and string.find(head, '^%s*{%s*"status"%s*:%s*"SUCCESS"') then
    return 0
  end
  if ARGV[3] == 'msgpack' and string.find(head, '\166status\167SUCCESS', 1, true) then
    return 0
  end
end
if ARGV[2] == '' then
  redis.call('SET', KEYS[1], ARGV[1])
elseif tonumber(ARGV[2]) > 0 then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
else
  redis.call('DEL', KEYS[1])
  redis.call('PUBLISH', KEYS[1], '')
  return 1
end
redis.call('PUBLISH', KEYS[1], ARGV[1])
return 1
"""

# KEYS: .j .t .s .d .c and the group record. ARGV[1]: "<id>:<index>"; ARGV[2]: the index (the
# score; "+inf" when unknown); ARGV[3]: the entry; ARGV[4]: "1" for a sorted set, "0" for a
# list (result_chord_ordered); ARGV[5]: seconds the keys live (0: for ever); ARGV[6]: the claim.
# Returns {added, count, total (-1: size unknown), claim}; claim is 0 not complete, 1 taken
# now, 2 held by celeriac, 3 held by Celery, -1 body sent and cleaned.
JOIN = r"""
local holder = redis.call('GET', KEYS[5])
if holder == 'done' then
  return {0, 0, -1, -1}
end
local added = redis.call('SADD', KEYS[4], ARGV[1])
if added == 1 then
  if ARGV[4] == '1' then
    redis.call('ZADD', KEYS[1], ARGV[2], ARGV[3])
  else
    redis.call('RPUSH', KEYS[1], ARGV[3])
  end
end
local count
if ARGV[4] == '1' then
  count = redis.call('ZCARD', KEYS[1])
else
  count = redis.call('LLEN', KEYS[1])
end
local ttl = tonumber(ARGV[5])
if ttl > 0 then
  for i = 1, 4 do
    redis.call('EXPIRE', KEYS[i], ttl)
  end
  redis.call('EXPIRE', KEYS[6], ttl)
end
local size = redis.call('GET', KEYS[3])
if not size then
  return {added, count, -1, 0}
end
local total = tonumber(size) + tonumber(redis.call('GET', KEYS[2]) or '0')
if count ~= total then
  return {added, count, total, 0}
end
if not holder then
  if ttl > 0 then
    redis.call('SET', KEYS[5], ARGV[6], 'EX', ttl)
  else
    redis.call('SET', KEYS[5], ARGV[6])
  end
  return {added, count, total, 1}
end
if string.sub(holder, 1, 9) == 'celeriac-' then
  return {added, count, total, 2}
end
return {added, count, total, 3}
"""

# KEYS: .c .j .t .s .d. ARGV[1]: seconds the "done" mark lives. Returns 1 if cleaned.
FINISH = r"""
local holder = redis.call('GET', KEYS[1])
if not holder or string.sub(holder, 1, 9) ~= 'celeriac-' then
  return 0
end
redis.call('DEL', KEYS[2], KEYS[3], KEYS[4], KEYS[5])
redis.call('SET', KEYS[1], 'done', 'EX', ARGV[1])
return 1
"""
