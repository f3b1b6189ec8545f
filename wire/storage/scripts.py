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

The item JSON the scripts write is not built here: :mod:`wire.core.stored`
hands them its pieces and they only splice them (see ``append``).

Each script's KEYS and ARGV are named by a frozen dataclass below
(:class:`PublishArgs`...), whose fields are the KEYS then the ARGV in order;
the Lua text names them by position in its ``-- KEYS:`` and ``-- ARGV:``
lines, and tests/test_stored.py holds the two to each other.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from operator import attrgetter
from typing import Any, ClassVar

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

-- {'invalid', 'correction'} for a correction ('1') of a story that has no
-- version yet, else nil.
local function uncorrectable(story, correction)
  if correction == '1' and redis.call('HEXISTS', story, 'version') == 0 then
    return {'invalid', 'correction'}
  end
  return nil
end

-- {'original_withdrawn'} when a translation's original (its story hash, ''
-- for none) was withdrawn: a kill is not undone by a translation of it. Call
-- only once conflict() has passed original as a hash.
local function killed(original)
  if original ~= '' and redis.call('HEXISTS', original, 'withdrawn') == 1 then
    return {'original_withdrawn'}
  end
  return nil
end

-- Record that the story guid translates the one whose set of translations is
-- key ('' for none); call only once conflict() has passed key as a set. The
-- original need not exist yet (a forward link, see docs/protocol.md).
local function link(key, guid, ttl)
  if key == '' then return end
  redis.call('SADD', key, guid)
  redis.call('EXPIRE', key, ttl)
end

-- Append the next version of a story; call only after refused() said nil.
-- p: the item's pieces (wire.core.stored.Pieces, and its guid):
--    guid, head, mark, rest, tags (space-separated), urgency
-- L: the pieces every version shares (wire.core.stored.Layout):
--    mark_key, no_mark, updated, stamp
-- r: stream MAXLEN, stream MINID, story ttl
-- The JSON is spliced exactly as wire.core.stored.version_json does.
local function append(stream, story, tags, ids, p, L, r)
  local v = redis.call('HINCRBY', story, 'version', 1)
  local mark = p.mark
  if mark == L.no_mark and v > 1 then mark = L.updated end
  local json = p.head .. v .. L.mark_key .. mark .. L.stamp .. p.rest
  -- The entry's 'l' field: the item's language, for the gateway's language
  -- filter. Its first unescaped "language" key (every key before it in rest
  -- is fixed, see wire.core.stored.pieces); '' for an item kept from before.
  local id = redis.call('XADD', stream, 'MAXLEN', '~', r[1], '*',
                        'j', json, 't', p.tags, 'u', p.urgency, 'g', p.guid,
                        'l', string.match(p.rest, '"language":"([^"]*)"') or '')
  redis.call('XTRIM', stream, 'MINID', '~', r[2])
  for tag in string.gmatch(p.tags, '%S+') do redis.call('SADD', tags, tag) end
  redis.call('RPUSH', ids, id)
  for _, k in ipairs({story, tags, ids}) do redis.call('EXPIRE', k, r[3]) end
  return id, json
end
"""


@dataclass(frozen=True, slots=True)
class ScriptArgs:
    """A script call's arguments by name: the first ``N_KEYS`` fields are its
    KEYS, the others its ARGV, each in the order the script reads them."""

    N_KEYS: ClassVar[int] = 0

    def lists(self) -> tuple[list[Any], list[Any]]:
        """The KEYS and ARGV lists, as the script is called with them."""
        read = _READERS.get(type(self))
        if read is None:  # built once per class: publishing is hot
            names = [f.name for f in fields(self)]
            # attrgetter of one name answers the value itself, not a 1-tuple.
            one = names[0]
            read = attrgetter(*names) if len(names) > 1 else lambda o: (getattr(o, one),)
            _READERS[type(self)] = read
        values = read(self)
        return list(values[: self.N_KEYS]), list(values[self.N_KEYS :])


#: Per ScriptArgs class, what reads all its fields in order.
_READERS: dict[type[ScriptArgs], Callable[[ScriptArgs], tuple[Any, ...]]] = {}


@dataclass(frozen=True, slots=True)
class PublishArgs(ScriptArgs):
    """:data:`PUBLISH`: append a version; idempotent per key and body."""

    N_KEYS: ClassVar[int] = 7
    stream: str
    story: str
    story_tags: str
    story_ids: str
    #: The Idempotency-Key's record, or "" without a key.
    idempotency: str
    #: The set of translations of the story this one translates, or "".
    translations: str
    #: The story hash of the story this one translates, or "".
    original: str
    guid: str
    head: bytes
    mark: bytes
    rest: bytes
    tags: str
    urgency: int
    mark_key: bytes
    no_mark: bytes
    updated: bytes
    stamp: bytes
    maxlen: int
    minid: int
    story_ttl: int
    digest: str
    idempotency_ttl: int
    #: "1" for a correction (its story must exist), else "0".
    correction: str


PUBLISH = (
    _LIB
    + r"""
-- KEYS: 1 stream, 2 story, 3 story_tags, 4 story_ids, 5 idempotency (or ''),
--       6 translations (or ''), 7 original (or '')
-- ARGV: 1 guid, 2 head, 3 mark, 4 rest, 5 tags, 6 urgency, 7 mark_key, 8 no_mark,
--       9 updated, 10 stamp, 11 maxlen, 12 minid, 13 story_ttl, 14 digest,
--       15 idempotency_ttl, 16 correction
local found = recorded(KEYS[5], ARGV[14], ARGV[15], true)
if found then return found end
local no = refused(KEYS[1], KEYS[2], KEYS[3], KEYS[4])
if no then return no end
local bad = conflict({KEYS[6], 'set', KEYS[7], 'hash'})
if bad then return {'conflict', bad} end
no = uncorrectable(KEYS[2], ARGV[16]) or killed(KEYS[7])
if no then return no end
local id, json = append(KEYS[1], KEYS[2], KEYS[3], KEYS[4],
  {guid = ARGV[1], head = ARGV[2], mark = ARGV[3], rest = ARGV[4], tags = ARGV[5],
   urgency = ARGV[6]},
  {mark_key = ARGV[7], no_mark = ARGV[8], updated = ARGV[9], stamp = ARGV[10]},
  {ARGV[11], ARGV[12], ARGV[13]})
link(KEYS[6], ARGV[1], ARGV[13])
if KEYS[5] ~= '' then
  redis.call('SET', KEYS[5], ARGV[14] .. '\n' .. id .. '\n' .. json, 'EX', ARGV[15])
end
return {'new', id, json}
"""
)


@dataclass(frozen=True, slots=True)
class WithdrawArgs(ScriptArgs):
    """:data:`WITHDRAW`: append a story's kill notice (a repeat answers the first)."""

    N_KEYS: ClassVar[int] = 4
    stream: str
    story: str
    story_tags: str
    story_ids: str
    guid: str
    #: The pieces of wire.core.stored.WithdrawalPieces.
    head: bytes
    middle: bytes
    tail: bytes
    maxlen: int
    minid: int
    story_ttl: int


# The JSON is spliced exactly as wire.core.stored.withdrawal_json does; it
# cannot be finished in Python, as the version and the story's tags must be
# read and written in this one script (see wire.core.stored).
WITHDRAW = (
    _LIB
    + r"""
-- KEYS: 1 stream, 2 story, 3 story_tags, 4 story_ids
-- ARGV: 1 guid, 2 head, 3 middle, 4 tail, 5 maxlen, 6 minid, 7 story_ttl
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
local json = ARGV[2] .. v .. ARGV[3] .. table.concat(quoted, ',') .. ARGV[4]
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[5], '*', 'j', json,
                      't', table.concat(tags, ' '), 'u', '1', 'g', ARGV[1], 'k', 'w')
redis.call('XTRIM', KEYS[1], 'MINID', '~', ARGV[6])
redis.call('HSET', KEYS[2], 'withdrawn', id, 'withdrawal', json)
redis.call('RPUSH', KEYS[4], id)
for i = 2, 4 do redis.call('EXPIRE', KEYS[i], ARGV[7]) end
return {'new', id, json}
"""
)


@dataclass(frozen=True, slots=True)
class EmbargoArgs(ScriptArgs):
    """:data:`EMBARGO`: schedule an item's release (replacing a pending one)."""

    N_KEYS: ClassVar[int] = 8
    schedule: str
    item: str
    story: str
    story_tags: str
    story_ids: str
    idempotency: str
    #: As in :class:`PublishArgs` (the link is recorded on release).
    translations: str
    #: As in :class:`PublishArgs` (checked again on release).
    original: str
    due_ms: int
    #: The pending item's JSON (wire.core.stored.pending).
    pending: bytes
    guid: str
    head: bytes
    mark: bytes
    rest: bytes
    tags: str
    urgency: int
    digest: str
    idempotency_ttl: int
    correction: str


# The item hash keeps what RELEASE needs, story keys included: Lua cannot
# compute a key (no SHA-256), so keys are only ever built in wire/storage/keys.py.
# Its fields (g h m r t u ks kt ki, kx: the translations set to join, or '',
# and ko: the original's story hash, or '') outlive an upgrade: keep their
# meaning (an item scheduled before kx or ko existed has none).
EMBARGO = (
    _LIB
    + r"""
-- KEYS: 1 schedule, 2 item, 3 story, 4 story_tags, 5 story_ids, 6 idempotency (or ''),
--       7 translations (or ''), 8 original (or '')
-- ARGV: 1 due_ms, 2 pending, 3 guid, 4 head, 5 mark, 6 rest, 7 tags, 8 urgency,
--       9 digest, 10 idempotency_ttl, 11 correction
local found = recorded(KEYS[6], ARGV[9], ARGV[10], false)
if found then return found end
local bad = conflict({KEYS[1], 'zset', KEYS[2], 'hash', KEYS[3], 'hash', KEYS[7], 'set',
                      KEYS[8], 'hash'})
if bad then return {'conflict', bad} end
if redis.call('HEXISTS', KEYS[3], 'withdrawn') == 1 then return {'withdrawn'} end
local no = uncorrectable(KEYS[3], ARGV[11]) or killed(KEYS[8])
if no then return no end
redis.call('DEL', KEYS[2])
redis.call('HSET', KEYS[2], 'p', ARGV[2], 'g', ARGV[3], 'h', ARGV[4], 'm', ARGV[5],
           'r', ARGV[6], 't', ARGV[7], 'u', ARGV[8], 'ks', KEYS[3], 'kt', KEYS[4], 'ki', KEYS[5],
           'kx', KEYS[7], 'ko', KEYS[8])
redis.call('ZADD', KEYS[1], ARGV[1], KEYS[2])
if KEYS[6] ~= '' then
  redis.call('SET', KEYS[6], ARGV[9] .. '\n\n' .. ARGV[2], 'EX', ARGV[10])
end
return {'new', '', ARGV[2]}
"""
)


@dataclass(frozen=True, slots=True)
class CancelArgs(ScriptArgs):
    """:data:`CANCEL_EMBARGO`: unschedule a pending item (1 if there was one, else 0)."""

    N_KEYS: ClassVar[int] = 2
    schedule: str
    item: str


CANCEL_EMBARGO = """
-- KEYS: 1 schedule, 2 item
if redis.call('ZREM', KEYS[1], KEYS[2]) == 0 then return 0 end
redis.call('DEL', KEYS[2])
return 1
"""


@dataclass(frozen=True, slots=True)
class EmbargoPageArgs(ScriptArgs):
    """:data:`EMBARGO_PAGE`: one page of the schedule, soonest first."""

    N_KEYS: ClassVar[int] = 1
    schedule: str
    #: The score (due ms, as Redis wrote it) and member the last page ended
    #: with; "" and b"" for the first page.
    after_score: bytes
    after_member: bytes
    limit: int
    #: 1 when ``after_member`` is a member cut short to fit a cursor (see
    #: ``EmbargoCursor``): the page goes on past every member it may be cut from.
    after_cut: int


# A page of the schedule in its own order (due time, then member bytes), after
# a cursor: the member the last page ended with and its due time. If that
# member has left the schedule meanwhile (released, cancelled), the page goes
# on from where it stood, found by bisecting its due time's block: a page
# costs O(log n + limit), however many are pending. Answers (member, due ms,
# pending JSON or false) per member: false for one that is not a hash with a
# 'p' field (damaged data is listed as nothing, not an error).
EMBARGO_PAGE = r"""
-- KEYS: 1 schedule
-- ARGV: 1 after_score, 2 after_member, 3 limit, 4 after_cut
if redis.call('TYPE', KEYS[1])['ok'] ~= 'zset' then return {} end
local cut = ARGV[4] == '1'
-- a > b, comparing bytes as the sorted set orders its members (Lua's own
-- comparison follows the server's locale); when b was cut short, no member
-- that begins with it (they sort right after it) is beyond it.
local function beyond(a, b)
  if cut and string.sub(a, 1, #b) == b then return false end
  for i = 1, math.min(#a, #b) do
    local x, y = string.byte(a, i), string.byte(b, i)
    if x ~= y then return x > y end
  end
  return #a > #b
end
local start = 0
if ARGV[1] ~= '' then
  local score = redis.call('ZSCORE', KEYS[1], ARGV[2])
  if score and not cut and tonumber(score) == tonumber(ARGV[1]) then
    start = redis.call('ZRANK', KEYS[1], ARGV[2]) + 1
  else
    local lo = redis.call('ZCOUNT', KEYS[1], '-inf', '(' .. ARGV[1])
    local hi = redis.call('ZCOUNT', KEYS[1], '-inf', ARGV[1])
    while lo < hi do
      local mid = math.floor((lo + hi) / 2)
      if beyond(redis.call('ZRANGE', KEYS[1], mid, mid)[1], ARGV[2]) then
        hi = mid
      else
        lo = mid + 1
      end
    end
    start = lo
  end
end
local rows = redis.call('ZRANGE', KEYS[1], start, start + tonumber(ARGV[3]) - 1, 'WITHSCORES')
local out = {}
for i = 1, #rows, 2 do
  local pending = false
  if redis.call('TYPE', rows[i])['ok'] == 'hash' then
    pending = redis.call('HGET', rows[i], 'p')
  end
  out[#out + 1] = {rows[i], rows[i + 1], pending}
end
return out
"""


@dataclass(frozen=True, slots=True)
class ReleaseArgs(ScriptArgs):
    """:data:`RELEASE`: publish a batch of due embargoed items."""

    N_KEYS: ClassVar[int] = 2
    stream: str
    schedule: str
    now_ms: int
    batch: int
    mark_key: bytes
    no_mark: bytes
    updated: bytes
    stamp: bytes
    maxlen: int
    minid: int
    story_ttl: int
    #: How long an item whose story keys conflict waits before it is retried.
    retry_ms: int


# Releases up to a batch of due items, soonest first, each exactly like a
# publish. An item is released by the call that removes it from the schedule;
# as the range and the removals run in one script, two publishers racing can
# never both get one. Answers (status, guid, stream id or detail) per item:
# 'new'; 'withdrawn' (dropped: its story was withdrawn while it was pending);
# 'conflict' (a story key holds another type: retried later); 'orphan' (the
# schedule named an item that is missing or damaged, a field missing or a
# non-numeric urgency: unscheduled, never published).
RELEASE = (
    _LIB
    + r"""
-- KEYS: 1 stream, 2 schedule
-- ARGV: 1 now_ms, 2 batch, 3 mark_key, 4 no_mark, 5 updated, 6 stamp, 7 maxlen,
--       8 minid, 9 story_ttl, 10 retry_ms
local function release(key, L, r)
  local f = {}
  if not conflict({key, 'hash'}) then
    f = redis.call('HMGET', key, 'g', 'h', 'm', 'r', 't', 'u', 'ks', 'kt', 'ki', 'kx', 'ko')
  end
  -- A non-numeric urgency ('u') would make an entry every reader skips as damaged.
  for i = 1, 9 do
    if not f[i] or (i == 6 and not string.match(f[6], '^%d+$')) then
      redis.call('ZREM', KEYS[2], key)
      return {'orphan', key, ''}
    end
  end
  local kx, ko = f[10] or '', f[11] or ''
  local no = refused(KEYS[1], f[7], f[8], f[9])
  local bad = conflict({kx, 'set', ko, 'hash'})
  if bad and not no then no = {'conflict', bad} end
  if no and no[1] == 'conflict' then
    redis.call('ZADD', KEYS[2], ARGV[1] + ARGV[10], key)
    return {'conflict', f[1], no[2]}
  end
  no = no or killed(ko)
  redis.call('ZREM', KEYS[2], key)
  redis.call('DEL', key)
  if no then return {no[1], f[1], ''} end
  local id = append(KEYS[1], f[7], f[8], f[9],
    {guid = f[1], head = f[2], mark = f[3], rest = f[4], tags = f[5], urgency = f[6]},
    L, r)
  link(kx, f[1], r[3])
  return {'new', f[1], id}
end

local L = {mark_key = ARGV[3], no_mark = ARGV[4], updated = ARGV[5], stamp = ARGV[6]}
local r = {ARGV[7], ARGV[8], ARGV[9]}
local out = {}
local due = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
for _, key in ipairs(due) do
  for _, v in ipairs(release(key, L, r)) do out[#out + 1] = v end
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
# stops after the entry that reaches the budget. Answers {entries, ended,
# trim}: ended is 1 when the range has nothing after the last entry returned;
# trim is what XINFO STREAM says of retention's trimming (name, value, ...;
# see wire.storage.store.trimmed_of), read in the same atomic step as the
# page, so a reader can tell that retention removed entries after its cursor
# before it read them.
RANGE = r"""
local lo, hi = ARGV[1], ARGV[2]
local left, budget, rev = tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5] == '1'
local out, bytes = {}, 0
local trim = {}
if redis.call('EXISTS', KEYS[1]) == 1 then
  local info = redis.call('XINFO', 'STREAM', KEYS[1])
  for i = 1, #info, 2 do
    local name = info[i]
    if name == 'length' or name == 'entries-added' or name == 'max-deleted-entry-id'
        or name == 'recorded-first-entry-id' or name == 'last-generated-id' then
      local value = info[i + 1]
      if type(value) == 'number' then value = string.format('%d', value) end
      trim[#trim + 1] = name
      trim[#trim + 1] = value
    end
  end
end
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
    if bytes >= budget then return {out, 0, trim} end
  end
  if #rows < n then return {out, 1, trim} end
  if rev then hi = '(' .. rows[#rows][1] else lo = '(' .. rows[#rows][1] end
end
return {out, 0, trim}
"""

# KEYS: 1 stream
# ARGV: 1 byte budget, 2... stream ids, in the order to read them
# The entries of some of a story's ids (wire.storage.story_pages), each as
# XRANGE answers it (empty: retention removed it), ending after the one whose
# JSON brings the total to the budget, or at the first removed one. A round
# sized from the small entries seen so far thus never sends the hundreds of
# big ones that follow them: what leaves Redis stays within the budget.
ENTRIES = r"""
local budget, bytes, out = tonumber(ARGV[1]), 0, {}
for i = 2, #ARGV do
  local rows = redis.call('XRANGE', KEYS[1], ARGV[i], ARGV[i], 'COUNT', 1)
  out[#out + 1] = rows
  if #rows == 0 then return out end
  local fields = rows[1][2]
  for j = 1, #fields, 2 do
    if fields[j] == 'j' then bytes = bytes + #fields[j + 1] end
  end
  if bytes >= budget then return out end
end
return out
"""

# KEYS: 1 a story's ids list, 2 its hash
# ARGV: 1, 2 the LRANGE bounds of the window
# A story page's count, state and window of ids, read together (one atomic
# read; wire.storage.story_pages). A script and not MULTI: Redis (7.0 on)
# refuses every command queued in a MULTI once maxmemory is reached, reads
# too, and a script that only reads still runs then.
STORY_WINDOW = r"""
return {redis.call('LLEN', KEYS[1]), redis.call('HEXISTS', KEYS[2], 'withdrawn'),
        redis.call('LRANGE', KEYS[1], ARGV[1], ARGV[2])}
"""

# KEYS: 1 a story's tag union
# ARGV: 1 how many members to read at most
# The union's size and up to that many of its tags, read together (see
# STORY_WINDOW for why a script).
STORY_TAGS = r"""
return {redis.call('SCARD', KEYS[1]), redis.call('SRANDMEMBER', KEYS[1], ARGV[1])}
"""

# KEYS: 1 a story's ids list, 2 stream
# ARGV: 1 an index of the list
# 1 when the entry that id names is kept, else 0 (or no such index): whether
# a story page has older versions to go on to (wire.storage.story_pages),
# without sending the entry (up to 400 KB) to find out.
KEPT = r"""
local id = redis.call('LINDEX', KEYS[1], ARGV[1])
if not id then return 0 end
return #redis.call('XRANGE', KEYS[2], id, id, 'COUNT', 1)
"""

# KEYS: the ledger hash of every story the lines name (variable: see LedgerArgs)
# ARGV: 1 story_ttl, 2 lines
# One flush of the delivery ledger (wire.storage.ledger). Each line is
# "r <key#> <first ms> <last ms> <field>" (a record: its field is JSON, which
# has no newline) or "a <key#> <count>" (anonymous deliveries). A record keeps
# its earliest first time and latest last time across flushes and processes.
# Checks every key's type and every count it adds to before its first write.
LEDGER = r"""
for i = 1, #KEYS do
  local t = redis.call('TYPE', KEYS[i])['ok']
  if t ~= 'none' and t ~= 'hash' then return {'conflict', KEYS[i]} end
  local n = redis.call('HGET', KEYS[i], 'anonymous')
  if n and not tonumber(n) then return {'conflict', KEYS[i]} end
end
for line in string.gmatch(ARGV[2], '[^\n]+') do
  local kind, k, rest = string.match(line, '^(%a) (%d+) (.*)$')
  local key = KEYS[tonumber(k)]
  if kind == 'a' then
    redis.call('HINCRBY', key, 'anonymous', rest)
  else
    local first, last, field = string.match(rest, '^(%d+) (%d+) (.*)$')
    local held = redis.call('HGET', key, field)
    if held then
      local f, l = string.match(held, '^(%d+) (%d+)$')
      if f and tonumber(f) < tonumber(first) then first = f end
      if l and tonumber(l) > tonumber(last) then last = l end
    end
    redis.call('HSET', key, field, first .. ' ' .. last)
  end
end
for i = 1, #KEYS do redis.call('EXPIRE', KEYS[i], ARGV[1]) end
return {'ok'}
"""


@dataclass(frozen=True, slots=True)
class LedgerArgs(ScriptArgs):
    """:data:`LEDGER`: one flush of the delivery ledger.

    Its KEYS are variable (one per story in the flush), so it builds its
    lists itself: ``stories`` are the KEYS, the rest the ARGV.
    """

    stories: tuple[str, ...]
    story_ttl: int
    lines: bytes

    def lists(self) -> tuple[list[Any], list[Any]]:
        """The KEYS (every story's ledger key) and ARGV lists."""
        return list(self.stories), [self.story_ttl, self.lines]
