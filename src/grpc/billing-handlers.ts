import { DomainError, ErrorReason } from '../domain/errors.js';
import type { Payments } from '../payments/payments.js';
import type { HandlerDependencies } from './handlers.js';

/** AdminService's money-in RPCs: validation here, the work in src/payments/. */
function paymentsOf(deps: HandlerDependencies): Payments {
  if (!deps.payments) throw new DomainError(ErrorReason.PAYMENTS_DISABLED, 'Stripe is not configured on this meterd (STRIPE_SECRET_KEY)');
  return deps.payments;
}

export function billingHandlers(deps: HandlerDependencies) {
  return {
    listCreditPacks: async () => paymentsOf(deps).listCreditPacks(),
    createCheckoutSession: async (r: Parameters<Payments['createCheckoutSession']>[0]) => paymentsOf(deps).createCheckoutSession(r),
    setStripeCustomer: async (r: { accountId: string; stripeCustomerId: string }) => paymentsOf(deps).setStripeCustomer(r.accountId, r.stripeCustomerId),
    setAutoRefill: async (r: { settings?: Parameters<Payments['setAutoRefill']>[0] | undefined }) => {
      if (!r.settings) throw new DomainError(ErrorReason.INVALID_ARGUMENT, 'settings: is required', { field: 'settings' });
      return paymentsOf(deps).setAutoRefill(r.settings);
    },
    getAutoRefill: async (r: { accountId: string }) => paymentsOf(deps).getAutoRefill(r.accountId),
  };
}
