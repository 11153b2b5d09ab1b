import type {
  AutoRefillSettings, CheckoutSession, CreateCheckoutSessionRequest, ListCreditPacksResponse, SetStripeCustomerResponse,
} from '../gen/meterd/v1/billing.js';

/**
 * Money in: credit packs sold through Stripe Checkout, the Stripe customer of an account, and
 * auto-refill settings (src/payments/ implements it with the stripe SDK and Postgres). The gRPC
 * handlers validate requests and call it; absent when Stripe is not configured.
 */
export interface Payments {
  listCreditPacks(): Promise<ListCreditPacksResponse>;
  createCheckoutSession(request: CreateCheckoutSessionRequest): Promise<CheckoutSession>;
  setStripeCustomer(accountId: string, stripeCustomerId: string): Promise<SetStripeCustomerResponse>;
  setAutoRefill(settings: AutoRefillSettings): Promise<AutoRefillSettings>;
  getAutoRefill(accountId: string): Promise<AutoRefillSettings>;
}
