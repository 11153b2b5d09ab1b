import Stripe from 'stripe';
import type { Settings } from '../config/settings.js';
import { DomainError, ErrorReason, invalidArgument } from '../domain/errors.js';

/**
 * The one Stripe client: the API version pinned to the one this SDK release was built for (so a
 * Stripe account's default version can never change the shapes we read), every network bound
 * explicit, and the API's address from STRIPE_API_URL (tests point it at a local fake).
 */
export const STRIPE_API_VERSION = Stripe.API_VERSION;

export function createStripeClient(stripe: Settings['stripe']): Stripe {
  const url = new URL(stripe.apiUrl);
  const protocol = url.protocol === 'http:' ? 'http' : 'https';
  return new Stripe(stripe.secretKey, {
    apiVersion: STRIPE_API_VERSION,
    timeout: stripe.timeoutMs,
    maxNetworkRetries: stripe.maxNetworkRetries,
    host: url.hostname,
    port: url.port === '' ? (protocol === 'http' ? 80 : 443) : Number(url.port),
    protocol,
    telemetry: false,
    appInfo: { name: 'meterd' },
  });
}

export type StripeErrorKind = 'card' | 'idempotency' | 'invalid' | 'unavailable' | 'auth' | 'other';

/** What kind of failure a Stripe call met; 'unavailable' ones may or may not have reached Stripe. */
export function stripeErrorKind(err: unknown): StripeErrorKind {
  if (!(err instanceof Stripe.errors.StripeError)) return 'other';
  if (err instanceof Stripe.errors.StripeCardError) return 'card';
  if (err instanceof Stripe.errors.StripeIdempotencyError) return 'idempotency';
  if (err instanceof Stripe.errors.StripeAuthenticationError || err instanceof Stripe.errors.StripePermissionError) return 'auth';
  if (err instanceof Stripe.errors.StripeConnectionError || err instanceof Stripe.errors.StripeRateLimitError || err instanceof Stripe.errors.StripeAPIError) {
    return 'unavailable';
  }
  if ((err.statusCode ?? 0) >= 500) return 'unavailable';
  if (err instanceof Stripe.errors.StripeInvalidRequestError) return 'invalid';
  return 'other';
}

/** A short, secret-free description of a Stripe failure for logs and last_error columns. */
export function describeStripeError(err: unknown): string {
  if (err instanceof Stripe.errors.StripeError) {
    const parts = [err.type, err.statusCode === undefined ? '' : String(err.statusCode), err.code ?? '', err.decline_code ?? '', err.message];
    return parts.filter((p) => p !== '').join(' ').slice(0, 500);
  }
  return (err instanceof Error ? err.message : String(err)).slice(0, 500);
}

/**
 * A failed Stripe call during an RPC, as the caller should see it: retryable outages as
 * BACKEND_UNAVAILABLE (retry with the same request_id), a reused request_id as
 * IDEMPOTENCY_KEY_REUSED, a parameter Stripe refused as INVALID_ARGUMENT naming it.
 */
export function stripeCallError(err: unknown, what: string): DomainError | unknown {
  switch (stripeErrorKind(err)) {
    case 'unavailable':
      return new DomainError(ErrorReason.BACKEND_UNAVAILABLE, `Stripe did not answer ${what}; retry with the same request_id`, { backend: 'stripe' });
    case 'idempotency':
      return new DomainError(ErrorReason.IDEMPOTENCY_KEY_REUSED, 'request_id was used before with other parameters', { field: 'request_id' });
    case 'invalid': {
      const param = (err as Stripe.errors.StripeError).param;
      if (param) return invalidArgument(param, `refused by Stripe: ${(err as Stripe.errors.StripeError).message}`);
      return err;
    }
    default:
      return err;
  }
}
