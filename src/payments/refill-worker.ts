import type pg from 'pg';
import type Stripe from 'stripe';
import type { ProductConfig } from '../config/product-config.js';
import type { CreditStore } from '../domain/ports.js';
import type { Logger } from '../observability/logger.js';
import { BackgroundLoop } from './background-loop.js';
import { customPurchase, formatMoney, packPurchase, type Purchase } from './catalog.js';
import { METADATA_SOURCE } from './checkout.js';
import { refillGrantId, refillIdempotencyKey, refillRetryIdempotencyKey } from './ids.js';
import type { PaymentsObserver } from './observer.js';
import { AUTO_REFILL_COLUMNS, type AutoRefillRow, type RefillThresholdStore } from './auto-refill-settings.js';
import { describeStripeError, stripeErrorKind } from './stripe-client.js';
import { backoffMs, inTransaction } from '../postgres/transaction.js';

/** Refills handled per pass (each may be one Stripe call). */
export const REFILL_BATCH_MAX = 20;
/** A payment still `processing` (bank debits) is looked at again this often, besides its webhook. */
export const REFILL_PROCESSING_POLL_MS = 15 * 60_000;
/** Extra time on top of the Stripe client's own bound before another pass may take over a refill
 *  whose worker died mid-call (the idempotency key makes the takeover safe). */
export const REFILL_LEASE_MARGIN_MS = 5_000;
/** Retries wait refillRetryBaseMs × 2^(n-1), never longer than this. */
export const REFILL_RETRY_DELAY_MAX_MS = 24 * 3_600_000;

export interface RefillWorkerOptions {
  attemptsMax: number;
  retryBaseMs: number;
  /** How long one Stripe call may take at most, retries included. */
  stripeCallMaxMs: number;
  pollIntervalMs: number;
}

interface RefillRow {
  refill_id: string;
  account_id: string;
  status: 'due' | 'processing';
  attempts: number;
  payment_intent_id: string;
  credits: string;
  amount_cents: string;
  currency: string;
}

const REFILL_COLUMNS = `refill_id, account_id, status, attempts, payment_intent_id, credits::text AS credits,
  amount_cents::text AS amount_cents, currency`;

/** What a claimed refill needs next, decided in the claiming transaction and done after its COMMIT. */
type Step =
  | { kind: 'done' }
  | { kind: 'end_pending'; accountId: string }
  | { kind: 'turn_off'; accountId: string }
  | { kind: 'create'; row: RefillRow; customer: string; paymentMethod: string }
  | { kind: 'confirm'; row: RefillRow; paymentMethod: string }
  | { kind: 'check'; row: RefillRow; paymentMethod: string; enabled: boolean };

/** What a Stripe call said about the payment. */
type Result =
  | { kind: 'succeeded'; paymentIntentId: string }
  | { kind: 'pending'; paymentIntentId: string }
  | { kind: 'failed'; paymentIntentId: string; error: string; retryable: boolean; keyRefused?: boolean };

/**
 * Auto-refill's payments, driven by refill_attempts rows (one per `refill_due` ledger event the
 * reserve/commit path appended — at most one in flight per pool in Redis, and checked again here).
 *
 * due → (settings on, no other refill processing, within the monthly cap) processing: one off-session
 * PaymentIntent {amount, currency, customer, payment_method, off_session, confirm} with idempotency key
 * `refill:<refill_id>` → succeeded (grant outbox `refill:<refill_id>`) | pending (wait for the webhook,
 * look again every REFILL_PROCESSING_POLL_MS) | failed → retried with backoff by confirming the same
 * PaymentIntent again (it can succeed only once, so a retry can never charge twice) → after
 * attemptsMax attempts: failed, a `refill_failed` alert, auto-refill turned off with the reason.
 * The monthly cap sums succeeded and processing refills created this calendar month (UTC); a refill
 * that would pass it is skipped with an alert and turns auto-refill off.
 */
export class RefillWorker {
  readonly loop: BackgroundLoop;

  constructor(
    private readonly database: pg.Pool,
    private readonly stripe: Stripe,
    private readonly store: Pick<CreditStore, 'getBalance'> & RefillThresholdStore & { clearRefillPending(accountId: string): Promise<unknown> },
    private readonly product: ProductConfig,
    private readonly options: RefillWorkerOptions,
    private readonly logger: Logger,
    private readonly observer: PaymentsObserver,
    private readonly grantQueued: () => void,
  ) {
    this.loop = new BackgroundLoop('refill-worker', options.pollIntervalMs, () => this.runOnce(), logger);
  }

  private get leaseMs(): number {
    return this.options.stripeCallMaxMs + REFILL_LEASE_MARGIN_MS;
  }

  private retryDelayMs(attempts: number): number {
    return backoffMs(attempts, this.options.retryBaseMs, REFILL_RETRY_DELAY_MAX_MS);
  }

  /** Handles up to REFILL_BATCH_MAX due refills; true when there may be more. */
  async runOnce(): Promise<boolean> {
    for (let handled = 0; handled < REFILL_BATCH_MAX; handled++) {
      const step = await inTransaction(this.database, (client) => this.claim(client));
      if (step === null) return false;
      await this.perform(step);
    }
    return true;
  }

  /** Takes the next refill due (locked; others skip it), locks its account's settings, decides. */
  private async claim(client: pg.PoolClient): Promise<Step | null> {
    const row = (await client.query<RefillRow>(
      `SELECT ${REFILL_COLUMNS} FROM refill_attempts WHERE status IN ('due', 'processing') AND next_attempt_at <= now()
        ORDER BY next_attempt_at LIMIT 1 FOR UPDATE SKIP LOCKED`)).rows[0];
    if (!row) return null;
    // The settings row lock serializes every decision about one account across replicas.
    const settings = (await client.query<AutoRefillRow>(
      `SELECT ${AUTO_REFILL_COLUMNS} FROM auto_refill_settings WHERE account_id = $1 FOR UPDATE`, [row.account_id])).rows[0];
    return row.status === 'due' ? this.decideDue(client, row, settings) : this.decideResume(client, row, settings);
  }

  private async decideDue(client: pg.PoolClient, row: RefillRow, settings: AutoRefillRow | undefined): Promise<Step> {
    if (!settings?.enabled) {
      // Whoever turned it off also removed the threshold in Redis: nothing to end there.
      await this.settle(client, row, 'skipped', 'auto-refill is off');
      this.observer.refill('skipped_off');
      return { kind: 'done' };
    }
    const inFlight = await client.query(
      "SELECT 1 FROM refill_attempts WHERE account_id = $1 AND status = 'processing' AND refill_id <> $2 LIMIT 1", [row.account_id, row.refill_id]);
    if (inFlight.rowCount) {
      // The one in flight ends the pending mark in Redis when it finishes.
      await this.settle(client, row, 'skipped', 'another refill of this account is in flight');
      this.observer.refill('skipped_in_flight');
      return { kind: 'done' };
    }
    const customer = (await client.query<{ stripe_customer_id: string }>(
      'SELECT stripe_customer_id FROM stripe_customers WHERE account_id = $1', [row.account_id])).rows[0]?.stripe_customer_id;
    if (customer === undefined) return this.giveUp(client, row, settings, 'the account has no Stripe customer (SetStripeCustomer)');
    const purchase = await this.purchaseFor(settings);
    if (typeof purchase === 'string') return this.giveUp(client, row, settings, purchase);
    if (purchase === null) {
      await this.settle(client, row, 'skipped', 'available credits already reach target_credits');
      this.observer.refill('skipped_at_target');
      return { kind: 'end_pending', accountId: row.account_id };
    }
    // The calendar month (UTC) of this refill's own time (its refill_due event), the clock every row shares.
    const spent = BigInt((await client.query<{ spent: string }>(
      `SELECT COALESCE(sum(r.amount_cents), 0)::text AS spent
         FROM refill_attempts r, (SELECT date_trunc('month', created_at, 'UTC') AS start FROM refill_attempts WHERE refill_id = $2) m
        WHERE r.account_id = $1 AND r.status IN ('succeeded', 'processing')
          AND r.created_at >= m.start AND r.created_at < m.start + interval '1 month'`,
      [row.account_id, row.refill_id])).rows[0]?.spent ?? '0');
    const cap = BigInt(settings.monthly_cap_cents);
    if (spent + purchase.amountCents > cap) {
      const reason = `monthly cap reached: ${formatMoney(spent, purchase.currency)} of ${formatMoney(cap, purchase.currency)} spent this month (UTC); `
        + `another refill costs ${formatMoney(purchase.amountCents, purchase.currency)}`;
      this.observer.refill('skipped_cap');
      return this.giveUp(client, row, settings, reason, 'skipped', 'monthly_cap_reached');
    }
    const claimed = (await client.query<RefillRow>(
      `UPDATE refill_attempts SET status = 'processing', credits = $2, amount_cents = $3, currency = $4, attempts = 1, last_error = '',
         next_attempt_at = now() + $5 * interval '1 millisecond'
        WHERE refill_id = $1 RETURNING ${REFILL_COLUMNS}`,
      [row.refill_id, purchase.credits.toString(), purchase.amountCents.toString(), purchase.currency, this.leaseMs])).rows[0] as RefillRow;
    return { kind: 'create', row: claimed, customer, paymentMethod: settings.payment_method_id };
  }

  /** A processing refill whose retry, lease or poll time came. */
  private async decideResume(client: pg.PoolClient, row: RefillRow, settings: AutoRefillRow | undefined): Promise<Step> {
    const enabled = settings?.enabled ?? false;
    const paymentMethod = settings?.payment_method_id ?? '';
    await client.query("UPDATE refill_attempts SET next_attempt_at = now() + $2 * interval '1 millisecond' WHERE refill_id = $1",
      [row.refill_id, this.leaseMs]);
    // A known PaymentIntent is asked first: it may have succeeded (or still be processing) meanwhile.
    if (row.payment_intent_id !== '') return { kind: 'check', row, paymentMethod, enabled };
    if (!enabled) {
      // Never answered: a payment that did go through still grants through its webhook.
      await this.settle(client, row, 'skipped', 'auto-refill was turned off before the payment went through');
      this.observer.refill('skipped_off');
      return { kind: 'done' };
    }
    if (row.attempts >= this.options.attemptsMax) return this.giveUp(client, row, settings as AutoRefillRow, 'Stripe did not answer');
    const customer = (await client.query<{ stripe_customer_id: string }>(
      'SELECT stripe_customer_id FROM stripe_customers WHERE account_id = $1', [row.account_id])).rows[0]?.stripe_customer_id ?? '';
    // Same idempotency key as before: Stripe answers with the first outcome if the call reached it.
    const updated = await this.countAttempt(client, row);
    return { kind: 'create', row: updated, customer, paymentMethod };
  }

  private async countAttempt(client: pg.PoolClient, row: RefillRow): Promise<RefillRow> {
    return (await client.query<RefillRow>(
      `UPDATE refill_attempts SET attempts = attempts + 1 WHERE refill_id = $1 RETURNING ${REFILL_COLUMNS}`, [row.refill_id])).rows[0] as RefillRow;
  }

  /** The refill's purchase; null when a target is already met; a string when it cannot be priced. */
  private async purchaseFor(settings: AutoRefillRow): Promise<Purchase | null | string> {
    if (settings.pack_id !== '') {
      const pack = this.product.packs.get(settings.pack_id);
      return pack ? packPurchase(pack) : `pack "${settings.pack_id}" is no longer in the product config`;
    }
    const custom = this.product.customQuantity;
    if (!custom) return 'the product config no longer allows a custom quantity (target_credits)';
    const available = (await this.store.getBalance(settings.account_id)).available;
    const wanted = BigInt(settings.target_credits ?? '0') - available;
    if (wanted <= 0n) return null;
    const credits = wanted < custom.minCredits ? custom.minCredits : wanted > custom.maxCredits ? custom.maxCredits : wanted;
    return customPurchase(custom, credits);
  }

  private async settle(client: pg.PoolClient, row: RefillRow, status: 'skipped' | 'failed', reason: string): Promise<void> {
    await client.query('UPDATE refill_attempts SET status = $2, last_error = $3, settled_at = now() WHERE refill_id = $1', [row.refill_id, status, reason]);
    this.logger.info({ refillId: row.refill_id, accountId: row.account_id, status, reason }, 'refill settled without payment');
  }

  /**
   * Ends the refill without credits: a `refill_failed` alert, and auto-refill turned off with the
   * reason (the threshold leaves Redis after COMMIT), so a card that keeps failing is not retried
   * on every reserve.
   */
  private async giveUp(
    client: pg.PoolClient, row: RefillRow, settings: AutoRefillRow, reason: string,
    status: 'failed' | 'skipped' = 'failed', cause = 'payment_failed',
  ): Promise<Step> {
    await this.settle(client, row, status, reason);
    const available = await this.store.getBalance(row.account_id).then((b) => b.available, () => 0n);
    await client.query(
      `INSERT INTO alerts (alert_id, account_id, kind, available, threshold, occurred_at, detail)
       VALUES ($1, $2, 'refill_failed', $3, $4, now(), $5) ON CONFLICT (alert_id) DO NOTHING`,
      [`refill_failed:${row.refill_id}`, row.account_id, available.toString(), settings.threshold_credits,
        JSON.stringify({ refill_id: row.refill_id, cause, reason, attempts: row.attempts, payment_intent_id: row.payment_intent_id })]);
    await client.query(
      'UPDATE auto_refill_settings SET enabled = false, disabled_reason = $2, updated_at = now() WHERE account_id = $1',
      [row.account_id, reason.slice(0, 500)]);
    if (status === 'failed') this.observer.refill('failed');
    this.logger.warn({ refillId: row.refill_id, accountId: row.account_id, reason, attempts: row.attempts }, 'auto-refill turned itself off');
    return { kind: 'turn_off', accountId: row.account_id };
  }

  private async perform(step: Step): Promise<void> {
    switch (step.kind) {
      case 'done':
        return;
      case 'end_pending':
        await this.store.clearRefillPending(step.accountId);
        return;
      case 'turn_off':
        await this.store.setAutoRefillThreshold(step.accountId, null);
        return;
      case 'create':
        return this.record(step.row, await this.createPayment(step.row, step.customer, step.paymentMethod));
      case 'confirm':
        return this.record(step.row, await this.confirmPayment(step.row, step.paymentMethod));
      case 'check':
        return this.check(step.row, step.paymentMethod, step.enabled);
    }
  }

  private async createPayment(row: RefillRow, customer: string, paymentMethod: string): Promise<Result> {
    try {
      const intent = await this.stripe.paymentIntents.create({
        amount: Number(row.amount_cents), currency: row.currency, customer, payment_method: paymentMethod,
        off_session: true, confirm: true,
        description: `meterd auto-refill: ${row.credits} credits`,
        metadata: { source: METADATA_SOURCE, account_id: row.account_id, refill_id: row.refill_id, credits: row.credits },
      }, { idempotencyKey: refillIdempotencyKey(row.refill_id) });
      return resultOf(intent);
    } catch (err) {
      return failureOf(err);
    }
  }

  private async confirmPayment(row: RefillRow, paymentMethod: string): Promise<Result> {
    try {
      const intent = await this.stripe.paymentIntents.confirm(row.payment_intent_id, { payment_method: paymentMethod, off_session: true },
        { idempotencyKey: refillRetryIdempotencyKey(row.refill_id, row.attempts) });
      return resultOf(intent);
    } catch (err) {
      return failureOf(err, row.payment_intent_id);
    }
  }

  /** A refill with a known PaymentIntent came due again: look at it, then confirm it again if it failed. */
  private async check(row: RefillRow, paymentMethod: string, enabled: boolean): Promise<void> {
    let intent: Stripe.PaymentIntent;
    try {
      intent = await this.stripe.paymentIntents.retrieve(row.payment_intent_id);
    } catch (err) {
      // Nothing was charged by asking: wait and ask again, without counting an attempt.
      await this.reschedule(row, this.retryDelayMs(row.attempts), describeStripeError(err));
      return;
    }
    const result = resultOf(intent);
    if (result.kind !== 'failed' || intent.status === 'canceled') {
      await this.record(row, result.kind === 'failed' ? { ...result, retryable: false } : result);
      return;
    }
    const step = await inTransaction(this.database, async (client): Promise<Step> => {
      const current = await this.lockProcessing(client, row.refill_id);
      if (!current) return { kind: 'done' };
      const settings = (await client.query<AutoRefillRow>(
        `SELECT ${AUTO_REFILL_COLUMNS} FROM auto_refill_settings WHERE account_id = $1 FOR UPDATE`, [row.account_id])).rows[0];
      if (!enabled || !settings?.enabled) {
        await this.settle(client, current, 'skipped', 'auto-refill was turned off before the payment went through');
        this.observer.refill('skipped_off');
        return { kind: 'done' };
      }
      if (current.attempts >= this.options.attemptsMax) return this.giveUp(client, current, settings, result.error);
      return { kind: 'confirm', row: await this.countAttempt(client, current), paymentMethod };
    });
    await this.perform(step);
  }

  private async lockProcessing(client: pg.PoolClient, refillId: string): Promise<RefillRow | undefined> {
    return (await client.query<RefillRow>(
      `SELECT ${REFILL_COLUMNS} FROM refill_attempts WHERE refill_id = $1 AND status = 'processing' FOR UPDATE`, [refillId])).rows[0];
  }

  private async reschedule(row: RefillRow, delayMs: number, error: string): Promise<void> {
    await this.database.query(
      `UPDATE refill_attempts SET next_attempt_at = now() + $2 * interval '1 millisecond', last_error = $3
        WHERE refill_id = $1 AND status = 'processing'`, [row.refill_id, delayMs, error]);
  }

  /** Writes what Stripe answered; a webhook that got there first (succeeded) wins. */
  private async record(row: RefillRow, result: Result): Promise<void> {
    const step = await inTransaction(this.database, async (client): Promise<Step> => {
      const current = await this.lockProcessing(client, row.refill_id);
      if (!current) return { kind: 'done' };
      if (result.kind === 'succeeded') {
        await markRefillSucceeded(client, current, result.paymentIntentId);
        this.observer.refill('succeeded');
        return { kind: 'done' };
      }
      if (result.kind === 'pending') {
        await client.query(
          `UPDATE refill_attempts SET payment_intent_id = $2, last_error = '', next_attempt_at = now() + $3 * interval '1 millisecond'
            WHERE refill_id = $1`, [current.refill_id, result.paymentIntentId, REFILL_PROCESSING_POLL_MS]);
        this.observer.refill('charged');
        return { kind: 'done' };
      }
      if (result.paymentIntentId !== '' && current.payment_intent_id === '') {
        await client.query('UPDATE refill_attempts SET payment_intent_id = $2 WHERE refill_id = $1', [current.refill_id, result.paymentIntentId]);
        current.payment_intent_id = result.paymentIntentId;
      }
      if (!result.retryable || current.attempts >= this.options.attemptsMax) {
        const settings = (await client.query<AutoRefillRow>(
          `SELECT ${AUTO_REFILL_COLUMNS} FROM auto_refill_settings WHERE account_id = $1 FOR UPDATE`, [current.account_id])).rows[0];
        if (settings) return this.giveUp(client, current, settings, result.error);
        await this.settle(client, current, 'failed', result.error);
        return { kind: 'done' };
      }
      const delayMs = this.retryDelayMs(current.attempts);
      if (result.keyRefused) {
        this.logger.error({ refillId: current.refill_id, error: result.error }, 'Stripe refused meterd\'s key (STRIPE_SECRET_KEY); refills cannot be charged');
      }
      await client.query(
        `UPDATE refill_attempts SET last_error = $2, next_attempt_at = now() + $3 * interval '1 millisecond' WHERE refill_id = $1`,
        [current.refill_id, result.error, delayMs]);
      this.observer.refill('retry_scheduled');
      this.logger.warn({ refillId: current.refill_id, accountId: current.account_id, attempts: current.attempts, retryInMs: delayMs, error: result.error },
        'refill payment failed; retrying');
      return { kind: 'done' };
    });
    if (result.kind === 'succeeded') this.grantQueued();
    await this.perform(step);
  }
}

/** A refill paid (by the worker's answer or the webhook, whichever first): owed credits go to the outbox. */
export async function markRefillSucceeded(client: pg.PoolClient, row: { refill_id: string; account_id: string; credits: string }, paymentIntentId: string): Promise<boolean> {
  await client.query(
    `UPDATE refill_attempts SET status = 'succeeded', payment_intent_id = $2, last_error = '', settled_at = COALESCE(settled_at, now())
      WHERE refill_id = $1`, [row.refill_id, paymentIntentId]);
  const inserted = await client.query(
    `INSERT INTO credit_grant_outbox (grant_id, account_id, credits, reason) VALUES ($1, $2, $3, $4) ON CONFLICT (grant_id) DO NOTHING`,
    [refillGrantId(row.refill_id), row.account_id, row.credits, `auto-refill ${row.refill_id} (${paymentIntentId})`.slice(0, 256)]);
  return (inserted.rowCount ?? 0) > 0;
}

function resultOf(intent: Stripe.PaymentIntent): Result {
  switch (intent.status) {
    case 'succeeded':
      return { kind: 'succeeded', paymentIntentId: intent.id };
    case 'processing':
    case 'requires_capture':
      return { kind: 'pending', paymentIntentId: intent.id };
    default: {
      const error = intent.last_payment_error?.message ?? `payment ${intent.status}`;
      return { kind: 'failed', paymentIntentId: intent.id, error: error.slice(0, 500), retryable: intent.status !== 'canceled' };
    }
  }
}

function failureOf(err: unknown, knownPaymentIntentId = ''): Result {
  const intent = (err as { payment_intent?: Stripe.PaymentIntent }).payment_intent;
  // Declines, outages and refusals all count as attempts: the number of tries stays bounded.
  return {
    kind: 'failed', paymentIntentId: intent?.id ?? knownPaymentIntentId, error: describeStripeError(err), retryable: true,
    keyRefused: stripeErrorKind(err) === 'auth',
  };
}
