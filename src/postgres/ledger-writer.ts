import type pg from 'pg';
import { type Candidate, chainPool, type ChainOutcome, type LedgerHead, predecessorId } from '../domain/ledger-chain.js';
import type { LedgerEvent } from '../domain/ledger-event.js';

/** Why events were kept apart in ledger_conflicts. */
export type LedgerConflictReason = 'payload_differs' | 'diverged';

/**
 * Writes one batch of ledger events and the projections they drive, in the caller's transaction.
 * The events join each pool's ledger as one unbroken chain (chainPool: in order, after the pool's
 * head, chained to it; a redelivery adds nothing, another Redis timeline is kept apart, an event
 * ahead of its predecessor waits in ledger_parked), then projections run only for the events that
 * joined, so a batch delivered twice (a crash between COMMIT and XACK) changes nothing the second time.
 * Flushes of one pool take turns (its head is locked first); the projections stay order-independent
 * (upserts that add, or keep the newest) and take their rows in key order (ORDER BY).
 */
export interface WriteResult {
  inserted: number;
  duplicates: number;
  /** Event ids already stored with another payload (kept in ledger_conflicts): a Redis that lost data, or a bug. */
  conflicting: string[];
  /** Event ids of a Redis timeline that diverged from the ledger's (kept in ledger_conflicts): see chainPool. */
  diverged: string[];
  /** Events that arrived before the one they follow, parked in ledger_parked until it comes. */
  parked: number;
}

const COLUMNS = [
  ['event_id', 'text'], ['account_id', 'text'], ['seq', 'bigint'], ['kind', 'text'], ['space_id', 'text'],
  ['user_id', 'text'], ['feature', 'text'], ['reservation_id', 'text'], ['trial', 'bigint'], ['allowance', 'bigint'],
  ['promo', 'bigint'], ['pack', 'bigint'], ['overage', 'bigint'], ['held', 'bigint'], ['charged', 'bigint'],
  ['charged_overage', 'bigint'], ['shortfall', 'bigint'], ['promo_detail', 'text'], ['plan', 'text'],
  ['period_start_ms', 'bigint'], ['period_end_ms', 'bigint'], ['expires_at_ms', 'bigint'], ['op_id', 'text'], ['reason', 'text'], ['actor', 'text'],
  ['labels', 'jsonb'], ['settings', 'jsonb'], ['occurred_at_ms', 'bigint'], ['stream_entry_id', 'text'],
  ['payload_sha256', 'text'], ['detail', 'jsonb'], ['prev_stream_entry_id', 'text'],
] as const;

const toMs = (column: string) => `CASE WHEN ${column} IS NULL THEN NULL ELSE to_timestamp(${column}::double precision / 1000) END`;

const INSERT_EVENTS = `
  INSERT INTO ledger_events (${COLUMNS.map(([c]) => c.replace(/_ms$/, '')).join(', ')})
  SELECT ${COLUMNS.map(([c]) => (c.endsWith('_ms') ? toMs(c) : c)).join(', ')}
  FROM unnest(${COLUMNS.map(([, type], i) => `$${i + 1}::${type}[]`).join(', ')})
    AS u(${COLUMNS.map(([c]) => c).join(', ')})
  ON CONFLICT (event_id) DO NOTHING`;

function columnValues(event: LedgerEvent): unknown[] {
  return [
    event.eventId, event.accountId, event.seq.toString(), event.kind, event.spaceId, event.userId, event.feature,
    event.reservationId, event.trial.toString(), event.allowance.toString(), event.promo.toString(), event.pack.toString(),
    event.overage.toString(), event.held.toString(), event.charged.toString(), event.chargedOverage.toString(),
    event.shortfall.toString(), event.promoDetail, event.plan, event.periodStartMs, event.periodEndMs, event.expiresAtMs, event.opId,
    event.reason, event.actor, event.labels, event.settings, event.occurredAtMs, event.streamEntryId, event.payloadSha256,
    event.detail, event.prevStreamEntryId,
  ];
}

const SETTLED_STATE: Record<string, string> = { commit: 'committed', release: 'released', expire: 'expired' };

export async function writeLedgerBatch(client: pg.ClientBase, events: LedgerEvent[]): Promise<WriteResult> {
  if (events.length === 0) return { inserted: 0, duplicates: 0, conflicting: [], diverged: [], parked: 0 };
  const chained = await chainBatch(client, events);
  const accepted = chained.flatMap((c) => c.accepted);
  if (accepted.length > 0) {
    const columns: unknown[][] = COLUMNS.map(() => []);
    for (const event of accepted) columnValues(event).forEach((value, i) => columns[i]?.push(value));
    await client.query(INSERT_EVENTS, columns);
  }
  const conflicts = chained.flatMap((c) => c.payloadDiffers);
  const diverged = chained.flatMap((c) => c.diverged);
  const replacedBefore = new Map(chained.map((c) => [c.accountId, c.replacedBefore]));
  await keepApart(client, conflicts, 'payload_differs', replacedBefore);
  await keepApart(client, diverged, 'diverged', replacedBefore);
  await park(client, chained.flatMap((c) => c.parked), chained.flatMap((c) => c.unparked));
  await moveHeads(client, chained.filter((c) => c.accepted.length > 0));

  await upsertOutcomes(client, accepted);
  await addUsage(client, accepted);
  await upsertSettings(client, accepted);
  await recordAlertsAndRefills(client, accepted);
  return {
    inserted: accepted.length,
    duplicates: chained.reduce((sum, c) => sum + c.duplicates, 0),
    conflicting: conflicts.map((e) => e.eventId),
    diverged: diverged.map((e) => e.eventId),
    parked: chained.reduce((sum, c) => sum + c.parked.length, 0),
  };
}

/**
 * Locks the heads of the batch's pools (in key order: flushes of one pool take turns, and never
 * deadlock), then decides per pool with chainPool what joins the ledger.
 */
async function chainBatch(client: pg.ClientBase, events: LedgerEvent[]): Promise<Array<ChainOutcome & { accountId: string; replacedBefore: string }>> {
  const pools = [...new Set(events.map((e) => e.accountId))].sort();
  await client.query(`INSERT INTO ledger_heads (account_id, seq, stream_entry_id) SELECT a, 0, '' FROM unnest($1::text[]) AS a
    ORDER BY a ON CONFLICT (account_id) DO NOTHING`, [pools]);
  const rows = (await client.query<{ account_id: string; seq: string; stream_entry_id: string; replaced_before: string }>(
    'SELECT account_id, seq, stream_entry_id, replaced_before FROM ledger_heads WHERE account_id = ANY($1::text[]) ORDER BY account_id FOR UPDATE',
    [pools])).rows;
  const heads = new Map(rows.map((r) => [r.account_id, { seq: BigInt(r.seq), streamEntryId: r.stream_entry_id }]));
  const replacedBefore = new Map(rows.map((r) => [r.account_id, r.replaced_before]));

  const candidates = new Map<string, Candidate[]>(pools.map((id) => [id, []]));
  for (const event of events) candidates.get(event.accountId)?.push({ event, parked: false });
  for (const r of (await client.query<{ payload: EventJson }>(
    'SELECT payload FROM ledger_parked WHERE account_id = ANY($1::text[])', [pools])).rows) {
    const event = eventFromJson(r.payload);
    candidates.get(event.accountId)?.push({ event, parked: true });
  }
  const all = [...candidates.values()].flat().map((c) => c.event);
  const headOf = (e: LedgerEvent) => heads.get(e.accountId)?.seq ?? 0n;

  // What the pools' earlier events left: payload hashes at or before the head, kept-apart predecessors past it.
  const behind = all.filter((e) => e.seq <= headOf(e)).map((e) => e.eventId);
  const storedHashes = new Map(behind.length === 0 ? [] : (await client.query<{ event_id: string; payload_sha256: string }>(
    'SELECT event_id, payload_sha256 FROM ledger_events WHERE event_id = ANY($1::text[])', [behind])).rows.map((r) => [r.event_id, r.payload_sha256]));
  const ahead = all.filter((e) => e.seq > headOf(e) + 1n).map(predecessorId);
  const keptApart = new Set(ahead.length === 0 ? [] : (await client.query<{ event_id: string; stream_entry_id: string }>(
    'SELECT event_id, stream_entry_id FROM ledger_conflicts WHERE event_id = ANY($1::text[])', [ahead])).rows.map((r) => `${r.event_id} ${r.stream_entry_id}`));

  return pools.map((accountId) => ({
    accountId,
    replacedBefore: replacedBefore.get(accountId) ?? '',
    ...chainPool({ head: heads.get(accountId) ?? { seq: 0n, streamEntryId: '' }, candidates: candidates.get(accountId) ?? [], storedHashes, keptApart }),
  }));
}

type EventJson = Record<string, unknown>;

const BIGINT_FIELDS = ['seq', 'trial', 'allowance', 'promo', 'pack', 'overage', 'held', 'charged', 'chargedOverage', 'shortfall'] as const;

/** An event as stored in ledger_parked and ledger_conflicts: JSON, amounts as decimal text. */
const eventJson = (e: LedgerEvent): string => JSON.stringify(e, (_k, v: unknown) => (typeof v === 'bigint' ? v.toString() : v));

function eventFromJson(json: EventJson): LedgerEvent {
  const event = { ...json } as unknown as Record<string, unknown>;
  for (const field of BIGINT_FIELDS) event[field] = BigInt(json[field] as string);
  return event as unknown as LedgerEvent;
}

/**
 * Never dropped: kept apart for an operator (a redelivered batch adds nothing twice). One from
 * before the pool's last repair was of the timeline that repair replaced: stored already repaired.
 */
async function keepApart(client: pg.ClientBase, events: LedgerEvent[], reason: LedgerConflictReason,
  replacedBefore: ReadonlyMap<string, string>): Promise<void> {
  if (events.length === 0) return;
  await client.query(`
    INSERT INTO ledger_conflicts (event_id, account_id, seq, payload, stream_entry_id, reason, repaired_at)
    SELECT i, a, s, p, sid, $6, CASE WHEN m <> '' AND stream_entry_before(sid, m) THEN now() END
    FROM unnest($1::text[], $2::text[], $3::bigint[], $4::jsonb[], $5::text[], $7::text[]) AS x(i, a, s, p, sid, m)
    ON CONFLICT (event_id, stream_entry_id) DO NOTHING`,
  [events.map((e) => e.eventId), events.map((e) => e.accountId), events.map((e) => e.seq.toString()),
    events.map(eventJson), events.map((e) => e.streamEntryId), reason, events.map((e) => replacedBefore.get(e.accountId) ?? '')]);
}

async function park(client: pg.ClientBase, parked: LedgerEvent[], unparked: LedgerEvent[]): Promise<void> {
  if (parked.length > 0) {
    await client.query(`
      INSERT INTO ledger_parked (account_id, seq, stream_entry_id, payload)
      SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[], $4::jsonb[]) ON CONFLICT DO NOTHING`,
    [parked.map((e) => e.accountId), parked.map((e) => e.seq.toString()), parked.map((e) => e.streamEntryId), parked.map(eventJson)]);
  }
  if (unparked.length > 0) {
    await client.query(`
      DELETE FROM ledger_parked p USING unnest($1::text[], $2::bigint[], $3::text[]) AS x(a, s, sid)
      WHERE p.account_id = x.a AND p.seq = x.s AND p.stream_entry_id = x.sid`,
    [unparked.map((e) => e.accountId), unparked.map((e) => e.seq.toString()), unparked.map((e) => e.streamEntryId)]);
  }
}

async function moveHeads(client: pg.ClientBase, moved: Array<{ accountId: string; head: LedgerHead }>): Promise<void> {
  if (moved.length === 0) return;
  await client.query(`
    UPDATE ledger_heads h SET seq = x.s, stream_entry_id = x.sid FROM unnest($1::text[], $2::bigint[], $3::text[]) AS x(a, s, sid)
    WHERE h.account_id = x.a`,
  [moved.map((m) => m.accountId), moved.map((m) => m.head.seq.toString()), moved.map((m) => m.head.streamEntryId)]);
}

/**
 * Alert and refill_due events become rows of the outboxes their workers deliver from (alerts,
 * refill_attempts) in the same transaction, so each happens once however often a batch arrives.
 */
async function recordAlertsAndRefills(client: pg.ClientBase, events: LedgerEvent[]): Promise<void> {
  const figures = (e: LedgerEvent) => JSON.parse(e.detail ?? '{}') as { available?: string; threshold?: string };
  const alerts = events.filter((e) => e.kind === 'alert');
  if (alerts.length > 0) {
    await client.query(`
      INSERT INTO alerts (alert_id, account_id, kind, available, threshold, occurred_at, detail)
      SELECT i, a, k, av, th, to_timestamp(t::double precision / 1000), d
      FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::bigint[], $6::bigint[], $7::jsonb[]) AS x(i, a, k, av, th, t, d)
      ON CONFLICT (alert_id) DO NOTHING`,
      [alerts.map((e) => e.eventId), alerts.map((e) => e.accountId), alerts.map((e) => e.reason),
        alerts.map((e) => figures(e).available ?? '0'), alerts.map((e) => figures(e).threshold ?? '0'),
        alerts.map((e) => e.occurredAtMs), alerts.map((e) => e.detail)]);
  }
  const refills = events.filter((e) => e.kind === 'refill_due');
  if (refills.length > 0) {
    await client.query(`
      INSERT INTO refill_attempts (refill_id, account_id, created_at)
      SELECT i, a, to_timestamp(t::double precision / 1000) FROM unnest($1::text[], $2::text[], $3::bigint[]) AS x(i, a, t)
      ON CONFLICT (refill_id) DO NOTHING`,
      [refills.map((e) => e.eventId), refills.map((e) => e.accountId), refills.map((e) => e.occurredAtMs)]);
  }
}

async function upsertOutcomes(client: pg.ClientBase, events: LedgerEvent[]): Promise<void> {
  const settled = events.filter((e) => SETTLED_STATE[e.kind] !== undefined);
  if (settled.length > 0) {
    await client.query(`
      INSERT INTO reservation_outcomes (reservation_id, account_id, space_id, user_id, feature, state, charged,
        charged_overage, shortfall, settled_at, event_id)
      SELECT r, a, s, u, f, st, c, co, sh, to_timestamp(t::double precision / 1000), e
      FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::bigint[], $8::bigint[],
        $9::bigint[], $10::bigint[], $11::text[]) AS x(r, a, s, u, f, st, c, co, sh, t, e)
      ORDER BY r
      ON CONFLICT (reservation_id) DO UPDATE SET state = excluded.state, charged = excluded.charged,
        charged_overage = excluded.charged_overage, shortfall = excluded.shortfall, settled_at = excluded.settled_at,
        event_id = excluded.event_id, account_id = excluded.account_id, space_id = excluded.space_id,
        user_id = excluded.user_id, feature = excluded.feature`,
      [settled.map((e) => e.reservationId), settled.map((e) => e.accountId), settled.map((e) => e.spaceId),
        settled.map((e) => e.userId), settled.map((e) => e.feature), settled.map((e) => SETTLED_STATE[e.kind]),
        settled.map((e) => e.charged.toString()), settled.map((e) => e.chargedOverage.toString()),
        settled.map((e) => e.shortfall.toString()), settled.map((e) => e.occurredAtMs), settled.map((e) => e.eventId)]);
  }
  // A refund may be flushed before its commit (another replica's batch): it adds to `refunded` either way.
  const refunds = new Map<string, { event: LedgerEvent; credits: bigint }>();
  for (const e of events.filter((x) => x.kind === 'refund')) {
    const seen = refunds.get(e.reservationId);
    refunds.set(e.reservationId, { event: e, credits: (seen?.credits ?? 0n) - e.charged });
  }
  if (refunds.size > 0) {
    const rows = [...refunds.values()];
    await client.query(`
      INSERT INTO reservation_outcomes (reservation_id, account_id, space_id, user_id, feature, state, refunded, settled_at, event_id)
      SELECT r, a, s, u, f, 'committed', c, to_timestamp(t::double precision / 1000), e
      FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::bigint[], $7::bigint[], $8::text[])
        AS x(r, a, s, u, f, c, t, e)
      ORDER BY r
      ON CONFLICT (reservation_id) DO UPDATE SET refunded = reservation_outcomes.refunded + excluded.refunded`,
      [rows.map((r) => r.event.reservationId), rows.map((r) => r.event.accountId), rows.map((r) => r.event.spaceId),
        rows.map((r) => r.event.userId), rows.map((r) => r.event.feature), rows.map((r) => r.credits.toString()),
        rows.map((r) => r.event.occurredAtMs), rows.map((r) => r.event.eventId)]);
  }
}

/** Committed usage per pool × period × space × feature × user. */
async function addUsage(client: pg.ClientBase, events: LedgerEvent[]): Promise<void> {
  const totals = new Map<string, { e: LedgerEvent; operations: number; credits: bigint }>();
  for (const e of events) {
    if (e.kind !== 'commit' || e.periodStartMs === null) continue;
    const key = [e.accountId, e.periodStartMs, e.spaceId, e.feature, e.userId].join('\u0000');
    const total = totals.get(key) ?? { e, operations: 0, credits: 0n };
    total.operations += 1;
    total.credits += e.charged;
    totals.set(key, total);
  }
  if (totals.size === 0) return;
  const rows = [...totals.values()];
  await client.query(`
    INSERT INTO usage_rollups (account_id, period_start, space_id, feature, user_id, operations, credits)
    SELECT a, to_timestamp(p::double precision / 1000), s, f, u, o, c
    FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[], $5::text[], $6::bigint[], $7::bigint[]) AS x(a, p, s, f, u, o, c)
    ORDER BY a, p, s, f, u
    ON CONFLICT (account_id, period_start, space_id, feature, user_id) DO UPDATE
      SET operations = usage_rollups.operations + excluded.operations, credits = usage_rollups.credits + excluded.credits`,
    [rows.map((r) => r.e.accountId), rows.map((r) => r.e.periodStartMs), rows.map((r) => r.e.spaceId),
      rows.map((r) => r.e.feature), rows.map((r) => r.e.userId), rows.map((r) => r.operations), rows.map((r) => r.credits.toString())]);
}

interface SettingsJson {
  account_id: string; plan: string; billing_anchor: string; parent_id: string; space_limit_credits?: string;
  trial_credits: string; trial_ends_at: string; low_balance_threshold: string; pending_plan: string; created_at: string;
  /** Absent in events written before migration 0003. */
  low_balance_percent?: string;
}

/** Account settings: the newest account_settings event of each account wins. */
async function upsertSettings(client: pg.ClientBase, events: LedgerEvent[]): Promise<void> {
  const newest = new Map<string, { e: LedgerEvent; s: SettingsJson }>();
  for (const e of events) {
    if (e.kind !== 'account_settings' || e.settings === null) continue;
    const s = JSON.parse(e.settings) as SettingsJson;
    const seen = newest.get(s.account_id);
    if (!seen || seen.e.seq < e.seq) newest.set(s.account_id, { e, s });
  }
  if (newest.size === 0) return;
  const rows = [...newest.values()];
  const ms = (text: string) => (text === '0' ? null : Number(text));
  await client.query(`
    INSERT INTO accounts (account_id, parent_id, plan, pending_plan, billing_anchor, space_limit_credits, trial_credits,
      trial_ends_at, low_balance_threshold, created_at, settings_pool, settings_seq, low_balance_percent)
    SELECT a, pa, pl, pp, to_timestamp(an::double precision / 1000), cap, tc,
      CASE WHEN te IS NULL THEN NULL ELSE to_timestamp(te::double precision / 1000) END, low,
      to_timestamp(cr::double precision / 1000), sp, sq, lp
    FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[], $6::bigint[], $7::bigint[], $8::bigint[],
      $9::bigint[], $10::bigint[], $11::text[], $12::bigint[], $13::integer[]) AS x(a, pa, pl, pp, an, cap, tc, te, low, cr, sp, sq, lp)
    ORDER BY a
    ON CONFLICT (account_id) DO UPDATE SET parent_id = excluded.parent_id, plan = excluded.plan,
      pending_plan = excluded.pending_plan, billing_anchor = excluded.billing_anchor,
      space_limit_credits = excluded.space_limit_credits, trial_credits = excluded.trial_credits,
      trial_ends_at = excluded.trial_ends_at, low_balance_threshold = excluded.low_balance_threshold,
      low_balance_percent = excluded.low_balance_percent,
      settings_pool = excluded.settings_pool, settings_seq = excluded.settings_seq
    WHERE accounts.settings_seq < excluded.settings_seq`,
    [rows.map((r) => r.s.account_id), rows.map((r) => r.s.parent_id), rows.map((r) => r.s.plan),
      rows.map((r) => r.s.pending_plan), rows.map((r) => Number(r.s.billing_anchor)),
      rows.map((r) => r.s.space_limit_credits ?? null), rows.map((r) => r.s.trial_credits),
      rows.map((r) => ms(r.s.trial_ends_at)), rows.map((r) => r.s.low_balance_threshold),
      rows.map((r) => Number(r.s.created_at)), rows.map((r) => r.e.accountId), rows.map((r) => r.e.seq.toString()),
      rows.map((r) => Number(r.s.low_balance_percent ?? '0'))]);
}
