"""Lua scripts: every multi-key change runs as one atomic script.

Why scripts: two relay processes publishing at once must not interleave "take the next
seq" and "append the post", or a puller could see seq 6 before seq 5 exists and skip 5
for ever. A script makes seq assignment, append, capping and the wake-up one step.

Numbers cross the Lua boundary as strings (ids, scores), so nothing is reformatted by
Lua's ``%.14g``.
"""

from __future__ import annotations

# The epoch and the seq counter share one hash. When that hash is gone the stored posts
# are considered lost: they are cleared too, a new epoch is written and seq restarts at
# 0, so "seq never decreases within one epoch" holds whatever was lost.
_ENSURE_EPOCH = """
local function ensure_epoch(meta, stream, bodies, expiry, candidate)
  local epoch = redis.call('HGET', meta, 'epoch')
  if epoch then return epoch end
  redis.call('DEL', stream, bodies, expiry)
  redis.call('HSET', meta, 'epoch', candidate, 'seq', 0)
  return candidate
end
"""

# KEYS: meta, posts, bodies, expiry   ARGV: candidate epoch
EPOCH = _ENSURE_EPOCH + """
return ensure_epoch(KEYS[1], KEYS[2], KEYS[3], KEYS[4], ARGV[1])
"""

# KEYS: meta, posts, bodies, expiry, events, dedupe
# ARGV: candidate epoch, requester_id, template, expires_at, body, posts max len,
#       events max len, dedupe ttl ms
PUBLISH = _ENSURE_EPOCH + """
local epoch = ensure_epoch(KEYS[1], KEYS[2], KEYS[3], KEYS[4], ARGV[1])
local already = redis.call('GET', KEYS[6])
if already then return {epoch, already} end
local seq = redis.call('HINCRBY', KEYS[1], 'seq', 1)
local seqs = tostring(seq)
redis.call('XADD', KEYS[2], seqs .. '-0', 'r', ARGV[2], 't', ARGV[3], 'e', ARGV[4])
redis.call('HSET', KEYS[3], seqs, ARGV[5])
redis.call('ZADD', KEYS[4], ARGV[4], seqs)
local over = redis.call('XLEN', KEYS[2]) - tonumber(ARGV[6])
if over > 0 then
  for _, entry in ipairs(redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', over)) do
    local old = string.match(entry[1], '^(%d+)-')
    redis.call('XDEL', KEYS[2], entry[1])
    redis.call('HDEL', KEYS[3], old)
    redis.call('ZREM', KEYS[4], old)
  end
end
redis.call('SET', KEYS[6], seqs, 'PX', ARGV[8])
redis.call('XADD', KEYS[5], 'MAXLEN', '~', ARGV[7], '*', 'k', 'p')
return {epoch, seqs}
"""

# One page of the v1 selection rule (spec/wire-v1.md §4.5). Expired posts count as
# purged: not examined, so they do not move the cursor.
# KEYS: meta, posts, bodies, expiry
# ARGV: candidate epoch, start id ("<n>-0" or "(<id>"), now, node_id, limit, budget, caps...
# Returns {epoch, highest seq examined or "", next start id, "more"|"full"|"end", picked}
# where picked is a flat list seq, body, seq, body...
PULL_PAGE = _ENSURE_EPOCH + """
local epoch = ensure_epoch(KEYS[1], KEYS[2], KEYS[3], KEYS[4], ARGV[1])
local start = ARGV[2]
local now = tonumber(ARGV[3])
local node = ARGV[4]
local limit = tonumber(ARGV[5])
local budget = tonumber(ARGV[6])
local caps = {}
for i = 7, #ARGV do caps[ARGV[i]] = true end
local highest = ''
local picked = {}
local npicked = 0
local examined = 0
local state = 'more'
while state == 'more' and examined < budget do
  local batch = redis.call('XRANGE', KEYS[2], start, '+', 'COUNT', 128)
  if #batch == 0 then
    state = 'end'
  else
    for _, entry in ipairs(batch) do
      local id = entry[1]
      local fields = entry[2]
      local requester, template, expires = nil, nil, nil
      for i = 1, #fields, 2 do
        local name = fields[i]
        if name == 'r' then requester = fields[i + 1]
        elseif name == 't' then template = fields[i + 1]
        elseif name == 'e' then expires = fields[i + 1] end
      end
      start = '(' .. id
      examined = examined + 1
      if tonumber(expires) > now then
        local seq = string.match(id, '^(%d+)-')
        highest = seq
        if requester ~= node and caps[template] then
          local body = redis.call('HGET', KEYS[3], seq)
          if body then
            picked[#picked + 1] = seq
            picked[#picked + 1] = body
            npicked = npicked + 1
            if npicked >= limit then state = 'full' end
          end
        end
      end
      if state ~= 'more' or examined >= budget then break end
    end
  end
end
return {epoch, highest, start, state, picked}
"""

# KEYS: posts, bodies, expiry   ARGV: now, batch
PURGE_POSTS = """
local dead = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, seq in ipairs(dead) do
  redis.call('XDEL', KEYS[1], seq .. '-0')
  redis.call('HDEL', KEYS[2], seq)
  redis.call('ZREM', KEYS[3], seq)
end
return #dead
"""

# Presence: which templates a node serves and when it was last seen, per template.
_TOUCH = """
local function touch(prefix, node, caps, seen, horizon, ttl_ms)
  local pkey = prefix .. 'presence:' .. node
  local keep = {}
  for _, t in ipairs(caps) do keep[t] = true end
  for _, t in ipairs(redis.call('SMEMBERS', pkey)) do
    if not keep[t] then redis.call('ZREM', prefix .. 'live:' .. t, node) end
  end
  redis.call('DEL', pkey)
  for _, t in ipairs(caps) do
    local live = prefix .. 'live:' .. t
    redis.call('ZADD', live, seen, node)
    redis.call('ZREMRANGEBYSCORE', live, '-inf', '(' .. horizon)
    redis.call('SADD', pkey, t)
    redis.call('SADD', prefix .. 'live-templates', t)
  end
  if #caps > 0 then redis.call('PEXPIRE', pkey, ttl_ms) end
end
"""

# KEYS: none   ARGV: prefix, node_id, seen, horizon, ttl ms, caps...
TOUCH = _TOUCH + """
local caps = {}
for i = 6, #ARGV do caps[#caps + 1] = ARGV[i] end
touch(ARGV[1], ARGV[2], caps, ARGV[3], ARGV[4], ARGV[5])
return 1
"""

# Replace a node's registry entry and aliases. A taken alias moves to the newest
# registrant, as the sqlite and memory backends do.
# KEYS: node, node-order, node-counter, aliases, node-aliases
# ARGV: prefix, node_id, url, capabilities JSON, last_seen, horizon, ttl ms, ncaps,
#       caps..., aliases...
REGISTER = _TOUCH + """
local prefix, node = ARGV[1], ARGV[2]
redis.call('HSET', KEYS[1], 'url', ARGV[3], 'capabilities', ARGV[4], 'last_seen', ARGV[5])
if not redis.call('ZSCORE', KEYS[2], node) then
  redis.call('ZADD', KEYS[2], redis.call('INCR', KEYS[3]), node)
end
for _, alias in ipairs(redis.call('SMEMBERS', KEYS[5])) do
  if redis.call('HGET', KEYS[4], alias) == node then redis.call('HDEL', KEYS[4], alias) end
end
redis.call('DEL', KEYS[5])
local ncaps = tonumber(ARGV[8])
local caps = {}
for i = 9, 8 + ncaps do caps[#caps + 1] = ARGV[i] end
for i = 9 + ncaps, #ARGV do
  local alias = ARGV[i]
  local owner = redis.call('HGET', KEYS[4], alias)
  if owner and owner ~= node then
    redis.call('SREM', prefix .. 'node-aliases:' .. owner, alias)
  end
  redis.call('HSET', KEYS[4], alias, node)
  redis.call('SADD', KEYS[5], alias)
end
touch(prefix, node, caps, ARGV[5], ARGV[6], ARGV[7])
return 1
"""

# KEYS: live:<template>   ARGV: since, exclude
LIVE_NODES = """
local n = redis.call('ZCOUNT', KEYS[1], ARGV[1], '+inf')
local seen = redis.call('ZSCORE', KEYS[1], ARGV[2])
if seen and tonumber(seen) >= tonumber(ARGV[1]) then n = n - 1 end
return n
"""

# KEYS: live-templates   ARGV: prefix, horizon, templates...
TRIM_LIVE = """
local dropped = 0
for i = 3, #ARGV do
  local live = ARGV[1] .. 'live:' .. ARGV[i]
  redis.call('ZREMRANGEBYSCORE', live, '-inf', '(' .. ARGV[2])
  if redis.call('ZCARD', live) == 0 then
    redis.call('SREM', KEYS[1], ARGV[i])
    dropped = dropped + 1
  end
end
return dropped
"""

# The index holds, per mailbox, the creation ms of its oldest message, so retention
# trimming visits only mailboxes that hold something old. An empty mailbox key is
# deleted, so nodes that come and go leave nothing behind.
_REINDEX = """
local function reindex(mbox, index, node)
  local first = redis.call('XRANGE', mbox, '-', '+', 'COUNT', 1)
  if #first == 0 then
    redis.call('ZREM', index, node)
    redis.call('DEL', mbox)
  else
    redis.call('ZADD', index, string.match(first[1][1], '^(%d+)-'), node)
  end
end
"""

# Message ids are "<ms>-<n>" with ms taken from the caller's clock (never going back
# within one mailbox), so retention compares against the same clock as created_at.
# KEYS: mailbox, index, events, dedupe
# ARGV: node, sender, verified (0/1), request_id, payload, created_at, now ms, max len,
#       events max len, dedupe ttl ms, horizon ms
# Returns the message id, or false when the mailbox is full.
MAILBOX_SEND = _REINDEX + """
local already = redis.call('GET', KEYS[4])
if already then return already end
redis.call('XTRIM', KEYS[1], 'MINID', ARGV[11])
if redis.call('XLEN', KEYS[1]) >= tonumber(ARGV[8]) then
  reindex(KEYS[1], KEYS[2], ARGV[1])
  return false
end
local id = ARGV[7] .. '-0'
if redis.call('EXISTS', KEYS[1]) == 1 then
  local info = redis.call('XINFO', 'STREAM', KEYS[1])
  local last = nil
  for i = 1, #info, 2 do
    if info[i] == 'last-generated-id' then last = info[i + 1] end
  end
  if last then
    local last_ms, last_n = string.match(last, '^(%d+)-(%d+)$')
    if tonumber(last_ms) >= tonumber(ARGV[7]) then
      id = last_ms .. '-' .. tostring(tonumber(last_n) + 1)
    end
  end
end
redis.call('XADD', KEYS[1], id, 'f', ARGV[2], 'v', ARGV[3], 'q', ARGV[4], 'p', ARGV[5],
           'c', ARGV[6])
reindex(KEYS[1], KEYS[2], ARGV[1])
redis.call('SET', KEYS[4], id, 'PX', ARGV[10])
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[9], '*', 'k', 'm', 'n', ARGV[1])
return id
"""

# KEYS: mailbox, index   ARGV: node, ids...
MAILBOX_ACK = _REINDEX + """
local removed = 0
for i = 2, #ARGV do removed = removed + redis.call('XDEL', KEYS[1], ARGV[i]) end
reindex(KEYS[1], KEYS[2], ARGV[1])
return removed
"""

# KEYS: index   ARGV: prefix, horizon ms, batch
PURGE_MAILBOXES = _REINDEX + """
local boxes = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[2], 'LIMIT', 0,
                         tonumber(ARGV[3]))
for _, node in ipairs(boxes) do
  local mbox = ARGV[1] .. 'mbox:' .. node
  redis.call('XTRIM', mbox, 'MINID', ARGV[2])
  reindex(mbox, KEYS[1], node)
end
return #boxes
"""
