--[[
  Account settings: the reply shape of an account, and plan changes (shared by UpsertAccount and
  ChangePlan). An upgrade (more monthly credits) resets the allowance to the new plan's full amount at
  once and keeps the period end; anything else waits for the next period (next_plan).
]]
local function accountView(account, pool)
  local isSpace = account.f.parent and account.f.parent ~= ''
  return {
    account_id = account.id,
    plan = isSpace and '' or (account.f.plan or ''),
    billing_anchor = pool.f.anchor,
    parent_id = account.f.parent or '',
    space_limit_credits = (account.f.cap and account.f.cap ~= '') and account.f.cap or nil,
    trial_credits = isSpace and '0' or (account.f.trial_total or '0'),
    trial_ends_at = isSpace and '0' or (account.f.trial_end or '0'),
    low_balance_threshold = account.f.low or '0',
    low_balance_percent = isSpace and '0' or (account.f.lowp or '0'),
    pending_plan = isSpace and '' or (account.f.next_plan or ''),
    created_at = account.f.created,
  }
end

-- Account settings travel to Postgres through the ledger too (the flusher upserts them), so Redis
-- can be rebuilt from Postgres. A space's settings go on its pool's stream, naming the space.
local function recordSettings(ctx, account, pool)
  local isSpace = account.id ~= pool.id
  appendEvent(ctx, pool, 'account_settings', {
    space = isSpace and account.id or '', settings = cjson.encode(accountView(account, pool)),
  })
end

local function applyPlanChange(ctx, pool, planId, monthlyText, overageLimitText)
  if planId == pool.f.plan then
    setText(pool, 'next_plan', '')
    return
  end
  local monthly = tonumber(monthlyText)
  if monthly > getNum(pool, 'allow_total') then
    local allowanceDelta = monthly - getNum(pool, 'allow')
    startAllowance(pool, planId, monthlyText, overageLimitText)
    appendEvent(ctx, pool, 'plan_upgrade', { allowance = intString(allowanceDelta), plan = planId })
  else
    setText(pool, 'next_plan', planId)
  end
end

-- Refused when the pool would hold more than poolMax credits in its buckets.
local function poolRoomFor(pool, credits, poolMax)
  local total = getNum(pool, 'trial') + getNum(pool, 'allow') + getNum(pool, 'promo') + getNum(pool, 'pack')
  return total + credits <= poolMax
end

--[[
  Idempotency of grants and adjustments: the operation id remembers a fingerprint of its parameters.
  Returns 'new', 'replay' or 'reused' (same id, other parameters).
]]
local function checkOperation(ctx, pool, kind, opId, fingerprint)
  local earlier = redis.call('GET', operationKey(ctx.P, pool.id, kind, opId))
  if not earlier then return 'new' end
  if earlier == fingerprint then return 'replay' end
  return 'reused'
end

local function rememberOperation(ctx, pool, kind, opId, fingerprint, retentionMs)
  redis.call('SET', operationKey(ctx.P, pool.id, kind, opId), fingerprint, 'PX', retentionMs)
end
