--[[
  Charges a held reservation: by default what is held, or the actual cost given as credits or priced
  from units with the price the hold was made at. Less than held: the rest goes back. More: the excess
  comes from available credits, then overage room (within a space's cap); what still does not fit is
  recorded as shortfall, never charged. A reservation settles once: a repeat returns the first answer.
  Input (after the shared arguments):
    ARGV[5] reservation id   ARGV[6] units ('' none)   ARGV[7] credits ('' none)   ARGV[8] credits max   ARGV[9] usage retention after the period, ms
  Output: JSON {reservation_id, charged, overage, shortfall, released, replayed, balance};
    errors: RESERVATION_NOT_FOUND, RESERVATION_RELEASED, RESERVATION_EXPIRED, COST_TOO_LARGE.
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
local reservationId, units, credits, creditsMax = ARGV[a], ARGV[a + 1], ARGV[a + 2], tonumber(ARGV[a + 3])

local reservation, account, pool, space = openReservation(ctx, reservationId)
if not reservation then return fail(ctx, account, pool) end

local function reply(replayed)
  return finish(ctx, {
    reservation_id = reservationId, charged = reservation.f.charged, overage = reservation.f.c_ovg,
    shortfall = reservation.f.short, released = reservation.f.released, replayed = replayed,
    balance = balanceView(ctx, account, pool, space),
  })
end

if reservation.f.state == 'C' then return reply(true) end
if reservation.f.state ~= 'H' then return fail(ctx, notHeldReason(reservation), { reservation_id = reservationId }) end

local held = getNum(reservation, 'held')
local cost = held
if credits ~= '' then
  cost = tonumber(credits)
elseif units ~= '' then
  cost = priceOf(tonumber(units), tonumber(reservation.f.pc), tonumber(reservation.f.pu), tonumber(reservation.f.pm), creditsMax)
  if not cost then return fail(ctx, 'COST_TOO_LARGE', { credits_max = intString(creditsMax) }) end
end

local deltas = newDeltas()
local charged, giveBack = splitPortions(decodePortions(reservation.f.portions), cost)
returnPortions(ctx, pool, giveBack, false, deltas)
local released = sumPortions(giveBack)
local excess = cost - held
local shortfall = 0
if excess > 0 then
  local allowed = excess
  local room = spaceRoom(space)
  if room and room < allowed then allowed = room end
  local more, notTaken = takeCredits(ctx, pool, allowed, true, deltas)
  for i = 1, #more do charged[#charged + 1] = more[i] end
  shortfall = excess - allowed + notTaken
end
local chargedTotal = sumPortions(charged)

addNum(pool, 'held', -held)
if space then
  if space.f.sps == reservation.f.sps then addNum(space, 'sused', chargedTotal - held)
  else addNum(space, 'sused', math.max(0, chargedTotal - held)) end
end
setText(reservation, 'state', 'C')
setNum(reservation, 'charged', chargedTotal)
setNum(reservation, 'c_ovg', sumPortions(charged, 'ovg'))
setNum(reservation, 'short', shortfall)
setNum(reservation, 'released', released)
setText(reservation, 'cportions', encodePortions(charged))
setText(reservation, 'settled', nowText(ctx))
redis.call('ZREM', poolHoldsKey(ctx.P, pool.id), reservationId)
redis.call('ZREM', expiryKey(ctx.P), reservationId)
redis.call('PEXPIRE', reservation.key, ctx.settledRetentionMs)

-- Live usage of this period, for the account named (a space) and its pool.
local function countUsage(accountIdForUsage)
  local key = usageKey(ctx.P, accountIdForUsage, pool.f.ps)
  local feature, user = reservation.f.feature, reservation.f.user
  local creditsText = intString(chargedTotal)
  redis.call('HINCRBY', key, 'ops', '1')
  redis.call('HINCRBY', key, 'credits', creditsText)
  redis.call('HINCRBY', key, 'fo/' .. feature, '1')
  redis.call('HINCRBY', key, 'fc/' .. feature, creditsText)
  if user ~= '' then
    redis.call('HINCRBY', key, 'uo/' .. user, '1')
    redis.call('HINCRBY', key, 'uc/' .. user, creditsText)
  end
  if space and accountIdForUsage == pool.id then
    redis.call('HINCRBY', key, 'so/' .. space.id, '1')
    redis.call('HINCRBY', key, 'sc/' .. space.id, creditsText)
  end
  -- Relative to the injected clock, like every other time in the scripts.
  redis.call('PEXPIRE', key, intString(getNum(pool, 'pe') - ctx.now + tonumber(ARGV[a + 4])))
end
countUsage(pool.id)
if space then countUsage(space.id) end

appendEvent(ctx, pool, 'commit', deltaFields(deltas, {
  space = reservation.f.space, user = reservation.f.user, feature = reservation.f.feature,
  reservation = reservationId, held = intString(-held), charged = intString(chargedTotal),
  charged_overage = reservation.f.c_ovg, shortfall = intString(shortfall),
  period_start = pool.f.ps,
}))
return reply(false)
