import { randomUUID } from 'node:crypto';
import type pg from 'pg';
import type Stripe from 'stripe';
import type { ProductConfig } from '../config/product-config.js';
import type { CreditStore } from '../domain/ports.js';
import type { CheckoutSession, CreateCheckoutSessionRequest } from '../gen/meterd/v1/billing.js';
import type { Logger } from '../observability/logger.js';
import { pricePurchase, upgradeHint } from './catalog.js';
import { checkoutIdempotencyKey } from './ids.js';
import { stripeCallError } from './stripe-client.js';

/** Marks the Stripe objects meterd created, in their metadata (the webhook trusts only signed events). */
export const METADATA_SOURCE = 'meterd';

/** A pool's root: the account itself, or the parent of a space (a space's purchase tops up its parent). */
export async function rootAccountOf(store: Pick<CreditStore, 'getAccount'>, accountId: string): Promise<{ rootId: string; plan: string }> {
  const account = await store.getAccount(accountId);
  if (account.parentId === '') return { rootId: account.accountId, plan: account.plan };
  const parent = await store.getAccount(account.parentId);
  return { rootId: parent.accountId, plan: parent.plan };
}

/**
 * CreateCheckoutSession: prices the purchase from the product config, asks Stripe for a Checkout
 * Session in payment mode (the root account and the credits in its metadata, an idempotency key per
 * buying account and request_id, so a retried call returns the same session), and records the
 * session. Nothing is granted here: only a signed, paid webhook grants.
 */
export async function createCheckoutSession(
  deps: { stripe: Stripe; database: pg.Pool; store: Pick<CreditStore, 'getAccount'>; product: ProductConfig; logger: Logger },
  request: CreateCheckoutSessionRequest,
): Promise<CheckoutSession> {
  const { stripe, database, product } = deps;
  const purchase = pricePurchase(product, request.packId, request.credits);
  const { rootId, plan } = await rootAccountOf(deps.store, request.accountId);
  const hint = upgradeHint(product, plan, purchase);
  const customer = (await database.query<{ stripe_customer_id: string }>(
    'SELECT stripe_customer_id FROM stripe_customers WHERE account_id = $1', [rootId])).rows[0]?.stripe_customer_id;
  const metadata = {
    source: METADATA_SOURCE, account_id: rootId, requested_by: request.accountId,
    credits: purchase.credits.toString(), pack_id: purchase.packId,
  };
  const params: Stripe.Checkout.SessionCreateParams = {
    mode: 'payment',
    line_items: [{
      quantity: 1,
      price_data: {
        currency: purchase.currency,
        unit_amount: Number(purchase.amountCents),
        product_data: { name: `${purchase.credits.toLocaleString('en-US')} AI credits`, description: purchase.breakdown },
      },
    }],
    success_url: request.successUrl,
    cancel_url: request.cancelUrl,
    client_reference_id: rootId,
    metadata,
    payment_intent_data: { metadata },
    ...(customer === undefined ? {} : { customer }),
  };
  // Without a request_id every call is a new purchase; with one, a retry gets the first session back.
  const idempotencyKey = checkoutIdempotencyKey(request.accountId, request.requestId === '' ? randomUUID() : request.requestId);
  let session: Stripe.Checkout.Session;
  try {
    session = await stripe.checkout.sessions.create(params, { idempotencyKey });
  } catch (err) {
    throw stripeCallError(err, 'creating the Checkout Session');
  }
  if (!session.url) throw new Error(`Stripe returned Checkout Session ${session.id} without a url`);
  await database.query(
    `INSERT INTO checkout_sessions (session_id, account_id, requested_by, pack_id, credits, amount_cents, currency)
     VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (session_id) DO NOTHING`,
    [session.id, rootId, request.accountId, purchase.packId, purchase.credits.toString(), purchase.amountCents.toString(), purchase.currency]);
  deps.logger.info({ sessionId: session.id, accountId: rootId, requestedBy: request.accountId, credits: purchase.credits.toString(), amountCents: purchase.amountCents.toString() },
    'checkout session created');
  const result: CheckoutSession = {
    sessionId: session.id, url: session.url, accountId: rootId, credits: purchase.credits, amountCents: purchase.amountCents,
    currency: purchase.currency, priceBreakdown: purchase.breakdown,
  };
  if (hint) result.upgradeHint = hint;
  return result;
}
