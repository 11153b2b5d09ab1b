import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connectMeterd, type MeterdConnection } from '../../src/client/connection.js';
import { eventually, FakeStripe, signWebhook, TEST_PAYMENTS_PRODUCT, TEST_STRIPE_SECRET_KEY, TEST_WEBHOOK_SECRET } from '../support/fake-stripe.js';
import { startTestMeterd, type TestMeterd } from '../support/meterd.js';

/**
 * Payments through meterd as it runs (app.ts wiring): the billing RPCs over gRPC, the Stripe webhook on
 * meterd's own HTTP port, and auto-refill asked for by the reserve path itself.
 */
describe('payments end to end', () => {
  let fake: FakeStripe;
  let t: TestMeterd;
  let connection: MeterdConnection;
  const webhook = (body: string, signature = signWebhook(body, TEST_WEBHOOK_SECRET)) => fetch(`http://127.0.0.1:${t.meterd.httpPort}/webhooks/stripe`, {
    method: 'POST', body, headers: { 'content-type': 'application/json', 'stripe-signature': signature },
  });
  const create = (accountId: string, plan: string) => connection.admin.upsertAccount({ account: { accountId, plan } });
  const packCredits = async (accountId: string) => (await connection.metering.getBalance({ accountId })).packCredits;

  beforeAll(async () => {
    fake = await FakeStripe.start();
    t = await startTestMeterd({ postgres: true, flushLoop: true, product: TEST_PAYMENTS_PRODUCT, env: {
      STRIPE_SECRET_KEY: TEST_STRIPE_SECRET_KEY, STRIPE_WEBHOOK_SECRET: TEST_WEBHOOK_SECRET, STRIPE_API_URL: fake.url,
      STRIPE_MAX_NETWORK_RETRIES: '0', OUTBOX_POLL_INTERVAL_MS: '50', FLUSH_INTERVAL_MS: '20', REFILL_RETRY_BASE_MS: '10',
    } });
    connection = connectMeterd({ address: `127.0.0.1:${t.meterd.grpcPort}` });
  });
  afterAll(async () => {
    connection?.close();
    await t?.stop();
    await fake?.close();
  });

  it('sells a pack through Checkout and grants it once when the signed webhook says paid', { timeout: 30_000 }, async () => {
    await create('pe-buyer', 'free');
    const session = await connection.admin.createCheckoutSession({
      accountId: 'pe-buyer', packId: 'pack_500', successUrl: 'https://app.example/ok', cancelUrl: 'https://app.example/buy', requestId: 'buy-1',
    });
    expect(session).toMatchObject({ accountId: 'pe-buyer', credits: 500n, amountCents: 2000n, currency: 'usd' });
    expect(session.url).toMatch(/^https?:\/\//);
    const body = JSON.stringify(fake.event('checkout.session.completed', fake.completedSession(session.sessionId)));
    const answers = await Promise.all([webhook(body), webhook(body), webhook(body)]);
    expect(answers.map((a) => a.status)).toEqual([200, 200, 200]);
    expect(await eventually(async () => ((await packCredits('pe-buyer')) === 500n ? true : undefined), 'the pack granted')).toBe(true);
    expect((await webhook(`${body} `, signWebhook(body, TEST_WEBHOOK_SECRET))).status).toBe(400); // one byte more than was signed
    const text = await t.meterd.metrics.registry.metrics();
    expect(text).toMatch(/meterd_credit_grants_total\{source="checkout",outcome="applied"\} 1/);
  });

  it('auto-refills once when concurrent reserves cross the threshold, and grants the pack when paid', { timeout: 30_000 }, async () => {
    await create('pe-refill', 'jobs_pro'); // 150 credits a month
    await connection.admin.setStripeCustomer({ accountId: 'pe-refill', stripeCustomerId: 'cus_e2e' });
    await connection.admin.setAutoRefill({ settings: {
      accountId: 'pe-refill', enabled: true, thresholdCredits: 100n, packId: 'pack_500', monthlyCapCents: 10_000n, paymentMethodId: 'pm_e2e',
    } });
    await Promise.all(Array.from({ length: 20 }, (_, i) => connection.metering.reserveCredits({
      accountId: 'pe-refill', feature: 'content_rewrite', credits: 5n, requestId: `pe${i}`,
    }))); // 50 left, holds counted: one fall below 100
    expect(await eventually(async () => ((await packCredits('pe-refill')) === 500n ? true : undefined), 'the refill granted')).toBe(true);
    const charges = fake.requestsTo('POST', '/v1/payment_intents');
    expect(charges).toHaveLength(1);
    expect(charges[0]?.params).toMatchObject({ customer: 'cus_e2e', payment_method: 'pm_e2e', amount: '2000', off_session: 'true', confirm: 'true' });
  });
});
