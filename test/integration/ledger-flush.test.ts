import { Redis } from 'ioredis';
import pg from 'pg';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PARTITION_COUNT } from '../../src/config/limits.js';
import { GrantKind } from '../../src/gen/meterd/v1/types.js';
import { LedgerFlusher } from '../../src/postgres/flusher.js';
import { homePartition, partitionPrefix } from '../../src/redis/keys.js';
import { FLUSH_GROUP, LedgerStreams } from '../../src/redis/ledger-streams.js';
import { writeLedgerBatch } from '../../src/postgres/ledger-writer.js';
import { LOCAL_REDIS, startTestMeterd, TEST_EPOCH_MS, type TestMeterd } from '../support/meterd.js';

const DAY_MS = 86_400_000;
const silent = pino({ level: 'silent' });

/**
 * Every ledger event reaches Postgres exactly once — across redelivery, a failed transaction and a
 * dead consumer — and the rows reproduce each pool's buckets in Redis.
 */
describe('ledger flush to Postgres', () => {
  let t: TestMeterd;
  let redis: Redis;
  let db: pg.Pool;
  let streams: LedgerStreams;
  const accounts = ['flush-a', 'flush-b', 'flush-c'];

  beforeAll(async () => {
    t = await startTestMeterd({ postgres: true });
    redis = new Redis(LOCAL_REDIS.url as string, { protocol: 2 });
    db = new pg.Pool({ connectionString: t.databaseUrl, max: 2 });
    db.on('error', () => {}); // a connection ended by DROP DATABASE at teardown is not a test failure
    streams = new LedgerStreams(redis, t.keyPrefix);
  });
  afterAll(async () => {
    await db?.end();
    redis?.disconnect();
    await t?.stop();
  });

  /** A mixed workload: every kind of balance change, on roots and a space. */
  async function workload(round: number): Promise<void> {
    const { metering, admin } = t.clients;
    for (const [i, accountId] of accounts.entries()) {
      if (round === 0) {
        await admin.upsertAccount({ account: {
          accountId, plan: i === 0 ? 'metered' : 'free', parentId: '', billingAnchor: new Date(TEST_EPOCH_MS),
          trialCredits: 10n, trialEndsAt: new Date(TEST_EPOCH_MS + 2 * DAY_MS), lowBalanceThreshold: 5n, lowBalancePercent: 0, pendingPlan: '',
        } });
      }
      await admin.grantCredits({ accountId, credits: 40n, kind: GrantKind.GRANT_KIND_PACK, grantId: `p${round}`, reason: '' });
      await admin.grantCredits({ accountId, credits: 8n, kind: GrantKind.GRANT_KIND_PROMO, grantId: `g${round}`, reason: '', expiresAt: new Date(t.clock.nowMs() + 5 * DAY_MS) });
      for (let n = 0; n < 6; n++) {
        const hold = await metering.reserveCredits({ accountId, feature: 'content_rewrite', credits: BigInt(5 + n), requestId: `r${round}-${n}`, userId: `u${n % 2}`, labels: {}, ttlSeconds: 60 });
        if (n % 3 === 0) {
          await metering.commitReservation({ reservationId: hold.reservationId, credits: BigInt(n * 3 + 1) });
          if (n === 3) await admin.refundCharge({ reservationId: hold.reservationId, credits: 2n, refundId: `f${round}`, reason: '' });
        } else if (n % 3 === 1) {
          await metering.releaseReservation({ reservationId: hold.reservationId, reason: 'failed' });
        } // n % 3 === 2: left to expire
      }
    }
    if (round === 0) {
      await admin.upsertAccount({ account: { accountId: 'flush-space', plan: '', parentId: 'flush-a', spaceLimitCredits: 100n, trialCredits: 0n, lowBalanceThreshold: 0n, lowBalancePercent: 0, pendingPlan: '' } });
    }
    const spaceHold = await metering.reserveCredits({ accountId: 'flush-space', feature: 'image_1k', requestId: `s${round}`, userId: 'agent', labels: { model: 'x' } });
    await metering.commitReservation({ reservationId: spaceHold.reservationId });
    t.clock.advance(3 * DAY_MS); // holds and the trial expire
    await t.meterd.sweeper.sweepOnce();
  }

  async function expectPostgresToMatchRedis(): Promise<void> {
    for (const accountId of accounts) {
      const sums = (await db.query<Record<string, string>>(`
        SELECT sum(trial) AS trial, sum(allowance) AS allow, sum(promo) AS promo, sum(pack) AS pack,
          sum(overage) AS ovg, sum(held) AS held, count(*) AS n, min(seq) AS first, max(seq) AS last
        FROM ledger_events WHERE account_id = $1`, [accountId])).rows[0] as Record<string, string>;
      const pool = await redis.hgetall(`${partitionPrefix(t.keyPrefix, homePartition(accountId))}a/${accountId}`);
      for (const field of ['trial', 'allow', 'promo', 'pack', 'ovg', 'held']) {
        expect(sums[field], `${accountId} ${field}`).toBe(pool[field] ?? '0');
      }
      expect(sums.first).toBe('1');
      expect(sums.n).toBe(sums.last);
      expect(sums.last).toBe(pool.seq);
    }
  }

  it('after a workload and a drain, Postgres reproduces every pool, with settings, outcomes and usage; streams are trimmed', async () => {
    await workload(0);
    await t.meterd.flusher!.drain();
    await expectPostgresToMatchRedis();

    for (let partition = 0; partition < PARTITION_COUNT; partition++) expect(await streams.length(partition)).toBe(0);

    const settings = await db.query('SELECT account_id, parent_id, plan, space_limit_credits, low_balance_threshold FROM accounts ORDER BY account_id');
    expect(settings.rows).toEqual([
      { account_id: 'flush-a', parent_id: '', plan: 'metered', space_limit_credits: null, low_balance_threshold: '5' },
      { account_id: 'flush-b', parent_id: '', plan: 'free', space_limit_credits: null, low_balance_threshold: '5' },
      { account_id: 'flush-c', parent_id: '', plan: 'free', space_limit_credits: null, low_balance_threshold: '5' },
      { account_id: 'flush-space', parent_id: 'flush-a', plan: '', space_limit_credits: '100', low_balance_threshold: '0' },
    ]);

    const outcomes = await db.query<{ state: string; n: string }>("SELECT state, count(*) AS n FROM reservation_outcomes GROUP BY state ORDER BY state");
    expect(outcomes.rows).toEqual([
      { state: 'committed', n: String(accounts.length * 2 + 1) },
      { state: 'expired', n: String(accounts.length * 2) },
      { state: 'released', n: String(accounts.length * 2) },
    ]);
    const refunded = await db.query<{ refunded: string }>('SELECT sum(refunded) AS refunded FROM reservation_outcomes');
    expect(refunded.rows[0]?.refunded).toBe(String(accounts.length * 2));

    // The rollups equal the live usage counters of that period.
    const usage = await t.clients.admin.getUsage({ accountId: 'flush-a' });
    const rolled = await db.query<{ ops: string; credits: string }>(
      'SELECT sum(operations) AS ops, sum(credits) AS credits FROM usage_rollups WHERE account_id = $1 AND period_start = $2',
      ['flush-a', usage.periodStart]);
    expect(rolled.rows[0]).toEqual({ ops: String(usage.operations), credits: String(usage.credits) });
    const space = await db.query('SELECT feature, user_id, operations, credits FROM usage_rollups WHERE space_id = $1', ['flush-space']);
    expect(space.rows).toEqual([{ feature: 'image_1k', user_id: 'agent', operations: '1', credits: '30' }]);
  });

  it('a batch committed but never acknowledged (crash between COMMIT and XACK) is redelivered and changes nothing', async () => {
    await workload(1);
    // A consumer that dies after COMMIT: it reads and writes, but never acknowledges.
    const read = await Promise.all(accounts.map((id) => streams.read(homePartition(id), 'dead-after-commit', 1_000)));
    const events = read.flat();
    expect(events.length).toBeGreaterThan(0);
    const client = await db.connect();
    await client.query('BEGIN');
    await writeLedgerBatch(client, events);
    await client.query('COMMIT');
    client.release();

    // Another replica takes the dead consumer's pending entries over and flushes them again.
    const survivor = new LedgerFlusher(streams, (p, g) => t.meterd.store.trimLedger(p, g), db, { batchEventsMax: 500, intervalMs: 100, reclaimIdleMs: 0 }, silent);
    await new Promise((resolve) => setTimeout(resolve, 5)); // the dead consumer is idle for a moment
    expect(await survivor.reclaimOnce()).toBe(events.length);
    // Holding nothing any more, the dead consumer is forgotten by the group.
    const consumers = (await redis.xinfo('CONSUMERS', streams.streamKey(homePartition('flush-a')), FLUSH_GROUP)) as string[][];
    expect(consumers.map((c) => c[c.indexOf('name') + 1])).not.toContain('dead-after-commit');
    let duplicates = 0;
    for (;;) {
      const result = await survivor.flushOnce();
      duplicates += result.duplicates;
      if (result.events === 0) break;
    }
    expect(duplicates).toBe(events.length);
    await t.meterd.flusher!.drain();
    await expectPostgresToMatchRedis();
    const pending = await redis.xpending(streams.streamKey(homePartition('flush-a')), FLUSH_GROUP);
    expect(pending[0]).toBe(0);
  });

  it('a failed transaction (Postgres unreachable) leaves the events pending; the next flush writes them once', async () => {
    await workload(2);
    const unreachable = new pg.Pool({ connectionString: 'postgres://postgres@127.0.0.1:1/none', connectionTimeoutMillis: 500 });
    const consumer = 'flaky-postgres';
    const failing = new LedgerFlusher(streams, (p, g) => t.meterd.store.trimLedger(p, g), unreachable, { batchEventsMax: 5_000, intervalMs: 100, reclaimIdleMs: 60_000, consumer }, silent);
    await expect(failing.flushOnce()).rejects.toThrow();
    await unreachable.end();
    // The events wait in Redis; past the bound the flusher raises the alarm, and lowers it once flushed.
    const watcher = new LedgerFlusher(streams, (p, g) => t.meterd.store.trimLedger(p, g), db, { batchEventsMax: 1, intervalMs: 100, reclaimIdleMs: 60_000, backlogAlarmEvents: 10 }, silent);
    expect((await watcher.checkBacklog()).alarm).toBe(true);
    const pendingBefore = (await redis.xpending(streams.streamKey(homePartition('flush-b')), FLUSH_GROUP))[0];
    expect(pendingBefore).toBeGreaterThan(0);

    const recovered = new LedgerFlusher(streams, (p, g) => t.meterd.store.trimLedger(p, g), db, { batchEventsMax: 5_000, intervalMs: 100, reclaimIdleMs: 60_000, consumer }, silent);
    const result = await recovered.flushOnce();
    expect(result.inserted).toBe(result.events);
    expect(result.duplicates).toBe(0);
    await recovered.drain();
    await expectPostgresToMatchRedis();
    expect(await watcher.checkBacklog()).toEqual({ events: 0, alarm: false });
  });

  it('ListLedgerEntries pages through an account newest first, with filters; a space sees its own entries', async () => {
    await t.meterd.flusher!.drain();
    const { admin } = t.clients;
    const all: string[] = [];
    let pageToken = '';
    do {
      const page = await admin.listLedgerEntries({ accountId: 'flush-b', kinds: [], reservationId: '', userId: '', feature: '', pageSize: 7, pageToken });
      expect(page.entries.length).toBeLessThanOrEqual(7);
      all.push(...page.entries.map((e) => e.eventId));
      pageToken = page.nextPageToken;
    } while (pageToken !== '');
    const total = await db.query<{ n: string }>("SELECT count(*) AS n FROM ledger_events WHERE account_id = 'flush-b'");
    expect(all).toHaveLength(Number(total.rows[0]?.n));
    expect(all).toEqual([...all].sort((a, b) => Number(b.split('/')[1]) - Number(a.split('/')[1])));

    const commits = await admin.listLedgerEntries({ accountId: 'flush-b', kinds: ['commit'], reservationId: '', userId: 'u0', feature: '', pageSize: 0, pageToken: '' });
    expect(commits.entries.length).toBeGreaterThan(0);
    expect(commits.entries.every((e) => e.kind === 'commit' && e.userId === 'u0' && e.charged > 0n)).toBe(true);

    const space = await admin.listLedgerEntries({ accountId: 'flush-space', kinds: [], reservationId: '', userId: '', feature: '', pageSize: 0, pageToken: '' });
    expect(space.entries.length).toBeGreaterThan(0);
    expect(space.entries.every((e) => e.spaceId === 'flush-space' && e.accountId === 'flush-a')).toBe(true);
  });

  it('GetUsage of a past period comes from the rollups; the current one from live counters', async () => {
    const { admin } = t.clients;
    const before = await admin.getUsage({ accountId: 'flush-a' });
    t.clock.set(before.periodEnd!.getTime() + DAY_MS); // a new period begins
    await t.clients.metering.getBalance({ accountId: 'flush-a' });
    await t.meterd.flusher!.drain();
    const current = await admin.getUsage({ accountId: 'flush-a' });
    expect(current.periodStart).toEqual(before.periodEnd);
    expect(current.credits).toBe(0n);
    const past = await admin.getUsage({ accountId: 'flush-a', periodStart: before.periodStart });
    expect(past.periodStart).toEqual(before.periodStart);
    expect(past.periodEnd).toEqual(before.periodEnd);
    expect({ operations: past.operations, credits: past.credits }).toEqual({ operations: before.operations, credits: before.credits });
    expect(past.features).toEqual(before.features);
    expect(past.users).toEqual(before.users);
    expect(past.spaces).toEqual(before.spaces);
    const spacePast = await admin.getUsage({ accountId: 'flush-space', periodStart: before.periodStart });
    expect(spacePast.credits).toBe(90n);
  });
});
