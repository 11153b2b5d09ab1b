/**
 * Where the Redis time of a script goes: loads an instrumented copy of the script library into a
 * redis-server of its own and reports, per Lua helper and per Redis command, calls and µs per script
 * call.   npx tsx bench/lua-profile.ts [--cycles 3000]
 *
 * Redis 7.0's Lua has no clock but TIME (µs, ~1–3 µs a call), so every timed function pays for two
 * TIME calls: the run first measures that cost on an empty wrapped function and subtracts it from
 * each wrapped call, its own and its children's. Times are inclusive (a helper includes the helpers
 * and commands it calls) and approximate to a µs or two per call; compare them, do not add them up.
 */
import { spawn } from 'node:child_process';
import { parseArgs } from 'node:util';
import { setTimeout as sleep } from 'node:timers/promises';
import { Redis } from 'ioredis';
import { EXAMPLE_PRODUCT_CONFIG_PATH, loadProductConfig } from '../src/config/product-config.js';
import { systemClock } from '../src/domain/clock.js';
import { parseReserve, parseUpsertAccount } from '../src/domain/commands.js';
import { RedisCreditStore } from '../src/redis/redis-credit-store.js';
import { buildLibrary } from '../src/redis/script-loader.js';
import { freePort } from '../test/support/redis-servers.js';

const { values } = parseArgs({ options: { cycles: { type: 'string', default: '3000' } } });
const CYCLES = Number(values.cycles);

/** The library with every top-level helper, every script and every redis.call timed. */
function instrumentedLibrary(): string {
  const library = buildLibrary();
  const [shebang, ...rest] = library.code.split('\n');
  const code = rest.join('\n');
  const registrationsAt = code.indexOf('redis.register_function(');
  const definitions = code.slice(0, registrationsAt).replaceAll('redis.call(', '__timedCall(');
  const registrations = code.slice(registrationsAt);
  // Top-level helpers (the includes) and the scripts; not functions local to a script's body.
  const includes = definitions.slice(0, definitions.indexOf('local function script_'));
  const helpers = [...includes.matchAll(/^local function ([A-Za-z_][A-Za-z0-9_]*)\(/gm), ...definitions.matchAll(/^local function (script_[A-Za-z]+)\(/gm)]
    .map((m) => m[1] as string);
  const prologue = `
local __stats, __depth, __overhead = {}, 0, 0
local function __now() local t = redis.call('TIME'); return t[1] * 1000000 + t[2] end
local function __add(name, us) local s = __stats[name]; if not s then s = { 0, 0 }; __stats[name] = s end; s[1] = s[1] + 1; s[2] = s[2] + us end
-- children's timing cost is charged to the parent, so each level subtracts what its children paid
local __childCost = 0
local function __timed(name, f)
  return function(...)
    local outer = __childCost
    __childCost = 0
    local t0 = __now()
    local r = { f(...) }
    local us = __now() - t0 - __overhead - __childCost
    __add(name, us)
    __childCost = outer + __childCost + __overhead
    return unpack(r, 1, table.maxn(r))
  end
end
local function __timedCall(...)
  local outer = __childCost
  local t0 = __now()
  local r = redis.call(...)
  __add('redis.' .. string.upper((...)), __now() - t0 - __overhead)
  __childCost = outer + __overhead
  return r
end
`;
  const wrappers = helpers.filter((h) => h !== 'script_batch').map((h) => `${h} = __timed('${h}', ${h})`).join('\n');
  const calibrate = `
local __empty = __timed('__empty', function() end)
local function __calibrate(KEYS, ARGV)
  __overhead = 0
  __stats = {}
  for _ = 1, 2000 do __empty() end
  __overhead = __stats.__empty[2] / __stats.__empty[1]
  __stats = {}
  return tostring(__overhead)
end
local function __dump(KEYS, ARGV)
  local out = {}
  for name, s in pairs(__stats) do out[#out + 1] = name .. ' ' .. s[1] .. ' ' .. string.format('%.1f', s[2]) end
  __stats = {}
  return out
end
redis.register_function('__calibrate', __calibrate)
redis.register_function('__dump', __dump)
`;
  return [shebang, prologue, definitions, wrappers, calibrate, registrations].join('\n');
}

const port = await freePort();
const server = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], { stdio: 'ignore' });
try {
  await sleep(300);
  const redis = new Redis(port, '127.0.0.1');
  const product = loadProductConfig(EXAMPLE_PRODUCT_CONFIG_PATH);
  const store = new RedisCreditStore(redis, { keyPrefix: 'p', product, clock: systemClock });
  await store.loadScripts();
  await redis.call('FUNCTION', 'LOAD', 'REPLACE', instrumentedLibrary());
  const accounts = ['hot', ...Array.from({ length: 1000 }, (_, i) => `s${i}`)];
  for (const accountId of accounts) {
    await store.upsertAccount(parseUpsertAccount(product, { accountId, plan: 'pro', parentId: '', trialCredits: 0n, lowBalanceThreshold: 0n, lowBalancePercent: 0 }));
    await store.grant({ accountId, kind: 'PACK', credits: 10n ** 9n, grantId: `g-${accountId}`, reason: '' });
  }
  const overhead = Number(await redis.call('FCALL', '__calibrate', '0'));
  await redis.call('FCALL', '__dump', '0');
  let n = 0;
  for (let i = 0; i < CYCLES; i++) {
    const accountId = i % 2 === 0 ? 'hot' : `s${i % 1000}`;
    const hold = await store.reserve(parseReserve(product, { accountId, feature: 'content_rewrite', requestId: `r${n++}`, userId: `u${i % 64}`, labels: {} }));
    await store.commit({ reservationId: hold.reservationId });
    await store.getBalance(accountId);
  }
  const rows = ((await redis.call('FCALL', '__dump', '0')) as string[]).map((line) => {
    const [name, calls, us] = line.split(' ');
    return { name: name as string, calls: Number(calls), usPerCall: Number(us) / Number(calls), usPerCycle: Number(us) / CYCLES };
  }).sort((a, b) => b.usPerCycle - a.usPerCycle);
  console.log(`TIME overhead per timed call: ${overhead.toFixed(2)} µs (subtracted). ${CYCLES} cycles of reserve + commit + getBalance, half on one hot account.`);
  console.log('name'.padEnd(28), 'calls/cycle'.padStart(12), 'µs/call'.padStart(9), 'µs/cycle'.padStart(9));
  for (const r of rows) console.log(r.name.padEnd(28), (r.calls / CYCLES).toFixed(2).padStart(12), r.usPerCall.toFixed(1).padStart(9), r.usPerCycle.toFixed(1).padStart(9));
  redis.disconnect();
} finally {
  server.kill();
}
