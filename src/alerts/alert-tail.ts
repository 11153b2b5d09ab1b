import type pg from 'pg';
import type { Logger } from '../observability/logger.js';
import { ALERT_COLUMNS_SQL, alertRowOf, type AlertRecord, type AlertRow } from './alert-rows.js';

/** Alerts read per poll, at most (a reader that gets a full batch reads again at once). */
export const ALERT_TAIL_BATCH_MAX = 500;
/**
 * A gap in positions whose writer may still commit is waited for at most this long, then skipped
 * with a warning. Only a transaction that inserts an alert and stays open longer than this (meterd's
 * own writers are bounded by DATABASE_STATEMENT_TIMEOUT_MS per statement), or an unrelated long write
 * transaction holding back Postgres' snapshot horizon, makes this wait run out.
 */
export const ALERT_GAP_WAIT_MS_MAX = 60_000;

interface TailRecord extends AlertRecord {
  snapshot_xmin: string;
  snapshot_xmax: string;
}

/**
 * Reads the `alerts` table in position order after a cursor, never skipping a row that commits late.
 *
 * Positions come from a sequence, taken at INSERT and committed later, so transactions commit them
 * out of order: while position 11 is visible, 10 may still be in flight (it appears later) or belong
 * to a transaction that rolled back or hit ON CONFLICT (it never appears). A reader that jumped to
 * 11 could lose 10 for good. So the tail only passes a gap once it is settled: it notes the
 * snapshot's xmax when it first sees rows beyond a gap, and once Postgres' oldest running
 * transaction (the snapshot xmin) is past that, every writer that could hold a position in the gap
 * has ended, and what is still missing never will be there. (A writer that took its position before
 * it had a transaction id could slip through; meterd's writers insert other rows first.)
 * The positions it hands out are therefore strictly increasing and resuming after one is exact.
 */
export class AlertTail {
  /** Every position at or below this that will ever exist is visible (gaps below it are final). */
  private settled: bigint;
  /** A snapshot that saw rows beyond a gap: settled up to `position` once xmin reaches `xmax`. */
  private pendingHorizon: { position: bigint; xmax: bigint } | undefined;
  /** Since when the tail waits at a gap just after `after`. */
  private blocked: { after: bigint; sinceMs: number } | undefined;
  private readonly batchMax: number;
  private readonly gapWaitMsMax: number;
  private readonly nowMs: () => number;

  constructor(
    private readonly db: pg.Pool,
    private cursor: bigint,
    private readonly logger: Logger,
    options: { batchMax?: number; gapWaitMsMax?: number; nowMs?: () => number } = {},
  ) {
    this.settled = cursor;
    this.batchMax = options.batchMax ?? ALERT_TAIL_BATCH_MAX;
    this.gapWaitMsMax = options.gapWaitMsMax ?? ALERT_GAP_WAIT_MS_MAX;
    this.nowMs = options.nowMs ?? Date.now;
  }

  /** The last position handed out (or the starting point). */
  get position(): bigint {
    return this.cursor;
  }

  /** The next alerts in position order; `more` when a full batch came back (read again at once). */
  async next(): Promise<{ alerts: AlertRow[]; more: boolean }> {
    const { rows } = await this.db.query<TailRecord>(
      `SELECT ${ALERT_COLUMNS_SQL},
              pg_snapshot_xmin(snap.s)::text AS snapshot_xmin, pg_snapshot_xmax(snap.s)::text AS snapshot_xmax
         FROM alerts a CROSS JOIN (SELECT pg_current_snapshot() AS s) snap
        WHERE a.position > $1
        ORDER BY a.position
        LIMIT $2`,
      [this.cursor.toString(), this.batchMax],
    );
    const first = rows[0];
    if (first === undefined) {
      this.blocked = undefined;
      return { alerts: [], more: false };
    }
    const xmin = BigInt(first.snapshot_xmin);
    if (this.pendingHorizon && xmin >= this.pendingHorizon.xmax) {
      if (this.pendingHorizon.position > this.settled) this.settled = this.pendingHorizon.position;
      this.pendingHorizon = undefined;
    }
    const alerts: AlertRow[] = [];
    for (const record of rows) {
      const row = alertRowOf(record);
      const gap = row.position !== this.cursor + 1n && row.position - 1n > this.settled;
      if (gap && !this.waitedLongEnough(row.position)) {
        const last = rows[rows.length - 1] as TailRecord;
        this.pendingHorizon ??= { position: BigInt(last.position), xmax: BigInt(first.snapshot_xmax) };
        return { alerts, more: false };
      }
      alerts.push(row);
      this.cursor = row.position;
    }
    this.blocked = undefined;
    return { alerts, more: rows.length >= this.batchMax };
  }

  /** At a gap before `nextPosition`: true once it has been waited for ALERT_GAP_WAIT_MS_MAX. */
  private waitedLongEnough(nextPosition: bigint): boolean {
    const nowMs = this.nowMs();
    if (this.blocked?.after !== this.cursor) {
      this.blocked = { after: this.cursor, sinceMs: nowMs };
      return false;
    }
    const waitedMs = nowMs - this.blocked.sinceMs;
    if (waitedMs < this.gapWaitMsMax) return false;
    this.logger.warn({ from: (this.cursor + 1n).toString(), to: (nextPosition - 1n).toString(), waitedMs },
      'alert positions still not committed after the gap wait: skipped (an alert committed there now would be neither streamed nor delivered)');
    this.blocked = undefined;
    return true;
  }
}

/** The highest position in `alerts` now (0 when empty): where "only new alerts" starts. */
export async function latestAlertPosition(db: pg.Pool): Promise<bigint> {
  const { rows } = await db.query<{ position: string }>('SELECT coalesce(max(position), 0)::text AS position FROM alerts');
  return BigInt(rows[0]?.position ?? '0');
}
