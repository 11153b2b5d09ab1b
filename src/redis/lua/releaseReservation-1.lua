--[[
  Releases a held reservation: the AI call failed, nothing is charged and the held credits go back.
  A repeat returns the first answer.
  Input (after the shared arguments): ARGV[5] reservation id   ARGV[6] reason
  Output: JSON {reservation_id, released, replayed, balance};
    errors: RESERVATION_NOT_FOUND, RESERVATION_COMMITTED, RESERVATION_EXPIRED.
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
local reservationId, reason = ARGV[a], ARGV[a + 1]

local reservation, account, pool, space = openReservation(ctx, reservationId)
if not reservation then return fail(ctx, account, pool) end

local function reply(replayed)
  return finish(ctx, {
    reservation_id = reservationId, released = reservation.f.released, replayed = replayed,
    balance = balanceView(ctx, account, pool, space),
  })
end

if reservation.f.state == 'R' then return reply(true) end
if reservation.f.state ~= 'H' then return fail(ctx, notHeldReason(reservation), { reservation_id = reservationId }) end
settleWithoutCharge(ctx, pool, reservation, 'R', 'release', reason)
return reply(false)
