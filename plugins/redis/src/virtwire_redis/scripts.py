"""The Lua scripts the broker runs in Redis (each one atomic)."""

from __future__ import annotations

#: Publish one frame of a shared channel.
#: KEYS: meta hash, stream, latest hash, owner key (or "")
#: ARGV: origin node, key as JSON, key (or ""), open frame text, history size,
#:       ttl (ms), new epoch? (0/1), new epoch value, latest? (0/1), owned? (0/1),
#:       lease (ms), PUB/SUB channel, publish time (Unix seconds, for the lag)
#: Returns {offset, epoch}, or {0, owner} when another gateway owns the key.
PUBLISH = """
if ARGV[10] == '1' then
  local owner = redis.call('GET', KEYS[4])
  if owner and owner ~= ARGV[1] then return {0, owner} end
  if not owner then redis.call('SET', KEYS[4], ARGV[1], 'PX', ARGV[11]) end
end
local epoch = redis.call('HGET', KEYS[1], 'e')
if (not epoch) or ARGV[7] == '1' then
  epoch = ARGV[8]
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[1], 'e', epoch, 's', 0)
end
local offset = redis.call('HINCRBY', KEYS[1], 's', 1)
local text = ARGV[4] .. ',"offset":' .. offset .. ',"epoch":"' .. epoch .. '"}'
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[5], '0-' .. offset, 'k', ARGV[2], 't', text)
if ARGV[9] == '1' and ARGV[3] ~= '' then
  redis.call('HSET', KEYS[3], ARGV[3], text)
end
if offset % 64 == 1 then
  -- refreshing the time to live of a busy topic now and then is enough
  redis.call('PEXPIRE', KEYS[1], ARGV[6])
  redis.call('PEXPIRE', KEYS[2], ARGV[6])
  redis.call('PEXPIRE', KEYS[3], ARGV[6])
end
redis.call('PUBLISH', ARGV[12], ARGV[1] .. '\\n' .. ARGV[13] .. '\\n' .. offset
  .. '\\n' .. epoch .. '\\n' .. ARGV[2] .. '\\n' .. text)
return {offset, epoch}
"""

#: Claim or renew ownership leases. KEYS: owner keys; ARGV: node, lease (ms).
#: Returns per key 1 (renewed), 2 (newly taken) or 0 (another gateway owns it).
CLAIM = """
local out = {}
for i, key in ipairs(KEYS) do
  local cur = redis.call('GET', key)
  if cur == ARGV[1] then
    redis.call('PEXPIRE', key, ARGV[2])
    out[i] = 1
  elseif not cur then
    redis.call('SET', key, ARGV[1], 'PX', ARGV[2])
    out[i] = 2
  else
    out[i] = 0
  end
end
return out
"""

#: Release leases held by a node. KEYS: owner keys; ARGV: node. Returns how many.
RELEASE = """
local n = 0
for _, key in ipairs(KEYS) do
  if redis.call('GET', key) == ARGV[1] then
    redis.call('DEL', key)
    n = n + 1
  end
end
return n
"""

#: The history after an offset. KEYS: meta hash, stream; ARGV: after.
#: Returns {epoch or false, first offset, {id, fields}...}.
HISTORY = """
local epoch = redis.call('HGET', KEYS[1], 'e')
if not epoch then return {false, 0, {}} end
local first = redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', 1)
local first_offset = 0
if first[1] then first_offset = tonumber(string.sub(first[1][1], 3)) end
local entries = redis.call('XRANGE', KEYS[2], '0-' .. (tonumber(ARGV[1]) + 1), '+')
return {epoch, first_offset, entries}
"""
