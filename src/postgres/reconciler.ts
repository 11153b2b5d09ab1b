import type pg from 'pg';
import { PARTITION_COUNT } from '../config/limits.js';
import type { LedgerEvent } from '../domain/ledger-event.js';
import type { Logger } from '../observability/logger.js';
import { homePartition } from '../redis/keys.js';
import type { LedgerSnapshot } from '../redis/redis-credit-store.js';

/**
 * Reconciliation: each pool's fields in Redis must equal what its ledger says — the events in
 * Postgres plus the events still waiting in the stream — up to the pool's sequence number in one
 * consistent Redis snapshot (so events appended meanwhile never look like drift). Zero drift is the
 * normal state; anything else means lost or doubled money, or a bug, and names the account. Field
 * `events`: an event is missing; `events_lost_in_redis`: Postgres has events beyond Redis' sequence
 * (Redis lost its tail); `conflicts`: Redis wrote events over lost sequence numbers, kept apart in
 * ledger_conflicts, and the pool was not repaired since. Both are repaired by rebuilding the pool
 * from the ledger (repairPool in rebuild.ts).
 */
export interface Drift {
  accountId: string;
  field: string;
  redis: bigint;
  ledger: bigint;
}

export interface ReconcileReport {
  accounts: number;
  drifts: Drift[];
  /** Partitions whose stream backlog was larger than one snapshot may hold: not checked this time. */
  skippedPartitions: number[];
}

export type SnapshotReader = (partition: number, poolIds: string[], entriesMax: number) => Promise<LedgerSnapshot>;

/** Redis pool field → ledger event amount. */
const FIELDS: Array<[field: string, amount: keyof LedgerEvent]> = [
  ['trial', 'trial'], ['allow', 'allowance'], ['promo', 'promo'], ['pack', 'pack'], ['ovg', 'overage'], ['held', 'held'],
];

/** Drifts a rebuild of the pool from its ledger repairs (Redis lost events Postgres has). */
const REPAIRABLE_FIELDS = new Set(['events_lost_in_redis', 'conflicts']);

/** The pools of a report that repairPool should rebuild from the ledger. */
export function poolsToRepair(report: ReconcileReport): string[] {
  return [...new Set(report.drifts.filter((d) => REPAIRABLE_FIELDS.has(d.field)).map((d) => d.accountId))];
}

/**
 * The ledger and the events parked until the one they follow is flushed (see chainPool): both are
 * out of Redis' stream, so both count as Postgres' (a parked event is settled within a flush or two).
 */
const LEDGER_WITH_PARKED = `(
  SELECT account_id, seq, trial, allowance, promo, pack, overage, held FROM ledger_events
  UNION ALL
  SELECT account_id, seq, (payload->>'trial')::bigint, (payload->>'allowance')::bigint, (payload->>'promo')::bigint,
    (payload->>'pack')::bigint, (payload->>'overage')::bigint, (payload->>'held')::bigint FROM ledger_parked
) AS ledger`;

/** How many stream entries one snapshot may carry; a larger backlog is reported, not read. */
export const RECONCILE_STREAM_ENTRIES_MAX = 50_000;

export async function reconcile(db: pg.Pool, snapshot: SnapshotReader, logger?: Logger): Promise<ReconcileReport> {
  const roots = (await db.query<{ account_id: string }>("SELECT account_id FROM accounts WHERE parent_id = ''")).rows.map((r) => r.account_id);
  const byPartition = new Map<number, string[]>();
  for (const id of roots) byPartition.set(homePartition(id), [...(byPartition.get(homePartition(id)) ?? []), id]);

  const report: ReconcileReport = { accounts: 0, drifts: [], skippedPartitions: [] };
  for (let partition = 0; partition < PARTITION_COUNT; partition++) {
    const ids = byPartition.get(partition);
    if (!ids) continue;
    // Read before the snapshot: every event Postgres has now existed in Redis before the snapshot, so
    // a pool whose Redis sequence is below it lost events (an AOF tail, a failover).
    const storedMax = new Map((await db.query<{ account_id: string; last: string }>(
      'SELECT account_id, max(seq) AS last FROM ledger_events WHERE account_id = ANY($1::text[]) GROUP BY account_id', [ids],
    )).rows.map((r) => [r.account_id, BigInt(r.last)]));
    const unrepaired = new Map((await db.query<{ account_id: string; n: string }>(
      'SELECT account_id, count(*) AS n FROM ledger_conflicts WHERE repaired_at IS NULL AND account_id = ANY($1::text[]) GROUP BY account_id', [ids],
    )).rows.map((r) => [r.account_id, BigInt(r.n)]));
    const snap = await snapshot(partition, ids, RECONCILE_STREAM_ENTRIES_MAX);
    if (!snap.complete) {
      report.skippedPartitions.push(partition);
      continue;
    }
    for (const [accountId, pool] of snap.pools) {
      report.accounts += 1;
      const seq = pool.seq ?? 0n;
      const sums = (await db.query<Record<string, string>>(`
        SELECT coalesce(sum(trial), 0) AS trial, coalesce(sum(allowance), 0) AS allowance, coalesce(sum(promo), 0) AS promo,
          coalesce(sum(pack), 0) AS pack, coalesce(sum(overage), 0) AS overage, coalesce(sum(held), 0) AS held,
          count(*) AS stored
        FROM ${LEDGER_WITH_PARKED} WHERE account_id = $1 AND seq <= $2`, [accountId, seq.toString()])).rows[0] ?? {};
      const inPostgres = new Set<string>();
      const pending = snap.events.filter((e) => e.accountId === accountId && e.seq <= seq);
      if (pending.length > 0) {
        const stored = await db.query<{ seq: string }>(`SELECT seq FROM ${LEDGER_WITH_PARKED} WHERE account_id = $1 AND seq = ANY($2::bigint[])`,
          [accountId, pending.map((e) => e.seq.toString())]);
        for (const row of stored.rows) inPostgres.add(row.seq);
      }
      const unflushed = pending.filter((e) => !inPostgres.has(e.seq.toString()));
      for (const [field, amount] of FIELDS) {
        const ledger = BigInt(sums[amount] ?? '0') + unflushed.reduce((sum, e) => sum + (e[amount] as bigint), 0n);
        const redis = pool[field] ?? 0n;
        if (ledger !== redis) report.drifts.push({ accountId, field, redis, ledger });
      }
      // Every event up to the pool's sequence number is somewhere: Postgres or the stream.
      const known = BigInt(sums.stored ?? '0') + BigInt(unflushed.length);
      const lastStored = storedMax.get(accountId) ?? 0n;
      if (lastStored > seq) report.drifts.push({ accountId, field: 'events_lost_in_redis', redis: seq, ledger: lastStored });
      else if (known !== seq) report.drifts.push({ accountId, field: 'events', redis: seq, ledger: known });
      const conflicts = unrepaired.get(accountId);
      if (conflicts !== undefined) report.drifts.push({ accountId, field: 'conflicts', redis: 0n, ledger: conflicts });
    }
  }
  for (const drift of report.drifts) {
    logger?.error({ accountId: drift.accountId, field: drift.field, redis: drift.redis.toString(), ledger: drift.ledger.toString() },
      'reconcile: Redis and the ledger disagree');
  }
  if (report.skippedPartitions.length > 0) {
    logger?.warn({ partitions: report.skippedPartitions }, 'reconcile: stream backlog too large to check these partitions');
  }
  return report;
}
