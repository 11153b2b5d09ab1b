/**
 * The bank-test checks of a chaos run, after heal and drain (reliability-anchors §7.1), each
 * counted as violations by invariant:
 *  - ledger: every pool's sequence numbers in Postgres are exactly 1..seq (no gap, no duplicate)
 *    and Redis equals Postgres after reconcile (no drift);
 *  - conservation: per pool and in total, what came in (allowance starts, grants) minus what
 *    vanished = the buckets + held + charged − overage used; every event moves credits only as
 *    its kind may (a hold or a refund creates nothing; a release or expiry charges nothing);
 *  - non-negative: no bucket, hold or overage ever below zero — in any prefix of a pool's ledger,
 *    in every raw pool read during the run, and in every balance an answer carried;
 *  - failed never charged: a released or expired reservation, and one whose every commit was
 *    refused, has no commit event; every commit event belongs to a commit the client sent;
 *  - durability: every acknowledged commit (and grant, refund) is in Postgres once, with the
 *    charge the client saw (with everysec: losses reported, and allowed only within the documented
 *    window before a Redis kill);
 *  - duplicates: every request sent again got the same answer (reservation id; charged, overage,
 *    shortfall, released; released);
 *  - internal: no INTERNAL answer (a bug by meterd's own definition).
 * Linearizability is checked apart (linearizable.ts).
 */
import { reconcile } from '../../src/postgres/reconciler.js';
import { homePartition, partitionPrefix } from '../../src/redis/keys.js';
import { pendingEntries, postgresSequences, redisSeqs, waitUntilFlushed, type LedgerView } from '../support/ledger-load.js';
import type { ChaosCluster } from './cluster.js';
import { KEY_PREFIX } from './cluster.js';
import { describeOp, type History, type HistoryOp } from './history.js';

export type InvariantName =
  | 'ledger-sequence' | 'reconcile' | 'conservation' | 'non-negative' | 'failed-charged' | 'acknowledged-lost'
  | 'duplicate-answer' | 'internal-error' | 'linearizability';

export const INVARIANTS: InvariantName[] = [
  'ledger-sequence', 'reconcile', 'conservation', 'non-negative', 'failed-charged', 'acknowledged-lost', 'duplicate-answer',
  'internal-error', 'linearizability',
];

export class Violations {
  readonly byInvariant = new Map<InvariantName, string[]>();
  add(invariant: InvariantName, detail: string): void {
    const list = this.byInvariant.get(invariant) ?? [];
    list.push(detail);
    this.byInvariant.set(invariant, list);
  }
  count(invariant?: InvariantName): number {
    if (invariant) return this.byInvariant.get(invariant)?.length ?? 0;
    let n = 0;
    for (const list of this.byInvariant.values()) n += list.length;
    return n;
  }
  summary(): string {
    return INVARIANTS.map((i) => `${i}=${this.count(i)}`).join(' ');
  }
  details(perInvariantMax = 5): string {
    const lines: string[] = [];
    for (const [invariant, list] of this.byInvariant) {
      lines.push(`${invariant}: ${list.length}`);
      for (const d of list.slice(0, perInvariantMax)) lines.push(`  - ${d}`);
    }
    return lines.join('\n');
  }
}

interface EventRow {
  account_id: string;
  seq: string;
  kind: string;
  trial: string;
  allowance: string;
  promo: string;
  pack: string;
  overage: string;
  held: string;
  charged: string;
  shortfall: string;
  reservation_id: string;
  op_id: string;
}

export interface CheckFigures {
  events: number;
  pools: number;
  acknowledgedCommits: number;
  chargedInPostgres: bigint;
  /** everysec: acknowledged commits, grants, refunds lost within the window before a power loss (reported, not violations). */
  lostWithinWindow: number;
  /** everysec: acknowledged ones Redis wrote over lost sequence numbers after a power loss, dropped by the repair and kept in ledger_conflicts. */
  droppedByRepair: number;
  /** everysec: reservations whose operations straddle a power loss and whose ledger differs from what the client saw for that reason. */
  lossAffected: number;
  totals: { inflow: bigint; vanished: bigint; buckets: bigint; held: bigint; charged: bigint; overage: bigint };
}

/** Redis pool hash fields that are amounts and must never be negative. */
const POOL_AMOUNT_FIELDS = ['trial', 'allow', 'promo', 'pack', 'ovg', 'held'];

/** Reads every pool's raw amounts (no script, no upkeep) and reports any below zero. */
export async function sampleRawPools(cluster: ChaosCluster, pools: string[], violations: Violations): Promise<void> {
  const pipeline = cluster.admin.pipeline();
  for (const pool of pools) pipeline.hmget(`${partitionPrefix(KEY_PREFIX, homePartition(pool))}a/${pool}`, ...POOL_AMOUNT_FIELDS);
  const replies = (await pipeline.exec()) ?? [];
  replies.forEach(([err, values], i) => {
    if (err) return;
    (values as Array<string | null>).forEach((v, j) => {
      if (v !== null && Number(v) < 0) violations.add('non-negative', `raw read: ${pools[i]}.${POOL_AMOUNT_FIELDS[j]} = ${v}`);
    });
  });
}

/** Waits until the flush group has nothing pending and Postgres holds every event of every pool. */
export async function drain(cluster: ChaosCluster, pools: string[], withinMs = 60_000): Promise<void> {
  const view: LedgerView = { db: cluster.db, redis: cluster.admin, keyPrefix: KEY_PREFIX, accounts: pools };
  await waitUntilFlushed(view, withinMs);
}

export async function checkInvariants(
  cluster: ChaosCluster, history: History, pools: string[], violations: Violations,
  durability: { appendfsync: 'always' | 'everysec'; powerLossesAtMs: number[]; windowMs: number },
): Promise<CheckFigures> {
  const db = cluster.db;
  const view: LedgerView = { db, redis: cluster.admin, keyPrefix: KEY_PREFIX, accounts: pools };

  // ── ledger sequence and reconcile ──
  const seqs = await redisSeqs(view);
  const stored = await postgresSequences(view);
  for (const pool of pools) {
    const s = stored.get(pool);
    const seq = seqs.get(pool) ?? 0n;
    if (!s || s.min !== 1n || s.n !== s.max || s.distinct !== s.n || s.max !== seq) {
      violations.add('ledger-sequence', `${pool}: Postgres ${s ? `n=${s.n} distinct=${s.distinct} ${s.min}..${s.max}` : 'none'}, Redis seq ${seq}`);
    }
  }
  const pending = await pendingEntries(cluster.admin, KEY_PREFIX);
  if (pending !== 0) violations.add('ledger-sequence', `${pending} stream entries still pending after the drain`);
  const report = await reconcile(db, cluster.snapshot);
  for (const d of report.drifts) violations.add('reconcile', `${d.accountId}.${d.field} redis=${d.redis} ledger=${d.ledger}`);
  if (report.skippedPartitions.length > 0) violations.add('reconcile', `skipped partitions ${report.skippedPartitions.join(',')}`);

  // ── conservation and non-negative prefixes, from the ledger ──
  const rows = (await db.query<EventRow>(`
    SELECT account_id, seq, kind, trial, allowance, promo, pack, overage, held, charged, shortfall, reservation_id, op_id
    FROM ledger_events WHERE account_id = ANY($1::text[]) ORDER BY account_id, seq`, [pools])).rows;
  const totals = { inflow: 0n, vanished: 0n, buckets: 0n, held: 0n, charged: 0n, overage: 0n };
  const perPool = new Map<string, { inflow: bigint; vanished: bigint; trial: bigint; allow: bigint; promo: bigint; pack: bigint; held: bigint; charged: bigint; overage: bigint }>();
  const commitEvents = new Map<string, { n: number; charged: bigint }>();
  const opIds = new Map<string, number>();
  for (const r of rows) {
    const p = perPool.get(r.account_id) ?? { inflow: 0n, vanished: 0n, trial: 0n, allow: 0n, promo: 0n, pack: 0n, held: 0n, charged: 0n, overage: 0n };
    perPool.set(r.account_id, p);
    const d = {
      trial: BigInt(r.trial), allow: BigInt(r.allowance), promo: BigInt(r.promo), pack: BigInt(r.pack),
      held: BigInt(r.held), charged: BigInt(r.charged), overage: BigInt(r.overage),
    };
    const dq = d.trial + d.allow + d.promo + d.pack + d.held + d.charged - d.overage;
    const where = `${r.account_id}/${r.seq} ${r.kind}${r.reservation_id ? ` ${r.reservation_id}` : ''}`;
    switch (r.kind) {
      case 'hold': case 'extend': case 'refund':
        if (dq !== 0n) violations.add('conservation', `${where} moves ${dq} credits in or out (must be 0)`);
        if (r.kind !== 'refund' && d.charged !== 0n) violations.add('failed-charged', `${where} charges ${d.charged}`);
        break;
      case 'commit':
        if (dq > 0n) violations.add('conservation', `${where} creates ${dq} credits`);
        if (d.charged < 0n) violations.add('conservation', `${where} charges ${d.charged}`);
        p.vanished += -dq;
        break;
      case 'release': case 'expire':
        if (dq > 0n) violations.add('conservation', `${where} creates ${dq} credits`);
        if (d.charged !== 0n) violations.add('failed-charged', `${where} charges ${d.charged}`);
        p.vanished += -dq;
        break;
      case 'grant':
        if (dq <= 0n || dq !== d.pack + d.promo) violations.add('conservation', `${where}: grant moves ${dq}, pack ${d.pack}, promo ${d.promo}`);
        p.inflow += dq;
        break;
      default:
        // Allowance starts (account_created, plan_upgrade, period_reset), adjustments, expiries of trials and promos.
        if (d.held !== 0n || d.charged !== 0n) violations.add('conservation', `${where} moves held ${d.held} / charged ${d.charged}`);
        if (dq >= 0n) p.inflow += dq;
        else p.vanished += -dq;
    }
    if (r.kind === 'commit') {
      const c = commitEvents.get(r.reservation_id) ?? { n: 0, charged: 0n };
      c.n += 1;
      c.charged += d.charged;
      commitEvents.set(r.reservation_id, c);
    }
    if (r.op_id && (r.kind === 'grant' || r.kind === 'refund')) opIds.set(`${r.kind}/${r.op_id}`, (opIds.get(`${r.kind}/${r.op_id}`) ?? 0) + 1);
    p.trial += d.trial;
    p.allow += d.allow;
    p.promo += d.promo;
    p.pack += d.pack;
    p.held += d.held;
    p.charged += d.charged;
    p.overage += d.overage;
    for (const [field, value] of Object.entries({ trial: p.trial, allow: p.allow, promo: p.promo, pack: p.pack, held: p.held, overage: p.overage, charged: p.charged })) {
      if (value < 0n) violations.add('non-negative', `${where}: ${field} = ${value} after this event`);
    }
  }
  // The identity per pool against Redis' own fields (reconcile compared the fields event by event).
  for (const pool of pools) {
    const p = perPool.get(pool);
    if (!p) {
      violations.add('conservation', `${pool}: no ledger events`);
      continue;
    }
    const raw = await cluster.admin.hmget(`${partitionPrefix(KEY_PREFIX, homePartition(pool))}a/${pool}`, ...POOL_AMOUNT_FIELDS);
    const [trial, allow, promo, pack, ovg, held] = raw.map((v) => BigInt(v ?? '0')) as [bigint, bigint, bigint, bigint, bigint, bigint];
    for (const [i, v] of [trial, allow, promo, pack, ovg, held].entries()) {
      if (v < 0n) violations.add('non-negative', `${pool}.${POOL_AMOUNT_FIELDS[i]} = ${v} in Redis at the end`);
    }
    const buckets = trial + allow + promo + pack;
    // granted − vanished = buckets + held + charged − overage used (overage is charged but was never granted)
    if (p.inflow - p.vanished !== buckets + held + p.charged - ovg) {
      violations.add('conservation', `${pool}: in ${p.inflow} − vanished ${p.vanished} ≠ buckets ${buckets} + held ${held} + charged ${p.charged} − overage ${ovg}`);
    }
    totals.inflow += p.inflow;
    totals.vanished += p.vanished;
    totals.buckets += buckets;
    totals.held += held;
    totals.charged += p.charged;
    totals.overage += ovg;
  }
  if (totals.inflow - totals.vanished !== totals.buckets + totals.held + totals.charged - totals.overage) {
    violations.add('conservation', `total: in ${totals.inflow} − vanished ${totals.vanished} ≠ buckets ${totals.buckets} + held ${totals.held} + charged ${totals.charged} − overage ${totals.overage}`);
  }

  // ── what the clients saw vs the ledger ──
  const byReservation = new Map<string, HistoryOp[]>();
  for (const op of history.ops) {
    const id = 'reservationId' in op.input ? op.input.reservationId : undefined;
    if (id) byReservation.set(id, [...(byReservation.get(id) ?? []), op]);
    for (const b of balancesOf(op)) {
      for (const [field, v] of Object.entries(b)) if (v < 0) violations.add('non-negative', `${describeOp(op)}: ${field} ${v}`);
    }
  }
  let acknowledgedCommits = 0;
  let lostWithinWindow = 0;
  let droppedByRepair = 0;
  let lossAffected = 0;
  const losses = durability.appendfsync === 'everysec' ? durability.powerLossesAtMs : [];
  const inWindow = (op: HistoryOp) => losses.some((k) => op.wallReturn <= k && op.wallReturn >= k - durability.windowMs);
  const spansLoss = (ops: HistoryOp[]) => losses.some((k) => ops.some((o) => o.wallCall < k) && ops.some((o) => o.wallReturn > k));
  const conflictRows = (await db.query<{ kind: string | null; reservation: string | null; op_id: string | null }>(
    "SELECT payload->>'kind' AS kind, payload->>'reservationId' AS reservation, payload->>'opId' AS op_id FROM ledger_conflicts")).rows;
  const inConflicts = new Set(conflictRows.map((r) => `${r.kind}/${r.kind === 'commit' ? r.reservation : r.op_id}`));
  for (const [reservationId, ops] of byReservation) {
    const commits = ops.filter((o) => o.input.kind === 'commit');
    const ackedCommit = commits.find((o) => o.outcome === 'ok' && o.output?.ok === true && o.output.kind === 'commit');
    const inPostgres = commitEvents.get(reservationId);
    const ackedRelease = ops.find((o) => o.input.kind === 'release' && o.outcome === 'ok');
    const settledOtherwise = ops.find((o) => o.outcome === 'fail' && o.output?.ok === false
      && (o.output.reason === 'RESERVATION_EXPIRED' || o.output.reason === 'RESERVATION_RELEASED') && o.input.kind === 'commit');
    if (ackedCommit && ackedCommit.output?.ok === true && ackedCommit.output.kind === 'commit') {
      acknowledgedCommits++;
      const charged = BigInt(ackedCommit.output.charged);
      if (!inPostgres || inPostgres.n !== 1 || inPostgres.charged !== charged) {
        const detail = `${describeOp(ackedCommit)}; Postgres: ${inPostgres ? `${inPostgres.n} commit events charging ${inPostgres.charged}` : 'no commit event'}`;
        if (!inPostgres && inWindow(ackedCommit)) lostWithinWindow++;
        else if (!inPostgres && inConflicts.has(`commit/${reservationId}`)) droppedByRepair++;
        else if (spansLoss(ops)) lossAffected++;
        else violations.add('acknowledged-lost', detail);
      }
    } else if (inPostgres && spansLoss(ops)) {
      lossAffected++;
    } else if (inPostgres) {
      if (commits.length === 0) violations.add('failed-charged', `${reservationId}: charged ${inPostgres.charged} in Postgres, never committed by a client`);
      else if (commits.every((o) => o.outcome === 'fail')) violations.add('failed-charged', `${reservationId}: charged ${inPostgres.charged} in Postgres, every commit refused: ${commits.map(describeOp).join(' | ')}`);
      if (inPostgres.n !== 1) violations.add('failed-charged', `${reservationId}: ${inPostgres.n} commit events`);
    }
    if ((ackedRelease || settledOtherwise) && inPostgres && !ackedCommit && !spansLoss(ops)) {
      violations.add('failed-charged', `${reservationId}: released/expired for the client but charged ${inPostgres.charged} in Postgres`);
    }
  }
  for (const op of history.ops) {
    if (op.outcome !== 'ok' || (op.input.kind !== 'grant' && op.input.kind !== 'refund')) continue;
    const key = op.input.kind === 'grant' ? `grant/${op.input.grantId}` : `refund/${op.input.refundId}`;
    const n = opIds.get(key) ?? 0;
    // A refund replay (same id) answers ok without a second event; a first refund of 0 is refused.
    if (n !== 1) {
      if (n === 0 && inWindow(op)) lostWithinWindow++;
      else if (n === 0 && inConflicts.has(key)) droppedByRepair++;
      else if (losses.some((k) => op.wallReturn < k)) lossAffected++;
      else violations.add('acknowledged-lost', `${describeOp(op)}: ${n} ${op.input.kind} events in Postgres`);
    }
  }
  const sentIds = new Set(history.ops.flatMap((op) => (op.input.kind === 'grant' ? [`grant/${op.input.grantId}`] : op.input.kind === 'refund' ? [`refund/${op.input.refundId}`] : [])));
  for (const key of opIds.keys()) if (!sentIds.has(key)) violations.add('failed-charged', `${key} in Postgres, never sent`);

  // ── duplicates answered the same ──
  checkDuplicates(history, violations, losses, new Set(conflictRows.flatMap((r) => (r.reservation ? [r.reservation] : []))));
  for (const op of history.internalErrors) violations.add('internal-error', describeOp(op));

  let chargedInPostgres = 0n;
  for (const c of commitEvents.values()) chargedInPostgres += c.charged;
  return { events: rows.length, pools: pools.length, acknowledgedCommits, chargedInPostgres, lostWithinWindow, droppedByRepair, lossAffected, totals };
}

function balancesOf(op: HistoryOp): Array<Record<string, number>> {
  const out = op.output;
  if (!out || !out.ok || out.kind === 'changePlan' || !out.balance) return [];
  return [{ ...out.balance }];
}

/** Requests sent more than once (same ids, same parameters) must get the same essential answer. */
function checkDuplicates(history: History, violations: Violations, powerLossesAtMs: number[], droppedByRepair: ReadonlySet<string>): void {
  const first = new Map<string, { op: HistoryOp; answer: string }>();
  for (const op of history.ops) {
    if (op.outcome !== 'ok' || !op.output?.ok) continue;
    let key: string | undefined;
    let answer = '';
    const out = op.output;
    const input = op.input;
    if (input.kind === 'reserve' && out.kind === 'reserve') {
      key = `reserve/${input.account}/${input.requestId}/${input.credits}/${input.ttlSeconds}`;
      answer = out.reservationId;
    } else if (input.kind === 'commit' && out.kind === 'commit') {
      key = `commit/${input.reservationId}`; // a commit settles once: every later commit answers the first
      answer = `charged=${out.charged} overage=${out.overage} shortfall=${out.shortfall} released=${out.released}`;
    } else if (input.kind === 'release' && out.kind === 'release') {
      key = `release/${input.reservationId}`;
      answer = `released=${out.released}`;
    } else if (input.kind === 'extend' && out.kind === 'extend' && input.additional > 0) {
      key = `extend/${input.reservationId}/${input.requestId}`;
      answer = `ok`;
    }
    if (key === undefined) continue;
    const seen = first.get(key);
    if (!seen) first.set(key, { op, answer });
    // A power loss may take the first answer with it (the request id's memory too).
    else if (powerLossesAtMs.some((k) => seen.op.wallCall < k && op.wallReturn > k)) continue;
    // A hold Redis made on a timeline the repair then dropped is void: a repeat of its request holds anew.
    else if (seen.op.output?.ok && seen.op.output.kind === 'reserve' && droppedByRepair.has(seen.op.output.reservationId)) continue;
    else if (seen.answer !== answer) violations.add('duplicate-answer', `${describeOp(seen.op)} then ${describeOp(op)}`);
  }
}
