--[[
  Moves a root account to another plan: an upgrade (more monthly credits) resets the allowance to the
  new plan's full amount now, the period end stays; a downgrade waits for the next period. Choosing
  the current plan again cancels a pending downgrade.
  Input (after the shared arguments): ARGV[5] account id   ARGV[6] plan   ARGV[7] plan monthly credits
    ARGV[8] plan overage limit
  Output: JSON account; errors: ACCOUNT_NOT_FOUND, MOVED, ACCOUNT_IS_SPACE.
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
local account, pool, space = openAccount(ctx, ARGV[a])
if not account then return fail(ctx, pool, space) end
if space then return fail(ctx, 'ACCOUNT_IS_SPACE', { account_id = account.id, parent_id = pool.id }) end
applyPlanChange(ctx, pool, ARGV[a + 1], ARGV[a + 2], ARGV[a + 3])
recordSettings(ctx, account, pool)
return finish(ctx, accountView(account, pool))
