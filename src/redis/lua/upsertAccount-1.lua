--[[
  Creates or updates an account. A root account gets its plan's allowance for the period its billing
  anchor puts now in; a space (parent id) draws on its parent's pool, in the parent's partition.
  The billing anchor and the parent cannot change once set; a plan change follows ChangePlan's rules;
  a new trial amount moves the trial's remaining credits by the difference.
  Input (after the shared arguments):
    ARGV[5] account id   ARGV[6] plan ('' for a space)   ARGV[7] plan monthly credits
    ARGV[8] plan overage limit   ARGV[9] billing anchor ms ('' : now, or keep)
    ARGV[10] parent id ('' none or keep)   ARGV[11] space cap ('' none)   ARGV[12] trial credits
    ARGV[13] trial end ms ('0' none)   ARGV[14] low balance threshold
    ARGV[15] low balance percent of the allowance (0-100; a root's setting: alerts are per pool)
  Output: JSON account; errors: MOVED, PARENT_IMMUTABLE, PARENT_NOT_FOUND, PARENT_IS_SPACE,
    ANCHOR_IMMUTABLE, PLAN_REQUIRED, SPACE_SETTING.
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
local accountId, planId, monthly, overageLimit = ARGV[a], ARGV[a + 1], ARGV[a + 2], ARGV[a + 3]
local anchor, parentId, cap = ARGV[a + 4], ARGV[a + 5], ARGV[a + 6]
local trialCredits, trialEnd, low, lowPercent = ARGV[a + 7], ARGV[a + 8], ARGV[a + 9], ARGV[a + 10]

local account = getRecord(ctx, accountKey(ctx.P, accountId))
if account and account.f.moved then return fail(ctx, 'MOVED', { partition = account.f.moved, account_id = accountId }) end
local existingParent = account and account.f.parent or ''
if account and parentId ~= '' and parentId ~= existingParent then
  return fail(ctx, 'PARENT_IMMUTABLE', { account_id = accountId, parent_id = existingParent })
end
if parentId == '' then parentId = existingParent end

if parentId ~= '' then
  -- A space: no plan or trial of its own.
  if planId ~= '' or trialCredits ~= '0' or lowPercent ~= '0' then return fail(ctx, 'SPACE_SETTING', { account_id = accountId }) end
  local parent = getRecord(ctx, accountKey(ctx.P, parentId))
  if not parent then return fail(ctx, 'PARENT_NOT_FOUND', { parent_id = parentId }) end
  if parent.f.moved or (parent.f.parent and parent.f.parent ~= '') then
    return fail(ctx, 'PARENT_IS_SPACE', { parent_id = parentId })
  end
  parent.id = parentId
  rollPeriod(ctx, parent)
  if not account then
    account = newRecord(ctx, accountKey(ctx.P, accountId))
    setText(account, 'parent', parentId)
    setText(account, 'created', nowText(ctx))
    setText(account, 'sps', parent.f.ps)
    setNum(account, 'sused', 0)
  end
  account.id = accountId
  setText(account, 'cap', cap)
  setText(account, 'low', low)
  recordSettings(ctx, account, parent)
  return finish(ctx, accountView(account, parent))
end

if planId == '' then return fail(ctx, 'PLAN_REQUIRED', { account_id = accountId }) end
if not account then
  local anchorMs = ctx.now
  if anchor ~= '' then anchorMs = tonumber(anchor) end
  local startMs, endMs = periodBounds(anchorMs, ctx.now)
  account = newRecord(ctx, accountKey(ctx.P, accountId))
  account.id = accountId
  account.f = {
    plan = planId, next_plan = '', anchor = intString(anchorMs), ps = intString(startMs), pe = intString(endMs),
    allow_total = monthly, allow = monthly, ovg_limit = overageLimit, ovg = '0', ae = '1', held = '0',
    trial_total = trialCredits, trial = trialCredits, trial_end = trialEnd, pack = '0', promo = '0',
    low = low, lowp = lowPercent, created = nowText(ctx), seq = '0', parent = '',
  }
  appendEvent(ctx, account, 'account_created', {
    allowance = monthly, trial = trialCredits, plan = planId,
    period_start = intString(startMs), period_end = intString(endMs),
  })
  recordSettings(ctx, account, account)
  return finish(ctx, accountView(account, account))
end

account.id = accountId
if anchor ~= '' and anchor ~= account.f.anchor then
  return fail(ctx, 'ANCHOR_IMMUTABLE', { account_id = accountId, billing_anchor = account.f.anchor })
end
rollPeriod(ctx, account)
expireTrial(ctx, account)
applyPlanChange(ctx, account, planId, monthly, overageLimit)
local trialDelta = tonumber(trialCredits) - getNum(account, 'trial_total')
if trialDelta ~= 0 or trialEnd ~= account.f.trial_end then
  local trial = getNum(account, 'trial')
  local newTrial = math.max(0, trial + trialDelta)
  if tonumber(trialEnd) <= ctx.now then newTrial = 0 end
  setText(account, 'trial_total', trialCredits)
  setText(account, 'trial_end', trialEnd)
  setNum(account, 'trial', newTrial)
  if newTrial ~= trial then appendEvent(ctx, account, 'trial_changed', { trial = intString(newTrial - trial) }) end
end
setText(account, 'low', low)
setText(account, 'lowp', lowPercent)
recordSettings(ctx, account, account)
return finish(ctx, accountView(account, account))
