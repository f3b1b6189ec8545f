"""The Lua scripts that make each write to Redis atomic.

Redis runs a script to completion before any other command, so everything a
script writes appears together or not at all. That is what makes retries with
an Idempotency-Key safe after a crash, versions consecutive under concurrent
publishes, and embargo releases happen exactly once however many publisher
processes race for them.

Redis does not roll a script back when a command fails half-way, so "all or
nothing" also needs this rule: every script checks whatever could make one of
its writes fail (the TYPE of each key it writes, existence rules, a withdrawn
story) BEFORE its first write, and answers a status instead of writing. The
shared Lua below is pasted at the top of the scripts that use it, so a release
publishes exactly like ``POST /v1/items`` does.
"""

# Shared Lua: type checks, the Idempotency-Key record and appending a version.
# An Idempotency-Key record is "digest \n stream id \n JSON"; the id is empty
# for an embargoed (pending) item, which has none yet.
_LIB = r"""
-- The first of (key, type, key, type, ...) that holds another type, or nil.
local function conflict(pairs)
  for i = 1, #pairs, 2 do
    if pairs[i] ~= '' then
      local t = redis.call('TYPE', pairs[i])['ok']
      if t ~= 'none' and t ~= pairs[i + 1] then return pairs[i] end
    end
  end
  return nil
end

-- Why a story cannot take a new version ({'conflict', key} or {'withdrawn'}), or nil.
local function refused(stream, story, tags, ids)
  local bad = conflict({stream, 'stream', story, 'hash', tags, 'set', ids, 'list'})
  if bad then return {'conflict', bad} end
  local v = redis.call('HGET', story, 'version')
  if v and not tonumber(v) then return {'conflict', story} end
  if redis.call('HEXISTS', story, 'withdrawn') == 1 then return {'withdrawn'} end
  return nil
end

-- The answer an Idempotency-Key already gave ({'existing', id, json}),
-- {'reused'} for another body (or the other kind of publish), or nil.
local function recorded(key, digest, ttl, immediate)
  if key == '' then return nil end
  local bad = conflict({key, 'string'})
  if bad then return {'conflict', bad} end
  local prev = redis.call('GET', key)
  if not prev then return nil end
  local sep = string.find(prev, '\n', 1, true)
  local rest = string.sub(prev, sep + 1)
  local sep2 = string.find(rest, '\n', 1, true)
  local id = string.sub(rest, 1, sep2 - 1)
  if string.sub(prev, 1, sep - 1) ~= digest or (id ~= '') ~= immediate then
    return {'reused'}
  end
  -- A write, so that a WAIT after this answer also covers the original.
  redis.call('EXPIRE', key, ttl)
  return {'existing', id, string.sub(rest, sep2 + 1)}
end

-- Append the next version of a story; call only after refused() said nil.
-- p: guid, head, mark, at (published_at), rest, tags (space-separated), urgency
-- r: stream MAXLEN, stream MINID, story ttl
local function append(stream, story, tags, ids, p, r)
  local v = redis.call('HINCRBY', story, 'version', 1)
  local mark = p.mark
  if mark == 'null' and v > 1 then mark = '"Updated"' end
  local json = p.head .. v .. ',"mark":' .. mark ..
    ',"pubstatus":"usable","published_at":"' .. p.at .. '"' .. p.rest
  local id = redis.call('XADD', stream, 'MAXLEN', '~', r[1], '*',
                        'j', json, 't', p.tags, 'u', p.urgency, 'g', p.guid)
  redis.call('XTRIM', stream, 'MINID', '~', r[2])
  for tag in string.gmatch(p.tags, '%S+') do redis.call('SADD', tags, tag) end
  redis.call('RPUSH', ids, id)
  for _, k in ipairs({story, tags, ids}) do redis.call('EXPIRE', k, r[3]) end
  return id, json
end
"""

# KEYS: 1 stream, 2 story, 3 story tags, 4 story ids, 5 idempotency key or ""
# ARGV: 1 guid, 2 head, 3 mark JSON, 4 published_at, 5 rest, 6 tags, 7 urgency,
#       8 maxlen, 9 minid, 10 story ttl, 11 body digest, 12 idempotency ttl
PUBLISH = (
    _LIB
    + r"""
local found = recorded(KEYS[5], ARGV[11], ARGV[12], true)
if found then return found end
local no = refused(KEYS[1], KEYS[2], KEYS[3], KEYS[4])
if no then return no end
local id, json = append(KEYS[1], KEYS[2], KEYS[3], KEYS[4],
  {guid = ARGV[1], head = ARGV[2], mark = ARGV[3], at = ARGV[4], rest = ARGV[5],
   tags = ARGV[6], urgency = ARGV[7]},
  {ARGV[8], ARGV[9], ARGV[10]})
if KEYS[5] ~= '' then
  redis.call('SET', KEYS[5], ARGV[11] .. '\n' .. id .. '\n' .. json, 'EX', ARGV[12])
end
return {'new', id, json}
"""
)

# KEYS: 1 stream, 2 story, 3 story tags, 4 story ids
# ARGV: 1 guid, 2 guid JSON, 3 reason JSON, 4 published_at, 5 maxlen, 6 minid, 7 story ttl
# Tags are validated to characters that need no JSON escaping.
WITHDRAW = (
    _LIB
    + r"""
local bad = conflict({KEYS[1], 'stream', KEYS[2], 'hash', KEYS[3], 'set', KEYS[4], 'list'})
if bad then return {'conflict', bad} end
local current = redis.call('HGET', KEYS[2], 'version')
if not current then return {'unknown'} end
if not tonumber(current) then return {'conflict', KEYS[2]} end
local done = redis.call('HGET', KEYS[2], 'withdrawn')
if done then
  -- A write, so that a WAIT after this answer also covers the withdrawal.
  redis.call('EXPIRE', KEYS[2], ARGV[7])
  return {'existing', done, redis.call('HGET', KEYS[2], 'withdrawal')}
end
local v = redis.call('HINCRBY', KEYS[2], 'version', 1)
local tags = redis.call('SMEMBERS', KEYS[3])
table.sort(tags)
local quoted = {}
for i, t in ipairs(tags) do quoted[i] = '"' .. t .. '"' end
local json = '{"guid":' .. ARGV[2] .. ',"version":' .. v ..
  ',"pubstatus":"canceled","published_at":"' .. ARGV[4] .. '","reason":' .. ARGV[3] ..
  ',"tags":[' .. table.concat(quoted, ',') .. ']}'
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[5], '*', 'j', json,
                      't', table.concat(tags, ' '), 'u', '1', 'g', ARGV[1], 'k', 'w')
redis.call('XTRIM', KEYS[1], 'MINID', '~', ARGV[6])
redis.call('HSET', KEYS[2], 'withdrawn', id, 'withdrawal', json)
redis.call('RPUSH', KEYS[4], id)
for i = 2, 4 do redis.call('EXPIRE', KEYS[i], ARGV[7]) end
return {'new', id, json}
"""
)

# KEYS: 1 embargo schedule, 2 embargo item, 3 story, 4 story tags, 5 story ids,
#       6 idempotency key or ""
# ARGV: 1 due ms, 2 pending JSON, 3 guid, 4 head, 5 mark JSON, 6 rest, 7 tags,
#       8 urgency, 9 body digest, 10 idempotency ttl
# The item hash keeps what RELEASE needs, story keys included: Lua cannot
# compute a key (no SHA-256), so keys are only ever built in wire/keys.py.
EMBARGO = (
    _LIB
    + r"""
local found = recorded(KEYS[6], ARGV[9], ARGV[10], false)
if found then return found end
local bad = conflict({KEYS[1], 'zset', KEYS[2], 'hash', KEYS[3], 'hash'})
if bad then return {'conflict', bad} end
if redis.call('HEXISTS', KEYS[3], 'withdrawn') == 1 then return {'withdrawn'} end
redis.call('DEL', KEYS[2])
redis.call('HSET', KEYS[2], 'p', ARGV[2], 'g', ARGV[3], 'h', ARGV[4], 'm', ARGV[5],
           'r', ARGV[6], 't', ARGV[7], 'u', ARGV[8], 'ks', KEYS[3], 'kt', KEYS[4], 'ki', KEYS[5])
redis.call('ZADD', KEYS[1], ARGV[1], KEYS[2])
if KEYS[6] ~= '' then
  redis.call('SET', KEYS[6], ARGV[9] .. '\n\n' .. ARGV[2], 'EX', ARGV[10])
end
return {'new', '', ARGV[2]}
"""
)

# KEYS: embargo schedule, embargo item
CANCEL_EMBARGO = """
if redis.call('ZREM', KEYS[1], KEYS[2]) == 0 then return 0 end
redis.call('DEL', KEYS[2])
return 1
"""

# KEYS: 1 stream, 2 embargo schedule
# ARGV: 1 now ms, 2 batch size, 3 published_at, 4 maxlen, 5 minid, 6 story ttl,
#       7 ms to wait before retrying an item whose story keys conflict
# Releases up to a batch of due items, soonest first, each exactly like a
# publish. An item is released by the call that removes it from the schedule;
# as the range and the removals run in one script, two publishers racing can
# never both get one. Answers (status, guid, stream id or detail) per item:
# 'new'; 'withdrawn' (dropped: its story was withdrawn while it was pending);
# 'conflict' (a story key holds another type: retried later); 'orphan' (the
# schedule named an item that is missing or damaged: unscheduled).
RELEASE = (
    _LIB
    + r"""
local function release(key, r)
  local f = {}
  if not conflict({key, 'hash'}) then
    f = redis.call('HMGET', key, 'g', 'h', 'm', 'r', 't', 'u', 'ks', 'kt', 'ki')
  end
  for i = 1, 9 do
    if not f[i] then
      redis.call('ZREM', KEYS[2], key)
      return {'orphan', key, ''}
    end
  end
  local no = refused(KEYS[1], f[7], f[8], f[9])
  if no and no[1] == 'conflict' then
    redis.call('ZADD', KEYS[2], ARGV[1] + ARGV[7], key)
    return {'conflict', f[1], no[2]}
  end
  redis.call('ZREM', KEYS[2], key)
  redis.call('DEL', key)
  if no then return {'withdrawn', f[1], ''} end
  local id = append(KEYS[1], f[7], f[8], f[9],
    {guid = f[1], head = f[2], mark = f[3], at = ARGV[3], rest = f[4], tags = f[5],
     urgency = f[6]},
    r)
  return {'new', f[1], id}
end

local r = {ARGV[4], ARGV[5], ARGV[6]}
local out = {}
local due = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
for _, key in ipairs(due) do
  for _, v in ipairs(release(key, r)) do out[#out + 1] = v end
end
return out
"""
)

# KEYS: 1 stream
# ARGV: 1 low bound, 2 high bound (XRANGE syntax, "(" for exclusive), 3 most
#       entries, 4 byte budget, 5 "1" to read newest first
# One page of a history read, bounded in bytes as well as entries: XRANGE's
# COUNT alone lets a page of 1,000 items of 400 KB be 400 MB, in Redis's reply
# buffer and then in the process that asked. Reads a few entries at a time and
# stops after the entry that reaches the budget. Answers {entries, ended}:
# ended is 1 when the range has nothing after the last entry returned.
RANGE = r"""
local lo, hi = ARGV[1], ARGV[2]
local left, budget, rev = tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5] == '1'
local out, bytes = {}, 0
while left > 0 do
  -- As many entries as the budget has room for at the sizes seen so far (one
  -- to start with): a read of whole entries it then drops would cost as much.
  local n = 1
  if #out > 0 then n = math.floor((budget - bytes) * #out / math.max(bytes, 1)) end
  n = math.max(1, math.min(left, n, 100))
  local rows
  if rev then
    rows = redis.call('XREVRANGE', KEYS[1], hi, lo, 'COUNT', n)
  else
    rows = redis.call('XRANGE', KEYS[1], lo, hi, 'COUNT', n)
  end
  for _, row in ipairs(rows) do
    out[#out + 1] = row
    left = left - 1
    local fields = row[2]
    for i = 2, #fields, 2 do bytes = bytes + #fields[i] end
    if bytes >= budget then return {out, 0} end
  end
  if #rows < n then return {out, 1} end
  if rev then hi = '(' .. rows[#rows][1] else lo = '(' .. rows[#rows][1] end
end
return {out, 0}
"""
