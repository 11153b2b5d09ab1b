--[[
  Amounts are stored and returned as decimal text. Lua numbers are doubles: every amount is bounded
  below 2^53 by the limits (src/config/limits.ts), so arithmetic on them is exact, but Lua's own
  tostring prints 10^15 as "1e+15". intString prints an integral double exactly, as '%.0f' does;
  below 2^53 it prints through '%d' (an integer conversion, far cheaper than a double's), zero and
  negative zero ('-0', as '%.0f' prints it) without any.
  Arguments to redis.call are text, literals included ('1', not 1): Redis prints a Lua number with
  snprintf before running the command.
]]
local INT_EXACT_MAX = 2 ^ 53

local function intString(n)
  if n % 1 == 0 and n < INT_EXACT_MAX and n > -INT_EXACT_MAX then
    if n == 0 then return 1 / n > 0 and '0' or '-0' end
    return string.format('%d', n)
  end
  return string.format('%.0f', n)
end

-- A stored field (or false/nil when absent) as a number; absent means 0. '0', the most common
-- stored amount, skips tonumber (which parses the text twice in Redis's Lua 5.1).
local function num(value)
  if not value or value == '' or value == '0' then return 0 end
  return tonumber(value)
end
