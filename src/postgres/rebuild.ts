import type pg from 'pg';
import { OPERATION_ID_RETENTION_SECONDS } from '../config/limits.js';
import type { ProductConfig } from '../config/product-config.js';
import type { Logger } from '../observability/logger.js';
import type { RestoredPool } from '../redis/redis-credit-store.js';
import { inTransaction } from './transaction.js';

/**
 * Rebuilds Redis from the Postgres ledger (meterd rebuild-redis, and at startup when Redis is empty
 * but Postgres is not). Each pool's fields are the sums of its events; the allowance epoch is the
 * number of allowance starts (account_created, period_reset, plan_upgrade), exactly as the scripts
 * count it. Holds that were open are restored due at once, with where their credits came from, so
 * the engine's own expiry returns them to the buckets still live: in-flight holds are gone, which is
 * safe — they were never charged. What Redis alone remembered is lost: request ids (a retried
 * ReserveCredits after a rebuild holds again) and the live usage counters of the current period.
 */
export interface RebuildReport {
  restored: number;
  skipped: number;
  holdsReleased: number;
}

export type PoolRestorer = (pool: RestoredPool) => Promise<boolean>;

/** A grant that never expires sorts after every dated one (2^53 - 1 ms), as in grantCredits-1.lua. */
const NEVER_MS = '9007199254740991';
const ALLOWANCE_STARTS = new Set(['account_created', 'period_reset', 'plan_upgrade']);
const SETTLES = new Set(['commit', 'release', 'expire']);

interface EventRow {
  seq: string; kind: string; space_id: string; user_id: string; feature: string; reservation_id: string;
  trial: string; allowance: string; promo: string; pack: string; overage: string; held: string; charged: string;
  promo_detail: string; period_start_ms: string | null; period_end_ms: string | null; op_id: string;
  expires_at_ms: string | null; occurred_at_ms: string; labels: string | null;
  stream_entry_id: string; prev_stream_entry_id: string;
}

interface AccountRow {
  account_id: string; parent_id: string; plan: string; pending_plan: string; anchor_ms: string;
  space_limit_credits: string | null; trial_credits: string; trial_ends_at_ms: string | null;
  low_balance_threshold: string; low_balance_percent: number; created_at_ms: string;
}

const MS = (column: string) => `(extract(epoch FROM ${column}) * 1000)::bigint`;

const ACCOUNT_COLUMNS = `account_id, parent_id, plan, pending_plan, ${MS('billing_anchor')} AS anchor_ms, space_limit_credits,
  trial_credits, ${MS('trial_ends_at')} AS trial_ends_at_ms, low_balance_threshold, low_balance_percent, ${MS('created_at')} AS created_at_ms`;

async function poolEvents(db: pg.Pool, accountId: string): Promise<EventRow[]> {
  return (await db.query<EventRow>(`
    SELECT seq, kind, space_id, user_id, feature, reservation_id, trial, allowance, promo, pack, overage, held, charged,
      promo_detail, ${MS('period_start')} AS period_start_ms, ${MS('period_end')} AS period_end_ms, op_id,
      ${MS('expires_at')} AS expires_at_ms, ${MS('occurred_at')} AS occurred_at_ms, labels::text AS labels,
      stream_entry_id, prev_stream_entry_id
    FROM ledger_events WHERE account_id = $1 ORDER BY seq`, [accountId])).rows;
}

export async function rebuildRedis(db: pg.Pool, product: ProductConfig, nowMs: number, restore: PoolRestorer, logger?: Logger): Promise<RebuildReport> {
  const accounts = (await db.query<AccountRow>(`SELECT ${ACCOUNT_COLUMNS} FROM accounts ORDER BY account_id`)).rows;
  const report: RebuildReport = { restored: 0, skipped: 0, holdsReleased: 0 };
  const refillThresholds = await refillThresholdsOf(db);
  for (const root of accounts.filter((a) => a.parent_id === '')) {
    const events = await poolEvents(db, root.account_id);
    if (events.length === 0) continue;
    const spaces = accounts.filter((a) => a.parent_id === root.account_id);
    const pool = rebuildPool(root, spaces, events, product, nowMs, refillThresholds.get(root.account_id));
    report.holdsReleased += pool.holds.length;
    if (await restore(pool)) report.restored += 1;
    else report.skipped += 1;
  }
  logger?.info(report, 'rebuilt Redis from the Postgres ledger');
  return report;
}

/**
 * Repairing one pool (meterd rebuild-redis --account, and the reconciler when Redis lost events
 * Postgres has): Postgres wins. The pool is rebuilt from its ledger and replaces what Redis has —
 * only once Postgres holds every event up to Redis' sequence number (no gap, nothing of Redis'
 * still unflushed), and only while Redis' sequence number is unchanged (else it tries again).
 * Events Redis wrote over lost sequence numbers stay in ledger_conflicts with their payloads for an
 * operator: replaying them automatically would re-run charges decided against balances that never
 * existed in the ledger. A ledger whose chain of stream entries breaks (events of two Redis
 * timelines) is not rebuilt from: outcome ledger_diverged, for an operator.
 */
export interface RepairReport {
  accountId: string;
  outcome: 'repaired' | 'not_found' | 'postgres_behind' | 'ledger_diverged';
  /** Redis' sequence number before, and the pool's after (Postgres' last; below Redis' when Redis ran on along a diverged timeline). */
  redisSeq: string;
  ledgerSeq: string;
  holdsDropped: number;
  /** Events of this pool kept apart in ledger_conflicts (for an operator to review). */
  conflicts: number;
  /** ledger_diverged: the first event whose chain does not meet its previous one's stream entry. */
  chainBreaksAtSeq?: string;
}

export interface PoolReplacer {
  /** The pool's sequence number in Redis now; null when Redis does not have it. */
  poolSeq(accountId: string): Promise<bigint | null>;
  /** mark: Redis' time at the replacement as a stream entry id (events before it are of the replaced timeline). */
  replacePool(pool: RestoredPool, expectedSeq: bigint): Promise<{ replaced: boolean; holdsDropped: number; mark: string }>;
}

/** How many times a repair re-reads a pool that moved on while it was being rebuilt. */
export const REPAIR_ATTEMPTS_MAX = 5;

export async function repairPool(db: pg.Pool, product: ProductConfig, nowMs: number, accountId: string, redis: PoolReplacer, logger?: Logger): Promise<RepairReport> {
  const [root] = (await db.query<AccountRow>(`SELECT ${ACCOUNT_COLUMNS} FROM accounts WHERE account_id = $1 AND parent_id = ''`, [accountId])).rows;
  const conflicts = Number((await db.query<{ n: string }>('SELECT count(*) AS n FROM ledger_conflicts WHERE account_id = $1', [accountId])).rows[0]?.n ?? 0);
  const report: RepairReport = { accountId, outcome: 'not_found', redisSeq: '', ledgerSeq: '', holdsDropped: 0, conflicts };
  for (let attempt = 1; attempt <= REPAIR_ATTEMPTS_MAX; attempt++) {
    const redisSeq = (await redis.poolSeq(accountId)) ?? 0n;
    if (!root) {
      // Known to Redis only: its creation has not been flushed yet.
      if (redisSeq > 0n) Object.assign(report, { outcome: 'postgres_behind', redisSeq: redisSeq.toString(), ledgerSeq: '0' });
      break;
    }
    const events = await poolEvents(db, accountId);
    const ledgerSeq = BigInt(events.at(-1)?.seq ?? '0');
    report.redisSeq = redisSeq.toString();
    report.ledgerSeq = ledgerSeq.toString();
    // Sequence numbers start at 1 with no gap, so a complete ledger has exactly ledgerSeq events.
    // Past it, Redis may have run on along a diverged timeline: every one of those events must be
    // flushed (kept apart in ledger_conflicts) before the pool is replaced, so none turns up later.
    const keptApartPast = ledgerSeq < redisSeq ? await keptApartBetween(db, accountId, ledgerSeq, redisSeq) : 0n;
    if (ledgerSeq + keptApartPast < redisSeq || BigInt(events.length) !== ledgerSeq) {
      report.outcome = 'postgres_behind';
      break;
    }
    const breaksAt = chainBreak(events);
    if (breaksAt !== undefined) {
      Object.assign(report, { outcome: 'ledger_diverged', chainBreaksAtSeq: breaksAt });
      break;
    }
    const spaces = (await db.query<AccountRow>(`SELECT ${ACCOUNT_COLUMNS} FROM accounts WHERE parent_id = $1`, [accountId])).rows;
    const refill = (await refillThresholdsOf(db, accountId)).get(accountId);
    const pool = rebuildPool(root, spaces, events, product, nowMs, refill);
    pool.forget = await reservationsSinceDivergence(db, accountId, redisSeq);
    pool.forgetOperations = await operationsKeptApart(db, accountId);
    const result = await redis.replacePool(pool, redisSeq);
    if (result.replaced) {
      report.outcome = 'repaired';
      report.holdsDropped = result.holdsDropped;
      await markReplaced(db, accountId, result.mark);
      break;
    }
  }
  if (report.outcome === 'repaired') logger?.warn(report, 'repaired a pool from the Postgres ledger');
  else if (report.outcome === 'not_found') logger?.error(report, 'cannot repair: Postgres has no root account by this id');
  else if (report.outcome === 'ledger_diverged') {
    logger?.error(report, 'cannot repair: the ledger holds events of two Redis timelines (an operator must decide; see README, Operations)');
  }
  else logger?.error(report, 'cannot repair yet: Postgres does not hold every event Redis has (let the flusher catch up)');
  return report;
}

/**
 * Every event kept apart from before the repair's mark was of the timeline it replaced: marked
 * repaired, and so is any the flush keeps apart later (ledger_heads.replaced_before, read under the
 * pool's head lock, which this takes first) — a straggler of that timeline must not start a repair.
 */
async function markReplaced(db: pg.Pool, accountId: string, mark: string): Promise<void> {
  await inTransaction(db, async (client) => {
    await client.query(`INSERT INTO ledger_heads (account_id, seq, stream_entry_id, replaced_before) VALUES ($1, 0, '', $2)
      ON CONFLICT (account_id) DO UPDATE SET replaced_before = excluded.replaced_before`, [accountId, mark]);
    await client.query(`UPDATE ledger_conflicts SET repaired_at = now()
      WHERE account_id = $1 AND repaired_at IS NULL AND stream_entry_before(stream_entry_id, $2)`, [accountId, mark]);
  });
}

/**
 * Reservations whose record in Redis may not be the ledger's: those of events kept apart (Redis'
 * other timeline) and those of ledger events Redis lost (past its sequence number, or past where its
 * timeline left the ledger's). A refund Redis alone remembers, or a commit the ledger never had, must
 * not act on the repaired pool: such a record would give back credits the ledger never charged.
 */
async function reservationsSinceDivergence(db: pg.Pool, accountId: string, redisSeq: bigint): Promise<string[]> {
  const rows = (await db.query<{ id: string }>(`
    WITH diverged AS (
      SELECT seq, payload->>'reservationId' AS id FROM ledger_conflicts WHERE account_id = $1 AND repaired_at IS NULL
    ), since AS (
      SELECT least($2::bigint, coalesce((SELECT min(seq) - 1 FROM diverged), $2::bigint)) AS seq
    )
    SELECT id FROM diverged WHERE id <> ''
    UNION
    SELECT reservation_id FROM ledger_events WHERE account_id = $1 AND seq > (SELECT seq FROM since) AND reservation_id <> ''`,
  [accountId, redisSeq.toString()])).rows;
  return rows.map((r) => r.id);
}

/** Grant and adjustment ids only a replaced timeline applied: Redis forgets them, so a retry applies them to the ledger's pool. */
async function operationsKeptApart(db: pg.Pool, accountId: string): Promise<Array<{ kind: string; id: string }>> {
  return (await db.query<{ kind: string; id: string }>(`
    SELECT DISTINCT c.payload->>'kind' AS kind, c.payload->>'opId' AS id FROM ledger_conflicts c
    WHERE c.account_id = $1 AND c.repaired_at IS NULL AND c.payload->>'kind' IN ('grant', 'adjust') AND c.payload->>'opId' <> ''
      AND NOT EXISTS (SELECT 1 FROM ledger_events e WHERE e.account_id = $1 AND e.kind = c.payload->>'kind' AND e.op_id = c.payload->>'opId')`,
  [accountId])).rows;
}

/** How many sequence numbers in (after, upTo] have an event kept apart and not yet repaired. */
async function keptApartBetween(db: pg.Pool, accountId: string, after: bigint, upTo: bigint): Promise<bigint> {
  const row = (await db.query<{ n: string }>(
    'SELECT count(DISTINCT seq) AS n FROM ledger_conflicts WHERE account_id = $1 AND repaired_at IS NULL AND seq > $2 AND seq <= $3',
    [accountId, after.toString(), upTo.toString()])).rows[0];
  return BigInt(row?.n ?? '0');
}

/**
 * Where a pool's ledger stops being one Redis timeline: the sequence number of the first event whose
 * prev is not its previous event's stream entry (events older than the chain carry '' and pass).
 * The flush never stores such a ledger (chainPool in src/domain/ledger-chain.ts); this guards the
 * rebuild against one written any other way (a restored backup, a hand-edited table).
 */
function chainBreak(events: EventRow[]): string | undefined {
  for (let i = 1; i < events.length; i++) {
    const e = events[i] as EventRow;
    if (e.prev_stream_entry_id !== '' && e.prev_stream_entry_id !== (events[i - 1] as EventRow).stream_entry_id) return e.seq;
  }
  return undefined;
}

interface RefillRow { threshold: string; pendingSinceMs: string }

/**
 * Auto-refill of enabled settings (Postgres keeps them; Redis only detects), with the refill still
 * open in refill_attempts, so a rebuilt pool does not ask for a second one.
 */
async function refillThresholdsOf(db: pg.Pool, accountId?: string): Promise<Map<string, RefillRow>> {
  const rows = (await db.query<{ account_id: string; threshold_credits: string; pending_ms: string | null }>(`
    SELECT s.account_id, s.threshold_credits,
      (SELECT ${MS('min(r.created_at)')} FROM refill_attempts r WHERE r.account_id = s.account_id AND r.status IN ('due', 'processing')) AS pending_ms
    FROM auto_refill_settings s WHERE s.enabled${accountId === undefined ? '' : ' AND s.account_id = $1'}`,
  accountId === undefined ? [] : [accountId])).rows;
  return new Map(rows.map((r) => [r.account_id, { threshold: r.threshold_credits, pendingSinceMs: r.pending_ms ?? '' }]));
}

/**
 * The grant and adjustment ids Redis remembers (grantCredits-1.lua, adjustCredits-1.lua: the id with
 * the request's fingerprint, for OPERATION_ID_RETENTION_SECONDS), as the ledger has them: a retry of
 * one the ledger holds replays instead of granting again.
 */
function rememberedOperations(events: EventRow[], nowMs: number): NonNullable<RestoredPool['operations']> {
  const retentionMs = OPERATION_ID_RETENTION_SECONDS * 1000;
  return events.flatMap((e) => {
    const ttl = retentionMs - (nowMs - Number(e.occurred_at_ms));
    if (e.op_id === '' || ttl <= 0) return [];
    if (e.kind === 'grant') {
      const fingerprint = e.promo !== '0' ? `PROMO/${e.promo}/${e.expires_at_ms ?? ''}` : `PACK/${e.pack}/`;
      return [{ kind: 'grant', id: e.op_id, fingerprint, ttlMs: String(ttl) }];
    }
    if (e.kind === 'adjust') {
      const delta = BigInt(e.trial) + BigInt(e.allowance) + BigInt(e.promo) + BigInt(e.pack);
      return [{ kind: 'adjust', id: e.op_id, fingerprint: delta.toString(), ttlMs: String(ttl) }];
    }
    return [];
  });
}

/** A pool as Redis would hold it after its events. Not restored: the alert state (an alert may be raised again once). */
function rebuildPool(root: AccountRow, spaces: AccountRow[], events: EventRow[], product: ProductConfig, nowMs: number, refill?: RefillRow): RestoredPool {
  const sum = (field: keyof EventRow) => events.reduce((total, e) => total + BigInt(e[field] ?? '0'), 0n);
  // The allowance epoch and period at every point of the pool's history.
  let epoch = 0;
  let periodStart = '0';
  let periodEnd = '0';
  let periodSeq = 0n;
  const epochAt = new Map<string, number>();
  const periodAt = new Map<string, string>();
  const promoLeft = new Map<string, bigint>();
  const promoExpires = new Map<string, string>();
  for (const e of events) {
    if (ALLOWANCE_STARTS.has(e.kind)) epoch += 1;
    if ((e.kind === 'account_created' || e.kind === 'period_reset') && e.period_start_ms !== null) {
      periodStart = e.period_start_ms;
      periodEnd = e.period_end_ms ?? '0';
      periodSeq = BigInt(e.seq);
    }
    epochAt.set(e.seq, epoch);
    periodAt.set(e.seq, periodStart);
    for (const part of e.promo_detail.split(';').filter(Boolean)) {
      const at = part.lastIndexOf('=');
      const grant = part.slice(0, at);
      promoLeft.set(grant, (promoLeft.get(grant) ?? 0n) + BigInt(part.slice(at + 1)));
    }
    if (e.kind === 'grant' && e.promo !== '0') promoExpires.set(e.op_id, e.expires_at_ms ?? NEVER_MS);
    if (e.kind === 'grant_expired') promoExpires.delete(e.op_id);
  }
  const plan = product.plans.get(root.plan);
  const trialEnd = root.trial_ends_at_ms ?? '0';
  const promos = [...promoExpires.entries()].map(([id, expires]) => ({ id, expires, left: String(promoLeft.get(id) ?? 0n) }));
  const promoNext = promos.map((p) => BigInt(p.expires)).sort((a, b) => (a < b ? -1 : 1))[0];

  const fields: Record<string, string> = {
    plan: root.plan, next_plan: root.pending_plan, anchor: root.anchor_ms, ps: periodStart, pe: periodEnd,
    allow_total: String(plan?.monthlyCredits ?? 0n), allow: String(sum('allowance')),
    ovg_limit: String(plan?.overageLimit ?? 0n), ovg: String(sum('overage')), ae: String(epoch),
    held: String(sum('held')), trial_total: root.trial_credits, trial: String(sum('trial')), trial_end: trialEnd,
    pack: String(sum('pack')), promo: String(sum('promo')), low: root.low_balance_threshold, lowp: String(root.low_balance_percent),
    created: root.created_at_ms, seq: events[events.length - 1]?.seq ?? '0', parent: '',
    // The next event's chain starts at the ledger's last one (see ledger.lua, chainPool).
    lsid: events[events.length - 1]?.stream_entry_id ?? '',
    promo_next: promoNext === undefined ? '' : String(promoNext),
    rft: refill?.threshold ?? '0', rfp: refill?.pendingSinceMs ?? '',
  };

  // A space's cap usage this period: what its holds and charges added since the period began.
  const restoredSpaces = spaces.map((space) => {
    const used = events
      .filter((e) => e.space_id === space.account_id && BigInt(e.seq) > periodSeq)
      .reduce((total, e) => total + BigInt(e.held) + BigInt(e.charged), 0n);
    return {
      id: space.account_id,
      fields: {
        parent: root.account_id, cap: space.space_limit_credits ?? '', low: space.low_balance_threshold,
        created: space.created_at_ms, sps: periodStart, sused: String(used < 0n ? 0n : used),
      },
    };
  });

  // Holds never settled: their parts, tagged as the scripts tag them, due to expire now.
  const settled = new Set(events.filter((e) => SETTLES.has(e.kind)).map((e) => e.reservation_id));
  const open = new Map<string, EventRow[]>();
  for (const e of events) {
    if ((e.kind === 'hold' || e.kind === 'extend') && !settled.has(e.reservation_id)) {
      open.set(e.reservation_id, [...(open.get(e.reservation_id) ?? []), e]);
    }
  }
  const trialFirst = BigInt(trialEnd) <= BigInt(periodEnd);
  const holds = [...open.entries()].map(([id, parts]) => {
    const portions: string[] = [];
    let held = 0n;
    for (const e of parts) {
      const trial = `trial=${-BigInt(e.trial)}`;
      const allowance = `allow@${epochAt.get(e.seq) ?? 0}=${-BigInt(e.allowance)}`;
      const ordered = trialFirst ? [e.trial !== '0' ? trial : '', e.allowance !== '0' ? allowance : '']
        : [e.allowance !== '0' ? allowance : '', e.trial !== '0' ? trial : ''];
      portions.push(...ordered.filter(Boolean));
      for (const part of e.promo_detail.split(';').filter(Boolean)) {
        const at = part.lastIndexOf('=');
        portions.push(`promo@${part.slice(0, at)}=${-BigInt(part.slice(at + 1))}`);
      }
      if (e.pack !== '0') portions.push(`pack=${-BigInt(e.pack)}`);
      if (e.overage !== '0') portions.push(`ovg@${periodAt.get(e.seq) ?? '0'}=${e.overage}`);
      held += BigInt(e.held);
    }
    const first = parts[0] as EventRow;
    const feature = product.features.get(first.feature);
    return {
      id,
      expires: String(nowMs),
      fields: {
        state: 'H', acct: first.space_id || root.account_id, pool: root.account_id, space: first.space_id,
        user: first.user_id, feature: first.feature, held: String(held), portions: portions.join(';'),
        exp: String(nowMs), created: first.occurred_at_ms, req: '', fp: '', sps: first.space_id ? (periodAt.get(first.seq) ?? '') : '',
        pc: String(feature?.credits ?? 0), pu: String(feature?.perUnits ?? 0), pm: String(feature?.minCredits ?? 0),
        labels: first.labels ?? '',
      },
    };
  });

  return { id: root.account_id, fields, spaces: restoredSpaces, promos, holds, operations: rememberedOperations(events, nowMs) };
}
