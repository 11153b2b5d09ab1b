--[[
  The sweeper: releases holds of this partition whose TTL has passed, oldest first, so that no pool's
  held total stays inflated while nobody touches it.
  Input (after the shared arguments): ARGV[5] max holds to expire in this call
  Output: JSON {expired = <count>, credits = <credits returned>, more = <true when more are due>}.
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
local max = tonumber(ARGV[SCRIPT_ARGS])
local due = redis.call('ZRANGEBYSCORE', expiryKey(ctx.P), '-inf', nowText(ctx), 'LIMIT', '0', max)
local expired, credits = 0, 0
for _, reservationId in ipairs(due) do
  local reservation = getReservation(ctx, reservationId)
  if reservation and reservation.f.state == 'H' then
    local pool = getRecord(ctx, accountKey(ctx.P, reservation.f.pool))
    if pool then
      pool.id = reservation.f.pool
      rollPeriod(ctx, pool)
      credits = credits + expireHold(ctx, pool, reservation)
      expired = expired + 1
    end
  end
  redis.call('ZREM', expiryKey(ctx.P), reservationId)
end
return finish(ctx, { expired = expired, credits = intString(credits), more = #due == max })
