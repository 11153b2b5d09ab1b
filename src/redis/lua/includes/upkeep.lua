--[[
  Lazy upkeep of a pool (a root account), run by every script that touches it (no cron):
  - a new period: the allowance becomes the plan's full amount (a pending downgrade applies now),
    overage resets, packs and grants are untouched;
  - an ended trial and expired promotional grants drop what is left of them;
  - holds past their TTL are released (at most ctx.lazyExpiryMax per call; the sweeper does the rest).
  Each transition appends its ledger event.
]]
-- Puts a pool on a plan with its full allowance; a new allowance epoch retires older held allowance.
local function startAllowance(pool, planId, monthlyText, overageLimitText)
  setText(pool, 'plan', planId)
  setText(pool, 'next_plan', '')
  setText(pool, 'allow_total', monthlyText)
  setText(pool, 'allow', monthlyText)
  setText(pool, 'ovg_limit', overageLimitText)
  addNum(pool, 'ae', 1)
end

local function rollPeriod(ctx, pool)
  if ctx.now < getNum(pool, 'pe') then return end
  local startMs, endMs = periodBounds(getNum(pool, 'anchor'), ctx.now)
  local planId = pool.f.next_plan
  if not planId or planId == '' then planId = pool.f.plan end
  local monthly, overageLimit = planLookup(ctx.plans, planId)
  if not monthly then
    -- The plan left the config: keep the amounts the account had rather than guess.
    monthly, overageLimit = pool.f.allow_total, pool.f.ovg_limit
  end
  local allowanceDelta = tonumber(monthly) - getNum(pool, 'allow')
  local overageDelta = -getNum(pool, 'ovg')
  startAllowance(pool, planId, monthly, overageLimit)
  setNum(pool, 'ovg', 0)
  setNum(pool, 'ps', startMs)
  setNum(pool, 'pe', endMs)
  appendEvent(ctx, pool, 'period_reset', {
    allowance = intString(allowanceDelta), overage = intString(overageDelta), plan = planId,
    period_start = intString(startMs), period_end = intString(endMs),
  })
end

local function expireTrial(ctx, pool)
  local trial = getNum(pool, 'trial')
  if trial > 0 and getNum(pool, 'trial_end') <= ctx.now then
    setNum(pool, 'trial', 0)
    appendEvent(ctx, pool, 'trial_expired', { trial = intString(-trial) })
  end
end

-- Keeps pool field promo_next = the soonest promotional expiry, so upkeep reads the zset only when due.
local function refreshPromoNext(ctx, pool)
  local first = redis.call('ZRANGE', promoKey(ctx.P, pool.id), '0', '0', 'WITHSCORES')
  setText(pool, 'promo_next', first[2] or '')
end

local function expirePromos(ctx, pool)
  local nextExpiry = pool.f.promo_next
  if not nextExpiry or nextExpiry == '' or tonumber(nextExpiry) > ctx.now then return end
  local zsetKey, amountsKey = promoKey(ctx.P, pool.id), promoAmountsKey(ctx.P, pool.id)
  local due = redis.call('ZRANGEBYSCORE', zsetKey, '-inf', nowText(ctx))
  for _, grantId in ipairs(due) do
    local left = num(redis.call('HGET', amountsKey, grantId))
    redis.call('ZREM', zsetKey, grantId)
    redis.call('HDEL', amountsKey, grantId)
    if left > 0 then
      addNum(pool, 'promo', -left)
      appendEvent(ctx, pool, 'grant_expired', {
        promo = intString(-left), promo_detail = grantId .. '=' .. intString(-left), op_id = grantId,
      })
    end
  end
  refreshPromoNext(ctx, pool)
end

-- A space's usage cap counts per period of its pool.
local function upkeepSpace(ctx, pool, space)
  if space.f.sps ~= pool.f.ps then
    setText(space, 'sps', pool.f.ps)
    setNum(space, 'sused', 0)
  end
end
