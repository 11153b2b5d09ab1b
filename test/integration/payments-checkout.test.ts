import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DomainError } from '../../src/domain/errors.js';
import type { CreateCheckoutSessionRequest } from '../../src/gen/meterd/v1/billing.js';
import { billingHandlers } from '../../src/grpc/billing-handlers.js';
import type { HandlerDependencies } from '../../src/grpc/handlers.js';
import { STRIPE_API_VERSION } from '../../src/payments/stripe-client.js';
import { startPaymentsTest, type PaymentsTest } from '../support/fake-stripe.js';

/**
 * Buying credits: ListCreditPacks and CreateCheckoutSession through the handlers (validation) and
 * payments, with the real stripe SDK talking to the fake Stripe.
 */
async function refusal(promise: Promise<unknown>): Promise<{ reason: string; message: string; metadata: Record<string, string> }> {
  try {
    await promise;
  } catch (err) {
    if (err instanceof DomainError) return { reason: err.reason, message: err.message, metadata: err.metadata };
    throw err;
  }
  throw new Error('expected a refusal');
}

describe('credit packs and Stripe Checkout sessions', () => {
  let h: PaymentsTest;
  let handlers: ReturnType<typeof billingHandlers>;

  beforeAll(async () => {
    h = await startPaymentsTest({ background: false });
    handlers = billingHandlers({ payments: h.running.payments } as unknown as HandlerDependencies);
    const admin = h.t.clients.admin;
    const root = (accountId: string, plan: string) => admin.upsertAccount({ account: {
      accountId, plan, parentId: '', trialCredits: 0n, lowBalanceThreshold: 0n, lowBalancePercent: 0, pendingPlan: '' } });
    await root('co-free', 'free');
    await root('co-pro', 'pro');
    await admin.upsertAccount({ account: {
      accountId: 'co-space', plan: '', parentId: 'co-free', trialCredits: 0n, lowBalanceThreshold: 0n, lowBalancePercent: 0, pendingPlan: '' } });
  });
  afterAll(async () => {
    await h?.stop();
  });

  const request = (patch: Partial<CreateCheckoutSessionRequest>): CreateCheckoutSessionRequest => ({
    accountId: 'co-pro', packId: '', credits: 0n, successUrl: 'https://app.example/credits?session={CHECKOUT_SESSION_ID}',
    cancelUrl: 'https://app.example/credits', requestId: '', ...patch,
  });

  it('lists the packs and the custom quantity of the product config', async () => {
    const list = await handlers.listCreditPacks();
    expect(list.packs).toEqual([
      { packId: 'pack_500', credits: 500n, priceCents: 2000n, currency: 'usd' },
      { packId: 'pack_2500', credits: 2500n, priceCents: 10000n, currency: 'usd' },
      { packId: 'pack_12500', credits: 12500n, priceCents: 50000n, currency: 'usd' },
    ]);
    expect(list.customQuantity).toEqual({
      unitPriceCentiCents: 2450n, currency: 'usd', minCredits: 10n, maxCredits: 100000n, quickPicks: [100n, 250n, 500n, 1000n],
    });
  });

  it('creates a payment-mode session for a pack: metadata, idempotency key, pinned API version, recorded', async () => {
    const session = await handlers.createCheckoutSession(request({ packId: 'pack_500', requestId: 'buy-1' }));
    expect(session).toMatchObject({
      accountId: 'co-pro', credits: 500n, amountCents: 2000n, currency: 'usd', priceBreakdown: '500 credits × $0.04 = $20.00',
    });
    expect(session.upgradeHint).toBeUndefined();
    expect(session.url).toBe(`https://checkout.stripe.com/c/pay/${session.sessionId}`);
    const [sent] = h.fake.requestsTo('POST', '/v1/checkout/sessions');
    expect(sent?.idempotencyKey).toBe('checkout:co-pro:buy-1');
    expect(sent?.stripeVersion).toBe(STRIPE_API_VERSION);
    expect(sent?.params).toMatchObject({
      mode: 'payment', client_reference_id: 'co-pro',
      success_url: 'https://app.example/credits?session={CHECKOUT_SESSION_ID}', cancel_url: 'https://app.example/credits',
      line_items: [{ quantity: '1', price_data: { currency: 'usd', unit_amount: '2000', product_data: { name: '500 AI credits' } } }],
      metadata: { source: 'meterd', account_id: 'co-pro', requested_by: 'co-pro', credits: '500', pack_id: 'pack_500' },
      payment_intent_data: { metadata: { account_id: 'co-pro', credits: '500' } },
    });
    const rows = (await h.db.query('SELECT account_id, requested_by, pack_id, credits::text, amount_cents::text, currency, status FROM checkout_sessions WHERE session_id = $1',
      [session.sessionId])).rows;
    expect(rows).toEqual([{ account_id: 'co-pro', requested_by: 'co-pro', pack_id: 'pack_500', credits: '500', amount_cents: '2000', currency: 'usd', status: 'open' }]);
  });

  it('answers a retried request_id with the same session, and refuses it with other parameters', async () => {
    const first = await handlers.createCheckoutSession(request({ packId: 'pack_2500', requestId: 'buy-2' }));
    const again = await handlers.createCheckoutSession(request({ packId: 'pack_2500', requestId: 'buy-2' }));
    expect(again.sessionId).toBe(first.sessionId);
    expect(h.fake.requestsTo('POST', '/v1/checkout/sessions').filter((r) => r.idempotencyKey === 'checkout:co-pro:buy-2').map((r) => r.replayed))
      .toEqual([false, true]);
    const reused = await refusal(handlers.createCheckoutSession(request({ packId: 'pack_500', requestId: 'buy-2' })));
    expect(reused).toMatchObject({ reason: 'IDEMPOTENCY_KEY_REUSED', metadata: { field: 'request_id' } });
    expect((await h.db.query("SELECT count(*)::int AS n FROM checkout_sessions WHERE pack_id = 'pack_2500'")).rows[0].n).toBe(1);
  });

  it('prices any quantity as credits × unit price and hints an upgrade when a plan gives them for less', async () => {
    // Free (250, $0) → Starter (1,000, $49): 200 credits × $0.245 = $49.00, and +750 covers 200.
    const hinted = await handlers.createCheckoutSession(request({ accountId: 'co-free', credits: 200n }));
    expect(hinted).toMatchObject({ credits: 200n, amountCents: 4900n, priceBreakdown: '200 credits × $0.245 = $49.00' });
    expect(hinted.upgradeHint).toEqual({
      plan: 'starter', planPriceCents: 4900n, planMonthlyCredits: 1000n, message: "It's cheaper to upgrade your subscription than to purchase credits",
    });
    const below = await handlers.createCheckoutSession(request({ accountId: 'co-free', credits: 199n }));
    expect(below).toMatchObject({ amountCents: 4876n, priceBreakdown: '199 credits × $0.245 = $48.76' }); // 48.755 rounds half up
    expect(below.upgradeHint).toBeUndefined();
    // Pro is the largest plan: no hint however much it buys.
    expect((await handlers.createCheckoutSession(request({ credits: 5000n }))).upgradeHint).toBeUndefined();
    const sent = h.fake.requestsTo('POST', '/v1/checkout/sessions').at(-1);
    expect(sent?.params).toMatchObject({ line_items: [{ quantity: '1', price_data: { unit_amount: '122500' } }], metadata: { credits: '5000', pack_id: '' } });
  });

  it("tops up the pool root: a space's purchase is for its parent", async () => {
    const session = await handlers.createCheckoutSession(request({ accountId: 'co-space', packId: 'pack_500' }));
    expect(session.accountId).toBe('co-free');
    expect(h.fake.requestsTo('POST', '/v1/checkout/sessions').at(-1)?.params).toMatchObject({
      client_reference_id: 'co-free', metadata: { account_id: 'co-free', requested_by: 'co-space' },
    });
    expect((await h.db.query('SELECT account_id, requested_by FROM checkout_sessions WHERE session_id = $1', [session.sessionId])).rows)
      .toEqual([{ account_id: 'co-free', requested_by: 'co-space' }]);
  });

  it('refuses bad requests naming the field and the limit, before calling Stripe', async () => {
    const before = h.fake.requests.length;
    const cases: Array<[Partial<CreateCheckoutSessionRequest>, string, string | undefined]> = [
      [{ packId: 'pack_500', credits: 100n }, 'credits', 'pack_id xor credits'],
      [{}, 'pack_id', 'pack_id xor credits'],
      [{ packId: 'pack_none' }, 'pack_id', undefined],
      [{ credits: 9n }, 'credits', '10..100000'],
      [{ credits: 100001n }, 'credits', '10..100000'],
      [{ credits: 10n ** 16n }, 'credits', '1..1000000000000000'],
      [{ packId: 'pack_500', successUrl: 'ftp://app.example/x' }, 'success_url', 'http(s)://...'],
      [{ packId: 'pack_500', successUrl: `https://app.example/${'x'.repeat(2048)}` }, 'success_url', '2048'],
      [{ packId: 'pack_500', cancelUrl: '' }, 'cancel_url', 'http(s) URL of at most 2048 characters'],
      [{ packId: 'pack_500', cancelUrl: '/relative' }, 'cancel_url', 'http(s)://...'],
      [{ packId: 'pack_500', accountId: 'a/b' }, 'account_id', '^[A-Za-z0-9._:-]+$'],
      [{ packId: 'pack_500', requestId: 'x'.repeat(129) }, 'request_id', '128'],
    ];
    for (const [patch, field, limit] of cases) {
      const refused = await refusal(handlers.createCheckoutSession(request(patch)));
      const label = Object.keys(patch).join(',');
      expect(refused.reason, label).toBe('INVALID_ARGUMENT');
      expect(refused.metadata, label).toEqual(limit === undefined ? { field } : { field, limit });
    }
    expect((await refusal(handlers.createCheckoutSession(request({ accountId: 'nobody', packId: 'pack_500' })))).reason).toBe('ACCOUNT_NOT_FOUND');
    expect(h.fake.requests.length).toBe(before);
  });

  it('turns a Stripe outage into UNAVAILABLE (retry with the same request_id), recording nothing', async () => {
    h.fake.failNext('POST', /^\/v1\/checkout\/sessions$/, { status: 500, body: { error: { type: 'api_error', message: 'boom' } } });
    const refused = await refusal(handlers.createCheckoutSession(request({ packId: 'pack_12500', requestId: 'buy-outage' })));
    expect(refused.reason).toBe('BACKEND_UNAVAILABLE');
    expect((await h.db.query("SELECT count(*)::int AS n FROM checkout_sessions WHERE pack_id = 'pack_12500'")).rows[0].n).toBe(0);
    const retried = await handlers.createCheckoutSession(request({ packId: 'pack_12500', requestId: 'buy-outage' }));
    expect(retried).toMatchObject({ credits: 12500n, amountCents: 50000n, priceBreakdown: '12,500 credits × $0.04 = $500.00' });
  });
});
