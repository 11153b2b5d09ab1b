--[[
  Appends one ledger event for a pool to the partition's stream, in the same script as the change it
  records. Event id = "<pool>/<seq>" with a per-pool sequence number without gaps, so the flush to
  Postgres can be exactly once and reconciliation can spot a lost tail.
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

local function appendEvent(ctx, pool, kind, fields)
  local seq = getNum(pool, 'seq') + 1
  setNum(pool, 'seq', seq)
  local args = {
    'id', pool.id .. '/' .. intString(seq), 'seq', intString(seq), 'kind', kind,
    'account', pool.id, 'time', intString(ctx.now),
  }
  for _, name in ipairs(LEDGER_FIELDS) do
    local value = fields[name]
    if value ~= nil and value ~= '' and value ~= '0' then
      args[#args + 1] = name
      args[#args + 1] = value
    end
  end
  redis.call('XADD', ledgerKey(ctx.P), '*', unpack(args))
end

-- Signed changes per bucket, gathered while credits move, then written into one event.
local function newDeltas()
  return { trial = 0, allowance = 0, promo = 0, pack = 0, overage = 0, promoDetail = {} }
end

local function deltaFields(deltas, fields)
  fields.trial = intString(deltas.trial)
  fields.allowance = intString(deltas.allowance)
  fields.promo = intString(deltas.promo)
  fields.pack = intString(deltas.pack)
  fields.overage = intString(deltas.overage)
  fields.promo_detail = table.concat(deltas.promoDetail, ';')
  return fields
end
