import { AlertKind, type Alert } from '../gen/meterd/v1/billing.js';

/**
 * One row of the `alerts` table (src/postgres/migrations/0003_payments_alerts.sql) as meterd reads
 * it: int8 columns arrive as text from pg and become bigint here, so amounts stay exact.
 */
export interface AlertRow {
  position: bigint;
  alertId: string;
  accountId: string;
  kind: AlertKindName;
  available: bigint;
  threshold: bigint;
  occurredAt: Date;
}

/** The `alerts.kind` values (its CHECK constraint). */
export const ALERT_KIND_NAMES = ['low', 'exhausted', 'recovered', 'refill_failed'] as const;
export type AlertKindName = (typeof ALERT_KIND_NAMES)[number];

const PROTO_KIND: Record<AlertKindName, AlertKind> = {
  low: AlertKind.ALERT_KIND_LOW,
  exhausted: AlertKind.ALERT_KIND_EXHAUSTED,
  recovered: AlertKind.ALERT_KIND_RECOVERED,
  refill_failed: AlertKind.ALERT_KIND_REFILL_FAILED,
};

/** The webhook payload's "type" per kind (README "Balance alerts"). */
export const WEBHOOK_EVENT_TYPE: Record<AlertKindName, string> = {
  low: 'balance.low',
  exhausted: 'balance.exhausted',
  recovered: 'balance.recovered',
  refill_failed: 'auto_refill.failed',
};

/** The columns every alert query selects, in the shape `alertRowOf` reads (alias `a`). */
export const ALERT_COLUMNS_SQL =
  'a.position::text AS position, a.alert_id, a.account_id, a.kind, a.available::text AS available, a.threshold::text AS threshold, a.occurred_at';

export interface AlertRecord {
  position: string;
  alert_id: string;
  account_id: string;
  kind: string;
  available: string;
  threshold: string;
  occurred_at: Date;
}

export function alertRowOf(record: AlertRecord): AlertRow {
  if (!(ALERT_KIND_NAMES as readonly string[]).includes(record.kind)) {
    // The table's CHECK constraint makes this unreachable unless the schema and the code disagree.
    throw new Error(`alerts.kind "${record.kind}" of ${record.alert_id} is not one meterd knows`);
  }
  return {
    position: BigInt(record.position),
    alertId: record.alert_id,
    accountId: record.account_id,
    kind: record.kind as AlertKindName,
    available: BigInt(record.available),
    threshold: BigInt(record.threshold),
    occurredAt: record.occurred_at,
  };
}

/** The proto Alert streamed by WatchAlerts. Amounts are uint64 there: a negative figure is sent as 0. */
export function toProtoAlert(row: AlertRow): Alert {
  return {
    position: row.position,
    alertId: row.alertId,
    accountId: row.accountId,
    kind: PROTO_KIND[row.kind],
    availableCredits: row.available > 0n ? row.available : 0n,
    thresholdCredits: row.threshold > 0n ? row.threshold : 0n,
    occurredAt: row.occurredAt,
  };
}

/**
 * The JSON body POSTed to each webhook URL. Amounts and the position are decimal strings (they may
 * exceed 2^53, which JSON numbers cannot carry exactly in JavaScript). Field order is fixed.
 */
export function webhookPayload(row: AlertRow): string {
  return JSON.stringify({
    id: row.alertId,
    type: WEBHOOK_EVENT_TYPE[row.kind],
    account_id: row.accountId,
    available_credits: row.available.toString(),
    threshold_credits: row.threshold.toString(),
    occurred_at: row.occurredAt.toISOString(),
    position: row.position.toString(),
  });
}
