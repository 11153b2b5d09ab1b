import fc from 'fast-check';
import { Redis } from 'ioredis';
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ManualClock } from '../../src/domain/clock.js';
import { parseCommit, parseRelease, parseReserve, parseUpsertAccount } from '../../src/domain/commands.js';
import { homePartition, partitionPrefix } from '../../src/redis/keys.js';
import { RedisCreditStore } from '../../src/redis/redis-credit-store.js';
import { deleteKeys, LOCAL_REDIS, TEST_EPOCH_MS, TEST_PRODUCT } from '../support/meterd.js';

/**
 * The store's batcher sends the calls one tick gathers as one Redis call whose calls share a record
 * cache saved once at the end. Property: for any sequence of reserves, commits, releases and balance
 * reads, running them together (one batch) leaves the same balances, pool fields and ledger events,
 * and gives the same answers, as running them one by one.
 */
type Op =
  | { kind: 'reserve'; account: number; credits: number; request: number }
  | { kind: 'commit'; hold: number; credits: number | null }
  | { kind: 'release'; hold: number }
  | { kind: 'balance'; account: number };

const ACCOUNTS = 3;
const opArb: fc.Arbitrary<Op> = fc.oneof(
  fc.record({ kind: fc.constant('reserve' as const), account: fc.nat(ACCOUNTS - 1), credits: fc.integer({ min: 1, max: 40 }), request: fc.nat(6) }),
  fc.record({ kind: fc.constant('commit' as const), hold: fc.nat(7), credits: fc.option(fc.integer({ min: 0, max: 60 })) }),
  fc.record({ kind: fc.constant('release' as const), hold: fc.nat(7) }),
  fc.record({ kind: fc.constant('balance' as const), account: fc.nat(ACCOUNTS - 1) }),
);

describe('a batch of calls equals the same calls one by one', () => {
  let redis: Redis;
  const run = randomBytes(4).toString('hex');
  let n = 0;

  beforeAll(() => {
    redis = new Redis(LOCAL_REDIS.url as string, { protocol: 2 });
  });
  afterAll(async () => {
    redis?.disconnect();
    await deleteKeys(LOCAL_REDIS.url as string, `be${run}*`);
  });

  /** A fresh dataset: accounts (jobs_pro, 150 credits) and 8 holds made one by one. */
  async function dataset(prefix: string) {
    const clock = new ManualClock(TEST_EPOCH_MS);
    const store = new RedisCreditStore(redis, { keyPrefix: prefix, product: TEST_PRODUCT, clock });
    await store.loadScripts();
    const accounts = Array.from({ length: ACCOUNTS }, (_, i) => `acct${i}`);
    for (const accountId of accounts) {
      await store.upsertAccount(parseUpsertAccount(TEST_PRODUCT, { accountId, plan: 'jobs_pro', parentId: '', trialCredits: 0n, lowBalanceThreshold: 20n }));
    }
    const holds: string[] = [];
    for (let i = 0; i < 8; i++) {
      const r = await store.reserve(parseReserve(TEST_PRODUCT, { accountId: accounts[i % ACCOUNTS] as string, feature: 'content_rewrite', credits: 5n, requestId: `seed${i}`, userId: '', labels: {} }));
      holds.push(r.reservationId);
    }
    return { store, accounts, holds };
  }

  /** Answers without what differs by construction (reservation ids, times). */
  const answer = (value: unknown) => JSON.parse(JSON.stringify(value, (key, v: unknown) =>
    (key === 'reservationId' || key === 'expiresAtMs' ? undefined : typeof v === 'bigint' ? v.toString() : v))) as unknown;
  const outcome = (p: Promise<unknown>) => p.then((v) => ({ ok: answer(v) }), (err: { reason?: string }) => ({ refused: err.reason ?? String(err) }));

  async function state(prefix: string, accounts: string[]) {
    const pools = await Promise.all(accounts.map(async (id) => {
      const fields = await redis.hgetall(`${partitionPrefix(prefix, homePartition(id))}a/${id}`);
      delete fields.lsid; // a stream entry id: differs by construction
      return fields;
    }));
    const streams = await Promise.all([...new Set(accounts.map(homePartition))].sort((a, b) => a - b).map(async (p) =>
      (await redis.xrange(`${partitionPrefix(prefix, p)}ledger`, '-', '+')).map(([, fields]) => {
        const event: Record<string, string> = {};
        for (let i = 0; i < fields.length; i += 2) event[fields[i] as string] = fields[i + 1] as string;
        delete event.reservation;
        delete event.prev; // the previous entry's id
        return event;
      })));
    return { pools, streams };
  }

  it('holds for random sequences of operations', { timeout: 120_000 }, async () => {
    await fc.assert(fc.asyncProperty(fc.array(opArb, { minLength: 1, maxLength: 24 }), async (ops) => {
      const one = await dataset(`be${run}o${n}`);
      const all = await dataset(`be${run}b${n}`);
      n += 1;
      const call = (d: typeof one, op: Op) => {
        switch (op.kind) {
          case 'reserve': return d.store.reserve(parseReserve(TEST_PRODUCT, {
            accountId: d.accounts[op.account] as string, feature: 'content_rewrite', credits: BigInt(op.credits), requestId: `q${op.request}`, userId: '', labels: {},
          }));
          case 'commit': return d.store.commit(parseCommit({ reservationId: d.holds[op.hold] as string, ...(op.credits === null ? {} : { credits: BigInt(op.credits) }) }));
          case 'release': return d.store.release(parseRelease({ reservationId: d.holds[op.hold] as string, reason: '' }));
          case 'balance': return d.store.getBalance(d.accounts[op.account] as string);
        }
      };
      const oneByOne = [];
      for (const op of ops) oneByOne.push(await outcome(call(one, op)));
      const together = await Promise.all(ops.map((op) => outcome(call(all, op)))); // one tick: batched per partition
      expect(together).toEqual(oneByOne);
      const [a, b] = [await state(`be${run}o${n - 1}`, one.accounts), await state(`be${run}b${n - 1}`, all.accounts)];
      expect(b).toEqual(a);
    }), { numRuns: 40 });
  });
});
