--[[
  Holds credits for one AI operation, or refuses with INSUFFICIENT_CREDITS holding nothing.
  Input (after the shared arguments, see includes/context.lua):
    ARGV[5]  account id            ARGV[6]  request id (idempotency key)
    ARGV[7]  feature               ARGV[8]  units ('' none)
    ARGV[9]  credits ('' none: price the units)
    ARGV[10] price credits         ARGV[11] price per units (0: flat)   ARGV[12] price min credits
    ARGV[13] ttl ms                ARGV[14] user id ('' none)          ARGV[15] labels (JSON text)
    ARGV[16] request fingerprint   ARGV[17] reservation id to use when new
    ARGV[18] request id retention ms  ARGV[19] credits max
    ARGV[20] shadow mode ('1': a refusal holds nothing and lets the call go on, reported in shadow_refusal)
  Output: JSON reservation; a repeat of request id returns the original one (replayed = true);
    errors: ACCOUNT_NOT_FOUND, MOVED, IDEMPOTENCY_KEY_REUSED, INSUFFICIENT_CREDITS, COST_TOO_LARGE.
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

local ctx = newContext(KEYS, ARGV)
local a = SCRIPT_ARGS
local accountId, requestId, feature = ARGV[a], ARGV[a + 1], ARGV[a + 2]
local units, credits = ARGV[a + 3], ARGV[a + 4]
local priceCredits, pricePerUnits, priceMin = tonumber(ARGV[a + 5]), tonumber(ARGV[a + 6]), tonumber(ARGV[a + 7])
local ttlMs, userId, labels = tonumber(ARGV[a + 8]), ARGV[a + 9], ARGV[a + 10]
local fingerprint, newReservationId = ARGV[a + 11], ARGV[a + 12]
local requestRetentionMs, creditsMax = ARGV[a + 13], tonumber(ARGV[a + 14])
local shadowMode = ARGV[a + 15] == '1'

local account, pool, space = openAccount(ctx, accountId)
if not account then return fail(ctx, pool, space) end

local requestKeyName = requestKey(ctx.P, accountId, requestId)
local earlierId = redis.call('GET', requestKeyName)
if earlierId then
  local earlier = getReservation(ctx, earlierId)
  if earlier then
    if earlier.f.fp ~= fingerprint then
      return fail(ctx, 'IDEMPOTENCY_KEY_REUSED', { request_id = requestId, reservation_id = earlierId })
    end
    return finish(ctx, reservationView(earlier, balanceView(ctx, account, pool, space), true))
  end
end

local cost
if credits ~= '' then
  cost = tonumber(credits)
else
  cost = priceOf(num(units), priceCredits, pricePerUnits, priceMin, creditsMax)
  if not cost then return fail(ctx, 'COST_TOO_LARGE', { credits_max = intString(creditsMax) }) end
end

local deltas = newDeltas()
local portions, reason, details = holdCredits(ctx, pool, space, cost, deltas)
local shadowReason, shadowDetails = '', ''
if not portions then
  ctx.refusedForCredits = true
  if not shadowMode then return fail(ctx, reason, details) end
  -- Shadow mode: the refusal is recorded on the hold and reported, but the call goes on with
  -- nothing held; its Commit charges what the pool has and records the rest as shortfall.
  shadowReason, shadowDetails = reason, cjson.encode(details)
  portions, cost = {}, 0
end

local expiresAt = ctx.now + ttlMs
local heldText, expiresText = intString(cost), intString(expiresAt)
local reservation = newRecord(ctx, reservationKey(ctx.P, newReservationId))
reservation.id = newReservationId
reservation.f = {
  state = 'H', acct = accountId, pool = pool.id, space = space and accountId or '', user = userId,
  feature = feature, held = heldText, portions = encodePortions(portions), exp = expiresText,
  created = nowText(ctx), req = requestId, fp = fingerprint, sps = space and space.f.sps or '',
  pc = ARGV[a + 5], pu = ARGV[a + 6], pm = ARGV[a + 7], labels = labels,
}
if shadowReason ~= '' then reservation.f.shr, reservation.f.shd = shadowReason, shadowDetails end
redis.call('SET', requestKeyName, newReservationId, 'PX', requestRetentionMs)
redis.call('ZADD', poolHoldsKey(ctx.P, pool.id), expiresText, newReservationId)
redis.call('ZADD', expiryKey(ctx.P), expiresText, newReservationId)
appendEvent(ctx, pool, 'hold', deltaFields(deltas, {
  space = reservation.f.space, user = userId, feature = feature, reservation = newReservationId,
  held = heldText, labels = labels,
}))
return finish(ctx, reservationView(reservation, balanceView(ctx, account, pool, space), false))
