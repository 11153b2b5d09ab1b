-- What the pool could give a new hold: live buckets plus overage room. Kept in the context while the
-- pool is unchanged (the reply's balance and the low-balance watch want it at the same moment).
local function poolSpendable(ctx, pool)
  if ctx.spendablePool == pool and ctx.spendableAt == pool.v then return ctx.spendable end
  local trial = 0
  if getNum(pool, 'trial_end') > ctx.now then trial = getNum(pool, 'trial') end
  local room = getNum(pool, 'ovg_limit') - getNum(pool, 'ovg')
  if room < 0 then room = 0 end
  local spendable = trial + getNum(pool, 'allow') + getNum(pool, 'promo') + getNum(pool, 'pack') + room
  ctx.spendablePool, ctx.spendableAt, ctx.spendable = pool, pool.v, spendable
  return spendable
end

-- total × percent / 100 rounded up, exact below 2^53 (no intermediate product above it).
local function percentOf(total, percent)
  local whole = math.floor(total / 100)
  return whole * percent + math.ceil((total - whole * 100) * percent / 100)
end

-- The low-balance threshold: the larger of `low` (credits) and `lowp` percent of the allowance.
local function lowThreshold(pool)
  local threshold = getNum(pool, 'low')
  local percent = getNum(pool, 'lowp')
  local byPercent = 0 -- what percentOf gives for 0 percent
  if percent ~= 0 then byPercent = percentOf(getNum(pool, 'allow_total'), percent) end
  if byPercent > threshold then threshold = byPercent end
  return threshold
end

local ALERT_NAMES = { low = 'low', exh = 'exhausted', [''] = 'recovered' }

--[[
  Balance alerts and auto-refill, decided where balances change (never by polling): runs as a script
  saves (finish / fail) for the pool it opened.
  - Alert state `al` ('' | 'low' | 'exh') changes at most once per crossing, each change appending an
    `alert` event: low (available, holds counted, at or below the threshold), exhausted (nothing
    available, or a reserve refused for credits), recovered (back above). `alv` keeps what was
    available at exhaustion, so a refusal with credits left reads as recovered only once they rise.
  - Auto-refill: below `rft` with none in flight (`rfp` empty) marks one in flight and appends
    `refill_due`; the refill worker clears `rfp` when that refill ends (setRefill).
]]
local function watchPool(ctx)
  local pool = ctx.pool
  if not pool or not pool.f.seq then return end
  local available = poolSpendable(ctx, pool)
  local threshold = lowThreshold(pool)
  local state = pool.f.al or ''
  local new = ''
  if ctx.refusedForCredits or available <= 0 then new = 'exh'
  elseif state == 'exh' and available <= getNum(pool, 'alv') then new = 'exh'
  elseif threshold > 0 and available <= threshold then new = 'low' end
  if new ~= state then
    setText(pool, 'al', new)
    if new == 'exh' then setNum(pool, 'alv', available) end
    appendEvent(ctx, pool, 'alert', {
      reason = ALERT_NAMES[new], detail = cjson.encode({ available = intString(available), threshold = intString(threshold) }),
    })
  end
  local refillBelow = getNum(pool, 'rft')
  if refillBelow > 0 and available < refillBelow and (pool.f.rfp or '') == '' then
    setText(pool, 'rfp', nowText(ctx))
    appendEvent(ctx, pool, 'refill_due', {
      detail = cjson.encode({ available = intString(available), threshold = intString(refillBelow) }),
    })
  end
end

--[[
  Opens the account a request names: the account itself, the pool it draws on (itself, or its parent
  for a space) and, for a space, the space. Both are brought up to date by lazy upkeep.
  A space's id may hash to another partition than its parent's: there a stub {moved = <partition>}
  stands in, and the caller retries in that partition (ids never move once placed).
  Returns account, pool, space (nil for a root) or nil, reason, details.
]]
local function openAccount(ctx, accountId)
  local account = getRecord(ctx, accountKey(ctx.P, accountId))
  if not account then return nil, 'ACCOUNT_NOT_FOUND', { account_id = accountId } end
  if account.f.moved then return nil, 'MOVED', { partition = account.f.moved } end
  account.id = accountId
  local pool, space = account, nil
  local parentId = account.f.parent
  if parentId and parentId ~= '' then
    pool = getRecord(ctx, accountKey(ctx.P, parentId))
    if not pool then return nil, 'ACCOUNT_NOT_FOUND', { account_id = parentId } end
    pool.id = parentId
    space = account
  end
  if not ctx.pool then
    ctx.pool = pool
    ctx.watch = watchPool
  end
  rollPeriod(ctx, pool)
  expireTrial(ctx, pool)
  expirePromos(ctx, pool)
  expireDueHolds(ctx, pool, ctx.lazyExpiryMax)
  if space then upkeepSpace(ctx, pool, space) end
  return account, pool, space
end

-- What is left of a space's per-period cap (holds included), or nil when it has none.
local function spaceRoom(space)
  if not space or not space.f.cap or space.f.cap == '' then return nil end
  local room = getNum(space, 'cap') - getNum(space, 'sused')
  if room < 0 then room = 0 end
  return room
end

local function availableFor(ctx, pool, space)
  local available = poolSpendable(ctx, pool)
  local room = spaceRoom(space)
  if room and room < available then available = room end
  return available
end

local function balanceView(ctx, account, pool, space)
  local available = availableFor(ctx, pool, space)
  local threshold = getNum(account, 'low')
  local trial = '0'
  if getNum(pool, 'trial_end') > ctx.now then trial = amountText(pool, 'trial') end
  local room = spaceRoom(space)
  return {
    account_id = account.id,
    plan = pool.f.plan or '',
    available = intString(available),
    held = amountText(pool, 'held'),
    allowance_remaining = amountText(pool, 'allow'),
    allowance_total = amountText(pool, 'allow_total'),
    trial_credits = trial,
    pack_credits = amountText(pool, 'pack'),
    grant_credits = amountText(pool, 'promo'),
    overage_used = amountText(pool, 'ovg'),
    overage_limit = amountText(pool, 'ovg_limit'),
    period_start = pool.f.ps,
    period_end = pool.f.pe,
    low_balance = threshold > 0 and available <= threshold,
    pool_account_id = pool.id,
    space_limit_remaining = room and intString(room) or nil,
    trial_ends_at = pool.f.trial_end or '0',
    pending_plan = pool.f.next_plan or '',
  }
end
