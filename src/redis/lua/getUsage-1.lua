--[[
  Committed usage of the current period from live counters: totals, per feature, per user and, for a
  root account, per space.
  Input (after the shared arguments): ARGV[5] account id
  Output: JSON {account_id, period_start, period_end, counters = [field, value, ...]} where fields are
    ops, credits, fo/<feature>, fc/<feature>, uo/<user>, uc/<user>, so/<space>, sc/<space>;
    errors: ACCOUNT_NOT_FOUND, MOVED.
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
local counters = redis.call('HGETALL', usageKey(ctx.P, account.id, pool.f.ps))
return finish(ctx, {
  account_id = account.id, period_start = pool.f.ps, period_end = pool.f.pe, counters = counters,
})
