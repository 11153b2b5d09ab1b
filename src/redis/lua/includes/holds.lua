--[[
  The end of a hold without a charge (release or expiry): its portions go back to the pool, the pool's
  held total and the space's cap usage shrink, the reservation leaves both expiry indexes, and it is
  kept (settledRetentionMs) so repeated calls get the same answer. Returns the credits returned.
]]
local function settleWithoutCharge(ctx, pool, reservation, state, kind, reason)
  local held = getNum(reservation, 'held')
  local deltas = newDeltas()
  returnPortions(ctx, pool, decodePortions(reservation.f.portions), false, deltas)
  addNum(pool, 'held', -held)
  local spaceId = reservation.f.space
  if spaceId and spaceId ~= '' then
    local space = getRecord(ctx, accountKey(ctx.P, spaceId))
    if space and space.f.sps == reservation.f.sps then addNum(space, 'sused', -held) end
  end
  setText(reservation, 'state', state)
  setNum(reservation, 'released', held)
  setText(reservation, 'settled', nowText(ctx))
  if reason and reason ~= '' then setText(reservation, 'reason', reason) end
  redis.call('ZREM', poolHoldsKey(ctx.P, pool.id), reservation.id)
  redis.call('ZREM', expiryKey(ctx.P), reservation.id)
  redis.call('PEXPIRE', reservation.key, ctx.settledRetentionMs)
  appendEvent(ctx, pool, kind, deltaFields(deltas, {
    space = reservation.f.space, user = reservation.f.user, feature = reservation.f.feature,
    reservation = reservation.id, held = intString(-held), reason = reason,
  }))
  return held
end

local function expireHold(ctx, pool, reservation)
  return settleWithoutCharge(ctx, pool, reservation, 'E', 'expire', 'ttl')
end

-- Loads a reservation record by id (nil when unknown or past its retention).
local function getReservation(ctx, reservationId)
  local reservation = getRecord(ctx, reservationKey(ctx.P, reservationId))
  if reservation then reservation.id = reservationId end
  return reservation
end

-- Releases up to `max` holds of this pool whose TTL has passed.
local function expireDueHolds(ctx, pool, max)
  local holdsKey = poolHoldsKey(ctx.P, pool.id)
  local due = redis.call('ZRANGEBYSCORE', holdsKey, '-inf', nowText(ctx), 'LIMIT', '0', max)
  for i = 1, #due do
    local reservationId = due[i]
    local reservation = getReservation(ctx, reservationId)
    if reservation and reservation.f.state == 'H' then
      expireHold(ctx, pool, reservation)
    else
      redis.call('ZREM', holdsKey, reservationId)
    end
  end
  return #due
end
