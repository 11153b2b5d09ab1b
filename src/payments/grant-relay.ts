import type pg from 'pg';
import type { GrantCommand } from '../domain/commands.js';
import type { Logger } from '../observability/logger.js';
import { BackgroundLoop } from './background-loop.js';
import { isRefillGrant } from './ids.js';
import type { PaymentsObserver } from './observer.js';
import { backoffMs, inTransaction } from '../postgres/transaction.js';

/** Outbox rows applied per transaction (each is one Redis script call). */
export const GRANT_BATCH_MAX = 100;
/** A failed grant is retried after 1 s, 2 s, 4 s, ... and never less often than every 5 minutes: credits
 *  someone paid for are owed until they land (an operator sees last_error and the logs). */
export const GRANT_RETRY_BASE_MS = 1_000;
export const GRANT_RETRY_DELAY_MAX_MS = 300_000;
/** From this many failed attempts on, each failure is logged as an error rather than a warning. */
export const GRANT_ATTEMPTS_ALARM = 5;

/** The credit store calls the relay makes (RedisCreditStore). */
export interface GrantTarget {
  grant(command: GrantCommand): Promise<unknown>;
  clearRefillPending(accountId: string): Promise<unknown>;
}

interface OutboxRow {
  grant_id: string;
  account_id: string;
  credits: string;
  reason: string;
  attempts: number;
}

/**
 * Applies credit_grant_outbox rows to Redis: GrantCredits kind PACK with grant_id as its id (Redis
 * remembers it 90 days, so a row applied twice — a crash after the grant, before applied_at — grants
 * once), then marks applied_at. Rows are locked with FOR UPDATE SKIP LOCKED, so replicas share the
 * outbox without applying a row at the same time. A refill's grant also ends the refill in flight
 * in Redis, after the credits landed (earlier, the pool would still be below the threshold and ask
 * for another refill at once).
 */
export class GrantRelay {
  readonly loop: BackgroundLoop;

  constructor(
    private readonly database: pg.Pool,
    private readonly store: GrantTarget,
    private readonly logger: Logger,
    private readonly observer: PaymentsObserver,
    pollIntervalMs: number,
  ) {
    this.loop = new BackgroundLoop('grant-relay', pollIntervalMs, () => this.relayOnce(), logger);
  }

  /** Applies the due rows of one batch; true when the batch was full (more may wait). */
  async relayOnce(): Promise<boolean> {
    return inTransaction(this.database, async (client) => {
      const { rows } = await client.query<OutboxRow>(
        `SELECT grant_id, account_id, credits::text AS credits, reason, attempts FROM credit_grant_outbox
          WHERE applied_at IS NULL AND next_attempt_at <= now()
          ORDER BY next_attempt_at LIMIT $1 FOR UPDATE SKIP LOCKED`, [GRANT_BATCH_MAX]);
      for (const row of rows) await this.apply(client, row);
      return rows.length === GRANT_BATCH_MAX;
    });
  }

  private async apply(client: pg.PoolClient, row: OutboxRow): Promise<void> {
    const source = isRefillGrant(row.grant_id) ? 'refill' : 'checkout';
    try {
      await this.store.grant({ accountId: row.account_id, kind: 'PACK', credits: BigInt(row.credits), grantId: row.grant_id, reason: row.reason });
      if (source === 'refill') await this.store.clearRefillPending(row.account_id);
      await client.query(
        "UPDATE credit_grant_outbox SET applied_at = now(), attempts = attempts + 1, last_error = '' WHERE grant_id = $1", [row.grant_id]);
      this.observer.grant(source, 'applied');
      this.logger.info({ grantId: row.grant_id, accountId: row.account_id, credits: row.credits }, 'credits granted');
    } catch (err) {
      const attempts = row.attempts + 1;
      const delayMs = backoffMs(attempts, GRANT_RETRY_BASE_MS, GRANT_RETRY_DELAY_MAX_MS);
      const message = (err instanceof Error ? err.message : String(err)).slice(0, 500);
      await client.query(
        `UPDATE credit_grant_outbox SET attempts = $2, last_error = $3, next_attempt_at = now() + $4 * interval '1 millisecond'
          WHERE grant_id = $1`, [row.grant_id, attempts, message, delayMs]);
      this.observer.grant(source, 'failed');
      const fields = { err, grantId: row.grant_id, accountId: row.account_id, attempts, retryInMs: delayMs };
      if (attempts >= GRANT_ATTEMPTS_ALARM) this.logger.error(fields, 'credit grant keeps failing; credits are owed until it lands');
      else this.logger.warn(fields, 'credit grant failed; retrying');
    }
  }
}
