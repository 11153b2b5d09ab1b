import { Redis } from 'ioredis';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GrantKind } from '../../src/gen/meterd/v1/types.js';
import { reconcile } from '../../src/postgres/reconciler.js';
import { homePartition, partitionPrefix } from '../../src/redis/keys.js';
import { LOCAL_REDIS, startTestMeterd, type TestMeterd } from '../support/meterd.js';

/** Reconciliation reports no drift in the normal state — flushed or not — and names a planted one. */
describe('reconcile Redis against the ledger', () => {
  let t: TestMeterd;
  let redis: Redis;
  let db: pg.Pool;
  const snapshot = (partition: number, ids: string[], max: number) => t.meterd.store.snapshotLedger(partition, ids, max);

  beforeAll(async () => {
    t = await startTestMeterd({ postgres: true });
    redis = new Redis(LOCAL_REDIS.url as string, { protocol: 2 });
    db = new pg.Pool({ connectionString: t.databaseUrl, max: 2 });
    db.on('error', () => {}); // a connection ended by DROP DATABASE at teardown is not a test failure
    const { admin, metering } = t.clients;
    for (const accountId of ['rec-a', 'rec-b']) {
      await admin.upsertAccount({ account: { accountId, plan: 'metered', parentId: '', trialCredits: 0n, lowBalanceThreshold: 0n, lowBalancePercent: 0, pendingPlan: '' } });
      await admin.grantCredits({ accountId, credits: 50n, kind: GrantKind.GRANT_KIND_PACK, grantId: 'p1', reason: '' });
      const hold = await metering.reserveCredits({ accountId, feature: 'content_rewrite', credits: 120n, requestId: 'r1', userId: '', labels: {} });
      await metering.commitReservation({ reservationId: hold.reservationId, credits: 130n });
    }
    await t.meterd.flusher!.drain();
  });
  afterAll(async () => {
    await db?.end();
    redis?.disconnect();
    await t?.stop();
  });

  it('finds no drift when everything is flushed, nor with events still waiting in the streams and open holds', async () => {
    expect(await reconcile(db, snapshot)).toEqual({ accounts: 2, drifts: [], skippedPartitions: [] });
    await t.clients.metering.reserveCredits({ accountId: 'rec-a', feature: 'image_1k', requestId: 'r2', userId: '', labels: {} });
    await t.clients.admin.adjustCredits({ accountId: 'rec-b', delta: -3n, adjustmentId: 'a1', reason: '', actor: 'support' });
    expect(await reconcile(db, snapshot)).toEqual({ accounts: 2, drifts: [], skippedPartitions: [] });
  });

  it('names the account and the field when Redis and the ledger disagree', async () => {
    // 100 allowance + 50 pack; 130 charged (100 + 30 from the pack); 3 removed by support: 17 left.
    const key = `${partitionPrefix(t.keyPrefix, homePartition('rec-b'))}a/rec-b`;
    await redis.hincrby(key, 'pack', 5);
    try {
      const report = await reconcile(db, snapshot);
      expect(report.drifts).toEqual([{ accountId: 'rec-b', field: 'pack', redis: 22n, ledger: 17n }]);
    } finally {
      await redis.hincrby(key, 'pack', -5);
    }
  });

  it('notices a lost event (a gap in the sequence)', async () => {
    const key = `${partitionPrefix(t.keyPrefix, homePartition('rec-a'))}a/rec-a`;
    await redis.hincrby(key, 'seq', 1);
    try {
      const report = await reconcile(db, snapshot);
      expect(report.drifts.map((d) => [d.accountId, d.field])).toEqual([['rec-a', 'events']]);
    } finally {
      await redis.hincrby(key, 'seq', -1);
    }
  });
});
