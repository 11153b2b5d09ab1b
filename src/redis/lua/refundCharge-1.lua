--[[
  Gives back credits a committed reservation was charged: at most what it was charged, in total over
  all refunds. Credits go back in reverse burn order (overage first) to their buckets, or to packs
  when their bucket is gone. Idempotent on the refund id (kept on the reservation).
  Input (after the shared arguments):
    ARGV[5] reservation id   ARGV[6] credits ('' everything still refundable)   ARGV[7] refund id
    ARGV[8] reason
  Output: JSON balance; errors: RESERVATION_NOT_FOUND, RESERVATION_NOT_COMMITTED,
    IDEMPOTENCY_KEY_REUSED, REFUND_EXCEEDS_CHARGE.
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
local reservationId, creditsText, refundId, reason = ARGV[a], ARGV[a + 1], ARGV[a + 2], ARGV[a + 3]

local reservation, account, pool, space = openReservation(ctx, reservationId)
if not reservation then return fail(ctx, account, pool) end
if reservation.f.state ~= 'C' then
  return fail(ctx, 'RESERVATION_NOT_COMMITTED', { reservation_id = reservationId, state = reservation.f.state })
end

local refundField = 'rf/' .. refundId
local earlier = reservation.f[refundField]
if earlier then
  if creditsText == '' or creditsText == earlier then return finish(ctx, balanceView(ctx, account, pool, space)) end
  return fail(ctx, 'IDEMPOTENCY_KEY_REUSED', { refund_id = refundId })
end

local refundable = getNum(reservation, 'charged') - getNum(reservation, 'refunded')
local amount = refundable
if creditsText ~= '' then amount = tonumber(creditsText) end
if amount > refundable or amount == 0 then
  return fail(ctx, 'REFUND_EXCEEDS_CHARGE', { requested = intString(amount), refundable = intString(refundable) })
end

-- Take the refund from the end of the charged portions (the last burnt comes back first).
local charged = decodePortions(reservation.f.cportions)
local back, left = {}, amount
for i = #charged, 1, -1 do
  local p = charged[i]
  local n = math.min(left, p.n)
  if n > 0 then
    back[#back + 1] = { b = p.b, tag = p.tag, n = n }
    p.n = p.n - n
    left = left - n
  end
end
local kept = {}
for _, p in ipairs(charged) do if p.n > 0 then kept[#kept + 1] = p end end

local deltas = newDeltas()
returnPortions(ctx, pool, back, true, deltas)
if space and space.f.sps == reservation.f.sps then addNum(space, 'sused', -amount) end
setText(reservation, 'cportions', encodePortions(kept))
addNum(reservation, 'refunded', amount)
setNum(reservation, refundField, amount)
appendEvent(ctx, pool, 'refund', deltaFields(deltas, {
  space = reservation.f.space, user = reservation.f.user, feature = reservation.f.feature,
  reservation = reservationId, charged = intString(-amount), charged_overage = intString(-sumPortions(back, 'ovg')),
  op_id = refundId, reason = reason,
  period_start = pool.f.ps,
}))
return finish(ctx, balanceView(ctx, account, pool, space))
