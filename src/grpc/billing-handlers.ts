import {
  CREDITS_MAX, REFILL_MONTHLY_CAP_MINOR_MAX, STRIPE_ID_LENGTH_MAX, URL_LENGTH_MAX,
} from '../config/limits.js';
import { checkId } from '../domain/commands.js';
import { DomainError, ErrorReason, invalidArgument } from '../domain/errors.js';
import type { AutoRefillSettings, CreateCheckoutSessionRequest } from '../gen/meterd/v1/billing.js';
import type { Payments } from '../payments/payments.js';
import type { HandlerDependencies } from './handlers.js';

/** AdminService's money-in RPCs: validation here, the work in src/payments/. */
function paymentsOf(deps: HandlerDependencies): Payments {
  if (!deps.payments) throw new DomainError(ErrorReason.PAYMENTS_DISABLED, 'Stripe is not configured on this meterd (STRIPE_SECRET_KEY)');
  return deps.payments;
}

/** An absolute http(s) URL of at most URL_LENGTH_MAX characters (Stripe's redirect after Checkout). */
export function checkUrl(field: string, value: string): string {
  if (value === '') throw invalidArgument(field, 'is required', `http(s) URL of at most ${URL_LENGTH_MAX} characters`);
  if (value.length > URL_LENGTH_MAX) throw invalidArgument(field, `is ${value.length} characters; at most ${URL_LENGTH_MAX} allowed`, `${URL_LENGTH_MAX}`);
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u0020\u007f]/.test(value)) throw invalidArgument(field, 'must not contain spaces or control characters');
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw invalidArgument(field, 'is not an absolute URL', 'http(s)://...');
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw invalidArgument(field, `must be http or https, not ${url.protocol.slice(0, -1)}`, 'http(s)://...');
  return value;
}

/** A Stripe object id with its prefix (cus_..., pm_...): letters, digits and _, at most 255 characters. */
export function checkStripeId(field: string, value: string, prefixes: readonly string[]): string {
  const shape = `${prefixes.map((p) => `${p}_...`).join(' or ')}, at most ${STRIPE_ID_LENGTH_MAX} characters`;
  if (value === '') throw invalidArgument(field, 'is required', shape);
  if (value.length > STRIPE_ID_LENGTH_MAX) throw invalidArgument(field, `is ${value.length} characters; at most ${STRIPE_ID_LENGTH_MAX} allowed`, `${STRIPE_ID_LENGTH_MAX}`);
  if (!/^[A-Za-z0-9_]+$/.test(value) || !prefixes.some((p) => value.startsWith(`${p}_`) && value.length > p.length + 1)) {
    throw invalidArgument(field, `must be a Stripe id (${shape})`, shape);
  }
  return value;
}

function checkRange(field: string, value: bigint, min: bigint, max: bigint): bigint {
  if (value < min || value > max) throw invalidArgument(field, `is ${value}; must be ${min}..${max}`, `${min}..${max}`);
  return value;
}

export function parseCheckoutRequest(r: CreateCheckoutSessionRequest): CreateCheckoutSessionRequest {
  checkId('account_id', r.accountId);
  if ((r.packId === '') === (r.credits === 0n)) {
    throw invalidArgument(r.packId === '' ? 'pack_id' : 'credits', 'give exactly one of pack_id or credits', 'pack_id xor credits');
  }
  if (r.packId !== '') checkId('pack_id', r.packId);
  else checkRange('credits', r.credits, 1n, CREDITS_MAX);
  checkUrl('success_url', r.successUrl);
  checkUrl('cancel_url', r.cancelUrl);
  if (r.requestId !== '') checkId('request_id', r.requestId);
  return r;
}

/** Stripe payment method ids: pm_... (and the older card_... / src_...). */
const PAYMENT_METHOD_PREFIXES = ['pm', 'card', 'src'] as const;

export function parseAutoRefill(s: AutoRefillSettings | undefined): AutoRefillSettings {
  if (!s) throw invalidArgument('settings', 'is required');
  checkId('settings.account_id', s.accountId);
  if (s.disabledReason !== '') throw invalidArgument('settings.disabled_reason', 'is read-only (meterd sets it when it turns auto-refill off)');
  if (!s.enabled) return s;
  checkRange('settings.threshold_credits', s.thresholdCredits, 1n, CREDITS_MAX);
  if ((s.packId === '') === (s.targetCredits === 0n)) {
    throw invalidArgument(s.packId === '' ? 'settings.pack_id' : 'settings.target_credits', 'give exactly one of pack_id or target_credits', 'pack_id xor target_credits');
  }
  if (s.packId !== '') checkId('settings.pack_id', s.packId);
  else checkRange('settings.target_credits', s.targetCredits, 1n, CREDITS_MAX);
  checkRange('settings.monthly_cap_cents', s.monthlyCapCents, 1n, BigInt(REFILL_MONTHLY_CAP_MINOR_MAX));
  checkStripeId('settings.payment_method_id', s.paymentMethodId, PAYMENT_METHOD_PREFIXES);
  return s;
}

export function billingHandlers(deps: HandlerDependencies) {
  return {
    listCreditPacks: async () => paymentsOf(deps).listCreditPacks(),
    createCheckoutSession: async (r: CreateCheckoutSessionRequest) => {
      const request = parseCheckoutRequest(r);
      return paymentsOf(deps).createCheckoutSession(request);
    },
    setStripeCustomer: async (r: { accountId: string; stripeCustomerId: string }) => {
      checkId('account_id', r.accountId);
      checkStripeId('stripe_customer_id', r.stripeCustomerId, ['cus']);
      return paymentsOf(deps).setStripeCustomer(r.accountId, r.stripeCustomerId);
    },
    setAutoRefill: async (r: { settings?: AutoRefillSettings | undefined }) => paymentsOf(deps).setAutoRefill(parseAutoRefill(r.settings)),
    getAutoRefill: async (r: { accountId: string }) => paymentsOf(deps).getAutoRefill(checkId('account_id', r.accountId)),
  };
}

