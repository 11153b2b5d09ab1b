--[[
  ceil(a / b) for integers a >= 0, b > 0 whose product terms stay below 2^53: the double division is
  corrected with exact integer checks.
]]
local function ceilDiv(a, b)
  local q = math.floor(a / b)
  local rest = a - q * b
  if rest < 0 then
    q = q - 1
    rest = rest + b
  elseif rest >= b then
    q = q + 1
    rest = rest - b
  end
  if rest > 0 then q = q + 1 end
  return q
end

--[[
  Credits for `units` at `credits` per `perUnits` units, rounded up, at least minCredits
  (perUnits 0: a flat price per operation). Splitting units = q*perUnits + r keeps every product exact
  (limits: credits <= 10^6, perUnits <= 10^9, units <= 10^15). Returns nil above creditsMax.
]]
local function priceOf(units, credits, perUnits, minCredits, creditsMax)
  local cost
  if perUnits == 0 then
    cost = credits
  else
    local q = math.floor(units / perUnits)
    local r = units - q * perUnits
    if r < 0 then q = q - 1; r = r + perUnits elseif r >= perUnits then q = q + 1; r = r - perUnits end
    if credits > 0 and q > math.floor(creditsMax / credits) then return nil end
    cost = q * credits + ceilDiv(r * credits, perUnits)
  end
  if cost < minCredits then cost = minCredits end
  if cost > creditsMax then return nil end
  return cost
end
