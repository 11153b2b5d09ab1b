import type pg from 'pg';
import type { LedgerEvent } from '../domain/ledger-event.js';

/**
 * Writes one batch of ledger events and the projections they drive, in the caller's transaction:
 * INSERT … ON CONFLICT (event_id) DO NOTHING, then projections only for the rows actually inserted,
 * so a batch delivered twice (a crash between COMMIT and XACK) changes nothing the second time.
 * Every projection is order-independent (upserts that add, or keep the newest), because replicas
 * may commit consecutive batches of one stream in either order. Each upsert that updates rows takes
 * them in key order (ORDER BY), so two flush lanes or replicas writing the same rows at once wait
 * for each other instead of deadlocking.
 */
/** Why events were kept apart (payload_differs, diverged) or flagged in the ledger (stranded). */
export type LedgerConflictReason = 'payload_differs' | 'diverged' | 'stranded';

export interface WriteResult {
  inserted: number;
  duplicates: number;
  /** Event ids already stored with another payload (kept in ledger_conflicts): a Redis that lost data, or a bug. */
  conflicting: string[];
  /** Event ids of a Redis timeline that diverged from the ledger's (kept in ledger_conflicts): see judgeTimelines. */
  diverged: string[];
  /** Event ids already in the ledger that follow a diverged or conflicting event (flushed before it was judged). */
  stranded: string[];
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
  ON CONFLICT (event_id) DO NOTHING
  RETURNING event_id`;

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
  if (events.length === 0) return { inserted: 0, duplicates: 0, conflicting: [], diverged: [], stranded: [] };
  const columns: unknown[][] = COLUMNS.map(() => []);
  for (const event of events) columnValues(event).forEach((value, i) => columns[i]?.push(value));
  const insertedIds = new Set((await client.query<{ event_id: string }>(INSERT_EVENTS, columns)).rows.map((r) => r.event_id));

  const duplicates = events.filter((e) => !insertedIds.has(e.eventId));
  const conflicts = await payloadConflicts(client, duplicates);
  const timelines = await judgeTimelines(client, events, insertedIds, conflicts);
  if (timelines.diverged.length > 0) {
    // Inserted a moment ago in this transaction, before any projection saw them.
    await client.query('DELETE FROM ledger_events WHERE event_id = ANY($1::text[])', [timelines.diverged.map((e) => e.eventId)]);
  }
  await keepApart(client, conflicts, 'payload_differs');
  await keepApart(client, timelines.diverged, 'diverged');

  const divergedIds = new Set(timelines.diverged.map((e) => e.eventId));
  const inserted = events.filter((e) => insertedIds.has(e.eventId) && !divergedIds.has(e.eventId));
  await upsertOutcomes(client, inserted);
  await addUsage(client, inserted);
  await upsertSettings(client, inserted);
  await recordAlertsAndRefills(client, inserted);
  return {
    inserted: inserted.length,
    duplicates: duplicates.length,
    conflicting: conflicts.map((e) => e.eventId),
    diverged: [...divergedIds],
    stranded: timelines.stranded,
  };
}

/** Duplicates whose stored payload differs: the same event id, another event. */
async function payloadConflicts(client: pg.ClientBase, duplicates: LedgerEvent[]): Promise<LedgerEvent[]> {
  if (duplicates.length === 0) return [];
  const stored = await client.query<{ event_id: string; payload_sha256: string }>(
    'SELECT event_id, payload_sha256 FROM ledger_events WHERE event_id = ANY($1::text[])', [duplicates.map((e) => e.eventId)]);
  const hashes = new Map(stored.rows.map((r) => [r.event_id, r.payload_sha256]));
  return duplicates.filter((e) => hashes.get(e.eventId) !== e.payloadSha256);
}

/** Never dropped: kept apart for an operator (a redelivered batch adds nothing twice). */
async function keepApart(client: pg.ClientBase, events: LedgerEvent[], reason: Exclude<LedgerConflictReason, 'stranded'>): Promise<void> {
  if (events.length === 0) return;
  await client.query(`
    INSERT INTO ledger_conflicts (event_id, account_id, seq, payload, stream_entry_id, reason)
    SELECT *, $6 FROM unnest($1::text[], $2::text[], $3::bigint[], $4::jsonb[], $5::text[])
    ON CONFLICT (event_id, stream_entry_id) DO NOTHING`,
  [events.map((e) => e.eventId), events.map((e) => e.accountId), events.map((e) => e.seq.toString()),
    events.map((e) => JSON.stringify(e, (_k, v: unknown) => (typeof v === 'bigint' ? v.toString() : v))),
    events.map((e) => e.streamEntryId), reason]);
}

const eventIdAt = (e: LedgerEvent, seq: bigint) => `${e.accountId}/${seq}`;

/**
 * Which Redis timeline an event is on. Each event names the stream entry of its pool's previous
 * event (prev): a Redis that lost its tail hands out the lost sequence numbers again, and every
 * event of that new timeline carries a chain that does not meet the ledger's. An event inserted by
 * this batch is diverged when its previous event was kept apart (payload differs, or diverged
 * itself), or when the ledger holds its previous or next event and the chain between them breaks
 * (the ledger's timeline came first, so it wins). Diverged events are kept apart, never mixed into
 * the ledger, however far past Postgres' last sequence number they run.
 * Not judged: an event whose neighbours are not flushed yet (another replica's batch). If one of
 * those later turns out to follow a diverged event, it is reported as stranded (an operator's case;
 * repairPool checks the whole chain and refuses to rebuild from a broken one).
 */
async function judgeTimelines(client: pg.ClientBase, events: LedgerEvent[], insertedIds: Set<string>, conflicts: LedgerEvent[]):
Promise<{ diverged: LedgerEvent[]; stranded: string[] }> {
  const judged = events.filter((e) => insertedIds.has(e.eventId) && e.prevStreamEntryId !== '').sort((a, b) => (a.seq < b.seq ? -1 : 1));
  if (judged.length === 0 && conflicts.length === 0) return { diverged: [], stranded: [] };
  const inBatch = new Map(events.map((e) => [e.eventId, e]));
  const neighbourIds = [...new Set([...judged, ...conflicts].flatMap((e) => [eventIdAt(e, e.seq - 1n), eventIdAt(e, e.seq + 1n)]))]
    .filter((id) => !inBatch.has(id));
  const stored = new Map<string, { sid: string; prev: string }>();
  for (const r of (await client.query<{ event_id: string; stream_entry_id: string; prev_stream_entry_id: string }>(
    'SELECT event_id, stream_entry_id, prev_stream_entry_id FROM ledger_events WHERE event_id = ANY($1::text[])', [neighbourIds])).rows) {
    stored.set(r.event_id, { sid: r.stream_entry_id, prev: r.prev_stream_entry_id });
  }
  const apart = new Set<string>(); // "<event id> <stream entry id>" of events kept apart earlier
  const unknown = neighbourIds.filter((id) => !stored.has(id));
  if (unknown.length > 0) {
    for (const r of (await client.query<{ event_id: string; stream_entry_id: string }>(
      'SELECT event_id, stream_entry_id FROM ledger_conflicts WHERE event_id = ANY($1::text[])', [unknown])).rows) {
      apart.add(`${r.event_id} ${r.stream_entry_id}`);
    }
  }

  const keptApartSids = new Set(conflicts.map((e) => e.streamEntryId)); // of this batch, growing as events diverge
  const diverged: LedgerEvent[] = [];
  for (const e of judged) {
    const previousId = eventIdAt(e, e.seq - 1n);
    const next = stored.get(eventIdAt(e, e.seq + 1n));
    const previousStored = stored.get(previousId);
    const followsKeptApart = keptApartSids.has(e.prevStreamEntryId) || apart.has(`${previousId} ${e.prevStreamEntryId}`);
    const breaksBefore = !inBatch.has(previousId) && previousStored !== undefined && previousStored.sid !== e.prevStreamEntryId;
    const breaksAfter = next !== undefined && next.prev !== '' && next.prev !== e.streamEntryId;
    if (followsKeptApart || breaksBefore || breaksAfter) {
      diverged.push(e);
      keptApartSids.add(e.streamEntryId);
    }
  }
  // Stored events whose previous one is kept apart: written before that one was judged.
  const stranded = [...diverged, ...conflicts].flatMap((e) => {
    const next = stored.get(eventIdAt(e, e.seq + 1n));
    return next !== undefined && next.prev === e.streamEntryId ? [eventIdAt(e, e.seq + 1n)] : [];
  });
  return { diverged, stranded };
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
