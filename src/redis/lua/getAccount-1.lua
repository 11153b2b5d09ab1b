--[[
  An account's settings.
  Input (after the shared arguments): ARGV[5] account id
  Output: JSON account; errors: ACCOUNT_NOT_FOUND, MOVED.
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
local account, pool, space = openAccount(ctx, ARGV[SCRIPT_ARGS])
if not account then return fail(ctx, pool, space) end
return finish(ctx, accountView(account, pool))
