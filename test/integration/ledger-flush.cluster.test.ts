import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GrantKind } from '../../src/gen/meterd/v1/types.js';
import { homePartition } from '../../src/redis/keys.js';
import { startTestMeterd, TEST_EPOCH_MS, type TestMeterd } from '../support/meterd.js';
import { startRedisCluster, type RedisClusterHandle } from '../support/redis-servers.js';

/**
 * The flush over a Redis Cluster: its partitions live in different slots, so the flusher reads them
 * one XREADGROUP each (one Redis reads them all in one command). Every event, from every partition,
 * reaches Postgres once, and a second drain finds nothing left pending.
 */
describe('ledger flush from a 3-master Redis Cluster', () => {
  let cluster: RedisClusterHandle;
  let t: TestMeterd;
  let db: pg.Pool;
  const accounts = Array.from({ length: 24 }, (_, i) => `cluster-flush-${i}`);

  beforeAll(async () => {
    cluster = await startRedisCluster({ masters: 3 });
    t = await startTestMeterd({ target: { clusterNodes: cluster.nodes }, postgres: true });
    db = new pg.Pool({ connectionString: t.databaseUrl, max: 2 });
    db.on('error', () => {}); // a connection ended by DROP DATABASE at teardown is not a test failure
  });
  afterAll(async () => {
    await db?.end();
    await t?.stop();
    await cluster?.stop();
  });

  it('flushes the events of partitions on every master, each once', async () => {
    expect(new Set(accounts.map(homePartition)).size).toBeGreaterThan(10);
    const { metering, admin } = t.clients;
    for (const accountId of accounts) {
      await admin.upsertAccount({ account: { accountId, plan: 'free', parentId: '', billingAnchor: new Date(TEST_EPOCH_MS), trialCredits: 0n, lowBalanceThreshold: 0n, lowBalancePercent: 0, pendingPlan: '' } });
      await admin.grantCredits({ accountId, credits: 50n, kind: GrantKind.GRANT_KIND_PACK, grantId: 'p', reason: '' });
      const hold = await metering.reserveCredits({ accountId, feature: 'content_rewrite', credits: 7n, requestId: 'r', userId: 'u', labels: {} });
      await metering.commitReservation({ reservationId: hold.reservationId, credits: 5n });
    }
    const written = await t.meterd.drainLedger();
    const rows = (await db.query<{ account_id: string; n: string; last: string }>(
      'SELECT account_id, count(*) AS n, max(seq) AS last FROM ledger_events GROUP BY account_id')).rows;
    const byAccount = new Map(rows.map((r) => [r.account_id, r]));
    for (const accountId of accounts) {
      const balance = await metering.getBalance({ accountId });
      expect(balance.held, accountId).toBe(0n);
      const row = byAccount.get(accountId);
      expect(row, `${accountId} has ledger rows`).toBeDefined();
      expect(Number(row?.n), `${accountId}: rows = last seq (no gap, no duplicate)`).toBe(Number(row?.last));
    }
    expect(written).toBe(rows.reduce((sum, r) => sum + Number(r.n), 0));
    expect(await t.meterd.drainLedger()).toBe(0);
  });
});
