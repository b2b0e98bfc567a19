"""The fleet's presence in the broker's Redis: who is live, with what, in four keys for the whole fleet.

- :data:`FLEET_BEATS`, a sorted set: agent id -> the Redis server's time of its last heartbeat. An agent is
  live while its score is newer than :data:`HEARTBEAT_TTL_S`; the controller's sync removes older ones.
- :data:`FLEET_INVENTORIES`, a hash: agent id -> its inventory (an ``AgentInventory`` as JSON, written
  only when it changes: a beat that changes nothing writes nothing but the score).
- :data:`FLEET_SEQ`, a counter, and :data:`FLEET_CHANGES`, a sorted set: agent id -> the counter's value at
  its last join, change or departure. A controller remembers the last value it saw and reads only what
  changed since, so a tick costs one round trip whatever the fleet's size.

An agent's beat is one call (:data:`BEAT_SCRIPT`); so is its leaving (:data:`LEAVE_SCRIPT`) and the
controller's sync (:data:`SYNC_SCRIPT`). Times are the Redis server's own (``TIME``), so an agent's
clock never decides whether it is live. Nothing here imports Redis: both sides run these scripts with
their own client (``redis.Redis.register_script``).
"""

from __future__ import annotations

#: agent id -> the server time (seconds) of its last heartbeat
FLEET_BEATS = "fleetbench:fleet:beats"
#: agent id -> its inventory as JSON, as of its last change
FLEET_INVENTORIES = "fleetbench:fleet:inventories"
#: agent id -> the value of FLEET_SEQ when it last joined, changed or left
FLEET_CHANGES = "fleetbench:fleet:changes"
#: bumped on every join, change and departure
FLEET_SEQ = "fleetbench:fleet:seq"
#: set by the first sync on an empty broker: another value means the broker lost its data since
FLEET_EPOCH = "fleetbench:fleet:epoch"
#: the keys every script takes, in this order
FLEET_KEYS = (FLEET_BEATS, FLEET_INVENTORIES, FLEET_CHANGES, FLEET_SEQ, FLEET_EPOCH)
#: FLEET_CHANGES keeps the marks of the last this many changes; a controller further behind (or new, or
#: whose broker lost its data) reads the fleet itself again: FLEET_BEATS and FLEET_INVENTORIES
KEEP_CHANGES = 100_000

#: An agent beats this often ...
HEARTBEAT_S = 5.0
#: ... and is gone when its last beat is older than this (three beats missed).
HEARTBEAT_TTL_S = 15

# Redis 5 and 6 replicate a script that reads TIME and then writes only as its effects, after this call (7 always)
_NOW = ("if redis.replicate_commands then redis.replicate_commands() end\n"
        "local t = redis.call('TIME')\nlocal now = tonumber(t[1]) + tonumber(t[2]) / 1000000\n")
_CHANGED = "local s = redis.call('INCR', KEYS[4])\nredis.call('ZADD', KEYS[3], s, {id})\n"

#: ARGV: agent id, inventory JSON. Scores the beat; stores the inventory and counts a change only when the
#: agent was not live or its inventory differs. Returns 1 when it counted a change.
BEAT_SCRIPT = (
    _NOW
    + """local joined = redis.call('ZADD', KEYS[1], now, ARGV[1])
if joined == 1 or redis.call('HGET', KEYS[2], ARGV[1]) ~= ARGV[2] then
  redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
"""
    + _CHANGED.format(id="ARGV[1]")
    + """  return 1
end
return 0
"""
)

#: ARGV: agent id. The agent leaves at once (a clean stop) instead of after its TTL. Returns 1 if it was live.
LEAVE_SCRIPT = (
    """if redis.call('ZREM', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('HDEL', KEYS[2], ARGV[1])
"""
    + _CHANGED.format(id="ARGV[1]")
    + "return 1\n"
)

#: ARGV: the last FLEET_SEQ the caller saw, the TTL (s), the most agents to expire or report in one call.
#: Removes the agents whose last beat is older than the TTL (each counts as a change), forgets the marks
#: older than KEEP_CHANGES changes, then returns ``{now, seq, epoch, oldest kept, {id, changed-at,
#: inventory or nil, last beat or nil, ...}}`` for every agent changed since the caller's value, oldest
#: change first, at most the limit (the caller asks again while it is behind). A caller whose epoch differs
#: (the broker lost its data) or whose value is older than the oldest kept reads the fleet itself again.
SYNC_SCRIPT = (
    _NOW
    + """local epoch = redis.call('GET', KEYS[5])
if not epoch then
  epoch = t[1] .. '.' .. t[2]
  redis.call('SET', KEYS[5], epoch)
end
local expired = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. (now - tonumber(ARGV[2])), 'LIMIT', 0, tonumber(ARGV[3]))
for _, id in ipairs(expired) do
  redis.call('ZREM', KEYS[1], id)
  redis.call('HDEL', KEYS[2], id)
"""
    + _CHANGED.format(id="id")
    + """end
local seq = redis.call('GET', KEYS[4]) or '0'
local oldest = tonumber(seq) - """ + str(KEEP_CHANGES) + """
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', '(' .. oldest)
local changed = redis.call('ZRANGEBYSCORE', KEYS[3], '(' .. ARGV[1], '+inf', 'WITHSCORES', 'LIMIT', 0, tonumber(ARGV[3]))
local out = {}
for i = 1, #changed, 2 do
  local id = changed[i]
  out[#out + 1] = id
  out[#out + 1] = changed[i + 1]
  out[#out + 1] = redis.call('HGET', KEYS[2], id) or false
  out[#out + 1] = redis.call('ZSCORE', KEYS[1], id) or false
end
return {string.format('%.6f', now), seq, epoch, tostring(oldest), out}
"""
)
