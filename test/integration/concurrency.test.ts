import { randomBytes } from 'node:crypto';
import { status, type ServiceError } from '@grpc/grpc-js';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Balance } from '../../src/gen/meterd/v1/types.js';
import { ReservationState } from '../../src/gen/meterd/v1/types.js';
import { errorInfoOf } from '../../src/grpc/status-details.js';
import { connectClients, type TestClients } from '../support/grpc-clients.js';
import { deleteKeys, dropDatabase, LOCAL_REDIS, testDatabaseUrl } from '../support/meterd.js';
import { startMeterdProcess, stopMeterdProcess, writeProductConfig, type MeterdProcess } from '../support/meterd-process.js';

/**
 * Atomicity under contention, end to end: two real meterd OS processes (as two gateway sidecars
 * would run) share one Redis, and many reserves race for the same pool through gRPC. Exactly what
 * the pool holds is granted, never more, and no reply ever shows a balance below zero.
 */

const REDIS_URL = LOCAL_REDIS.url ?? 'redis://127.0.0.1:6379';

const PRODUCT_YAML = `
plans:
  - { id: pool250, monthly_credits: 250, price_cents: 0 }
  - { id: pool100, monthly_credits: 100, price_cents: 0 }
features:
  - { id: one_credit, credits: 1 }
`;

type Outcome<T> =
  | { ok: true; value: T }
  | { ok: false; code: number; reason: string; metadata: Record<string, string>; message: string };

function isServiceError(err: unknown): err is ServiceError {
  return typeof err === 'object' && err !== null && typeof (err as Partial<ServiceError>).code === 'number';
}

function outcomes<T>(settled: Array<PromiseSettledResult<T>>): Array<Outcome<T>> {
  return settled.map((s) => {
    if (s.status === 'fulfilled') return { ok: true, value: s.value };
    if (!isServiceError(s.reason)) throw s.reason;
    const info = errorInfoOf(s.reason);
    return { ok: false, code: s.reason.code, reason: info?.reason ?? '', metadata: info?.metadata ?? {}, message: s.reason.details };
  });
}

/** Counts by "OK" or "<code>/<reason>", for readable failure messages. */
function tally(list: Array<Outcome<unknown>>): Record<string, number> {
  const counts: Record<string, number> = {};
  for (const o of list) {
    const key = o.ok ? 'OK' : `${status[o.code] ?? o.code}/${o.reason}`;
    counts[key] = (counts[key] ?? 0) + 1;
  }
  return counts;
}

/**
 * Ledger events of an account as both processes' flushers put them into Postgres: waits (bounded)
 * until `expectedCommits` commit events arrived, then counts events by kind and checks the
 * per-account sequence is 1..n without gaps or duplicates.
 */
async function flushedLedger(databaseUrl: string, accountId: string, expectedCommits: number): Promise<{ kinds: Record<string, number>; gapless: boolean }> {
  const client = new pg.Client({ connectionString: databaseUrl });
  await client.connect();
  try {
    for (let attempt = 0; attempt < 200; attempt++) {
      const commits = await client.query<{ n: string }>("SELECT count(*) AS n FROM ledger_events WHERE account_id = $1 AND kind = 'commit'", [accountId]);
      if (Number(commits.rows[0]?.n) >= expectedCommits) break;
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    const kinds: Record<string, number> = {};
    for (const row of (await client.query<{ kind: string; n: string }>('SELECT kind, count(*) AS n FROM ledger_events WHERE account_id = $1 GROUP BY kind', [accountId])).rows) {
      kinds[row.kind] = Number(row.n);
    }
    const seq = (await client.query<{ n: string; max: string; min: string }>('SELECT count(*) AS n, max(seq) AS max, min(seq) AS min FROM ledger_events WHERE account_id = $1', [accountId])).rows[0];
    return { kinds, gapless: seq !== undefined && seq.min === '1' && seq.n === seq.max };
  } finally {
    await client.end();
  }
}

describe('concurrent reserves through two meterd processes sharing one Redis', () => {
  const run = randomBytes(6).toString('hex');
  const keyPrefix = `tc${run}`;
  const databaseUrl = testDatabaseUrl(`meterd_${keyPrefix}`);
  let config: { path: string; remove(): Promise<void> } | undefined;
  const processes: MeterdProcess[] = [];
  let a: TestClients;
  let b: TestClients;
  const clientsOpen: TestClients[] = [];

  beforeAll(async () => {
    config = await writeProductConfig(PRODUCT_YAML);
    const configPath = config.path;
    const env = {
      REDIS_URL,
      REDIS_KEY_PREFIX: keyPrefix,
      DATABASE_URL: databaseUrl,
      LOG_LEVEL: 'warn',
      METERD_CONFIG: configPath,
      SHUTDOWN_GRACE_MS: '2000',
    };
    const probe = `probe-${run}`;
    const [first, second] = await Promise.all([
      startMeterdProcess(env, probe, processes),
      startMeterdProcess(env, probe, processes),
    ]);
    a = connectClients(first.port);
    b = connectClients(second.port);
    clientsOpen.push(a, b);
  });

  afterAll(async () => {
    for (const c of clientsOpen) c.close();
    await Promise.all(processes.map((p) => stopMeterdProcess(p)));
    await deleteKeys(REDIS_URL, `${keyPrefix}:*`);
    await dropDatabase(databaseUrl);
    await config?.remove();
  });

  const createRoot = async (accountId: string, plan: string) => {
    await a.admin.upsertAccount({ account: { accountId, plan, parentId: '', trialCredits: 0n, lowBalanceThreshold: 0n, lowBalancePercent: 0, pendingPlan: '' } });
    // Connect both channels before the race, so neither process starts late by a connection setup.
    await Promise.all([a.metering.getBalance({ accountId }), b.metering.getBalance({ accountId })]);
  };

  it('1,000 parallel 1-credit reserves against 250 available: exactly 250 granted, never negative', async () => {
    const accountId = `acct-${run}`;
    await createRoot(accountId, 'pool250');

    const settled = await Promise.allSettled(
      Array.from({ length: 1000 }, (_, i) =>
        (i % 2 === 0 ? a : b).metering.reserveCredits({
          accountId, feature: 'one_credit', requestId: `req-${run}-${i}`, userId: `user-${i % 7}`, labels: {},
        })),
    );
    const results = outcomes(settled);
    const granted = results.flatMap((o) => (o.ok ? [o.value] : []));
    const refused = results.flatMap((o) => (o.ok ? [] : [o]));
    expect(tally(results)).toEqual({ OK: 250, 'RESOURCE_EXHAUSTED/INSUFFICIENT_CREDITS': 750 });

    expect(new Set(granted.map((r) => r.reservationId)).size).toBe(250);
    for (const r of granted) {
      expect(r.state).toBe(ReservationState.RESERVATION_STATE_HELD);
      expect(r.heldCredits).toBe(1n);
      expect(r.replayed).toBe(false);
      const bal = r.balance!;
      expect(bal.available).toBeGreaterThanOrEqual(0n);
      expect(bal.held).toBeGreaterThanOrEqual(1n); // its own hold at least
      expect(bal.held).toBeLessThanOrEqual(250n);
      expect(bal.available + bal.held).toBe(250n); // nothing is committed yet: every credit is one or the other
    }
    // Each of the 250 holds saw a different held total: they were applied one at a time.
    expect(new Set(granted.map((r) => r.balance!.held)).size).toBe(250);
    for (const r of refused) {
      expect(r.message).toBe('one_credit needs 1 credits; 0 available');
      expect(r.metadata).toMatchObject({ required: '1', available: '0', held: '250' });
    }
    if (process.env.CONCURRENCY_TEST_VERBOSE) {
      const viaA = granted.filter((r) => Number(r.requestId.split('-').pop()) % 2 === 0).length;
      console.log(`granted through process A: ${viaA}, through process B: ${250 - viaA}`);
    }

    for (const c of [a, b]) {
      const bal = await c.metering.getBalance({ accountId });
      expect(bal.available).toBe(0n);
      expect(bal.held).toBe(250n);
      expect(bal.allowanceRemaining).toBe(0n);
    }

    // Commit all 250 at once, again through both processes.
    const commits = outcomes(await Promise.allSettled(
      granted.map((r, i) => (i % 2 === 0 ? b : a).metering.commitReservation({ reservationId: r.reservationId })),
    ));
    expect(tally(commits)).toEqual({ OK: 250 });
    const committed = commits.flatMap((o) => (o.ok ? [o.value] : []));
    for (const c of committed) {
      expect(c.chargedCredits).toBe(1n);
      expect(c.releasedCredits).toBe(0n);
      expect(c.shortfallCredits).toBe(0n);
      expect(c.replayed).toBe(false);
      expect(c.balance!.available).toBe(0n);
      expect(c.balance!.held).toBeGreaterThanOrEqual(0n);
      expect(c.balance!.held).toBeLessThan(250n);
    }
    expect(new Set(committed.map((c) => c.balance!.held)).size).toBe(250);

    const after = await b.metering.getBalance({ accountId });
    expect(after.available).toBe(0n);
    expect(after.held).toBe(0n);
    const usage = await a.admin.getUsage({ accountId });
    expect(usage.credits).toBe(250n);
    expect(usage.operations).toBe(250n);
    expect(usage.users.reduce((sum, u) => sum + u.credits, 0n)).toBe(250n);

    // Both processes' flushers share the streams: every event reaches Postgres once.
    const ledger = await flushedLedger(databaseUrl, accountId, 250);
    expect(ledger.kinds).toMatchObject({ hold: 250, commit: 250 });
    expect(ledger.gapless).toBe(true);
  });

  it('a space and its root racing from both processes: the space stays within its cap, the pool is never overdrawn', async () => {
    const rootId = `root-${run}`;
    const spaceId = `space-${run}`;
    const POOL = 100n;
    const CAP = 40n;
    await createRoot(rootId, 'pool100');
    await a.admin.upsertAccount({
      account: { accountId: spaceId, plan: '', parentId: rootId, spaceLimitCredits: CAP, trialCredits: 0n, lowBalanceThreshold: 0n, lowBalancePercent: 0, pendingPlan: '' },
    });

    // 150 reserves on the space and 150 on the root, interleaved, each account through both processes.
    const requests = Array.from({ length: 300 }, (_, i) => ({
      accountId: i % 2 === 0 ? spaceId : rootId,
      client: Math.floor(i / 2) % 2 === 0 ? a : b,
      requestId: `sreq-${run}-${i}`,
    }));
    const results = outcomes(await Promise.allSettled(
      requests.map((r) => r.client.metering.reserveCredits({ accountId: r.accountId, feature: 'one_credit', requestId: r.requestId, userId: '', labels: {} })),
    ));

    let spaceGranted = 0n;
    let rootGranted = 0n;
    const check = (accountId: string, bal: Balance) => {
      expect(bal.poolAccountId).toBe(rootId);
      expect(bal.available).toBeGreaterThanOrEqual(0n);
      expect(bal.held).toBeGreaterThanOrEqual(1n);
      expect(bal.held).toBeLessThanOrEqual(POOL);
      if (accountId === spaceId) {
        const room = bal.spaceLimitRemaining!;
        expect(room).toBeGreaterThanOrEqual(0n);
        expect(room).toBeLessThan(CAP);
        expect(bal.available).toBe(room < POOL - bal.held ? room : POOL - bal.held);
      } else {
        expect(bal.available + bal.held).toBe(POOL);
      }
    };
    results.forEach((o, i) => {
      const { accountId } = requests[i]!;
      if (o.ok) {
        expect(o.value.accountId).toBe(accountId);
        check(accountId, o.value.balance!);
        if (accountId === spaceId) spaceGranted++;
        else rootGranted++;
      } else {
        expect(`${status[o.code]}/${o.reason}`).toBe('RESOURCE_EXHAUSTED/INSUFFICIENT_CREDITS');
        expect(o.metadata.available).toBe('0');
      }
    });

    expect(spaceGranted).toBeLessThanOrEqual(CAP);
    expect(spaceGranted + rootGranted).toBe(POOL); // 150 root reserves alone would overdraw it: the pool is used up exactly

    for (const c of [a, b]) {
      const root = await c.metering.getBalance({ accountId: rootId });
      expect(root.available).toBe(0n);
      expect(root.held).toBe(POOL);
      const space = await c.metering.getBalance({ accountId: spaceId });
      expect(space.available).toBe(0n);
      expect(space.spaceLimitRemaining).toBe(CAP - spaceGranted);
    }

    // Commit everything, from both processes; usage is attributed to the space within the root's.
    const reservationIds = results.flatMap((o) => (o.ok ? [o.value.reservationId] : []));
    const commits = outcomes(await Promise.allSettled(
      reservationIds.map((id, i) => (i % 2 === 0 ? b : a).metering.commitReservation({ reservationId: id })),
    ));
    expect(tally(commits)).toEqual({ OK: Number(POOL) });
    const rootUsage = await b.admin.getUsage({ accountId: rootId });
    expect(rootUsage.credits).toBe(POOL);
    expect(rootUsage.spaces).toEqual(spaceGranted > 0n ? [{ spaceId, operations: spaceGranted, credits: spaceGranted }] : []);
    const spaceUsage = await a.admin.getUsage({ accountId: spaceId });
    expect(spaceUsage.credits).toBe(spaceGranted);
    const final = await a.metering.getBalance({ accountId: spaceId });
    expect(final.held).toBe(0n);
    expect(final.available).toBe(0n);
    expect(final.spaceLimitRemaining).toBe(CAP - spaceGranted);
  });
});
