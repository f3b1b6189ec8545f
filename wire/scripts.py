"""The Lua scripts that make each write to Redis atomic.

Redis runs a script to completion before any other command, so everything a
script writes appears together or not at all. That is what makes retries with
an Idempotency-Key safe after a crash, versions consecutive under concurrent
publishes, and embargo releases happen exactly once however many publisher
processes race for them.
"""

# KEYS: stream, story, story tags, story ids, idempotency key or "",
#       embargo schedule or "", embargo item or ""
# ARGV: 1 head, 2 tail, 3 explicit mark JSON, 4 tags, 5 urgency, 6 guid, 7 maxlen,
#       8 minid, 9 body hash, 10 idempotency ttl, 11 story ttl, 12.. each tag
PUBLISH = """
if KEYS[5] ~= '' then
  local prev = redis.call('GET', KEYS[5])
  if prev then
    local sep = string.find(prev, '\\n', 1, true)
    if string.sub(prev, 1, sep - 1) ~= ARGV[9] then return {'reused'} end
    local rest = string.sub(prev, sep + 1)
    local sep2 = string.find(rest, '\\n', 1, true)
    -- A write, so that a WAIT after this answer also covers the original entry.
    redis.call('EXPIRE', KEYS[5], ARGV[10])
    return {'existing', string.sub(rest, 1, sep2 - 1), string.sub(rest, sep2 + 1)}
  end
end
if KEYS[6] ~= '' then
  if redis.call('ZREM', KEYS[6], ARGV[6]) == 0 then return {'gone'} end
  redis.call('DEL', KEYS[7])
end
if redis.call('HEXISTS', KEYS[2], 'withdrawn') == 1 then return {'withdrawn'} end
local v = redis.call('HINCRBY', KEYS[2], 'version', 1)
local mark = ARGV[3]
if mark == 'null' and v > 1 then mark = '"Updated"' end
local json = ARGV[1] .. v .. ',"mark":' .. mark .. ARGV[2]
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[7], '*',
                      'j', json, 't', ARGV[4], 'u', ARGV[5], 'g', ARGV[6])
redis.call('XTRIM', KEYS[1], 'MINID', '~', ARGV[8])
for i = 12, #ARGV do redis.call('SADD', KEYS[3], ARGV[i]) end
redis.call('RPUSH', KEYS[4], id)
for i = 2, 4 do redis.call('EXPIRE', KEYS[i], ARGV[11]) end
if KEYS[5] ~= '' then
  redis.call('SET', KEYS[5], ARGV[9] .. '\\n' .. id .. '\\n' .. json, 'EX', ARGV[10])
end
return {'new', id, json}
"""

# KEYS: stream, story, story tags, story ids
# ARGV: 1 guid, 2 reason JSON, 3 published_at, 4 maxlen, 5 minid, 6 story ttl
# Tags and guids are validated to characters that need no JSON escaping.
WITHDRAW = """
if not redis.call('HGET', KEYS[2], 'version') then return {'unknown'} end
local done = redis.call('HGET', KEYS[2], 'withdrawn')
if done then
  -- A write, so that a WAIT after this answer also covers the withdrawal.
  redis.call('EXPIRE', KEYS[2], ARGV[6])
  return {'existing', done, redis.call('HGET', KEYS[2], 'withdrawal')}
end
local v = redis.call('HINCRBY', KEYS[2], 'version', 1)
local tags = redis.call('SMEMBERS', KEYS[3])
table.sort(tags)
local quoted = {}
for i, t in ipairs(tags) do quoted[i] = '"' .. t .. '"' end
local json = '{"guid":"' .. ARGV[1] .. '","version":' .. v ..
  ',"pubstatus":"canceled","published_at":"' .. ARGV[3] .. '","reason":' .. ARGV[2] ..
  ',"tags":[' .. table.concat(quoted, ',') .. ']}'
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[4], '*', 'j', json,
                      't', table.concat(tags, ' '), 'u', '1', 'g', ARGV[1], 'k', 'w')
redis.call('XTRIM', KEYS[1], 'MINID', '~', ARGV[5])
redis.call('HSET', KEYS[2], 'withdrawn', id, 'withdrawal', json)
redis.call('RPUSH', KEYS[4], id)
for i = 2, 4 do redis.call('EXPIRE', KEYS[i], ARGV[6]) end
return {'new', id, json}
"""

# KEYS: embargo schedule, embargo item.  ARGV: guid, due ms, pending JSON
EMBARGO = """
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
redis.call('SET', KEYS[2], ARGV[3])
return 1
"""

# KEYS: embargo schedule, embargo item.  ARGV: guid
CANCEL_EMBARGO = """
if redis.call('ZREM', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('DEL', KEYS[2])
return 1
"""
