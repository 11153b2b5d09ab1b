--[[
  Trims a partition's ledger stream of entries the flush group has acknowledged — so they are in
  Postgres — and nothing newer: below the oldest pending entry or, when none is pending, below the
  next undelivered one. One script, so no consumer can read entries between the look and the trim.
  Never MAXLEN: that would drop entries not yet flushed.
  Input (after the shared arguments): ARGV[5] consumer group name
  Output: JSON {trimmed = <entries removed>, below = <the threshold id>}.
]]
--- @include "includes/numbers"
--- @include "includes/keys"
--- @include "includes/fields"
--- @include "includes/context"

local ctx = newContext(KEYS, ARGV)
local group = ARGV[SCRIPT_ARGS]
local stream = ledgerKey(ctx.P)
if redis.call('EXISTS', stream) == 0 then return cjson.encode({ trimmed = 0, below = '0-0' }) end
local pending = redis.call('XPENDING', stream, group)
local threshold = pending[2]
if not threshold then
  local lastDelivered = nil
  for _, info in ipairs(redis.call('XINFO', 'GROUPS', stream)) do
    local fields = {}
    for i = 1, #info, 2 do fields[info[i]] = info[i + 1] end
    if fields['name'] == group then lastDelivered = fields['last-delivered-id'] end
  end
  if not lastDelivered then return cjson.encode({ trimmed = 0, below = '0-0' }) end
  local _, _, ms, seq = string.find(lastDelivered, '^(%d+)-(%d+)$')
  -- seq + 1 as text: stream sequence numbers are small, far below 2^53.
  threshold = ms .. '-' .. intString(tonumber(seq) + 1)
end
local trimmed = redis.call('XTRIM', stream, 'MINID', threshold)
return cjson.encode({ trimmed = trimmed, below = threshold })
