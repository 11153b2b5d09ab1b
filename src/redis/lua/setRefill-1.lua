--[[
  Auto-refill's Redis side: the threshold below which the reserve/commit path asks for a refill
  (a `refill_due` ledger event, one in flight per pool), and the end of an in-flight refill.
  Settings, payments and the monthly cap live in Postgres (src/payments/); this only detects.
  Input (after the shared arguments): ARGV[5] account id (a root)
    ARGV[6] threshold credits ('' keep, '0' off)   ARGV[7] '1' to end the refill in flight
  Output: JSON {account_id, threshold, pending = <ms since the refill was asked, '' none>};
    errors: ACCOUNT_NOT_FOUND, MOVED, ACCOUNT_IS_SPACE.
  Setting a threshold above what is available asks for a refill at once (the watch runs on save).
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

local ctx = newContext(KEYS, ARGV)
local a = SCRIPT_ARGS
local accountId, threshold, endPending = ARGV[a], ARGV[a + 1], ARGV[a + 2]
local account, pool, space = openAccount(ctx, accountId)
if not account then return fail(ctx, pool, space) end
if space then return fail(ctx, 'ACCOUNT_IS_SPACE', { account_id = accountId, parent_id = pool.id }) end
if threshold ~= '' then setText(pool, 'rft', threshold) end
if endPending == '1' then setText(pool, 'rfp', '') end
return finish(ctx, { account_id = accountId, threshold = pool.f.rft or '0', pending = pool.f.rfp or '' })
