--[[
  Appends one ledger event for a pool to the partition's stream, in the same script as the change it
  records. Event id = "<pool>/<seq>" with a per-pool sequence number without gaps, so the flush to
  Postgres can be exactly once and reconciliation can spot a lost tail. prev is the stream entry id
  of the pool's previous event (the pool's lsid field): a chain that tells the flush when a Redis
  that lost its tail hands out lost sequence numbers again (a new timeline, kept out of the ledger).
  Amount fields are signed changes of the pool's fields: trial, allowance, promo, pack, overage (used),
  held and charged; charged_overage is the part of charged drawn from overage (what is billed
  separately); shortfall is cost that did not fit; settings is an account's settings as JSON
  (account_settings events); detail is an alert's or refill's figures as JSON (alert, refill_due
  events; reason names the alert). Absent fields are zero or empty.
]]
local LEDGER_FIELDS = {
  'space', 'user', 'feature', 'reservation', 'trial', 'allowance', 'promo', 'pack', 'overage', 'held',
  'charged', 'charged_overage', 'shortfall', 'promo_detail', 'plan', 'period_start', 'period_end', 'op_id', 'reason',
  'actor', 'labels', 'settings', 'expires_at', 'detail',
}

-- One argument list reused by every event: growing a fresh table to ~30 entries costs more Lua time
-- than the XADD. unpack reads only this event's n entries.
local eventArgs = {}

local function appendEvent(ctx, pool, kind, fields)
  local seq = getNum(pool, 'seq') + 1
  setNum(pool, 'seq', seq)
  local seqText = pool.f.seq
  local args = eventArgs
  args[1], args[2], args[3], args[4], args[5] = 'id', pool.id .. '/' .. seqText, 'seq', seqText, 'kind'
  args[6], args[7], args[8], args[9], args[10] = kind, 'account', pool.id, 'time', nowText(ctx)
  local n = 10
  for i = 1, #LEDGER_FIELDS do
    local name = LEDGER_FIELDS[i]
    local value = fields[name]
    if value ~= nil and value ~= '' and value ~= '0' then
      args[n + 1], args[n + 2] = name, value
      n = n + 2
    end
  end
  local last = pool.f.lsid
  if last and last ~= '' then
    args[n + 1], args[n + 2] = 'prev', last
    n = n + 2
  end
  setText(pool, 'lsid', redis.call('XADD', ledgerKey(ctx.P), '*', unpack(args, 1, n)))
end

-- Signed changes per bucket, gathered while credits move, then written into one event. promoDetail
-- is a list of "grant=n" once a grant moves (false until then).
local function newDeltas()
  return { trial = 0, allowance = 0, promo = 0, pack = 0, overage = 0, promoDetail = false }
end

-- A zero change is left out, as appendEvent would leave out its '0' (sums that start at 0 are never
-- negative zero, so none prints '-0').
local function deltaFields(deltas, fields)
  if deltas.trial ~= 0 then fields.trial = intString(deltas.trial) end
  if deltas.allowance ~= 0 then fields.allowance = intString(deltas.allowance) end
  if deltas.promo ~= 0 then fields.promo = intString(deltas.promo) end
  if deltas.pack ~= 0 then fields.pack = intString(deltas.pack) end
  if deltas.overage ~= 0 then fields.overage = intString(deltas.overage) end
  if deltas.promoDetail then fields.promo_detail = table.concat(deltas.promoDetail, ';') end
  return fields
end
