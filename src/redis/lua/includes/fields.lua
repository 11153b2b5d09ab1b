--[[
  An account hash loaded into a Lua table of strings, with the fields changed since loading tracked so
  saveRecord writes them back in one HSET. Records: { key = <redis key>, f = {field = text}, dirty = {} }.
]]
local function loadRecord(key)
  local flat = redis.call('HGETALL', key)
  if #flat == 0 then return nil end
  local f = {}
  for i = 1, #flat, 2 do f[flat[i]] = flat[i + 1] end
  return { key = key, f = f, dirty = {} }
end

local function getNum(record, field)
  return num(record.f[field])
end

local function setText(record, field, text)
  if record.f[field] ~= text then
    record.f[field] = text
    record.dirty[field] = true
  end
end

local function setNum(record, field, n)
  setText(record, field, intString(n))
end

local function addNum(record, field, delta)
  if delta ~= 0 then setNum(record, field, getNum(record, field) + delta) end
end

local function saveRecord(record)
  local args = {}
  for field in pairs(record.dirty) do
    args[#args + 1] = field
    args[#args + 1] = record.f[field]
  end
  if #args > 0 then redis.call('HSET', record.key, unpack(args)) end
  record.dirty = {}
end
