import type { Alert } from '../gen/meterd/v1/billing.js';

/**
 * Balance alerts as they are recorded in Postgres (the `alerts` table, filled by the ledger flush
 * and the refill worker), for WatchAlerts: calls `onAlert` for each alert after `afterPosition`
 * (0: only new ones) of one account ('' : all) until `signal` aborts.
 */
export interface AlertFeed {
  follow(filter: { accountId: string; afterPosition: bigint }, onAlert: (alert: Alert) => Promise<void>, signal: AbortSignal): Promise<void>;
}
