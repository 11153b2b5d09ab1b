import { setTimeout as sleep } from 'node:timers/promises';
import type pg from 'pg';
import type { Alert } from '../gen/meterd/v1/billing.js';
import type { Logger } from '../observability/logger.js';
import type { AlertFeed } from './alert-feed.js';
import { toProtoAlert } from './alert-rows.js';
import { AlertTail, latestAlertPosition } from './alert-tail.js';

/**
 * AlertFeed over the `alerts` table: each follower polls it every `pollIntervalMs` through its own
 * AlertTail (ordered by position, gap-safe), at most ALERT_TAIL_BATCH_MAX rows a poll, and filters
 * by account in memory (the position sequence must be read whole to see its gaps).
 *
 * Polling rather than LISTEN/NOTIFY: a LISTEN needs a dedicated connection per process held outside
 * the pool, and NOTIFY from the flush transaction would be one more thing the writer must remember;
 * alerts are rare (one per threshold crossing) and a poll per second of an indexed range is cheap.
 */
export class PostgresAlertFeed implements AlertFeed {
  /** Aborted by close(): every follow() returns. */
  private readonly closing = new AbortController();

  constructor(
    private readonly db: pg.Pool,
    private readonly pollIntervalMs: number,
    private readonly logger: Logger,
  ) {}

  /**
   * Calls `onAlert` for each alert after `afterPosition` (0: after the latest one now), in position
   * order, awaiting each call (the caller's backpressure holds the feed). Returns when `signal`
   * aborts or the feed closes; rejects when Postgres fails (the caller resumes by position).
   */
  async follow(
    filter: { accountId: string; afterPosition: bigint },
    onAlert: (alert: Alert) => Promise<void>,
    signal: AbortSignal,
    onStart?: (afterPosition: bigint) => void,
  ): Promise<void> {
    const stop = AbortSignal.any([signal, this.closing.signal]);
    if (stop.aborted) return;
    const start = filter.afterPosition > 0n ? filter.afterPosition : await latestAlertPosition(this.db);
    onStart?.(start);
    const tail = new AlertTail(this.db, start, this.logger);
    while (!stop.aborted) {
      const { alerts, more } = await tail.next();
      for (const row of alerts) {
        if (stop.aborted) return;
        if (filter.accountId === '' || row.accountId === filter.accountId) await onAlert(toProtoAlert(row));
      }
      if (!more) await sleep(this.pollIntervalMs, undefined, { signal: stop }).catch(() => {});
    }
  }

  /** Ends every follow() (server shutdown). */
  close(): void {
    this.closing.abort();
  }
}
