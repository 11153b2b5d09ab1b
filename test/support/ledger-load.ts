// Reserve+commit load through meterd's gRPC API as a well-behaved gateway drives it (UNAVAILABLE is
// retried with the same ids, on any live replica), remembering every charge the clients saw
// committed; and the ledger invariants the fault tests check once the load is over.
import { setTimeout as sleep } from 'node:timers/promises';
import { status, type ServiceError } from '@grpc/grpc-js';
import type { Redis } from 'ioredis';
import type pg from 'pg';
import { PARTITION_COUNT } from '../../src/config/limits.js';
import { parseProductConfig } from '../../src/config/product-config.js';
import { errorInfoOf } from '../../src/grpc/status-details.js';
import { reconcile, type ReconcileReport, type SnapshotReader } from '../../src/postgres/reconciler.js';
import { homePartition, partitionPrefix } from '../../src/redis/keys.js';
import { FLUSH_GROUP } from '../../src/redis/ledger-streams.js';
import type { TestClients } from './grpc-clients.js';

/** One roomy plan (the load never runs out of credits) and one feature priced by explicit credits. */
export const LOAD_PRODUCT_YAML = `
plans:
  - { id: roomy, monthly_credits: 100000000, price_cents: 0 }
features:
  - { id: work, credits: 1 }
`;
export const LOAD_PRODUCT = parseProductConfig({
  plans: [{ id: 'roomy', monthly_credits: 100_000_000, price_cents: 0 }],
  features: [{ id: 'work', credits: 1 }],
});

export async function createLoadAccounts(clients: TestClients, accounts: string[]): Promise<void> {
  for (const accountId of accounts) {
    await clients.admin.upsertAccount({ account: { accountId, plan: 'roomy', parentId: '', trialCredits: 0n, lowBalanceThreshold: 0n, lowBalancePercent: 0, pendingPlan: '' } });
  }
}

export function isServiceError(err: unknown): err is ServiceError {
  return typeof err === 'object' && err !== null && typeof (err as Partial<ServiceError>).code === 'number';
}

function describeError(err: unknown): string {
  if (!isServiceError(err)) return err instanceof Error ? err.message : String(err);
  return `${status[err.code] ?? err.code}/${errorInfoOf(err)?.reason ?? ''}: ${err.details}`;
}

export interface LoadTarget {
  name: string;
  clients: TestClients;
  live: boolean;
}

export interface AcknowledgedCommit {
  reservationId: string;
  accountId: string;
  charged: bigint;
  /** Wall-clock ms when the client got the reply. */
  atMs: number;
}

/**
 * `workers` loops of ReserveCredits (1-4 credits) then CommitReservation (commitCredits(i)) over
 * the accounts, through the live targets in turn. UNAVAILABLE is retried with the same request or
 * reservation id (on the next live target) for up to retryForMs; anything else is recorded in
 * `errors` and the loop goes on.
 */
export class CreditLoad {
  readonly acknowledged: AcknowledgedCommit[] = [];
  /** reservation id → what the (first) successful commit reply said was charged. */
  readonly committed = new Map<string, bigint>();
  readonly errors: string[] = [];
  ops = 0;
  /** UNAVAILABLE answers that were retried. */
  retries = 0;
  commitCredits: (i: number) => bigint = (i) => BigInt(1 + ((i * 7) % 9));
  private targets: LoadTarget[] = [];
  private turn = 0;
  private loops: Array<Promise<void>> = [];
  private stopping = false;
  private generation = 0;

  constructor(private readonly accounts: string[], private readonly runId: string, private readonly retryForMs = 20_000) {}

  setTargets(targets: LoadTarget[]): void {
    this.targets = targets;
  }

  addTarget(target: LoadTarget): void {
    this.targets = [...this.targets, target];
  }

  /** Calls stop going to this target (it is about to be, or was, killed). */
  markDead(name: string): void {
    for (const t of this.targets) if (t.name === name) t.live = false;
  }

  start(workers: number): void {
    if (this.loops.length > 0) throw new Error('load already running');
    this.stopping = false;
    this.generation += 1;
    for (let w = 0; w < workers; w++) this.loops.push(this.worker(w, this.generation));
  }

  /** Lets every loop finish its reserve+commit, then returns. */
  async stop(): Promise<void> {
    this.stopping = true;
    await Promise.all(this.loops);
    this.loops = [];
  }

  committedCredits(): bigint {
    let sum = 0n;
    for (const charged of this.committed.values()) sum += charged;
    return sum;
  }

  /** Waits until `more` reserve+commit pairs completed since the call (bounded). */
  async waitForOps(more: number, withinMs = 30_000): Promise<void> {
    const target = this.ops + more;
    const deadline = Date.now() + withinMs;
    while (this.ops < target) {
      if (Date.now() > deadline) throw new Error(`load made ${this.ops - target + more} of ${more} operations within ${withinMs} ms; errors: ${this.errors.slice(-5).join('; ')}`);
      await sleep(20);
    }
  }

  private pick(): LoadTarget | undefined {
    const live = this.targets.filter((t) => t.live);
    if (live.length === 0) return undefined;
    this.turn = (this.turn + 1) % live.length;
    return live[this.turn];
  }

  private async call<T>(op: (clients: TestClients) => Promise<T>): Promise<T> {
    const deadline = Date.now() + this.retryForMs;
    for (;;) {
      const target = this.pick();
      if (target) {
        try {
          return await op(target.clients);
        } catch (err) {
          if (!isServiceError(err) || err.code !== status.UNAVAILABLE || Date.now() > deadline) throw err;
          this.retries += 1;
        }
      } else if (Date.now() > deadline) {
        throw new Error('no live meterd to call');
      }
      await sleep(20);
    }
  }

  private async worker(w: number, generation: number): Promise<void> {
    for (let i = 0; !this.stopping; i++) {
      const accountId = this.accounts[(w + i) % this.accounts.length] as string;
      const requestId = `${this.runId}-g${generation}-w${w}-${i}`;
      try {
        const hold = await this.call((c) => c.metering.reserveCredits({
          accountId, feature: 'work', credits: BigInt(1 + (i % 4)), requestId, userId: `u${w % 3}`, labels: {},
        }));
        const credits = this.commitCredits(i);
        const done = await this.call((c) => c.metering.commitReservation({ reservationId: hold.reservationId, credits }));
        if (!this.committed.has(hold.reservationId)) {
          this.committed.set(hold.reservationId, done.chargedCredits);
          this.acknowledged.push({ reservationId: hold.reservationId, accountId, charged: done.chargedCredits, atMs: Date.now() });
        }
        this.ops += 1;
      } catch (err) {
        this.errors.push(describeError(err));
        await sleep(20);
      }
    }
  }
}

export interface LedgerView {
  db: pg.Pool;
  redis: Redis;
  keyPrefix: string;
  accounts: string[];
}

export async function redisSeqs(view: LedgerView): Promise<Map<string, bigint>> {
  const seqs = new Map<string, bigint>();
  for (const accountId of view.accounts) {
    const seq = await view.redis.hget(`${partitionPrefix(view.keyPrefix, homePartition(accountId))}a/${accountId}`, 'seq');
    seqs.set(accountId, BigInt(seq ?? '0'));
  }
  return seqs;
}

export interface PoolSequence {
  n: bigint;
  distinct: bigint;
  min: bigint;
  max: bigint;
}

export async function postgresSequences(view: LedgerView): Promise<Map<string, PoolSequence>> {
  const rows = (await view.db.query<{ account_id: string; n: string; d: string; lo: string; hi: string }>(`
    SELECT account_id, count(*) AS n, count(DISTINCT seq) AS d, min(seq) AS lo, max(seq) AS hi
    FROM ledger_events WHERE account_id = ANY($1::text[]) GROUP BY account_id`, [view.accounts])).rows;
  return new Map(rows.map((r) => [r.account_id, { n: BigInt(r.n), distinct: BigInt(r.d), min: BigInt(r.lo), max: BigInt(r.hi) }]));
}

/** Entries read by the flush group but not acknowledged yet, over every partition stream. */
export async function pendingEntries(redis: Redis, keyPrefix: string): Promise<number> {
  const pipeline = redis.pipeline();
  for (let p = 0; p < PARTITION_COUNT; p++) pipeline.xpending(`${partitionPrefix(keyPrefix, p)}ledger`, FLUSH_GROUP);
  let total = 0;
  for (const [err, reply] of (await pipeline.exec()) ?? []) {
    if (err) throw err;
    total += Number((reply as [number, ...unknown[]])[0]);
  }
  return total;
}

export async function streamLengths(redis: Redis, keyPrefix: string): Promise<number> {
  const pipeline = redis.pipeline();
  for (let p = 0; p < PARTITION_COUNT; p++) pipeline.xlen(`${partitionPrefix(keyPrefix, p)}ledger`);
  let total = 0;
  for (const [err, reply] of (await pipeline.exec()) ?? []) {
    if (err) throw err;
    total += Number(reply);
  }
  return total;
}

/**
 * Per pool, the sequence numbers past Postgres' last event that have an event kept apart (a Redis
 * timeline that diverged from the ledger, not repaired yet).
 */
async function keptApartPastLedger(view: LedgerView): Promise<Map<string, bigint>> {
  const rows = (await view.db.query<{ account_id: string; n: string }>(`
    SELECT c.account_id, count(DISTINCT c.seq) AS n FROM ledger_conflicts c
    WHERE c.account_id = ANY($1::text[]) AND c.repaired_at IS NULL
      AND c.seq > (SELECT coalesce(max(e.seq), 0) FROM ledger_events e WHERE e.account_id = c.account_id)
    GROUP BY c.account_id`, [view.accounts])).rows;
  return new Map(rows.map((r) => [r.account_id, BigInt(r.n)]));
}

/**
 * Bounded poll until Postgres holds every event of every pool (as many rows as Redis' sequence
 * number, counting those of a diverged Redis timeline kept apart in ledger_conflicts) and the flush
 * group has nothing pending (every entry acknowledged, also those dead consumers left behind).
 */
export async function waitUntilFlushed(view: LedgerView, withinMs = 30_000): Promise<void> {
  const deadline = Date.now() + withinMs;
  for (;;) {
    const seqs = await redisSeqs(view);
    const stored = await postgresSequences(view);
    const keptApart = await keptApartPastLedger(view);
    const behind = view.accounts.filter((a) => (stored.get(a)?.n ?? 0n) + (keptApart.get(a) ?? 0n) !== seqs.get(a));
    const pending = await pendingEntries(view.redis, view.keyPrefix);
    if (behind.length === 0 && pending === 0) return;
    if (Date.now() > deadline) {
      const detail = behind.map((a) => `${a}: ${stored.get(a)?.n ?? 0n} in Postgres, seq ${seqs.get(a)} in Redis`).join('; ');
      throw new Error(`ledger not flushed within ${withinMs} ms: ${pending} entries pending; ${detail || 'every pool complete'}`);
    }
    await sleep(100);
  }
}

export interface InvariantReport {
  reconcile: ReconcileReport;
  events: bigint;
  commits: number;
  charged: bigint;
}

/**
 * The invariants after recovery and a final drain:
 * - reconcile(): every pool's fields in Redis equal the sum of its events (no drift, nothing skipped);
 * - per pool, the sequence numbers in Postgres are exactly 1..n, n = the pool's seq in Redis;
 * - every commit the clients saw is in Postgres once, with the charge they saw, and nothing else
 *   was charged; the projections (outcomes, usage rollups) count each commit once.
 * Returns what it checked, for the test's log. Throws (with the differences) when one fails.
 */
export async function checkLedgerInvariants(view: LedgerView, snapshot: SnapshotReader, committed: ReadonlyMap<string, bigint>): Promise<InvariantReport> {
  const problems: string[] = [];
  const report = await reconcile(view.db, snapshot);
  if (report.drifts.length > 0) {
    problems.push(`reconcile drift: ${report.drifts.slice(0, 10).map((d) => `${d.accountId}.${d.field} redis=${d.redis} ledger=${d.ledger}`).join(', ')}`);
  }
  if (report.skippedPartitions.length > 0) problems.push(`reconcile skipped partitions ${report.skippedPartitions.join(',')}`);
  if (report.accounts !== view.accounts.length) problems.push(`reconcile checked ${report.accounts} pools, expected ${view.accounts.length}`);

  const seqs = await redisSeqs(view);
  const stored = await postgresSequences(view);
  let events = 0n;
  for (const accountId of view.accounts) {
    const s = stored.get(accountId);
    const seq = seqs.get(accountId) ?? 0n;
    events += s?.n ?? 0n;
    if (!s || s.min !== 1n || s.n !== s.max || s.distinct !== s.n || s.max !== seq) {
      problems.push(`${accountId}: Postgres seq ${s ? `n=${s.n} distinct=${s.distinct} ${s.min}..${s.max}` : 'none'}, Redis seq ${seq}`);
    }
  }

  const commits = (await view.db.query<{ reservation_id: string; charged: string; n: string }>(`
    SELECT reservation_id, sum(charged) AS charged, count(*) AS n FROM ledger_events
    WHERE kind = 'commit' AND account_id = ANY($1::text[]) GROUP BY reservation_id`, [view.accounts])).rows;
  const inPostgres = new Map(commits.map((r) => [r.reservation_id, { charged: BigInt(r.charged), n: Number(r.n) }]));
  const missing = [...committed].filter(([id, charged]) => inPostgres.get(id)?.charged !== charged || inPostgres.get(id)?.n !== 1);
  const unexpected = [...inPostgres.keys()].filter((id) => !committed.has(id));
  if (missing.length > 0) problems.push(`${missing.length} acknowledged commits missing or different in Postgres, e.g. ${missing.slice(0, 3).map(([id, c]) => `${id}=${c} vs ${JSON.stringify(inPostgres.get(id) ?? null, (_k, v: unknown) => (typeof v === 'bigint' ? v.toString() : v))}`).join(', ')}`);
  if (unexpected.length > 0) problems.push(`${unexpected.length} commits in Postgres no client saw, e.g. ${unexpected.slice(0, 3).join(', ')}`);

  let charged = 0n;
  for (const c of committed.values()) charged += c;
  const totals = (await view.db.query<{ ledger: string | null; outcomes: string | null; outcome_rows: string; usage: string | null }>(`
    SELECT (SELECT sum(charged) FROM ledger_events WHERE kind = 'commit' AND account_id = ANY($1::text[])) AS ledger,
      (SELECT sum(charged) FROM reservation_outcomes WHERE state = 'committed' AND account_id = ANY($1::text[])) AS outcomes,
      (SELECT count(*) FROM reservation_outcomes WHERE state = 'committed' AND account_id = ANY($1::text[])) AS outcome_rows,
      (SELECT sum(credits) FROM usage_rollups WHERE account_id = ANY($1::text[])) AS usage`, [view.accounts])).rows[0];
  const ledgerCharged = BigInt(totals?.ledger ?? '0');
  if (ledgerCharged !== charged) problems.push(`sum(charged) in Postgres ${ledgerCharged}, clients saw ${charged} committed`);
  if (BigInt(totals?.outcomes ?? '0') !== charged || Number(totals?.outcome_rows) !== committed.size) {
    problems.push(`reservation_outcomes: ${totals?.outcome_rows} committed rows charging ${totals?.outcomes}, expected ${committed.size} charging ${charged}`);
  }
  if (BigInt(totals?.usage ?? '0') !== charged) problems.push(`usage_rollups credits ${totals?.usage}, expected ${charged}`);

  if (problems.length > 0) throw new Error(`ledger invariants broken:\n- ${problems.join('\n- ')}`);
  return { reconcile: report, events, commits: committed.size, charged };
}
