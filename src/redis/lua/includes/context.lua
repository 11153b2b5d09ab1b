--[[
  Every script shares its first arguments, prepended by the TypeScript caller (script-runner.ts):
    KEYS[1]  partition prefix "<prefix>:{p<n>}:" (all keys a script touches are built from it)
    ARGV[1]  now, ms since the epoch (one injectable clock: scripts never call TIME)
    ARGV[2]  the plan table, see planLookup
    ARGV[3]  how long a settled reservation is kept, ms
    ARGV[4]  how many expired holds one call may release for the pool it touches
  A script's own arguments start at ARGV[5] (SCRIPT_ARGS). KEYS and ARGV are passed in because in a
  Redis Function (how meterd loads the scripts) they are parameters, not globals.
  The context caches every record it loads, so each hash is read once and written once (saveAll).
]]
local SCRIPT_ARGS = 5

--[[
  In a batch (the library's batch function), the calls share one record cache and their records
  are saved once, at the end: a hot pool is read and written once per batch instead of once per
  call. Only records (account and reservation hashes) go through the cache, and every other key is
  read and written directly, so no call reads what an earlier call of the batch left unsaved.
]]
local batchRecords = nil

local function newContext(KEYS, ARGV)
  return {
    P = KEYS[1],
    now = tonumber(ARGV[1]),
    plans = ARGV[2],
    settledRetentionMs = ARGV[3],
    lazyExpiryMax = ARGV[4], -- only ever handed to Redis (ZRANGEBYSCORE LIMIT): kept as text
    records = batchRecords or {},
    -- Set later (false until then), listed here so the table is built at its full size once.
    pool = false, watch = false, nowText = false, refusedForCredits = false,
    spendablePool = false, spendableAt = false, spendable = false,
  }
end

-- intString(ctx.now), printed once per call: events, holds and settled records all stamp it.
local function nowText(ctx)
  local text = ctx.nowText
  if not text then
    text = intString(ctx.now)
    ctx.nowText = text
  end
  return text
end

-- The record stored at key (cached), or nil when the key does not exist.
local function getRecord(ctx, key)
  local record = ctx.records[key]
  if record then return record end
  record = loadRecord(key)
  if record then ctx.records[key] = record end
  return record
end

-- A record that does not exist yet; it is written by saveAll.
local function newRecord(ctx, key)
  local record = { key = key, id = nil, f = {}, dirty = false, v = 0, new = true }
  ctx.records[key] = record
  return record
end

local function saveAll(ctx)
  if batchRecords then return end -- the batch saves them all once it ends
  for _, record in pairs(ctx.records) do saveRecord(record) end
end

local function beginBatch()
  batchRecords = {}
end

local function endBatch()
  local records = batchRecords or {}
  batchRecords = nil
  for _, record in pairs(records) do saveRecord(record) end
end

-- Replies are JSON objects whose amounts are decimal strings; errors carry `e` = the reason.
local function finish(ctx, reply)
  if ctx.watch then ctx.watch(ctx) end
  saveAll(ctx)
  return cjson.encode(reply)
end

-- A refusal still saves what lazy upkeep (period roll-over, expiries) changed before it: those
-- transitions are complete on their own and their ledger events are already appended.
local function fail(ctx, reason, details)
  if ctx.watch then ctx.watch(ctx) end
  saveAll(ctx)
  local reply = details or {}
  reply.e = reason
  return cjson.encode(reply)
end
