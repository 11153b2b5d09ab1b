--[[
  Amounts are stored and returned as decimal text. Lua numbers are doubles: every amount is bounded
  below 2^53 by the limits (src/config/limits.ts), so arithmetic on them is exact, but Lua's own
  tostring prints 10^15 as "1e+15". intString prints an integral double exactly.
]]
local function intString(n)
  return string.format('%.0f', n)
end

-- A stored field (or false/nil when absent) as a number; absent means 0.
local function num(value)
  if not value or value == '' then return 0 end
  return tonumber(value)
end
