import type { Alert } from '../gen/meterd/v1/billing.js';

/**
 * Balance alerts as they are recorded in Postgres (the `alerts` table, filled by the ledger flush
 * and the refill worker), for WatchAlerts: calls `onAlert` for each alert after `afterPosition`
 * (0: only new ones) of one account ('' : all) until `signal` aborts. `onStart`, when given, is
 * called once with the position the feed starts after (resolved from 0 to the newest alert's), before
 * any alert: an alert written after it is seen.
 */
export interface AlertFeed {
  follow(
    filter: { accountId: string; afterPosition: bigint },
    onAlert: (alert: Alert) => Promise<void>,
    signal: AbortSignal,
    onStart?: (afterPosition: bigint) => void,
  ): Promise<void>;
}
