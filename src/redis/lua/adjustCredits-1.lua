--[[
  A support correction. A positive delta adds pack credits; a negative one removes credits in burn
  order (never overage) and is refused when the pool does not have them: never below zero.
  Idempotent on the adjustment id.
  Input (after the shared arguments):
    ARGV[5] account id   ARGV[6] delta (signed)   ARGV[7] adjustment id   ARGV[8] reason
    ARGV[9] actor   ARGV[10] adjustment id retention ms   ARGV[11] pool max
  Output: JSON balance; errors: ACCOUNT_NOT_FOUND, MOVED, IDEMPOTENCY_KEY_REUSED,
    ADJUSTMENT_EXCEEDS_BALANCE, POOL_LIMIT_EXCEEDED.
]]
--- @include "includes/numbers"
--- @include "includes/keys"
--- @include "includes/fields"
--- @include "includes/context"
--- @include "includes/plans"
--- @include "includes/periodBounds"
--- @include "includes/ledger"
--- @include "includes/pricing"
--- @include "includes/portions"
--- @include "includes/upkeep"
--- @include "includes/holds"
--- @include "includes/accounts"
--- @include "includes/reservations"
--- @include "includes/settings"

local ctx = newContext(KEYS, ARGV)
local a = SCRIPT_ARGS
local deltaText, adjustmentId, reason, actor = ARGV[a + 1], ARGV[a + 2], ARGV[a + 3], ARGV[a + 4]
local retentionMs, poolMax = ARGV[a + 5], tonumber(ARGV[a + 6])
local account, pool, space = openAccount(ctx, ARGV[a])
if not account then return fail(ctx, pool, space) end

local seen = checkOperation(ctx, pool, 'adjust', adjustmentId, deltaText)
if seen == 'reused' then return fail(ctx, 'IDEMPOTENCY_KEY_REUSED', { adjustment_id = adjustmentId }) end
if seen == 'replay' then return finish(ctx, balanceView(ctx, account, pool, space)) end

local delta = tonumber(deltaText)
local deltas = newDeltas()
if delta > 0 then
  if not poolRoomFor(pool, delta, poolMax) then
    return fail(ctx, 'POOL_LIMIT_EXCEEDED', { pool_max = intString(poolMax) })
  end
  addNum(pool, 'pack', delta)
  deltas.pack = delta
else
  local removable = poolSpendable(ctx, pool) - math.max(0, getNum(pool, 'ovg_limit') - getNum(pool, 'ovg'))
  if -delta > removable then
    return fail(ctx, 'ADJUSTMENT_EXCEEDS_BALANCE', { required = intString(-delta), available = intString(removable) })
  end
  takeCredits(ctx, pool, -delta, false, deltas)
end
rememberOperation(ctx, pool, 'adjust', adjustmentId, deltaText, retentionMs)
appendEvent(ctx, pool, 'adjust', deltaFields(deltas, {
  space = space and account.id or '', op_id = adjustmentId, reason = reason, actor = actor,
}))
return finish(ctx, balanceView(ctx, account, pool, space))
