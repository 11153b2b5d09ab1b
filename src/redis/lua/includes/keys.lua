--[[
  Key names inside one partition. KEYS[1] is the partition prefix ("<prefix>:{p<n>}:"), so every key
  built here shares its hash tag and slot. '/' separates ids because ids may not contain it.
  See src/redis/keys.ts for the same layout from TypeScript.
]]
local function accountKey(P, id) return P .. 'a/' .. id end
local function promoKey(P, poolId) return P .. 'a/' .. poolId .. '/promo' end
local function promoAmountsKey(P, poolId) return P .. 'a/' .. poolId .. '/promoamt' end
local function poolHoldsKey(P, poolId) return P .. 'a/' .. poolId .. '/holds' end
local function operationKey(P, poolId, kind, opId) return P .. 'op/' .. poolId .. '/' .. kind .. '/' .. opId end
local function requestKey(P, accountId, requestId) return P .. 'q/' .. accountId .. '/' .. requestId end
local function reservationKey(P, reservationId) return P .. 'r/' .. reservationId end
local function usageKey(P, accountId, periodStart) return P .. 'u/' .. accountId .. '/' .. periodStart end
local function expiryKey(P) return P .. 'expiry' end
local function ledgerKey(P) return P .. 'ledger' end
