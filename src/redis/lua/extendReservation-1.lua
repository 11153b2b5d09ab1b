--[[
  Keeps a hold alive (a long streaming call) and may grow it. Growing follows the rules of a reserve
  (refused with INSUFFICIENT_CREDITS, nothing changed) and is idempotent on the request id.
  Input (after the shared arguments):
    ARGV[5] reservation id   ARGV[6] ttl ms (0: keep the expiry)   ARGV[7] additional credits
    ARGV[8] request id ('' only when additional credits is 0)
  Output: JSON reservation; errors: RESERVATION_NOT_FOUND, RESERVATION_COMMITTED,
    RESERVATION_RELEASED, RESERVATION_EXPIRED, INSUFFICIENT_CREDITS, IDEMPOTENCY_KEY_REUSED
    (the request id was used to grow this hold by another amount). A replay keeps the first expiry.
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
local reservationId, ttlMs, additional, requestId = ARGV[a], tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2]), ARGV[a + 3]

local reservation, account, pool, space = openReservation(ctx, reservationId)
if not reservation then return fail(ctx, account, pool) end

if reservation.f.state ~= 'H' then return fail(ctx, notHeldReason(reservation), { reservation_id = reservationId }) end

local replayed = false
local extensionField = 'x/' .. requestId
local earlier = reservation.f[extensionField]
if additional > 0 and earlier and tonumber(earlier) ~= additional then
  return fail(ctx, 'IDEMPOTENCY_KEY_REUSED', { request_id = requestId })
elseif additional > 0 and earlier then
  replayed = true
elseif additional > 0 then
  local deltas = newDeltas()
  local portions, reason, details = holdCredits(ctx, pool, space, additional, deltas)
  if not portions then return fail(ctx, reason, details) end
  local all = decodePortions(reservation.f.portions)
  for _, p in ipairs(portions) do all[#all + 1] = p end
  setText(reservation, 'portions', encodePortions(all))
  addNum(reservation, 'held', additional)
  setNum(reservation, extensionField, additional)
  appendEvent(ctx, pool, 'extend', deltaFields(deltas, {
    space = reservation.f.space, user = reservation.f.user, feature = reservation.f.feature,
    reservation = reservationId, held = intString(additional), op_id = requestId,
  }))
end
if ttlMs > 0 and not replayed then
  local expiresAt = ctx.now + ttlMs
  setNum(reservation, 'exp', expiresAt)
  redis.call('ZADD', poolHoldsKey(ctx.P, pool.id), intString(expiresAt), reservationId)
  redis.call('ZADD', expiryKey(ctx.P), intString(expiresAt), reservationId)
end
return finish(ctx, reservationView(reservation, balanceView(ctx, account, pool, space), replayed))
