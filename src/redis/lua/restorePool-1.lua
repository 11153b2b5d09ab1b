--[[
  Writes a pool rebuilt from the Postgres ledger back into Redis: the pool's hash, its spaces, its
  promotional grants, and the holds that were open. Appends no ledger event: the ledger already has
  all of this. Two modes:
  - restore (meterd rebuild-redis on an emptied Redis): refuses a pool that exists. Open holds come
    back due to expire at once, so the next touch or sweep releases them and nothing is charged.
  - replace (meterd rebuild-redis --account, and the reconciler's repair of a pool that lost events
    in Redis): only while the pool's sequence number is still the one the caller checked Postgres
    against, so no event appended meanwhile is overwritten. The pool's hash, spaces, promotions and
    holds are dropped and written anew; a hold Redis still has open keeps its expiry (in-flight calls
    go on), a hold only Redis knew is dropped (it was never charged, and Postgres wins).
  Input (after the shared arguments): ARGV[5] the pool as JSON (built by src/postgres/rebuild.ts):
    {id, fields = {...}, spaces = [{id, fields}], promos = [{id, expires, left}], holds = [{id, expires, fields}],
     forget = [reservation id], operations = [{kind, id, fingerprint, ttlMs}], forgetOperations = [{kind, id}]}
    — forget (replace mode): reservations touched since Redis' data diverged from the ledger; their
    records go (a commit or refund Redis alone remembers must not act on the ledger's pool), and
    those the ledger has open come back with the holds. operations: grant and adjustment ids the
    ledger holds, remembered again (a retry replays); forgetOperations: ids only a replaced timeline
    applied (a retry applies them to the ledger's pool).
    ARGV[6] '' to restore, or the pool's expected sequence number to replace.
  Output: JSON {restored = true, dropped = <holds dropped>, mark = <Redis time as a stream entry id:
    every event of the pool appended before this call has a smaller id, every one after a larger>}
    or, in replace mode when the pool moved on, {restored = false, seq = <its sequence number now>};
    errors: ACCOUNT_EXISTS (restore mode).
]]
--- @include "includes/numbers"
--- @include "includes/keys"
--- @include "includes/fields"
--- @include "includes/context"

local ctx = newContext(KEYS, ARGV)
local pool = cjson.decode(ARGV[SCRIPT_ARGS])
local expectedSeq = ARGV[SCRIPT_ARGS + 1]
local key = accountKey(ctx.P, pool.id)

local function writeHash(hashKey, fields)
  local args = {}
  for field, value in pairs(fields) do
    args[#args + 1] = field
    args[#args + 1] = value
  end
  if #args > 0 then redis.call('HSET', hashKey, unpack(args)) end
end

-- Replace mode: what Redis has of this pool goes, after noting the expiry of holds still open.
local openExpiry = {}
local dropped = 0
if expectedSeq == '' then
  if redis.call('EXISTS', key) == 1 then return cjson.encode({ e = 'ACCOUNT_EXISTS', account_id = pool.id }) end
else
  local seq = redis.call('HGET', key, 'seq') or '0'
  if seq ~= expectedSeq then return cjson.encode({ restored = false, seq = seq }) end
  local holdsKey = poolHoldsKey(ctx.P, pool.id)
  for _, id in ipairs(redis.call('ZRANGE', holdsKey, 0, -1)) do
    local state, exp = unpack(redis.call('HMGET', reservationKey(ctx.P, id), 'state', 'exp'))
    if state == 'H' and exp then openExpiry[id] = exp end
    redis.call('DEL', reservationKey(ctx.P, id))
    redis.call('ZREM', expiryKey(ctx.P), id)
    dropped = dropped + 1
  end
  for _, id in ipairs(pool.forget or {}) do
    redis.call('DEL', reservationKey(ctx.P, id))
    redis.call('ZREM', expiryKey(ctx.P), id)
  end
  redis.call('DEL', key, holdsKey, promoKey(ctx.P, pool.id), promoAmountsKey(ctx.P, pool.id))
  for _, space in ipairs(pool.spaces) do redis.call('DEL', accountKey(ctx.P, space.id)) end
end

for _, op in ipairs(pool.forgetOperations or {}) do redis.call('DEL', operationKey(ctx.P, pool.id, op.kind, op.id)) end
for _, op in ipairs(pool.operations or {}) do
  redis.call('SET', operationKey(ctx.P, pool.id, op.kind, op.id), op.fingerprint, 'PX', op.ttlMs)
end
writeHash(key, pool.fields)
for _, space in ipairs(pool.spaces) do writeHash(accountKey(ctx.P, space.id), space.fields) end
for _, promo in ipairs(pool.promos) do
  redis.call('ZADD', promoKey(ctx.P, pool.id), promo.expires, promo.id)
  redis.call('HSET', promoAmountsKey(ctx.P, pool.id), promo.id, promo.left)
end
for _, hold in ipairs(pool.holds) do
  local expires = hold.expires
  if openExpiry[hold.id] then
    expires = openExpiry[hold.id]
    hold.fields.exp = expires
    dropped = dropped - 1
  end
  writeHash(reservationKey(ctx.P, hold.id), hold.fields)
  redis.call('ZADD', poolHoldsKey(ctx.P, pool.id), expires, hold.id)
  redis.call('ZADD', expiryKey(ctx.P), expires, hold.id)
end
local now = redis.call('TIME')
local mark = now[1] .. string.format('%03d', math.floor(tonumber(now[2]) / 1000)) .. '-0'
return cjson.encode({ restored = true, dropped = dropped, mark = mark })
