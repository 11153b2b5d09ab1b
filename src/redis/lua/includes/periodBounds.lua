--[[
  periodBounds include: monthly billing period containing a timestamp.

  Same algorithm as src/domain/periods.ts (keep them in sync).
  Period n (any integer; negative before the anchor) starts at the anchor's
  UTC day-of-month and time-of-day, n calendar months after the anchor month,
  with the day clamped to the last day of the target month (Jan 31 10:00 ->
  Feb 28/29 10:00 -> Mar 31 10:00 -> Apr 30 10:00). Every start is computed
  from the original anchor, so a clamped day does not stick.

  Redis Lua has no os.date/os.time, so civil <-> day-number conversion uses
  Howard Hinnant's days_from_civil / civil_from_days with math.floor integer
  division. All intermediates are integer-valued doubles (exact below 2^53).
  Valid for years 1970..9999.

  Defines:
    local function periodBounds(anchorMs, nowMs) -> startMs, endMs
  Inputs:  anchorMs - billing anchor, integer ms since the Unix epoch (UTC)
           nowMs    - current time, integer ms since the Unix epoch (UTC)
  Outputs: startMs  - start of the period containing nowMs (inclusive)
           endMs    - start of the next period (exclusive)
  Both outputs are Lua numbers (integer-valued doubles); format them with
  string.format('%.0f', x) before returning them to Redis.
  Helpers are prefixed period_ to avoid clashes when inlined.
]]

-- Days since 1970-01-01 for civil date y-m-d (m 1..12, d 1..31).
local function period_daysFromCivil(y, m, d)
  if m <= 2 then
    y = y - 1
  end
  local era = math.floor(y / 400)
  local yoe = y - era * 400                                   -- [0, 399]
  local mp
  if m > 2 then
    mp = m - 3
  else
    mp = m + 9
  end
  local doy = math.floor((153 * mp + 2) / 5) + d - 1          -- [0, 365]
  local doe = yoe * 365 + math.floor(yoe / 4) - math.floor(yoe / 100) + doy -- [0, 146096]
  return era * 146097 + doe - 719468
end

-- Civil date (y, m 1..12, d 1..31) for z days since 1970-01-01.
local function period_civilFromDays(z)
  z = z + 719468
  local era = math.floor(z / 146097)
  local doe = z - era * 146097                                -- [0, 146096]
  local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524)
    - math.floor(doe / 146096)) / 365)                        -- [0, 399]
  local y = yoe + era * 400
  local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100)) -- [0, 365]
  local mp = math.floor((5 * doy + 2) / 153)                  -- [0, 11]
  local d = doy - math.floor((153 * mp + 2) / 5) + 1          -- [1, 31]
  local m
  if mp < 10 then
    m = mp + 3
  else
    m = mp - 9
  end
  if m <= 2 then
    y = y + 1
  end
  return y, m, d
end

-- Number of days in month m (1..12) of year y.
local function period_daysInMonth(y, m)
  if m == 2 then
    if (y % 4 == 0 and y % 100 ~= 0) or y % 400 == 0 then
      return 29
    end
    return 28
  end
  if m == 4 or m == 6 or m == 9 or m == 11 then
    return 30
  end
  return 31
end

-- Start of period `months` relative to anchorMs (day clamped to month end).
local function period_addMonthsClamped(anchorMs, months)
  local days = math.floor(anchorMs / 86400000)
  local timeOfDayMs = anchorMs - days * 86400000
  local y, m, d = period_civilFromDays(days)
  local total = y * 12 + (m - 1) + months
  local ty = math.floor(total / 12)
  local tm = total - ty * 12 + 1
  local dim = period_daysInMonth(ty, tm)
  if d > dim then
    d = dim
  end
  return period_daysFromCivil(ty, tm, d) * 86400000 + timeOfDayMs
end

local function periodBounds(anchorMs, nowMs)
  if type(anchorMs) ~= 'number' or anchorMs ~= math.floor(anchorMs) then
    error('periodBounds: anchorMs must be an integer number of ms')
  end
  if type(nowMs) ~= 'number' or nowMs ~= math.floor(nowMs) then
    error('periodBounds: nowMs must be an integer number of ms')
  end
  local ay, am = period_civilFromDays(math.floor(anchorMs / 86400000))
  local ny, nm = period_civilFromDays(math.floor(nowMs / 86400000))
  -- Period n starts inside now's month, so n or n - 1 is the answer.
  local n = (ny - ay) * 12 + (nm - am)
  local startMs = period_addMonthsClamped(anchorMs, n)
  while startMs > nowMs do
    n = n - 1
    startMs = period_addMonthsClamped(anchorMs, n)
  end
  local endMs = period_addMonthsClamped(anchorMs, n + 1)
  while endMs <= nowMs do
    n = n + 1
    startMs = endMs
    endMs = period_addMonthsClamped(anchorMs, n + 1)
  end
  return startMs, endMs
end
