import { createHash } from 'node:crypto';
import { ID_LENGTH_MAX, ID_PATTERN, STRIPE_IDEMPOTENCY_KEY_LENGTH_MAX, STRIPE_METER_IDENTIFIER_LENGTH_MAX } from '../config/limits.js';

/**
 * The deterministic names payments use: Stripe idempotency keys, the grant ids the relay applies in
 * Redis, Billing Meter identifiers. Each is a readable composition when it fits its limit, and a
 * hash of the same composition when it does not (a 128-character account id plus a 128-character
 * request id is longer than Stripe's 255) — the same inputs always give the same name.
 */
function digest(text: string): string {
  return createHash('sha256').update(text).digest('hex');
}

function fitted(readable: string, prefix: string, max: number): string {
  return readable.length <= max ? readable : `${prefix}:h${digest(readable).slice(0, 48)}`;
}

/** Idempotency key of CreateCheckoutSession's Stripe call: per buying account and request_id. */
export function checkoutIdempotencyKey(accountId: string, requestId: string): string {
  return fitted(`checkout:${accountId}:${requestId}`, 'checkout', STRIPE_IDEMPOTENCY_KEY_LENGTH_MAX);
}

/**
 * Grant id in Redis (GrantCredits is idempotent on it for 90 days; ids allow letters, digits and
 * `. _ : -`, at most 128): one per paid Checkout Session ...
 */
export function checkoutGrantId(sessionId: string): string {
  return redisId(`checkout:${sessionId}`, 'checkout');
}

/** ... and one per auto-refill (its id "<pool>/<seq>" with the slash Redis keys reserve made a colon). */
export function refillGrantId(refillId: string): string {
  return redisId(`refill:${refillId.replaceAll('/', ':')}`, 'refill');
}

export function isRefillGrant(grantId: string): boolean {
  return grantId.startsWith('refill:');
}

function redisId(readable: string, prefix: string): string {
  if (readable.length <= ID_LENGTH_MAX && ID_PATTERN.test(readable)) return readable;
  return `${prefix}:h${digest(readable).slice(0, 48)}`;
}

/** The PaymentIntent of a refill: created once per refill ... */
export function refillIdempotencyKey(refillId: string): string {
  return fitted(`refill:${refillId}`, 'refill', STRIPE_IDEMPOTENCY_KEY_LENGTH_MAX);
}

/** ... and confirmed again for each retry after a decline (a PaymentIntent succeeds at most once). */
export function refillRetryIdempotencyKey(refillId: string, attempt: number): string {
  return fitted(`refill:${refillId}:confirm:${attempt}`, 'refill', STRIPE_IDEMPOTENCY_KEY_LENGTH_MAX);
}

/** Billing Meter identifier of one overage batch: "ovg:<account>:<period start ms>:<batch>". */
export function overageIdentifier(accountId: string, periodStartMs: number, batch: number): string {
  const readable = `ovg:${accountId}:${periodStartMs}:${batch}`;
  if (readable.length <= STRIPE_METER_IDENTIFIER_LENGTH_MAX) return readable;
  return `ovg:h${digest(accountId).slice(0, 40)}:${periodStartMs}:${batch}`;
}
