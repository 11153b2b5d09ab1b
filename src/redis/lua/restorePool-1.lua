--[[
  Writes a pool rebuilt from the Postgres ledger back into an emptied Redis (meterd rebuild-redis):
  the pool's hash, its spaces, its promotional grants, and the holds that were open — each due to
  expire at once, so the next touch or sweep releases them and nothing they held is ever charged.
  Appends no ledger event: the ledger already has all of this. Refuses a pool that exists.
  Input (after the shared arguments): ARGV[5] the pool as JSON (built by src/postgres/rebuild.ts):
    {id, fields = {...}, spaces = [{id, fields}], promos = [{id, expires, left}], holds = [{id, expires, fields}]}
  Output: JSON {restored = true}; errors: ACCOUNT_EXISTS.
]]
--- @include "includes/numbers"
--- @include "includes/keys"
--- @include "includes/fields"
--- @include "includes/context"

local ctx = newContext(KEYS, ARGV)
local pool = cjson.decode(ARGV[SCRIPT_ARGS])
local key = accountKey(ctx.P, pool.id)
if redis.call('EXISTS', key) == 1 then return cjson.encode({ e = 'ACCOUNT_EXISTS', account_id = pool.id }) end

local function writeHash(hashKey, fields)
  local args = {}
  for field, value in pairs(fields) do
    args[#args + 1] = field
    args[#args + 1] = value
  end
  if #args > 0 then redis.call('HSET', hashKey, unpack(args)) end
end

writeHash(key, pool.fields)
for _, space in ipairs(pool.spaces) do writeHash(accountKey(ctx.P, space.id), space.fields) end
for _, promo in ipairs(pool.promos) do
  redis.call('ZADD', promoKey(ctx.P, pool.id), promo.expires, promo.id)
  redis.call('HSET', promoAmountsKey(ctx.P, pool.id), promo.id, promo.left)
end
for _, hold in ipairs(pool.holds) do
  writeHash(reservationKey(ctx.P, hold.id), hold.fields)
  redis.call('ZADD', poolHoldsKey(ctx.P, pool.id), hold.expires, hold.id)
  redis.call('ZADD', expiryKey(ctx.P), hold.expires, hold.id)
end
return cjson.encode({ restored = true })
