import type pg from 'pg';
import type { LedgerQuery } from '../domain/commands.js';
import type { LedgerReader } from '../domain/ports.js';
import type { LedgerEntryResult, LedgerPage, UsageCount, UsageResult } from '../domain/types.js';
import { addMonthsClamped, periodBounds } from '../domain/periods.js';

/** Reads the ledger and usage rollups back out of Postgres for AdminService. */
export class PostgresLedgerReader implements LedgerReader {
  constructor(private readonly db: pg.Pool) {}

  async listEntries(poolId: string, spaceId: string, q: LedgerQuery): Promise<LedgerPage> {
    const where = ['account_id = $1'];
    const params: unknown[] = [poolId];
    const add = (sql: string, value: unknown) => {
      params.push(value);
      where.push(sql.replace('?', `$${params.length}`));
    };
    if (spaceId !== '') add('space_id = ?', spaceId);
    if (q.kinds.length > 0) add('kind = ANY(?::text[])', q.kinds);
    if (q.reservationId !== '') add('reservation_id = ?', q.reservationId);
    if (q.userId !== '') add('user_id = ?', q.userId);
    if (q.feature !== '') add('feature = ?', q.feature);
    if (q.sinceMs !== undefined) add('occurred_at >= to_timestamp(?::double precision / 1000)', q.sinceMs);
    if (q.untilMs !== undefined) add('occurred_at < to_timestamp(?::double precision / 1000)', q.untilMs);
    if (q.beforeSeq !== undefined) add('seq < ?', q.beforeSeq.toString());
    params.push(q.pageSize + 1);
    const rows = (await this.db.query<Record<string, string>>(`
      SELECT event_id, account_id, seq, kind, space_id, user_id, feature, reservation_id, trial, allowance, promo, pack,
        overage, held, charged, charged_overage, shortfall, plan, op_id, reason, actor,
        (extract(epoch FROM occurred_at) * 1000)::bigint AS occurred_at_ms
      FROM ledger_events WHERE ${where.join(' AND ')} ORDER BY seq DESC LIMIT $${params.length}`, params)).rows;
    const entries = rows.slice(0, q.pageSize).map(toEntry);
    const page: LedgerPage = { entries };
    const last = entries[entries.length - 1];
    if (rows.length > q.pageSize && last) page.nextBeforeSeq = last.seq;
    return page;
  }

  /** A past period's committed usage; the period's end is derived from the account's anchor. */
  async usageForPeriod(poolId: string, spaceId: string, periodStartMs: number): Promise<UsageResult> {
    const rows = (await this.db.query<{ space_id: string; feature: string; user_id: string; operations: string; credits: string }>(`
      SELECT space_id, feature, user_id, operations, credits FROM usage_rollups
      WHERE account_id = $1 AND period_start = to_timestamp($2::double precision / 1000) AND ($3 = '' OR space_id = $3)`,
      [poolId, periodStartMs, spaceId])).rows;
    const anchor = (await this.db.query<{ ms: string }>(
      'SELECT (extract(epoch FROM billing_anchor) * 1000)::bigint AS ms FROM accounts WHERE account_id = $1', [poolId])).rows[0];
    const bounds = anchor ? periodBounds(Number(anchor.ms), periodStartMs) : { startMs: periodStartMs, endMs: addMonthsClamped(periodStartMs, 1) };
    const usage: UsageResult = {
      accountId: spaceId || poolId, periodStartMs, periodEndMs: bounds.endMs,
      total: { operations: 0n, credits: 0n }, byFeature: new Map(), byUser: new Map(), bySpace: new Map(),
    };
    const add = (map: Map<string, UsageCount>, key: string, operations: bigint, credits: bigint) => {
      const count = map.get(key) ?? { operations: 0n, credits: 0n };
      count.operations += operations;
      count.credits += credits;
      map.set(key, count);
    };
    for (const row of rows) {
      const operations = BigInt(row.operations);
      const credits = BigInt(row.credits);
      usage.total.operations += operations;
      usage.total.credits += credits;
      add(usage.byFeature, row.feature, operations, credits);
      if (row.user_id !== '') add(usage.byUser, row.user_id, operations, credits);
      if (row.space_id !== '' && spaceId === '') add(usage.bySpace, row.space_id, operations, credits);
    }
    return usage;
  }
}

function toEntry(r: Record<string, string>): LedgerEntryResult {
  const n = (field: string) => BigInt(r[field] ?? '0');
  const t = (field: string) => r[field] ?? '';
  return {
    eventId: t('event_id'), accountId: t('account_id'), seq: n('seq'), kind: t('kind'), spaceId: t('space_id'),
    userId: t('user_id'), feature: t('feature'), reservationId: t('reservation_id'), trial: n('trial'),
    allowance: n('allowance'), promo: n('promo'), pack: n('pack'), overage: n('overage'), held: n('held'),
    charged: n('charged'), chargedOverage: n('charged_overage'), shortfall: n('shortfall'), plan: t('plan'),
    opId: t('op_id'), reason: t('reason'), actor: t('actor'), occurredAtMs: Number(r.occurred_at_ms),
  };
}
