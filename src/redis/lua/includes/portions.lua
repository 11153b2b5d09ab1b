--[[
  A hold remembers where its credits came from, as portions {b = bucket, tag = tag, n = amount}:
    trial | allow@<allowance epoch> | promo@<grant id> | pack | ovg@<period start>
  encoded "b@tag=n;b=n;...". When held credits go back (release, expiry, a commit below the hold),
  each portion returns to its bucket only if that bucket is still live: allowance credits of an
  earlier period or of the plan before an upgrade, an ended trial or an expired grant are gone.
]]
local function encodePortions(portions)
  local parts = {}
  for i = 1, #portions do
    local p = portions[i]
    local name = p.b
    if p.tag then name = name .. '@' .. p.tag end
    parts[#parts + 1] = name .. '=' .. intString(p.n)
  end
  return table.concat(parts, ';')
end

local function decodePortions(text)
  local portions = {}
  if not text or text == '' then return portions end
  for part in string.gmatch(text, '[^;]+') do
    local _, _, name, amount = string.find(part, '^(.+)=(%d+)$')
    local _, _, bucket, tag = string.find(name, '^([^@]+)@(.+)$')
    portions[#portions + 1] = { b = bucket or name, tag = tag, n = tonumber(amount) }
  end
  return portions
end

local function sumPortions(portions, bucket)
  local total = 0
  for i = 1, #portions do
    local p = portions[i]
    if bucket == nil or p.b == bucket then total = total + p.n end
  end
  return total
end

-- Splits portions (in order) into the first `amount` credits and the rest.
local function splitPortions(portions, amount)
  local first, rest = {}, {}
  local left = amount
  for i = 1, #portions do
    local p = portions[i]
    if left >= p.n then
      first[#first + 1] = p
      left = left - p.n
    elseif left > 0 then
      first[#first + 1] = { b = p.b, tag = p.tag, n = left }
      rest[#rest + 1] = { b = p.b, tag = p.tag, n = p.n - left }
      left = 0
    else
      rest[#rest + 1] = p
    end
  end
  return first, rest
end

local function recordDelta(deltas, bucket, tag, n)
  if bucket == 'trial' then deltas.trial = deltas.trial + n
  elseif bucket == 'allow' then deltas.allowance = deltas.allowance + n
  elseif bucket == 'pack' then deltas.pack = deltas.pack + n
  elseif bucket == 'ovg' then deltas.overage = deltas.overage - n
  elseif bucket == 'promo' then
    deltas.promo = deltas.promo + n
    local detail = deltas.promoDetail or {}
    detail[#detail + 1] = tag .. '=' .. intString(n)
    deltas.promoDetail = detail
  end
end

-- Takes up to `left` of a bucket's `have` credits as one portion; returns how many (0: none).
local function takePortion(portions, deltas, left, bucket, tag, have)
  local n = math.min(left, have)
  if n <= 0 then return 0 end
  portions[#portions + 1] = { b = bucket, tag = tag, n = n }
  recordDelta(deltas, bucket, tag, -n)
  return n
end

-- takeCredits' steps for the trial and the allowance; each returns what is still left to take.
local function takeTrial(ctx, pool, portions, deltas, left)
  if getNum(pool, 'trial_end') <= ctx.now then return left end
  local n = takePortion(portions, deltas, left, 'trial', nil, getNum(pool, 'trial'))
  addNum(pool, 'trial', -n)
  return left - n
end

local function takeAllowance(pool, portions, deltas, left)
  local n = takePortion(portions, deltas, left, 'allow', pool.f.ae or '0', getNum(pool, 'allow'))
  addNum(pool, 'allow', -n)
  return left - n
end

--[[
  Takes up to `amount` credits from the pool in burn order: trial and allowance first (soonest to
  expire first), then promotional grants by soonest expiry, then packs, then overage room when
  withOverage. Returns the portions taken and what could not be taken.
]]
local function takeCredits(ctx, pool, amount, withOverage, deltas)
  local portions = {}
  local left = amount
  if getNum(pool, 'trial_end') <= getNum(pool, 'pe') then
    left = takeTrial(ctx, pool, portions, deltas, left)
    left = takeAllowance(pool, portions, deltas, left)
  else
    left = takeAllowance(pool, portions, deltas, left)
    left = takeTrial(ctx, pool, portions, deltas, left)
  end
  if left > 0 and getNum(pool, 'promo') > 0 then
    local amountsKey = promoAmountsKey(ctx.P, pool.id)
    for _, grantId in ipairs(redis.call('ZRANGE', promoKey(ctx.P, pool.id), '0', '-1')) do
      if left <= 0 then break end
      local n = takePortion(portions, deltas, left, 'promo', grantId, num(redis.call('HGET', amountsKey, grantId)))
      left = left - n
      if n > 0 then
        redis.call('HINCRBY', amountsKey, grantId, intString(-n))
        addNum(pool, 'promo', -n)
      end
    end
  end
  local packTaken = takePortion(portions, deltas, left, 'pack', nil, getNum(pool, 'pack'))
  left = left - packTaken
  addNum(pool, 'pack', -packTaken)
  if withOverage then
    local room = getNum(pool, 'ovg_limit') - getNum(pool, 'ovg')
    if room > 0 then
      local n = math.min(left, room)
      portions[#portions + 1] = { b = 'ovg', tag = pool.f.ps, n = n }
      recordDelta(deltas, 'ovg', nil, -n)
      addNum(pool, 'ovg', n)
      left = left - n
    end
  end
  return portions, left
end

--[[
  Gives portions back to the pool. A portion whose bucket is gone is dropped, or, when asRefund,
  lands in packs (a refund always gives the credits back, and packs never expire).
]]
local function returnPortions(ctx, pool, portions, asRefund, deltas)
  for i = 1, #portions do
    local p = portions[i]
    local bucket = nil
    if p.b == 'trial' and getNum(pool, 'trial_end') > ctx.now then
      addNum(pool, 'trial', p.n); bucket = 'trial'
    elseif p.b == 'allow' and p.tag == (pool.f.ae or '0') then
      addNum(pool, 'allow', p.n); bucket = 'allow'
    elseif p.b == 'promo' and redis.call('ZSCORE', promoKey(ctx.P, pool.id), p.tag) then
      redis.call('HINCRBY', promoAmountsKey(ctx.P, pool.id), p.tag, intString(p.n))
      addNum(pool, 'promo', p.n); bucket = 'promo'
    elseif p.b == 'pack' then
      addNum(pool, 'pack', p.n); bucket = 'pack'
    elseif p.b == 'ovg' and p.tag == pool.f.ps then
      addNum(pool, 'ovg', -p.n); bucket = 'ovg'
    end
    if bucket == nil and asRefund then
      addNum(pool, 'pack', p.n); bucket = 'pack'
    end
    if bucket then recordDelta(deltas, bucket, p.tag, p.n) end
  end
end
