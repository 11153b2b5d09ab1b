import type pg from 'pg';
import type Stripe from 'stripe';
import type { Logger } from '../observability/logger.js';
import { BackgroundLoop } from './background-loop.js';
import { overageIdentifier } from './ids.js';
import type { PaymentsObserver } from './observer.js';
import { describeStripeError } from './stripe-client.js';

/** Periods that started longer ago than this are not reported any more: Stripe accepts meter events
 *  up to 35 days old, and a monthly period is invoiced soon after it ends. */
export const OVERAGE_LOOKBACK_DAYS = 62;
/** Unreported batches sent per pass. */
export const OVERAGE_REPORT_BATCH_MAX = 100;

interface PendingReport {
  account_id: string;
  period_start_ms: string;
  batch: number;
  credits: string;
  identifier: string;
  stripe_customer_id: string;
}

/**
 * Overage billed separately: for every pool with a Stripe customer, the overage charged in a period
 * (sum of `charged_overage` in ledger_events — refunds count negative) minus what overage_reports
 * already hold becomes a new batch row, written BEFORE Stripe is called; each unreported row is then
 * sent as a Billing Meter event whose identifier (and idempotency key) is the row's
 * `ovg:<account>:<period start ms>:<batch>`, until reported_at is set. A retry sends the same
 * identifier, and Stripe counts an identifier once, so overage is never billed twice. Overage
 * refunded after it was reported is not taken back (a credit note is an operator's decision).
 */
export class OverageReporter {
  readonly loop: BackgroundLoop;

  constructor(
    private readonly database: pg.Pool,
    private readonly stripe: Stripe,
    private readonly meterEventName: string,
    private readonly logger: Logger,
    private readonly observer: PaymentsObserver,
    intervalMs: number,
    /** meterd's clock: the ledger's times come from it, so the look-back window must too. */
    private readonly nowMs: () => number,
  ) {
    this.loop = new BackgroundLoop('overage-reporter', intervalMs, () => this.runOnce(), logger);
  }

  async runOnce(): Promise<boolean> {
    await this.recordBatches();
    return this.reportPending();
  }

  /** New batch rows for overage not yet in overage_reports; the primary key makes a race between replicas a no-op. */
  async recordBatches(): Promise<number> {
    const { rows } = await this.database.query<{ account_id: string; period_start_ms: string; unreported: string; last_batch: number }>(
      `WITH used AS (
         SELECT e.account_id, e.period_start, sum(e.charged_overage) AS credits
           FROM ledger_events e JOIN stripe_customers c ON c.account_id = e.account_id
          WHERE e.period_start >= to_timestamp($2 / 1000.0) - $1 * interval '1 day'
            AND e.occurred_at >= to_timestamp($2 / 1000.0) - $1 * interval '1 day'
            AND e.charged_overage <> 0
          GROUP BY e.account_id, e.period_start),
       reported AS (
         SELECT account_id, period_start, sum(credits) AS credits, max(batch) AS last_batch
           FROM overage_reports WHERE period_start >= to_timestamp($2 / 1000.0) - $1 * interval '1 day'
          GROUP BY account_id, period_start)
       SELECT u.account_id, (extract(epoch FROM u.period_start) * 1000)::bigint::text AS period_start_ms,
              (u.credits - COALESCE(r.credits, 0))::text AS unreported, COALESCE(r.last_batch, 0) AS last_batch
         FROM used u LEFT JOIN reported r ON r.account_id = u.account_id AND r.period_start = u.period_start
        WHERE u.credits > COALESCE(r.credits, 0)`, [OVERAGE_LOOKBACK_DAYS, this.nowMs()]);
    let recorded = 0;
    for (const row of rows) {
      const batch = row.last_batch + 1;
      const periodStartMs = Number(row.period_start_ms);
      const inserted = await this.database.query(
        `INSERT INTO overage_reports (account_id, period_start, batch, credits, identifier)
         VALUES ($1, to_timestamp($2 / 1000.0), $3, $4, $5) ON CONFLICT DO NOTHING`,
        [row.account_id, periodStartMs, batch, row.unreported, overageIdentifier(row.account_id, periodStartMs, batch)]);
      recorded += inserted.rowCount ?? 0;
    }
    return recorded;
  }

  /** Sends unreported batches; true when a full batch was sent (more may wait). */
  async reportPending(): Promise<boolean> {
    const { rows } = await this.database.query<PendingReport>(
      `SELECT o.account_id, (extract(epoch FROM o.period_start) * 1000)::bigint::text AS period_start_ms, o.batch,
              o.credits::text AS credits, o.identifier, c.stripe_customer_id
         FROM overage_reports o JOIN stripe_customers c ON c.account_id = o.account_id
        WHERE o.reported_at IS NULL ORDER BY o.created_at LIMIT $1`, [OVERAGE_REPORT_BATCH_MAX]);
    for (const row of rows) await this.report(row);
    return rows.length === OVERAGE_REPORT_BATCH_MAX;
  }

  private async report(row: PendingReport): Promise<void> {
    try {
      await this.stripe.billing.meterEvents.create({
        event_name: this.meterEventName,
        identifier: row.identifier,
        payload: { stripe_customer_id: row.stripe_customer_id, value: row.credits },
      }, { idempotencyKey: row.identifier });
    } catch (err) {
      if (!isDuplicateIdentifier(err)) {
        const error = describeStripeError(err);
        await this.database.query('UPDATE overage_reports SET attempts = attempts + 1, last_error = $2 WHERE identifier = $1', [row.identifier, error]);
        this.observer.overage('failed', BigInt(row.credits));
        this.logger.warn({ identifier: row.identifier, accountId: row.account_id, error }, 'overage report failed; retrying next pass');
        return;
      }
      // Stripe already has this identifier: an earlier try got through and its answer was lost.
    }
    await this.database.query(
      "UPDATE overage_reports SET attempts = attempts + 1, last_error = '', reported_at = now() WHERE identifier = $1", [row.identifier]);
    this.observer.overage('reported', BigInt(row.credits));
    this.logger.info({ identifier: row.identifier, accountId: row.account_id, credits: row.credits }, 'overage reported to Stripe');
  }
}

function isDuplicateIdentifier(err: unknown): boolean {
  const e = err as { statusCode?: number; code?: string; message?: string };
  if (e.statusCode !== 400) return false;
  return e.code === 'resource_already_exists' || /identifier/i.test(e.message ?? '') && /already|duplicate|exists/i.test(e.message ?? '');
}
