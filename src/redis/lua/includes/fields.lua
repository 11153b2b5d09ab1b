--[[
  An account hash loaded into a Lua table of strings, with the fields changed since loading tracked so
  saveRecord writes them back in one HSET. Records: { key = <redis key>, id = <set by the caller>,
  f = {field = text}, dirty = {field = true} or false while none, v = <number of changes so far>,
  new = true for a record this call creates (newRecord: saved whole, every field) }. v lets a value
  computed from the fields be reused while they stay as they were (see poolSpendable). Fields are read with getNum (a number, absent = 0) and written
  with setText / setNum; nothing else changes f. (id = nil in a constructor gives the table room for
  the id set next: Lua 5.1 cannot presize a table.)
]]
local function loadRecord(key)
  -- In RESP3 HGETALL comes back as a map, a table Redis builds at its full size, instead of a flat
  -- list to copy into one field by field (a third of the cost of a load). Only for this one call:
  -- RESP3 changes other replies (nil for false, scores as numbers).
  redis.setresp(3)
  local f = redis.call('HGETALL', key).map
  redis.setresp(2)
  if next(f) == nil then return nil end
  return { key = key, id = nil, f = f, dirty = false, v = 0 }
end

local function getNum(record, field)
  local text = record.f[field]
  if not text or text == '' or text == '0' then return 0 end -- num(text), without a call
  return tonumber(text)
end

-- The stored text of an amount as intString(getNum(...)) would print it, without the round trip when
-- the text is already canonical (no sign but '-', no leading zero, short enough to be exact).
local function amountText(record, field)
  local text = record.f[field]
  if text == '0' or text and #text <= 15 and string.find(text, '^%-?[1-9]%d*$') then return text end
  return intString(getNum(record, field))
end

local function setText(record, field, text)
  if record.f[field] ~= text then
    record.f[field] = text
    record.v = record.v + 1
    if record.new then return end -- saved whole (saveRecord)
    local dirty = record.dirty
    if not dirty then
      dirty = {}
      record.dirty = dirty
    end
    dirty[field] = true
  end
end

local function setNum(record, field, n)
  setText(record, field, intString(n))
end

local function addNum(record, field, delta)
  if delta ~= 0 then setNum(record, field, getNum(record, field) + delta) end
end

-- Reused by every save (as eventArgs in ledger.lua); unpack reads only this record's n entries.
local saveArgs = {}

local function saveRecord(record)
  local args, n = saveArgs, 0
  if record.new then
    -- A record created by this call (newRecord): every field is new, so all of them are written.
    record.new = false
    for field, text in pairs(record.f) do
      args[n + 1], args[n + 2] = field, text
      n = n + 2
    end
  elseif record.dirty then
    for field in pairs(record.dirty) do
      args[n + 1], args[n + 2] = field, record.f[field]
      n = n + 2
    end
  end
  if n > 0 then redis.call('HSET', record.key, unpack(args, 1, n)) end
  record.dirty = false
end
