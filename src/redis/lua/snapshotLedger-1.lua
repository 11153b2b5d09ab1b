--[[
  One consistent look at a partition for reconciliation: the pool fields of the named accounts and
  every ledger entry still in the stream, read in one script so no event falls between the two.
  Read-only.
  Input (after the shared arguments): ARGV[5] most stream entries to return   ARGV[6] pool account ids, joined by ','
  Output: JSON {pools = {<id> = {trial, allow, promo, pack, ovg, held, seq}}, entries = a list of
    (id, field, value, ...) lists,
    complete = <false when the stream holds more entries than asked for>}.
]]
--- @include "includes/numbers"
--- @include "includes/keys"
--- @include "includes/fields"
--- @include "includes/context"

local ctx = newContext(KEYS, ARGV)
local max = tonumber(ARGV[SCRIPT_ARGS])
local pools = {}
for id in string.gmatch(ARGV[SCRIPT_ARGS + 1], '[^,]+') do
  local values = redis.call('HMGET', accountKey(ctx.P, id), 'trial', 'allow', 'promo', 'pack', 'ovg', 'held', 'seq')
  if values[7] then
    pools[id] = {
      trial = values[1] or '0', allow = values[2] or '0', promo = values[3] or '0', pack = values[4] or '0',
      ovg = values[5] or '0', held = values[6] or '0', seq = values[7],
    }
  end
end
local entries = {}
local raw = redis.call('XRANGE', ledgerKey(ctx.P), '-', '+', 'COUNT', intString(max + 1))
for i = 1, math.min(#raw, max) do
  local entry = { raw[i][1] }
  for _, value in ipairs(raw[i][2]) do entry[#entry + 1] = value end
  entries[#entries + 1] = entry
end
return cjson.encode({ pools = pools, entries = entries, complete = #raw <= max })
