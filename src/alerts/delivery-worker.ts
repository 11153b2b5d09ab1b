import type pg from 'pg';
import type { Logger } from '../observability/logger.js';
import { METERD_VERSION } from '../version.js';
import { ALERT_COLUMNS_SQL, alertRowOf, WEBHOOK_EVENT_TYPE, webhookPayload, type AlertRecord } from './alert-rows.js';
import { AlertTail, latestAlertPosition } from './alert-tail.js';
import { postWebhook, urlForLogs, type PostOutcome } from './webhook-post.js';
import { signatureHeaders } from './webhook-signature.js';

/** Deliveries claimed per round, POSTed concurrently (a full round is followed by another at once). */
export const ALERT_DELIVERY_BATCH_MAX = 16;
/** The retry delay never exceeds this, however many attempts failed. */
export const ALERT_RETRY_DELAY_MS_MAX = 3_600_000;
/** Each retry delay is shortened by up to this fraction, at random, so receivers coming back are not hit in step. */
export const ALERT_RETRY_JITTER_FRACTION = 0.2;
/**
 * A claimed delivery is not due again before the POST timeout plus this: long enough for the claimer
 * to record its outcome, short enough that a replica dying mid-POST delays the retry only a little.
 */
export const ALERT_CLAIM_LEASE_EXTRA_MS = 30_000;
/** Where enqueueing resumes after a restart is looked for among this many of the newest alerts. */
export const ALERT_RESUME_SCAN_MAX = 10_000;
/** The loop's own backoff while Postgres fails grows up to this. */
const LOOP_BACKOFF_MS_MAX = 30_000;

export interface DeliveryOptions {
  urls: readonly string[];
  secret: string;
  attemptsMax: number;
  retryBaseMs: number;
  timeoutMs: number;
  pollIntervalMs: number;
}

/** What one attempt came to (for metrics: the lead's meterd_alert_deliveries_total{outcome}). */
export type DeliveryOutcome = 'delivered' | 'retrying' | 'gave_up';

interface ClaimedRecord extends AlertRecord {
  url: string;
  attempts: number;
}

/** The delay before attempt `attempts + 1`: base × 2^(attempts−1), capped, minus up to 20 % jitter. */
export function retryDelayMs(retryBaseMs: number, attempts: number, random: () => number = Math.random): number {
  const exponential = Math.min(ALERT_RETRY_DELAY_MS_MAX, retryBaseMs * 2 ** Math.max(0, attempts - 1));
  return Math.round(exponential * (1 - ALERT_RETRY_JITTER_FRACTION * random()));
}

/**
 * Delivers every alert to every configured webhook URL, from the `alert_deliveries` outbox:
 *  1. enqueue — an AlertTail walks `alerts` in position order and inserts one row per alert × URL
 *     (ON CONFLICT DO NOTHING: replicas enqueue the same alerts harmlessly). After a restart it resumes
 *     after the newest alert that has delivery rows, so new URLs get alerts from when they were added.
 *  2. claim — due rows are taken with FOR UPDATE SKIP LOCKED and leased in the same statement
 *     (attempts + 1, next_attempt_at pushed past the POST timeout), so replicas share the work and a
 *     delivery is attempted by one replica at a time, without a transaction held open over HTTP.
 *  3. POST and record — 2xx → delivered_at; otherwise next_attempt_at = now + retryDelayMs, or
 *     gave_up_at after attemptsMax attempts. The outcome is only written by the lease holder
 *     (guarded on attempts), and the rows are the delivery log.
 * Runs every pollIntervalMs, at once when nudged, and once at start (the outbox survives restarts).
 * Deliveries are at least once: a receiver dedupes on the payload's id.
 */
export class AlertDeliveryWorker {
  private tail: AlertTail | undefined;
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  /** Set by stop(): no new round starts, and a round in flight ends after its current step. */
  private stopped = false;
  private started = false;
  private nudged = false;
  private failures = 0;
  private readonly userAgent = `meterd/${METERD_VERSION}`;

  constructor(
    private readonly db: pg.Pool,
    private readonly options: DeliveryOptions,
    private readonly logger: Logger,
    private readonly onOutcome: (outcome: DeliveryOutcome) => void = () => {},
    private readonly random: () => number = Math.random,
  ) {}

  /**
   * Fixes where enqueueing starts (every alert written after this resolves is delivered), then runs
   * a first round at once and one every pollIntervalMs.
   */
  async start(): Promise<void> {
    if (this.started) return;
    this.started = true;
    this.tail ??= new AlertTail(this.db, await this.resumePosition(), this.logger);
    this.schedule(0);
  }

  /** Runs a round now (new alerts were just written) instead of at the next poll. */
  nudge(): void {
    if (!this.started || this.stopped) return;
    if (this.timer === undefined) {
      this.nudged = true; // a round is running: the next follows at once
      return;
    }
    clearTimeout(this.timer);
    this.schedule(0);
  }

  /** Stops the loop after the round in flight (its POSTs finish and are recorded). */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
    await this.running;
  }

  /** One round: enqueue new alerts, give up interrupted final attempts, deliver what is due. */
  async runOnce(): Promise<{ enqueued: number; attempted: number }> {
    let enqueued = 0;
    this.tail ??= new AlertTail(this.db, await this.resumePosition(), this.logger);
    const tail = this.tail;
    let enqueuedUpTo = tail.position;
    try {
      for (;;) {
        const { alerts, more } = await tail.next();
        if (alerts.length > 0) enqueued += await this.enqueue(alerts.map((a) => a.alertId));
        enqueuedUpTo = tail.position;
        if (!more || this.stopped) break;
      }
    } catch (err) {
      // The tail may have moved past alerts that did not get their rows: back to the last ones that did.
      this.tail = new AlertTail(this.db, enqueuedUpTo, this.logger);
      throw err;
    }
    await this.giveUpInterrupted();
    let attempted = 0;
    for (;;) {
      const claimed = await this.claim();
      await Promise.all(claimed.map((delivery) => this.deliver(delivery)));
      attempted += claimed.length;
      if (claimed.length < ALERT_DELIVERY_BATCH_MAX || this.stopped) break;
    }
    return { enqueued, attempted };
  }

  private schedule(delayMs: number): void {
    if (this.stopped) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.running = this.tick();
    }, delayMs);
  }

  private async tick(): Promise<void> {
    let delayMs = this.options.pollIntervalMs;
    try {
      await this.runOnce();
      this.failures = 0;
    } catch (err) {
      this.failures += 1;
      delayMs = Math.min(this.options.pollIntervalMs * 2 ** this.failures, LOOP_BACKOFF_MS_MAX);
      this.logger.warn({ err, retryInMs: delayMs }, 'alert delivery round failed; the outbox stays in Postgres');
    }
    if (this.nudged) {
      this.nudged = false;
      delayMs = 0;
    }
    this.schedule(delayMs);
  }

  /**
   * After the newest alert that has delivery rows (enqueueing is in position order, so everything
   * before it was enqueued); when none of the newest ALERT_RESUME_SCAN_MAX has any (deliveries just
   * turned on, or off for that long), after the newest alert: older ones are not delivered.
   */
  private async resumePosition(): Promise<bigint> {
    const { rows } = await this.db.query<{ position: string | null }>(
      `SELECT max(recent.position)::text AS position
         FROM (SELECT position, alert_id FROM alerts ORDER BY position DESC LIMIT $1) recent
        WHERE EXISTS (SELECT 1 FROM alert_deliveries d WHERE d.alert_id = recent.alert_id)`,
      [ALERT_RESUME_SCAN_MAX],
    );
    const found = rows[0]?.position;
    const position = found ? BigInt(found) : await latestAlertPosition(this.db);
    this.logger.info({ afterPosition: position.toString(), urls: this.options.urls.map(urlForLogs) }, 'alert webhook deliveries: enqueueing alerts after this position');
    return position;
  }

  private async enqueue(alertIds: string[]): Promise<number> {
    const result = await this.db.query(
      `INSERT INTO alert_deliveries (alert_id, url)
       SELECT ids.alert_id, urls.url FROM unnest($1::text[]) AS ids(alert_id) CROSS JOIN unnest($2::text[]) AS urls(url)
       ON CONFLICT DO NOTHING`,
      [alertIds, this.options.urls],
    );
    return result.rowCount ?? 0;
  }

  /**
   * A due delivery whose attempts are already used up had its last attempt interrupted (its replica
   * died holding the lease) or attemptsMax was lowered: it is given up rather than tried once more.
   */
  private async giveUpInterrupted(): Promise<void> {
    const { rows } = await this.db.query<{ alert_id: string; url: string; attempts: number }>(
      `UPDATE alert_deliveries
          SET gave_up_at = now(), last_error = CASE WHEN last_error = '' THEN 'last attempt interrupted' ELSE last_error END
        WHERE delivered_at IS NULL AND gave_up_at IS NULL AND next_attempt_at <= now() AND attempts >= $1 AND url = ANY($2::text[])
        RETURNING alert_id, url, attempts`,
      [this.options.attemptsMax, this.options.urls],
    );
    for (const row of rows) {
      this.logger.error({ alertId: row.alert_id, url: urlForLogs(row.url), attempts: row.attempts }, 'alert delivery given up: its attempts are used up');
      this.onOutcome('gave_up');
    }
  }

  /** Takes up to ALERT_DELIVERY_BATCH_MAX due deliveries and leases them to this replica. */
  private async claim(): Promise<ClaimedRecord[]> {
    const leaseMs = this.options.timeoutMs + ALERT_CLAIM_LEASE_EXTRA_MS;
    const { rows } = await this.db.query<ClaimedRecord>(
      `WITH due AS (
         SELECT alert_id, url FROM alert_deliveries
          WHERE delivered_at IS NULL AND gave_up_at IS NULL AND next_attempt_at <= now()
            AND attempts < $1 AND url = ANY($2::text[])
          ORDER BY next_attempt_at
          LIMIT $3
          FOR UPDATE SKIP LOCKED
       ), claimed AS (
         UPDATE alert_deliveries d
            SET attempts = d.attempts + 1, next_attempt_at = now() + $4::float8 * interval '1 millisecond'
           FROM due WHERE d.alert_id = due.alert_id AND d.url = due.url
         RETURNING d.alert_id, d.url, d.attempts
       )
       SELECT claimed.url, claimed.attempts, ${ALERT_COLUMNS_SQL}
         FROM claimed JOIN alerts a ON a.alert_id = claimed.alert_id
        ORDER BY a.position`,
      [this.options.attemptsMax, this.options.urls, ALERT_DELIVERY_BATCH_MAX, leaseMs],
    );
    return rows;
  }

  /** Never rejects: a failure to record leaves the lease to run out, and the next round retries. */
  private async deliver(claimed: ClaimedRecord): Promise<void> {
    try {
      await this.attempt(claimed);
    } catch (err) {
      this.logger.warn({ alertId: claimed.alert_id, url: urlForLogs(claimed.url), attempt: claimed.attempts, err },
        'alert delivery attempt failed before it was recorded; retried when its lease runs out');
    }
  }

  private async attempt(claimed: ClaimedRecord): Promise<void> {
    const alert = alertRowOf(claimed);
    const body = webhookPayload(alert);
    const timestampSeconds = Math.floor(Date.now() / 1000);
    const headers = {
      'content-type': 'application/json',
      'user-agent': this.userAgent,
      ...signatureHeaders(this.options.secret, timestampSeconds, body),
    };
    const outcome = await postWebhook(claimed.url, body, headers, this.options.timeoutMs);
    const log = { alertId: alert.alertId, type: WEBHOOK_EVENT_TYPE[alert.kind], url: urlForLogs(claimed.url), attempt: claimed.attempts };
    // Should this fail, the receiver may see the alert again after the lease (it dedupes on id).
    await this.record(claimed, outcome, log);
  }

  private async record(claimed: ClaimedRecord, outcome: PostOutcome, log: Record<string, unknown>): Promise<void> {
    // Only the lease holder writes: a replica that outlived its lease finds attempts moved on.
    const guard = 'alert_id = $1 AND url = $2 AND attempts = $3 AND delivered_at IS NULL AND gave_up_at IS NULL';
    const key = [claimed.alert_id, claimed.url, claimed.attempts];
    const details = { ...log, status: outcome.status, error: outcome.error };
    let kept: pg.QueryResult;
    let result: DeliveryOutcome;
    let retryInMs: number | undefined;
    if (outcome.error === '') {
      result = 'delivered';
      kept = await this.db.query(`UPDATE alert_deliveries SET delivered_at = now(), last_status = $4, last_error = '' WHERE ${guard}`, [...key, outcome.status]);
    } else if (claimed.attempts >= this.options.attemptsMax) {
      result = 'gave_up';
      kept = await this.db.query(`UPDATE alert_deliveries SET gave_up_at = now(), last_status = $4, last_error = $5 WHERE ${guard}`, [...key, outcome.status, outcome.error]);
    } else {
      result = 'retrying';
      retryInMs = retryDelayMs(this.options.retryBaseMs, claimed.attempts, this.random);
      kept = await this.db.query(
        `UPDATE alert_deliveries SET next_attempt_at = now() + $6::float8 * interval '1 millisecond', last_status = $4, last_error = $5 WHERE ${guard}`,
        [...key, outcome.status, outcome.error, retryInMs],
      );
    }
    if (kept.rowCount === 0) {
      this.logger.info(details, 'alert delivery attempt outlived its lease: another attempt was made meanwhile, this outcome is not recorded');
      return;
    }
    if (result === 'delivered') this.logger.debug(details, 'alert delivered');
    else if (result === 'gave_up') this.logger.error(details, 'alert delivery given up after its last attempt');
    else this.logger.warn({ ...details, retryInMs }, 'alert delivery failed; will retry');
    this.onOutcome(result);
  }
}
