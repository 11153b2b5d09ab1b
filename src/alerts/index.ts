import type pg from 'pg';
import type { Settings } from '../config/settings.js';
import type { Logger } from '../observability/logger.js';
import type { AlertFeed } from './alert-feed.js';
import { AlertDeliveryWorker, type DeliveryOutcome } from './delivery-worker.js';
import { PostgresAlertFeed } from './postgres-alert-feed.js';

export type { AlertFeed } from './alert-feed.js';
export { verifyAlertSignature, signatureHeaders, SIGNATURE_TOLERANCE_SECONDS_DEFAULT, TIMESTAMP_HEADER, SIGNATURE_HEADER } from './webhook-signature.js';
export { webhookPayload, WEBHOOK_EVENT_TYPE } from './alert-rows.js';
export type { DeliveryOutcome } from './delivery-worker.js';

export interface RunningAlerts {
  /** For WatchAlerts (HandlerDependencies.alerts). */
  feed: AlertFeed;
  /** Delivers new alerts now rather than at the next poll (e.g. after a flush wrote some); no-op without webhooks. */
  nudge(): void;
  /** Ends every WatchAlerts follow (their streams close with UNAVAILABLE) and stops deliveries after the round in flight. */
  stop(): Promise<void>;
}

/**
 * Balance alerts out of Postgres: the feed behind WatchAlerts (always), and webhook deliveries from
 * the alert_deliveries outbox when ALERT_WEBHOOK_URLS is set.
 */
export async function startAlerts(deps: {
  settings: Readonly<Settings>;
  database: pg.Pool;
  logger: Logger;
  /** Sees each delivery attempt's outcome (metrics). */
  onDeliveryOutcome?: (outcome: DeliveryOutcome) => void;
}): Promise<RunningAlerts> {
  const { settings, database } = deps;
  const logger = deps.logger.child({ component: 'alerts' });
  const feed = new PostgresAlertFeed(database, settings.outboxPollIntervalMs, logger);
  const { webhookUrls, webhookSecret, deliveryAttemptsMax, retryBaseMs, deliveryTimeoutMs } = settings.alerts;
  const worker = webhookUrls.length === 0 ? undefined : new AlertDeliveryWorker(database, {
    urls: webhookUrls, secret: webhookSecret, attemptsMax: deliveryAttemptsMax, retryBaseMs, timeoutMs: deliveryTimeoutMs,
    pollIntervalMs: settings.outboxPollIntervalMs,
  }, logger, deps.onDeliveryOutcome);
  await worker?.start();
  return {
    feed,
    nudge: () => worker?.nudge(),
    async stop() {
      feed.close();
      await worker?.stop();
    },
  };
}
