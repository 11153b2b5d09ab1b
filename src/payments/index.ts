import type pg from 'pg';
import type { ProductConfig } from '../config/product-config.js';
import type { Settings } from '../config/settings.js';
import { systemClock, type Clock } from '../domain/clock.js';
import type { HttpHandler } from '../observability/http-server.js';
import type { Logger } from '../observability/logger.js';
import type { RedisCreditStore } from '../redis/redis-credit-store.js';
import { AutoRefillSettingsService } from './auto-refill-settings.js';
import { listCreditPacks } from './catalog.js';
import { createCheckoutSession } from './checkout.js';
import { GrantRelay } from './grant-relay.js';
import { NO_PAYMENTS_OBSERVER, type PaymentsObserver } from './observer.js';
import { OverageReporter } from './overage-reporter.js';
import type { Payments } from './payments.js';
import { RefillWorker } from './refill-worker.js';
import { createStripeClient } from './stripe-client.js';
import { stripeWebhookHandler } from './webhook.js';

export type { Payments } from './payments.js';

/** The HTTP route Stripe delivers events to (meterd's HTTP port). */
export const STRIPE_WEBHOOK_ROUTE = 'POST /webhooks/stripe';
/** The overage reporter's interval when OVERAGE_REPORT_INTERVAL_MS is 0 (its loop is then not started;
 *  runOnce still works for an operator or a test). */
const OVERAGE_REPORT_INTERVAL_IDLE_MS = 60_000;

export interface PaymentsDependencies {
  settings: Readonly<Settings>;
  product: ProductConfig;
  store: Pick<RedisCreditStore, 'getAccount' | 'getBalance' | 'grant' | 'setAutoRefillThreshold' | 'clearRefillPending'>;
  database: pg.Pool;
  logger: Logger;
  /** Counts outcomes (MeterdMetrics.payments); nothing is counted without one. */
  observer?: PaymentsObserver;
  /** meterd's clock (the ledger's times); the system clock by default. */
  clock?: Clock;
}

export interface RunningPayments {
  payments: Payments;
  routes: Record<string, HttpHandler>;
  /** The background workers, for tests and operators (each `runOnce()` is one pass). */
  workers: { grants: GrantRelay; refills: RefillWorker; overage: OverageReporter };
  stop(): Promise<void>;
}

/**
 * Money in (Stripe Checkout top-ups, auto-refill) and overage out (Billing Meter events). Null when
 * STRIPE_SECRET_KEY is not set. Starts the grant relay (which first replays what a crash left in the
 * outbox), the refill worker and the overage reporter (unless OVERAGE_REPORT_INTERVAL_MS is 0);
 * `background: false` starts none of them (tests drive `workers` by hand).
 */
export async function startPayments(deps: PaymentsDependencies, options: { background?: boolean } = {}): Promise<RunningPayments | null> {
  const { settings, product, store, database } = deps;
  if (settings.stripe.secretKey === '') return null;
  const logger = deps.logger.child({ component: 'payments' });
  const observer = deps.observer ?? NO_PAYMENTS_OBSERVER;
  const clock = deps.clock ?? systemClock;
  const stripe = createStripeClient(settings.stripe);
  const grants = new GrantRelay(database, store, logger, observer, settings.outboxPollIntervalMs);
  const refills = new RefillWorker(database, stripe, store, product, {
    attemptsMax: settings.refillAttemptsMax,
    retryBaseMs: settings.refillRetryBaseMs,
    stripeCallMaxMs: settings.stripe.timeoutMs * (settings.stripe.maxNetworkRetries + 1),
    pollIntervalMs: settings.outboxPollIntervalMs,
  }, logger, observer, () => grants.loop.nudge());
  const overage = new OverageReporter(database, stripe, settings.stripe.meterEventName, logger, observer,
    settings.overageReportIntervalMs > 0 ? settings.overageReportIntervalMs : OVERAGE_REPORT_INTERVAL_IDLE_MS, () => clock.nowMs());
  const refillSettings = new AutoRefillSettingsService(database, store, product, logger);
  const payments: Payments = {
    listCreditPacks: async () => listCreditPacks(product),
    createCheckoutSession: (request) => createCheckoutSession({ stripe, database, store, product, logger }, request),
    setStripeCustomer: (accountId, stripeCustomerId) => refillSettings.setStripeCustomer(accountId, stripeCustomerId),
    setAutoRefill: (refill) => refillSettings.setAutoRefill(refill),
    getAutoRefill: (accountId) => refillSettings.getAutoRefill(accountId),
  };
  const routes: Record<string, HttpHandler> = {
    [STRIPE_WEBHOOK_ROUTE]: stripeWebhookHandler({
      stripe, webhookSecret: settings.stripe.webhookSecret, database, logger, observer,
      grantQueued: () => grants.loop.nudge(),
      refillChanged: () => refills.loop.nudge(),
      refillRetryBaseMs: settings.refillRetryBaseMs,
    }),
  };
  if (options.background ?? true) {
    grants.loop.start();
    refills.loop.start();
    if (settings.overageReportIntervalMs > 0) overage.loop.start();
  }
  logger.info({ stripeApiHost: new URL(settings.stripe.apiUrl).host, background: options.background ?? true, packs: product.packs.size,
    customQuantity: product.customQuantity !== null }, 'payments started');
  return {
    payments, routes, workers: { grants, refills, overage },
    async stop() {
      await Promise.all([grants.loop.stop(), refills.loop.stop(), overage.loop.stop()]);
    },
  };
}
