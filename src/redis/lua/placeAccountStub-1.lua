--[[
  Reserves a space's id in its home partition with a stub pointing to its parent's partition, before
  the space is created there (UpsertAccount then runs in the parent's partition). Calls naming the
  space find the stub and follow it (MOVED).
  Input (after the shared arguments): ARGV[5] account id   ARGV[6] partition of the parent
  Output: JSON {}; errors: PARENT_IMMUTABLE (the id is taken by an account living elsewhere).
]]
--- @include "includes/numbers"
--- @include "includes/keys"
--- @include "includes/fields"
--- @include "includes/context"

local ctx = newContext(KEYS, ARGV)
local accountId, partition = ARGV[SCRIPT_ARGS], ARGV[SCRIPT_ARGS + 1]
local key = accountKey(ctx.P, accountId)
local moved = redis.call('HGET', key, 'moved')
if moved == partition then return cjson.encode({}) end
if moved or redis.call('EXISTS', key) == 1 then
  return cjson.encode({ e = 'PARENT_IMMUTABLE', account_id = accountId })
end
redis.call('HSET', key, 'moved', partition)
return cjson.encode({})
