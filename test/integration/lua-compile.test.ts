import { createHash, randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildLibrary, loadScripts } from '../../src/redis/script-loader.js';
import { TEST_EPOCH_MS, TEST_PRODUCT, deleteKeys, LOCAL_REDIS } from '../support/meterd.js';

/**
 * The Lua compiles in a real Redis, each script on its own (SCRIPT LOAD + EVAL) and all of them as
 * the Redis Function library meterd loads (FUNCTION LOAD REPLACE + FCALL), and each one runs up to
 * its first refusal on an empty partition (which catches a nil global or a bad include order at run
 * time). Keys live under a unique prefix, removed afterwards.
 */

const URL = LOCAL_REDIS.url ?? 'redis://127.0.0.1:6379';
const SCRIPTS = loadScripts();

/** Script arguments (after the shared four) that stop at the first refusal, and the reply. */
const SMOKE: Record<string, { args: string[]; reply: Record<string, unknown> }> = {
  getBalance: { args: ['nobody'], reply: { e: 'ACCOUNT_NOT_FOUND', account_id: 'nobody' } },
  getAccount: { args: ['nobody'], reply: { e: 'ACCOUNT_NOT_FOUND', account_id: 'nobody' } },
  getUsage: { args: ['nobody'], reply: { e: 'ACCOUNT_NOT_FOUND', account_id: 'nobody' } },
  changePlan: { args: ['nobody', 'pro', '5000', '2000'], reply: { e: 'ACCOUNT_NOT_FOUND', account_id: 'nobody' } },
  grantCredits: { args: ['nobody', 'PACK', '10', 'g-1', '', '', '1000', '2000000000000000'], reply: { e: 'ACCOUNT_NOT_FOUND', account_id: 'nobody' } },
  adjustCredits: { args: ['nobody', '5', 'a-1', '', '', '1000', '2000000000000000'], reply: { e: 'ACCOUNT_NOT_FOUND', account_id: 'nobody' } },
  reserveCredits: {
    args: ['nobody', 'req-1', 'content_rewrite', '', '', '1', '0', '0', '300000', '', '', 'fp', 'r1.x', '86400000', '1000000000000000', ''],
    reply: { e: 'ACCOUNT_NOT_FOUND', account_id: 'nobody' },
  },
  commitReservation: { args: ['r1.none', '', '', '1000000000000000', '1000'], reply: { e: 'RESERVATION_NOT_FOUND', reservation_id: 'r1.none' } },
  releaseReservation: { args: ['r1.none', ''], reply: { e: 'RESERVATION_NOT_FOUND', reservation_id: 'r1.none' } },
  extendReservation: { args: ['r1.none', '1000', '0', ''], reply: { e: 'RESERVATION_NOT_FOUND', reservation_id: 'r1.none' } },
  refundCharge: { args: ['r1.none', '', 'f-1', ''], reply: { e: 'RESERVATION_NOT_FOUND', reservation_id: 'r1.none' } },
  upsertAccount: { args: ['nobody', '', '0', '0', '', '', '', '0', '0', '0', '0'], reply: { e: 'PLAN_REQUIRED', account_id: 'nobody' } },
  expireReservations: { args: ['10'], reply: { expired: 0, credits: '0', more: false } },
  placeAccountStub: { args: ['stub-smoke', '3'], reply: {} },
  trimLedger: { args: ['flush'], reply: { trimmed: 0, below: '0-0' } },
  restorePool: { args: ['{"id":"lc-pool","fields":{"plan":"free"},"spaces":{},"promos":{},"holds":{}}', ''], reply: { restored: true, dropped: 0, mark: expect.stringMatching(/^\d{13,}-0$/) } },
  snapshotLedger: { args: ['10', 'nobody'], reply: { pools: {}, entries: {}, complete: true } },
  setRefill: { args: ['nobody', '10', '1'], reply: { e: 'ACCOUNT_NOT_FOUND', account_id: 'nobody' } },
};

describe('Lua compiles and runs in Redis', () => {
  let redis: Redis;
  const keyPrefix = `lc${randomBytes(6).toString('hex')}`;
  const partition = `${keyPrefix}:{p0}:`;
  // The FCALL pass runs in a partition of its own, so scripts that create something create it afresh.
  const fcallPartition = `${keyPrefix}:{p1}:`;
  const shared = [String(TEST_EPOCH_MS), TEST_PRODUCT.planTableText, '1000', '32'];

  beforeAll(() => {
    redis = new Redis(URL, { protocol: 2 });
  });
  afterAll(async () => {
    redis?.disconnect();
    await deleteKeys(URL, `${keyPrefix}:*`);
  });

  it('every script has a smoke call, with as many arguments as it documents', () => {
    expect(Object.keys(SMOKE).sort()).toEqual(SCRIPTS.map((s) => s.name).sort());
    for (const script of SCRIPTS) {
      const documented = new Set([...script.body.matchAll(/ARGV\[(\d+)\]/g)].map((m) => Number(m[1])).filter((n) => n >= 5));
      expect(SMOKE[script.name]?.args, script.name).toHaveLength(documented.size);
    }
  });

  describe.each(SCRIPTS.map((s) => [s.name, s] as const))('%s', (name, script) => {
    it('compiles (SCRIPT LOAD) under its SHA-1', async () => {
      const sha = await redis.script('LOAD', script.lua);
      expect(sha).toBe(createHash('sha1').update(script.lua).digest('hex'));
    });

    it('runs with EVAL up to its first refusal', async () => {
      const smoke = SMOKE[name];
      if (!smoke) throw new Error(`no smoke call for ${name}`);
      const raw = await redis.eval(script.lua, 1, partition, ...shared, ...smoke.args);
      expect(JSON.parse(String(raw))).toEqual(smoke.reply);
    });
  });

  it('loads as one Redis Function library and every function runs (FCALL)', async () => {
    const library = buildLibrary();
    expect(await redis.call('FUNCTION', 'LOAD', 'REPLACE', library.code)).toBe(library.name);
    for (const script of SCRIPTS) {
      const fn = library.functions.get(script.name);
      const smoke = SMOKE[script.name];
      if (!fn || !smoke) throw new Error(`no function or smoke call for ${script.name}`);
      const raw = await redis.fcall(fn, 1, fcallPartition, ...shared, ...smoke.args);
      expect(JSON.parse(String(raw)), script.name).toEqual(smoke.reply);
    }
  });
});
