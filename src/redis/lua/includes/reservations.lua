--[[
  The reply shape of a reservation. States: H held, C committed, R released, E expired.
]]
local function reservationView(reservation, balance, replayed)
  local shadowRefusal = nil
  if (reservation.f.shr or '') ~= '' then
    shadowRefusal = { reason = reservation.f.shr, details = cjson.decode(reservation.f.shd) }
  end
  return {
    shadow_refusal = shadowRefusal,
    reservation_id = reservation.id,
    account_id = reservation.f.acct,
    feature = reservation.f.feature,
    held_credits = reservation.f.held,
    expires_at = reservation.f.exp,
    state = reservation.f.state,
    user_id = reservation.f.user or '',
    request_id = reservation.f.req or '',
    replayed = replayed,
    balance = balance,
  }
end

--[[
  Opens a reservation by id with the account it was made for and that account's pool (for the
  balance in replies). A hold past its TTL is expired first, so callers see its final state.
  Returns reservation, account, pool, space or nil, reason, details.
]]
local function openReservation(ctx, reservationId)
  local reservation = getReservation(ctx, reservationId)
  if not reservation then return nil, 'RESERVATION_NOT_FOUND', { reservation_id = reservationId } end
  local account, pool, space = openAccount(ctx, reservation.f.acct)
  if not account then return nil, pool, space end
  if reservation.f.state == 'H' and getNum(reservation, 'exp') <= ctx.now then
    expireHold(ctx, pool, reservation)
  end
  return reservation, account, pool, space
end

-- A refusal for a reservation that is no longer held.
local function notHeldReason(reservation)
  local state = reservation.f.state
  if state == 'C' then return 'RESERVATION_COMMITTED' end
  if state == 'R' then return 'RESERVATION_RELEASED' end
  return 'RESERVATION_EXPIRED'
end

--[[
  Holds `amount` more credits for a reservation (reserve or extend): the same checks for both.
  Returns portions, or nil, reason, details when the credits are not there (nothing changed).
]]
local function holdCredits(ctx, pool, space, amount, deltas)
  local available = availableFor(ctx, pool, space)
  if amount > available then
    return nil, 'INSUFFICIENT_CREDITS', {
      required = intString(amount), available = intString(available),
      held = intString(getNum(pool, 'held')), period_end = pool.f.pe,
    }
  end
  local portions = takeCredits(ctx, pool, amount, true, deltas)
  addNum(pool, 'held', amount)
  if space then addNum(space, 'sused', amount) end
  return portions
end
