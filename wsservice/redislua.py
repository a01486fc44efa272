"""The Lua scripts of the Redis cluster engine: every step that must be atomic in Redis.

Each script gets its key prefix (e.g. ``wss:``) as ARGV[1] and builds its key names from it
(docs/cluster.md lists the keys). Records sent to a node (published on its channel, or
returned to the caller for its own sessions) are lines joined by ``\\n``; no line holds a raw
newline (JSON never does, ids are URL-safe):

- ``X prefix n sid1 seq1 … sidn seqn``: a topic message for n sessions (``~id`` members are
  plain deliverables, seq 0: they stamp their own);
- ``P sid seq kind prefix``: a message pushed to one session;
- ``T sid``: the session was taken by another node (resumed there, or adopted);
- ``C json`` / ``R json``: a server call relayed to a session's node, and its answer.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

# What every script shares: keys, time, the replay buffer and moving a session's memberships.
_COMMON = r"""
local P = ARGV[1]
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function skey(sid) return P .. 's:' .. sid end
local function tkey(node, topic) return P .. 't:' .. node .. ':' .. topic end
local function nkey(node) return P .. 'n:' .. node .. ':s' end
local function channel(node) return P .. 'c:' .. node end
-- keep a frame in a session's replay buffer, oldest dropped past the limits (at the count
-- limit, the steady state of a busy session: RPUSH, LPOP and one HINCRBY)
local function keep(h, frame, limit, maxb)
  if limit <= 0 then return end
  local r = h .. ':r'
  local n = redis.call('RPUSH', r, frame)
  local size = #frame
  if n > limit then
    size = size - #redis.call('LPOP', r)
    n = n - 1
  end
  local b = redis.call('HINCRBY', h, 'b', size)
  if b > maxb then
    local freed = 0
    while n > 0 and b - freed > maxb do
      freed = freed + #redis.call('LPOP', r)
      n = n - 1
    end
    redis.call('HINCRBY', h, 'b', -freed)
  end
end
-- forget every kept frame up to seq
local function ack(h, upto)
  local seq = tonumber(redis.call('HGET', h, 'seq'))
  if not seq then return end
  local r = h .. ':r'
  local n = redis.call('LLEN', r)
  local drop = upto - (seq - n + 1) + 1
  if drop > n then drop = n end
  if drop > 0 then
    local gone = redis.call('LPOP', r, drop)
    local size = 0
    for _, f in ipairs(gone) do size = size + #f end
    redis.call('HINCRBY', h, 'b', -size)
  end
end
local function join(node, sid, topic)
  redis.call('SADD', tkey(node, topic), sid)
  redis.call('SADD', P .. 'tn:' .. topic, node)
end
local function leave(node, sid, topic)
  local k = tkey(node, topic)
  redis.call('SREM', k, sid)
  if redis.call('SCARD', k) == 0 then redis.call('SREM', P .. 'tn:' .. topic, node) end
end
-- a session changes owner: its node set and topic memberships follow it
local function move(sid, old, new)
  local h = skey(sid)
  redis.call('HSET', h, 'node', new)
  if old then redis.call('SREM', nkey(old), sid) end
  redis.call('SADD', nkey(new), sid)
  for _, t in ipairs(redis.call('SMEMBERS', h .. ':t')) do
    if old then leave(old, sid, t) end
    join(new, sid, t)
  end
end
local function expire(h, ms)
  redis.call('PEXPIRE', h, ms)
  redis.call('PEXPIRE', h .. ':r', ms)
  redis.call('PEXPIRE', h .. ':t', ms)
  redis.call('PEXPIRE', h .. ':w', ms)
end
local function persist(h)
  redis.call('PERSIST', h)
  redis.call('PERSIST', h .. ':r')
  redis.call('PERSIST', h .. ':t')
  redis.call('PERSIST', h .. ':w')
end
-- records for nodes: ME's go back to the caller (the batch's answer), the others' are
-- published on their channels by flush(); a script with ME nil publishes them all
local ME = nil
local mine = {}
local others = {}
local function send(node, part)
  if node == ME then mine[#mine + 1] = part
  else
    local o = others[node]
    if not o then o = {}; others[node] = o end
    o[#o + 1] = part
  end
end
local function flush()
  for node, parts in pairs(others) do
    redis.call('PUBLISH', channel(node), table.concat(parts, '\n'))
  end
end
-- number a message for one session, keep it for replay and send it to the session's node;
-- the seq, or nil when the session is gone
local function push(sid, kind, prefix, limit, maxb)
  local h = skey(sid)
  local owner = redis.call('HGET', h, 'node')
  if not owner then return nil end
  local seq = redis.call('HINCRBY', h, 'seq', 1)
  keep(h, prefix .. seq .. '}', limit, maxb)
  send(owner, 'P\n' .. sid .. '\n' .. seq .. '\n' .. kind .. '\n' .. prefix)
  return seq
end
-- presence (protocol.md section 7): tell a topic's watchers that sid joined or left it
local function announce(sid, topic, event, limit, maxb)
  local w = P .. 'pw:' .. topic
  if redis.call('SCARD', w) == 0 then return end
  local pm = redis.call('HGET', skey(sid), 'pm')
  if not pm then return end
  local prefix = '{"type":"event","event":"' .. event .. '","data":{"topic":' ..
    cjson.encode(topic) .. ',"member":' .. pm .. '},"seq":'
  for _, watcher in ipairs(redis.call('SMEMBERS', w)) do
    if watcher ~= sid and not push(watcher, 'event', prefix, limit, maxb) then
      redis.call('SREM', w, watcher)  -- its session expired in Redis
    end
  end
end
local function unwatch(sid, topic)
  redis.call('SREM', P .. 'pw:' .. topic, sid)
  redis.call('SREM', skey(sid) .. ':w', topic)
end
local function forget(sid, node, limit, maxb)
  local h = skey(sid)
  for _, t in ipairs(redis.call('SMEMBERS', h .. ':w')) do unwatch(sid, t) end
  for _, t in ipairs(redis.call('SMEMBERS', h .. ':t')) do
    leave(node, sid, t)
    announce(sid, t, 'presence.leave', limit, maxb)
  end
  redis.call('SREM', nkey(node), sid)
  redis.call('DEL', h, h .. ':r', h .. ':t', h .. ':w')
end
"""

# ARGV: prefix, node, replay_limit, replay_bytes, then operations (see the module docstring
# of redisengine). Returns {records for this node, result of each operation...}.
BATCH = _COMMON + r"""
local me, limit, maxb = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
ME = me
local out = {''}
local i = 5
local n = #ARGV
while i <= n do
  local op = ARGV[i]
  local res = 0
  if op == 'P' then  -- push: sid kind prefix
    local sid, kind, prefix = ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
    i = i + 4
    local h = skey(sid)
    local owner = redis.call('HGET', h, 'node')
    if owner == me then  -- its answer carries the seq: no record
      res = redis.call('HINCRBY', h, 'seq', 1)
      keep(h, prefix .. res .. '}', limit, maxb)
    elseif owner then
      res = -push(sid, kind, prefix, limit, maxb)
    end
  elseif op == 'X' then  -- publish: topic prefix
    local topic, prefix = ARGV[i + 1], ARGV[i + 2]
    i = i + 3
    local tn = P .. 'tn:' .. topic
    for _, node in ipairs(redis.call('SMEMBERS', tn)) do
      local k = tkey(node, topic)
      local members = redis.call('SMEMBERS', k)
      local parts = {}
      for _, m in ipairs(members) do
        if string.byte(m, 1) == 126 then  -- '~': a plain deliverable stamps its own seq
          parts[#parts + 1] = m
          parts[#parts + 1] = '0'
        else
          local h = skey(m)
          -- the number as a string, formatted once with %d: Lua turns a number into text
          -- with %.14g (a float's printf, per use), and '1' spares converting the increment
          local seq = string.format('%d', redis.call('HINCRBY', h, 'seq', '1'))
          if seq == '1' and redis.call('HEXISTS', h, 'node') == 0 then
            -- a member whose session expired in Redis: clean it up
            redis.call('DEL', h)
            redis.call('SREM', k, m)
          else
            keep(h, prefix .. seq .. '}', limit, maxb)
            parts[#parts + 1] = m
            parts[#parts + 1] = seq
          end
        end
      end
      if #parts == 0 then
        if #members == 0 or redis.call('SCARD', k) == 0 then redis.call('SREM', tn, node) end
      else
        res = res + #parts / 2
        send(node, 'X\n' .. prefix .. '\n' .. (#parts / 2) .. '\n' .. table.concat(parts, '\n'))
      end
    end
  elseif op == 'K' then  -- keep a frame stamped by the caller: sid seq frame
    local h = skey(ARGV[i + 1])
    local seq, frame = ARGV[i + 2], ARGV[i + 3]
    i = i + 4
    if redis.call('EXISTS', h) == 1 then
      redis.call('HSET', h, 'seq', seq)
      keep(h, frame, limit, maxb)
      res = 1
    end
  elseif op == 'A' then  -- ack: sid seq
    ack(skey(ARGV[i + 1]), tonumber(ARGV[i + 2]))
    i = i + 3
  elseif op == 'S' or op == 'U' then  -- a session's subscription: sid topic
    local sid, topic = ARGV[i + 1], ARGV[i + 2]
    i = i + 3
    local h = skey(sid)
    local owner = redis.call('HGET', h, 'node')
    if owner then
      if op == 'S' then
        if redis.call('SADD', h .. ':t', topic) == 1 then
          join(owner, sid, topic)
          announce(sid, topic, 'presence.join', limit, maxb)
        end
      else
        unwatch(sid, topic)
        if redis.call('SREM', h .. ':t', topic) == 1 then
          leave(owner, sid, topic)
          announce(sid, topic, 'presence.leave', limit, maxb)
        end
      end
      res = 1
    end
  elseif op == 'W' then  -- whether a subscriber hears a topic's presence: sid topic 1/0
    local sid, topic = ARGV[i + 1], ARGV[i + 2]
    local on = ARGV[i + 3] == '1'
    i = i + 4
    if on and redis.call('SISMEMBER', skey(sid) .. ':t', topic) == 1 then
      redis.call('SADD', P .. 'pw:' .. topic, sid)
      redis.call('SADD', skey(sid) .. ':w', topic)
      res = 1
    elseif not on then
      unwatch(sid, topic)
    end
  elseif op == 's' then  -- a plain deliverable of this node: member topic
    join(me, ARGV[i + 1], ARGV[i + 2])
    i = i + 3
  elseif op == 'u' then
    leave(me, ARGV[i + 1], ARGV[i + 2])
    i = i + 3
  elseif op == 'N' then  -- nothing: its answer says the operations before it are kept
    i = i + 1
  else
    return redis.error_reply('wsservice batch: unknown operation ' .. tostring(op))
  end
  out[#out + 1] = res
end
flush()
out[1] = table.concat(mine, '\n')
return out
"""

# ARGV: prefix, sid, token hash, label, principal, meta, node, presence member. 1, or 0 if
# the id is taken.
CREATE = _COMMON + r"""
local sid, me = ARGV[2], ARGV[7]
local h = skey(sid)
if redis.call('EXISTS', h) == 1 then return 0 end
redis.call('HSET', h, 'tok', ARGV[3], 'label', ARGV[4], 'pr', ARGV[5], 'meta', ARGV[6],
           'seq', 0, 'b', 0, 'node', me, 'det', '', 'pm', ARGV[8])
redis.call('SADD', nkey(me), sid)
return 1
"""

# ARGV: prefix, sid, token hash, last_seq, node. nil (no such session, wrong token), or
# {label, principal, meta, seq, topics, replay (a list; 0: a gap), token hash, presence member,
# watched topics}.
CLAIM = _COMMON + r"""
local sid, me = ARGV[2], ARGV[5]
local h = skey(sid)
local f = redis.call('HMGET', h, 'tok', 'label', 'pr', 'meta', 'seq', 'node', 'pm')
if not f[1] or f[1] ~= ARGV[3] then return nil end
local seq = tonumber(f[5])
local last = tonumber(ARGV[4])
local n = redis.call('LLEN', h .. ':r')
local replay = 0
if not (last > seq or (last < seq and seq - n + 1 > last + 1)) then
  ack(h, last)
  replay = redis.call('LRANGE', h .. ':r', 0, -1)
end
local old = f[6]
if old ~= me then
  move(sid, old, me)
  if old then redis.call('PUBLISH', channel(old), 'T\n' .. sid) end
end
redis.call('HSET', h, 'det', '')
persist(h)
return {f[2], f[3], f[4], seq, redis.call('SMEMBERS', h .. ':t'), replay, f[1], f[7] or '',
        redis.call('SMEMBERS', h .. ':w')}
"""

# ARGV: prefix, sid, node, ttl ms, grace ms. Marks a session of this node detached (the
# first deadline stands) and lets its keys expire in Redis if no node ever ends it.
DETACH = _COMMON + r"""
local h = skey(ARGV[2])
local f = redis.call('HMGET', h, 'node', 'det')
if f[1] ~= ARGV[3] then return 0 end
if f[2] == '' then
  redis.call('HSET', h, 'det', now_ms() + tonumber(ARGV[4]))
  expire(h, tonumber(ARGV[4]) + tonumber(ARGV[5]))
end
return 1
"""

# ARGV: prefix, sid, node, mode ('any' or 'detached'), replay_limit, replay_bytes. Forgets a
# session of this node; its topics' watchers hear it leave.
END = _COMMON + r"""
local sid, me = ARGV[2], ARGV[3]
local f = redis.call('HMGET', skey(sid), 'node', 'det')
if not f[1] then return 0 end
if f[1] ~= me or (ARGV[4] == 'detached' and f[2] == '') then return 0 end
forget(sid, me, tonumber(ARGV[5]), tonumber(ARGV[6]))
flush()
return 1
"""

# ARGV: prefix, topic. The presence member of every session subscribed to the topic, on
# every node (detached ones included: they have not left).
PRESENCE = _COMMON + r"""
local topic = ARGV[2]
local out = {}
for _, node in ipairs(redis.call('SMEMBERS', P .. 'tn:' .. topic)) do
  local k = tkey(node, topic)
  for _, m in ipairs(redis.call('SMEMBERS', k)) do
    if string.byte(m, 1) ~= 126 then  -- '~': a plain deliverable is no member
      local pm = redis.call('HGET', skey(m), 'pm')
      if pm then out[#out + 1] = pm
      else leave(node, m, topic) end  -- its session expired in Redis: clean it up
    end
  end
end
local w = P .. 'pw:' .. topic
for _, watcher in ipairs(redis.call('SMEMBERS', w)) do
  if redis.call('EXISTS', skey(watcher)) == 0 then redis.call('SREM', w, watcher) end
end
return out
"""

# ARGV: prefix, node, ttl ms. Announces the node; returns the nodes that stopped announcing.
HEARTBEAT = _COMMON + r"""
local me = ARGV[2]
redis.call('SET', P .. 'hb:' .. me, '1', 'PX', tonumber(ARGV[3]))
redis.call('HSET', P .. 'nodes', me, now_ms())
local dead = {}
for _, node in ipairs(redis.call('HKEYS', P .. 'nodes')) do
  if node ~= me and redis.call('EXISTS', P .. 'hb:' .. node) == 0 then dead[#dead + 1] = node end
end
return dead
"""

# ARGV: prefix, dead node, node, count, ttl ms, grace ms. Takes up to count sessions of a
# node that stopped announcing: {left, sid, label, principal, meta, seq, ms left, topics
# joined by newlines, token hash, presence member, watched topics joined by newlines, ...}; {-1} when the node is alive after all.
ADOPT = _COMMON + r"""
local dead, me = ARGV[2], ARGV[3]
if redis.call('EXISTS', P .. 'hb:' .. dead) == 1 then return {-1} end
local ttl, grace = tonumber(ARGV[5]), tonumber(ARGV[6])
local now = now_ms()
local out = {0}
local taken = {}
for _, sid in ipairs(redis.call('SPOP', nkey(dead), tonumber(ARGV[4]))) do
  local h = skey(sid)
  local f = redis.call('HMGET', h, 'node', 'det', 'label', 'pr', 'meta', 'seq', 'tok', 'pm')
  if f[1] == dead then
    redis.call('SADD', nkey(dead), sid)  -- move() takes it out again
    move(sid, dead, me)
    local det = tonumber(f[2])
    if not det then
      det = now + ttl
      redis.call('HSET', h, 'det', det)
      expire(h, ttl + grace)
    end
    local left = det - now
    if left < 0 then left = 0 end
    local topics = redis.call('SMEMBERS', h .. ':t')
    local watched = redis.call('SMEMBERS', h .. ':w')
    for _, v in ipairs({sid, f[3], f[4], f[5], f[6], left, table.concat(topics, '\n'), f[7],
                        f[8] or '', table.concat(watched, '\n')}) do
      out[#out + 1] = v
    end
    taken[#taken + 1] = sid
  end
end
if #taken > 0 then redis.call('PUBLISH', channel(dead), 'T\n' .. table.concat(taken, '\nT\n')) end
local left = redis.call('SCARD', nkey(dead))
if left == 0 then
  redis.call('HDEL', P .. 'nodes', dead)
  -- what plain deliverables of the dead node left in topic sets goes with it
end
out[1] = left
return out
"""

# ARGV: prefix, node, replay_limit, replay_bytes, then per session: sid, token hash, label,
# principal, meta, seq, diverged ('1'/'0'), topics joined by newlines, detached ('1'/'0'),
# ttl ms, grace ms, presence member, watched topics joined by newlines. After Redis came back: put each session of this node back as the node
# has it. Per session: {'T'} taken by another node, or {seq, first seq kept, frames after the
# node's seq...}.
RESYNC = _COMMON + r"""
local me, limit, maxb = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local out = {}
local i = 5
while i <= #ARGV do
  local sid, tok, label, pr, meta = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4]
  local seq, diverged, topics = tonumber(ARGV[i + 5]), ARGV[i + 6] == '1', ARGV[i + 7]
  local detached, ttl, grace = ARGV[i + 8] == '1', tonumber(ARGV[i + 9]), tonumber(ARGV[i + 10])
  local pm, watched = ARGV[i + 11], ARGV[i + 12]
  i = i + 13
  local h = skey(sid)
  local owner = redis.call('HGET', h, 'node')
  local res
  if owner and owner ~= me then
    res = {'T'}
  else
    local want = {}
    if topics ~= '' then
      for t in string.gmatch(topics, '[^\n]+') do want[t] = true end
    end
    if not owner then
      -- Redis lost it (restarted empty): the node's copy, with nothing kept before its seq
      redis.call('HSET', h, 'tok', tok, 'label', label, 'pr', pr, 'meta', meta, 'seq', seq,
                 'b', 0, 'node', me, 'det', '', 'pm', pm)
      redis.call('SADD', nkey(me), sid)
      redis.call('DEL', h .. ':r', h .. ':t')
      res = {seq, seq + 1}
    else
      local rseq = tonumber(redis.call('HGET', h, 'seq'))
      if diverged then
        -- the node sent what Redis never kept: nothing before the later seq can be replayed
        if rseq > seq then seq = rseq end
        redis.call('DEL', h .. ':r')
        redis.call('HSET', h, 'seq', seq, 'b', 0)
        res = {seq, seq + 1}
      else
        local n = redis.call('LLEN', h .. ':r')
        local first = rseq - n + 1
        res = {rseq, first}
        if rseq > seq then
          local from = seq + 1 - first
          if from < 0 then from = 0 end
          for _, f in ipairs(redis.call('LRANGE', h .. ':r', from, -1)) do res[#res + 1] = f end
        end
      end
      for _, t in ipairs(redis.call('SMEMBERS', h .. ':t')) do
        if not want[t] then  -- left while Redis was away
          unwatch(sid, t)
          redis.call('SREM', h .. ':t', t)
          leave(me, sid, t)
          announce(sid, t, 'presence.leave', limit, maxb)
        end
      end
    end
    for t, _ in pairs(want) do
      if redis.call('SADD', h .. ':t', t) == 1 then
        join(me, sid, t)
        -- joined while Redis was away (Redis that lost everything has no watchers to tell)
        if owner then announce(sid, t, 'presence.join', limit, maxb) end
      else
        join(me, sid, t)
      end
    end
    local watching = {}
    if watched ~= '' then
      for t in string.gmatch(watched, '[^\n]+') do watching[t] = true end
    end
    for _, t in ipairs(redis.call('SMEMBERS', h .. ':w')) do
      if not watching[t] then unwatch(sid, t) end
    end
    for t, _ in pairs(watching) do
      if want[t] then
        redis.call('SADD', P .. 'pw:' .. t, sid)
        redis.call('SADD', h .. ':w', t)
      end
    end
    if detached then
      if redis.call('HGET', h, 'det') == '' then redis.call('HSET', h, 'det', now_ms() + ttl) end
      expire(h, ttl + grace)
    else
      redis.call('HSET', h, 'det', '')
      persist(h)
    end
  end
  out[#out + 1] = res
end
flush()
return out
"""

# ARGV: prefix, sid, from seq. {first seq kept, frames from ``from`` on} of one session, or
# {} when it is gone.
FETCH = _COMMON + r"""
local h = skey(ARGV[2])
local seq = tonumber(redis.call('HGET', h, 'seq'))
if not seq then return {} end
local n = redis.call('LLEN', h .. ':r')
local first = seq - n + 1
local from = tonumber(ARGV[3]) - first
if from < 0 then from = 0 end
local out = {first}
for _, f in ipairs(redis.call('LRANGE', h .. ':r', from, -1)) do out[#out + 1] = f end
return out
"""

# ARGV: prefix, sid, record. Relays a record to the node holding a session: 1, 0 when there
# is no such session, -1 when its node is not alive.
RELAY = _COMMON + r"""
local owner = redis.call('HGET', skey(ARGV[2]), 'node')
if not owner then return 0 end
if redis.call('EXISTS', P .. 'hb:' .. owner) == 0 then return -1 end
redis.call('PUBLISH', channel(owner), ARGV[3])
return 1
"""

# ARGV: prefix, node. The node leaves the cluster (drained): others adopt its sessions now.
LEAVE = _COMMON + r"""
redis.call('DEL', P .. 'hb:' .. ARGV[2])
return 1
"""


ADOPTED_FIELDS = 10  # values per session in ADOPT's answer


@dataclass(frozen=True)
class Script:
    """A Lua script and the SHA1 that EVALSHA names it by."""

    name: str
    source: bytes
    sha: str


def _script(name: str, source: str) -> Script:
    data = source.encode("utf-8")
    return Script(name, data, hashlib.sha1(data).hexdigest())


SCRIPTS: dict[str, Script] = {name: _script(name, source) for name, source in {
    "batch": BATCH, "create": CREATE, "claim": CLAIM, "detach": DETACH, "end": END,
    "heartbeat": HEARTBEAT, "adopt": ADOPT, "resync": RESYNC, "fetch": FETCH,
    "relay": RELAY, "leave": LEAVE, "presence": PRESENCE,
}.items()}
