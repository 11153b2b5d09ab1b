--[[
  Adds credits to the pool an account draws on (a space's grant goes to its parent): a PACK never
  expires; a PROMO grant may expire and is burnt by soonest expiry. Granted once per grant id.
  Input (after the shared arguments):
    ARGV[5] account id   ARGV[6] kind (PACK | PROMO)   ARGV[7] credits   ARGV[8] grant id
    ARGV[9] expires ms ('' never)   ARGV[10] reason   ARGV[11] grant id retention ms   ARGV[12] pool max
  Output: JSON balance; errors: ACCOUNT_NOT_FOUND, MOVED, IDEMPOTENCY_KEY_REUSED, POOL_LIMIT_EXCEEDED.
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

-- A grant without an expiry sorts after every dated one (2^53 - 1 ms).
local NEVER_MS = '9007199254740991'

local ctx = newContext(KEYS, ARGV)
local a = SCRIPT_ARGS
local kind, creditsText, grantId, expiresMs, reason = ARGV[a + 1], ARGV[a + 2], ARGV[a + 3], ARGV[a + 4], ARGV[a + 5]
local retentionMs, poolMax = ARGV[a + 6], tonumber(ARGV[a + 7])
local account, pool, space = openAccount(ctx, ARGV[a])
if not account then return fail(ctx, pool, space) end

local fingerprint = kind .. '/' .. creditsText .. '/' .. expiresMs
local seen = checkOperation(ctx, pool, 'grant', grantId, fingerprint)
if seen == 'reused' then return fail(ctx, 'IDEMPOTENCY_KEY_REUSED', { grant_id = grantId }) end
if seen == 'new' and kind == 'PROMO' and redis.call('ZSCORE', promoKey(ctx.P, pool.id), grantId) then
  seen = 'reused'
  return fail(ctx, 'IDEMPOTENCY_KEY_REUSED', { grant_id = grantId })
end
if seen == 'replay' then return finish(ctx, balanceView(ctx, account, pool, space)) end

local credits = tonumber(creditsText)
if not poolRoomFor(pool, credits, poolMax) then
  return fail(ctx, 'POOL_LIMIT_EXCEEDED', { pool_max = intString(poolMax) })
end
local fields = { space = space and account.id or '', op_id = grantId, reason = reason }
if kind == 'PACK' then
  addNum(pool, 'pack', credits)
  fields.pack = creditsText
else
  if expiresMs == '' then expiresMs = NEVER_MS end
  redis.call('ZADD', promoKey(ctx.P, pool.id), expiresMs, grantId)
  redis.call('HSET', promoAmountsKey(ctx.P, pool.id), grantId, creditsText)
  addNum(pool, 'promo', credits)
  refreshPromoNext(ctx, pool)
  fields.promo = creditsText
  fields.promo_detail = grantId .. '=' .. creditsText
  fields.expires_at = expiresMs
end
rememberOperation(ctx, pool, 'grant', grantId, fingerprint, retentionMs)
appendEvent(ctx, pool, 'grant', fields)
return finish(ctx, balanceView(ctx, account, pool, space))
