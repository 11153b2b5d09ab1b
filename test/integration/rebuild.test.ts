import { Redis } from 'ioredis';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GrantKind } from '../../src/gen/meterd/v1/types.js';
import { rebuildRedis, repairPool } from '../../src/postgres/rebuild.js';
import { reconcile } from '../../src/postgres/reconciler.js';
import { homePartition, partitionPrefix } from '../../src/redis/keys.js';
import { LedgerStreams } from '../../src/redis/ledger-streams.js';
import { deleteKeys, LOCAL_REDIS, startTestMeterd, TEST_EPOCH_MS, TEST_PRODUCT, type TestMeterd } from '../support/meterd.js';

const DAY_MS = 86_400_000;
const POOL_FIELDS = ['plan', 'next_plan', 'anchor', 'ps', 'pe', 'allow_total', 'allow', 'ovg_limit', 'ovg', 'ae', 'held',
  'trial_total', 'trial', 'trial_end', 'pack', 'promo', 'low', 'seq', 'promo_next', 'lsid'];

/**
 * Redis lost: rebuilt from the Postgres ledger, every pool has the same fields; open holds are gone
 * (released, never charged) exactly as if they had expired; the ledger and Redis agree afterwards.
 */
describe('rebuild Redis from Postgres', () => {
  let t: TestMeterd;
  let redis: Redis;
  let db: pg.Pool;
  const roots = ['rb-a', 'rb-b', 'rb-c'];
  const everyone = [...roots, 'rb-space'];

  beforeAll(async () => {
    t = await startTestMeterd({ postgres: true, clockMs: TEST_EPOCH_MS });
    redis = new Redis(LOCAL_REDIS.url as string, { protocol: 2 });
    db = new pg.Pool({ connectionString: t.databaseUrl, max: 2 });
    db.on('error', () => {}); // a connection ended by DROP DATABASE at teardown is not a test failure
  });
  afterAll(async () => {
    await db?.end();
    redis?.disconnect();
    await t?.stop();
  });

  const poolFields = async (accountId: string) => {
    const all = await redis.hgetall(`${partitionPrefix(t.keyPrefix, homePartition(accountId))}a/${accountId}`);
    return Object.fromEntries(POOL_FIELDS.map((f) => [f, all[f] ?? '']));
  };
  const balances = () => Promise.all(everyone.map((accountId) => t.clients.metering.getBalance({ accountId })));
  /** The grant ids Redis remembers (with each request's fingerprint), per root. */
  const grantIds = () => Promise.all(roots.map(async (id) => Promise.all(['pack', 'promo-dated', 'promo-forever'].map((grantId) =>
    redis.get(`${partitionPrefix(t.keyPrefix, homePartition(id))}op/${id}/grant/${grantId}`)))));

  it('restores every pool from the ledger; lost holds are released as if expired; no drift after', async () => {
    const { admin, metering } = t.clients;
    const plans = ['metered', 'free', 'starter'];
    for (const [i, accountId] of roots.entries()) {
      await admin.upsertAccount({ account: {
        accountId, plan: plans[i] as string, parentId: '', billingAnchor: new Date(TEST_EPOCH_MS - 20 * DAY_MS),
        trialCredits: 15n, trialEndsAt: new Date(TEST_EPOCH_MS + 10 * DAY_MS), lowBalanceThreshold: 3n, lowBalancePercent: 0, pendingPlan: '',
      } });
      await admin.grantCredits({ accountId, credits: 30n, kind: GrantKind.GRANT_KIND_PACK, grantId: 'pack', reason: '' });
      await admin.grantCredits({ accountId, credits: 12n, kind: GrantKind.GRANT_KIND_PROMO, grantId: 'promo-dated', reason: '', expiresAt: new Date(TEST_EPOCH_MS + 40 * DAY_MS) });
      await admin.grantCredits({ accountId, credits: 7n, kind: GrantKind.GRANT_KIND_PROMO, grantId: 'promo-forever', reason: '' });
    }
    await admin.upsertAccount({ account: { accountId: 'rb-space', plan: '', parentId: 'rb-a', spaceLimitCredits: 80n, trialCredits: 0n, lowBalanceThreshold: 0n, lowBalancePercent: 0, pendingPlan: '' } });
    // Charges across a period boundary, an upgrade, overage, refunds; then holds left open.
    let n = 0;
    const reserve = (accountId: string, credits: bigint) =>
      metering.reserveCredits({ accountId, feature: 'content_rewrite', credits, requestId: `q${n++}`, userId: `u${n % 3}`, labels: { model: 'm' }, ttlSeconds: 3600 });
    for (const accountId of roots) {
      const a = await reserve(accountId, 40n);
      await metering.commitReservation({ reservationId: a.reservationId, credits: 35n });
    }
    t.clock.advance(15 * DAY_MS); // rb-* roll into their next period (anchor was 20 days ago)
    await admin.changePlan({ accountId: 'rb-b', plan: 'starter' });
    const big = await reserve('rb-a', 150n); // into overage (metered: 100 + 50)
    await metering.commitReservation({ reservationId: big.reservationId });
    await admin.refundCharge({ reservationId: big.reservationId, credits: 5n, refundId: 'rf', reason: '' });
    const spaceHold = await metering.reserveCredits({ accountId: 'rb-space', feature: 'image_1k', requestId: 's1', userId: 'agent', labels: {} });
    await metering.commitReservation({ reservationId: spaceHold.reservationId });
    for (const accountId of roots) await reserve(accountId, 20n); // open holds
    await metering.reserveCredits({ accountId: 'rb-space', feature: 'content_rewrite', credits: 3n, requestId: 's2', userId: 'agent', labels: {} });
    await t.meterd.flusher!.drain();

    const before = Object.fromEntries(await Promise.all(roots.map(async (id) => [id, await poolFields(id)] as const)));
    // What the original Redis shows once every hold has expired.
    t.clock.advance(2 * 3_600_000);
    await t.meterd.sweeper.sweepOnce();
    const expected = await balances();

    const remembered = await grantIds();
    expect(remembered.flat().every((fingerprint) => fingerprint !== null)).toBe(true);
    // Redis loses everything; Postgres still has the ledger as it was flushed.
    await deleteKeys(LOCAL_REDIS.url as string, `${t.keyPrefix}:*`);
    await new LedgerStreams(redis, t.keyPrefix).ensureGroups();
    const report = await rebuildRedis(db, TEST_PRODUCT, t.clock.nowMs(), (pool) => t.meterd.store.restorePool(pool));
    expect(report).toEqual({ restored: 3, skipped: 0, holdsReleased: 4 });
    for (const accountId of roots) expect(await poolFields(accountId), accountId).toEqual(before[accountId]);
    expect(await grantIds()).toEqual(remembered); // a retried grant replays instead of granting twice

    await t.meterd.sweeper.sweepOnce();
    expect(await balances()).toEqual(expected);
    await admin.grantCredits({ accountId: 'rb-a', credits: 30n, kind: GrantKind.GRANT_KIND_PACK, grantId: 'pack', reason: '' });
    expect(await balances()).toEqual(expected);
    expect((await rebuildRedis(db, TEST_PRODUCT, t.clock.nowMs(), (pool) => t.meterd.store.restorePool(pool))).skipped).toBe(3);

    await t.meterd.flusher!.drain();
    const drift = await reconcile(db, (p, ids, max) => t.meterd.store.snapshotLedger(p, ids, max));
    expect(drift).toEqual({ accounts: 3, drifts: [], skippedPartitions: [] });
  });

  it('repairs one pool from the ledger over what Redis has: Postgres wins, an open hold keeps its expiry, unflushed events are never overwritten', async () => {
    const { admin, metering } = t.clients;
    const accountId = 'rp-a';
    const store = t.meterd.store;
    const repair = () => repairPool(db, TEST_PRODUCT, t.clock.nowMs(), accountId, store);
    await admin.upsertAccount({ account: { accountId, plan: 'metered', parentId: '', trialCredits: 0n, lowBalanceThreshold: 0n, lowBalancePercent: 0, pendingPlan: '' } });
    await admin.grantCredits({ accountId, credits: 50n, kind: GrantKind.GRANT_KIND_PACK, grantId: 'p1', reason: '' });
    await t.meterd.flusher!.drain();
    const done = await metering.reserveCredits({ accountId, feature: 'content_rewrite', credits: 10n, requestId: 'rp1', userId: '', labels: {} });
    await metering.commitReservation({ reservationId: done.reservationId, credits: 8n });
    const open = await metering.reserveCredits({ accountId, feature: 'content_rewrite', credits: 6n, requestId: 'rp2', userId: '', labels: {}, ttlSeconds: 900 });

    // Redis is ahead of Postgres (the hold is not flushed yet): nothing is overwritten.
    const seq = String(await store.poolSeq(accountId));
    const ahead = await repair();
    expect(ahead).toMatchObject({ outcome: 'postgres_behind', redisSeq: seq, ledgerSeq: String(BigInt(seq) - 3n) });
    await t.meterd.flusher!.drain();

    // A planted drift in one bucket; reconcile sees it, the repair puts the ledger's value back.
    const poolKey = `${partitionPrefix(t.keyPrefix, homePartition(accountId))}a/${accountId}`;
    const expiryKey = `${partitionPrefix(t.keyPrefix, homePartition(accountId))}expiry`;
    const expiryBefore = await redis.zscore(expiryKey, open.reservationId);
    const goodFields = await poolFields(accountId);
    await redis.hset(poolKey, 'pack', '999');
    const drifted = await reconcile(db, (p, ids, max) => store.snapshotLedger(p, ids, max));
    expect(drifted.drifts.filter((d) => d.accountId === accountId).map((d) => d.field)).toEqual(['pack']);

    expect(await repair()).toEqual({ accountId, outcome: 'repaired', redisSeq: seq, ledgerSeq: seq, holdsDropped: 0, conflicts: 0 });
    expect(await poolFields(accountId)).toEqual(goodFields);
    expect(await redis.zscore(expiryKey, open.reservationId)).toBe(expiryBefore); // the in-flight hold goes on
    const committed = await metering.commitReservation({ reservationId: open.reservationId, credits: 6n });
    expect(committed.chargedCredits).toBe(6n);
    await t.meterd.flusher!.drain();
    const after = await reconcile(db, (p, ids, max) => store.snapshotLedger(p, ids, max));
    expect(after.drifts).toEqual([]);
    expect(await repair()).toMatchObject({ outcome: 'repaired', ledgerSeq: String(BigInt(seq) + 1n) }); // idempotent
    expect(await repairPool(db, TEST_PRODUCT, t.clock.nowMs(), 'nobody', store)).toMatchObject({ outcome: 'not_found' });
  });
});
