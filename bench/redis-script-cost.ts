/**
 * Diagnostic: Redis time per FCALL (INFO commandstats) for reserve+commit on one hot account vs spread
 * accounts, on a redis-server of its own, and the biggest keys afterwards.  npx tsx bench/redis-script-cost.ts
 */
import { spawn } from 'node:child_process';
import { setTimeout as sleep } from 'node:timers/promises';
import { Redis } from 'ioredis';
import { loadProductConfig, EXAMPLE_PRODUCT_CONFIG_PATH } from '../src/config/product-config.js';
import { systemClock } from '../src/domain/clock.js';
import { parseReserve, parseUpsertAccount } from '../src/domain/commands.js';
import { RedisCreditStore } from '../src/redis/redis-credit-store.js';
const port = 39001;
const srv = spawn('redis-server', ['--port', String(port), '--save', '', '--appendonly', 'no'], { stdio: 'ignore' });
await sleep(500);
const redis = new Redis(port, '127.0.0.1', { protocol: 2 });
const product = loadProductConfig(EXAMPLE_PRODUCT_CONFIG_PATH);
const store = new RedisCreditStore(redis, { keyPrefix: 'd', product, clock: systemClock });
await store.loadScripts();
const stat = async () => { const m = /cmdstat_fcall:calls=(\d+),usec=(\d+)/.exec(await redis.info('commandstats')); return [Number(m?.[1]), Number(m?.[2])] as [number, number]; };
for (const acct of ['hot', ...Array.from({length: 2000}, (_, i) => `s${i}`)]) {
  await store.upsertAccount(parseUpsertAccount(product, { accountId: acct, plan: 'pro', parentId: '', trialCredits: 0n, lowBalanceThreshold: 0n, lowBalancePercent: 0 }));
  await store.grant({ accountId: acct, kind: 'PACK', credits: 10n ** 9n, grantId: 'g' + acct, reason: '' });
}
let i = 0;
for (const mode of ['hot', 'hot', 'hot', 'spread', 'spread', 'hot']) {
  const [c0, u0] = await stat();
  const t = Date.now();
  for (let k = 0; k < 2000; k++) {
    const acct = mode === 'hot' ? 'hot' : `s${k % 2000}`;
    const h = await store.reserve(parseReserve(product, { accountId: acct, feature: 'content_rewrite', requestId: `r${i++}`, userId: `u${k % 64}`, labels: {} }));
    await store.commit({ reservationId: h.reservationId });
  }
  const [c1, u1] = await stat();
  console.log(mode, ((u1 - u0) / (c1 - c0)).toFixed(1), 'µs/fcall', Date.now() - t, 'ms for 2000 cycles');
}
for (const [name, fn] of [
  ['getBalance', () => store.getBalance('hot')],
  ['reserve only', () => store.reserve(parseReserve(product, { accountId: 'hot', feature: 'content_rewrite', requestId: `o${i++}`, userId: 'u1', labels: {} }))],
  ['FUNCTION-free EVAL return 1', () => redis.eval('return 1', 0)],
] as Array<[string, () => Promise<unknown>]>) {
  const [c0, u0] = await stat();
  const e0 = /cmdstat_eval:calls=(\d+),usec=(\d+)/.exec(await redis.info('commandstats'));
  for (let k = 0; k < 2000; k++) await fn();
  const [c1, u1] = await stat();
  const e1 = /cmdstat_eval:calls=(\d+),usec=(\d+)/.exec(await redis.info('commandstats'));
  const us = c1 > c0 ? (u1 - u0) / (c1 - c0) : (Number(e1?.[2]) - Number(e0?.[2] ?? 0)) / (Number(e1?.[1]) - Number(e0?.[1] ?? 0));
  console.log(name, us.toFixed(1), 'µs per call');
}
const keys = await redis.keys('d:*');
const sizes: Array<[string, string, number]> = [];
for (const k of keys) {
  const type = await redis.type(k);
  const n = type === 'hash' ? await redis.hlen(k) : type === 'zset' ? await redis.zcard(k) : type === 'stream' ? await redis.xlen(k) : type === 'set' ? await redis.scard(k) : 0;
  if (n > 50) sizes.push([k, type, n]);
}
console.log(sizes.sort((a, b) => b[2] - a[2]).slice(0, 15));
const slow = await redis.call('SLOWLOG', 'GET', 3);
console.log(JSON.stringify(slow).slice(0, 1500));
redis.disconnect(); srv.kill();
