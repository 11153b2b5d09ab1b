/**
 * What payments count: MeterdMetrics.payments implements it (meterd_stripe_webhooks_total{result},
 * meterd_credit_grants_total{source,outcome}, meterd_refills_total{outcome},
 * meterd_overage_reports_total{outcome}, meterd_overage_reported_credits_total).
 */
export type WebhookResult = 'processed' | 'duplicate' | 'ignored' | 'invalid_signature' | 'too_large' | 'failed';
export type GrantSource = 'checkout' | 'refill';
export type RefillOutcome =
  | 'charged' | 'succeeded' | 'retry_scheduled' | 'failed' | 'skipped_cap' | 'skipped_off' | 'skipped_in_flight' | 'skipped_at_target';

export interface PaymentsObserver {
  webhook(result: WebhookResult): void;
  grant(source: GrantSource, outcome: 'applied' | 'failed'): void;
  refill(outcome: RefillOutcome): void;
  overage(outcome: 'reported' | 'failed', credits: bigint): void;
}

export const NO_PAYMENTS_OBSERVER: PaymentsObserver = { webhook() {}, grant() {}, refill() {}, overage() {} };
