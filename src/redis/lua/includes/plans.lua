--[[
  The product's plan table arrives as one ARGV string "|id/monthly_credits/overage_limit|..."
  (ids never contain '|' or '/'), built once by the TypeScript config loader. It is only read when a
  period rolls over or a plan changes, so a config change applies to every account from its next period.
  Returns monthly, overageLimit as text, or nil when the plan is not in the config.
]]
local function planLookup(plans, planId)
  local at = string.find(plans, '|' .. planId .. '/', 1, true)
  if not at then return nil end
  local _, _, monthly, overageLimit = string.find(plans, '^|[^/]+/(%d+)/(%d+)', at)
  return monthly, overageLimit
end
