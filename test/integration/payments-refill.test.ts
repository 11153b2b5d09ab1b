import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DomainError } from '../../src/domain/errors.js';
import type { AutoRefillSettings } from '../../src/gen/meterd/v1/billing.js';
import { billingHandlers } from '../../src/grpc/billing-handlers.js';
import type { HandlerDependencies } from '../../src/grpc/handlers.js';
import { refillGrantId } from '../../src/payments/ids.js';
import { eventually, startPaymentsTest, type PaymentsTest } from '../support/fake-stripe.js';

/**
 * Auto-refill: detected in the reserve/commit path (one refill_due per fall below the threshold),
 * paid with one off-session PaymentIntent, granted once; declines retried with backoff on the same
 * PaymentIntent, then an alert and auto-refill off; never above the monthly cap.
 */
async function refusal(promise: Promise<unknown>): Promise<{ reason: string; metadata: Record<string, string> }> {
  try {
    await promise;
  } catch (err) {
    if (err instanceof DomainError) return { reason: err.reason, metadata: err.metadata };
    throw err;
  }
  throw new Error('expected a refusal');
}

describe('auto-refill', () => {
  let h: PaymentsTest;
  let handlers: ReturnType<typeof billingHandlers>;

  beforeAll(async () => {
    // Workers are driven by hand here (runOnce), so every step is deterministic.
    h = await startPaymentsTest({ background: false, env: { REFILL_ATTEMPTS_MAX: '3', REFILL_RETRY_BASE_MS: '10' } });
    handlers = billingHandlers({ payments: h.running.payments } as unknown as HandlerDependencies);
  });
  afterAll(async () => {
    await h?.stop();
  });

  /** A root on jobs_pro (150 credits a month) with a Stripe customer. */
  const customer = async (accountId: string) => {
    await h.t.clients.admin.upsertAccount({ account: {
      accountId, plan: 'jobs_pro', parentId: '', trialCredits: 0n, lowBalanceThreshold: 0n, lowBalancePercent: 0, pendingPlan: '' } });
    await handlers.setStripeCustomer({ accountId, stripeCustomerId: `cus_test_${accountId.replace(/\W/g, '')}` });
  };
  const settings = (accountId: string, patch: Partial<AutoRefillSettings> = {}): AutoRefillSettings => ({
    accountId, enabled: true, thresholdCredits: 100n, packId: 'pack_500', targetCredits: 0n, monthlyCapCents: 10_000n,
    paymentMethodId: 'pm_card_visa', disabledReason: '', ...patch,
  });
  let n = 0;
  const spend = async (accountId: string, credits: bigint) => {
    const hold = await h.t.clients.metering.reserveCredits({ accountId, feature: 'content_rewrite', credits, requestId: `s${n++}`, userId: '', labels: {} });
    await h.t.clients.metering.commitReservation({ reservationId: hold.reservationId });
  };
  const refills = async (accountId: string) => {
    await h.t.meterd.flusher!.drain();
    return (await h.db.query<{ refill_id: string; status: string; attempts: number; credits: string; amount_cents: string; payment_intent_id: string; last_error: string }>(
      `SELECT refill_id, status, attempts, credits::text, amount_cents::text, payment_intent_id, last_error FROM refill_attempts
        WHERE account_id = $1 ORDER BY created_at, length(refill_id), refill_id`, [accountId])).rows;
  };
  const intentsFor = (accountId: string) => h.fake.requestsTo('POST', '/v1/payment_intents')
    .filter((r) => (r.params.metadata as Record<string, string> | undefined)?.account_id === accountId);
  const packCredits = async (accountId: string) => (await h.t.meterd.store.getBalance(accountId)).packCredits;
  const workers = () => h.running.workers;
  /** The flush writes refill_due events as refill_attempts rows; then one worker pass. */
  const refillPass = async () => {
    await h.t.meterd.flusher!.drain();
    await workers().refills.runOnce();
  };

  it('saves settings per pool root and refuses what cannot work', async () => {
    await customer('rf-set');
    expect(await handlers.getAutoRefill({ accountId: 'rf-set' })).toMatchObject({ accountId: 'rf-set', enabled: false, thresholdCredits: 0n });
    expect(await handlers.setAutoRefill({ settings: settings('rf-set') })).toEqual(settings('rf-set'));
    expect(await handlers.getAutoRefill({ accountId: 'rf-set' })).toEqual(settings('rf-set'));
    // Off keeps the figures, so turning it on again is one switch.
    expect(await handlers.setAutoRefill({ settings: { ...settings('rf-set'), enabled: false } })).toEqual({ ...settings('rf-set'), enabled: false });

    await h.t.clients.admin.upsertAccount({ account: {
      accountId: 'rf-space', plan: '', parentId: 'rf-set', trialCredits: 0n, lowBalanceThreshold: 0n, lowBalancePercent: 0, pendingPlan: '' } });
    await h.t.clients.admin.upsertAccount({ account: {
      accountId: 'rf-nocus', plan: 'free', parentId: '', trialCredits: 0n, lowBalanceThreshold: 0n, lowBalancePercent: 0, pendingPlan: '' } });
    expect((await refusal(handlers.setAutoRefill({ settings: settings('rf-space') }))).reason).toBe('ACCOUNT_IS_SPACE');
    expect((await refusal(handlers.setStripeCustomer({ accountId: 'rf-space', stripeCustomerId: 'cus_x' }))).reason).toBe('ACCOUNT_IS_SPACE');
    const invalid: Array<[AutoRefillSettings, string]> = [
      [settings('rf-nocus'), 'settings.account_id'],
      [settings('rf-set', { monthlyCapCents: 1999n }), 'settings.monthly_cap_cents'],
      [settings('rf-set', { targetCredits: 1000n }), 'settings.target_credits'],
      [settings('rf-set', { packId: '' }), 'settings.pack_id'],
      [settings('rf-set', { packId: '', targetCredits: 100n }), 'settings.target_credits'],
      [settings('rf-set', { packId: 'pack_none' }), 'settings.pack_id'],
      [settings('rf-set', { thresholdCredits: 0n }), 'settings.threshold_credits'],
      [settings('rf-set', { paymentMethodId: 'card-1' }), 'settings.payment_method_id'],
      [settings('rf-set', { paymentMethodId: '' }), 'settings.payment_method_id'],
      [settings('rf-set', { disabledReason: 'mine' }), 'settings.disabled_reason'],
    ];
    for (const [bad, field] of invalid) {
      const refused = await refusal(handlers.setAutoRefill({ settings: bad }));
      expect(refused.reason, field).toBe('INVALID_ARGUMENT');
      expect(refused.metadata.field, field).toBe(field);
    }
    expect((await refusal(handlers.setStripeCustomer({ accountId: 'rf-set', stripeCustomerId: 'acct_1' }))).metadata.field).toBe('stripe_customer_id');
    expect((await refusal(handlers.setAutoRefill({}))).metadata).toEqual({ field: 'settings' });
  });

  it('charges once when concurrent reserves cross the threshold, grants the pack once, and can refill again after', async () => {
    await customer('rf-one');
    await handlers.setAutoRefill({ settings: settings('rf-one') });
    await spend('rf-one', 40n); // 110 left: above 100
    await Promise.all(Array.from({ length: 20 }, (_, i) => h.t.clients.metering.reserveCredits({
      accountId: 'rf-one', feature: 'content_rewrite', credits: 3n, requestId: `one-${i}`, userId: '', labels: {},
    }))); // 50 available, holds counted
    const [due] = await refills('rf-one');
    expect(await refills('rf-one')).toHaveLength(1);
    // Two workers (replicas) at once: one payment.
    await Promise.all([workers().refills.runOnce(), workers().refills.runOnce()]);
    const intents = intentsFor('rf-one');
    expect(intents).toHaveLength(1);
    expect(intents[0]?.idempotencyKey).toBe(`refill:${due?.refill_id}`);
    expect(intents[0]?.params).toMatchObject({
      amount: '2000', currency: 'usd', customer: 'cus_test_rfone', payment_method: 'pm_card_visa', off_session: 'true', confirm: 'true',
      metadata: { account_id: 'rf-one', refill_id: due?.refill_id },
    });
    expect(await refills('rf-one')).toMatchObject([{ status: 'succeeded', attempts: 1, credits: '500', amount_cents: '2000' }]);
    await workers().grants.relayOnce();
    expect(await packCredits('rf-one')).toBe(500n);
    await h.t.meterd.flusher!.drain();
    expect((await h.db.query("SELECT count(*)::int AS n FROM ledger_events WHERE account_id = 'rf-one' AND kind = 'grant' AND op_id = $1",
      [refillGrantId(due?.refill_id ?? '')])).rows[0].n).toBe(1);
    // The refill ended in Redis: above the threshold nothing is asked; below it again, a new refill.
    await spend('rf-one', 1n);
    expect(await refills('rf-one')).toHaveLength(1);
    await spend('rf-one', 500n);
    expect((await refills('rf-one')).map((r) => r.status)).toEqual(['succeeded', 'due']);
    await refillPass();
    expect(intentsFor('rf-one')).toHaveLength(2);
  });

  it('never passes the monthly cap: no charge, a refill_failed alert, and auto-refill turns itself off', async () => {
    await customer('rf-cap');
    await handlers.setAutoRefill({ settings: settings('rf-cap', { monthlyCapCents: 3000n }) }); // one $20 pack fits, two do not
    await spend('rf-cap', 60n);
    await refillPass();
    await workers().grants.relayOnce();
    expect(await packCredits('rf-cap')).toBe(500n);
    await spend('rf-cap', 520n); // 70 left: below 100 again
    await refillPass();
    expect(intentsFor('rf-cap')).toHaveLength(1);
    expect((await refills('rf-cap')).map((r) => r.status)).toEqual(['succeeded', 'skipped']);
    const alerts = (await h.db.query("SELECT kind, available::text, threshold::text, detail FROM alerts WHERE account_id = 'rf-cap' AND kind = 'refill_failed'")).rows;
    expect(alerts).toMatchObject([{ kind: 'refill_failed', available: '70', threshold: '100', detail: { cause: 'monthly_cap_reached' } }]);
    const after = await handlers.getAutoRefill({ accountId: 'rf-cap' });
    expect(after.enabled).toBe(false);
    expect(after.disabledReason).toBe('monthly cap reached: $20.00 of $30.00 spent this month (UTC); another refill costs $20.00');
    // Off in Redis too: falling further asks for nothing.
    await spend('rf-cap', 10n);
    expect(await refills('rf-cap')).toHaveLength(2);
  });

  it('retries a declined card on the same PaymentIntent with backoff, then alerts and turns itself off', async () => {
    await customer('rf-decline');
    await handlers.setAutoRefill({ settings: settings('rf-decline') });
    h.fake.scriptPayments('cus_test_rfdecline', 'decline', 'decline', 'decline');
    await spend('rf-decline', 60n);
    const [due] = await refills('rf-decline');
    const final = await eventually(async () => {
      await refillPass();
      const [row] = await refills('rf-decline');
      return row?.status === 'failed' ? row : undefined;
    }, 'the refill to give up');
    expect(final).toMatchObject({ attempts: 3, last_error: expect.stringContaining('insufficient funds') });
    const intent = final.payment_intent_id;
    expect(intentsFor('rf-decline').map((r) => r.idempotencyKey)).toEqual([`refill:${due?.refill_id}`]);
    expect(h.fake.requestsTo('POST', `/v1/payment_intents/${intent}/confirm`).map((r) => r.idempotencyKey))
      .toEqual([`refill:${due?.refill_id}:confirm:2`, `refill:${due?.refill_id}:confirm:3`]);
    expect((await h.db.query("SELECT kind, detail FROM alerts WHERE account_id = 'rf-decline'")).rows)
      .toMatchObject([{ kind: 'refill_failed', detail: { cause: 'payment_failed', attempts: 3, payment_intent_id: intent } }]);
    expect(await handlers.getAutoRefill({ accountId: 'rf-decline' })).toMatchObject({ enabled: false, disabledReason: expect.stringContaining('insufficient funds') });
    expect(await packCredits('rf-decline')).toBe(0n);
    await spend('rf-decline', 10n);
    expect(await refills('rf-decline')).toHaveLength(1);
    // Turning it on again starts afresh (the pool is below the threshold: the next reserve asks).
    await handlers.setAutoRefill({ settings: settings('rf-decline') });
    expect((await handlers.getAutoRefill({ accountId: 'rf-decline' })).disabledReason).toBe('');
  });

  it('grants once when a retry after a decline succeeds', async () => {
    await customer('rf-retry');
    await handlers.setAutoRefill({ settings: settings('rf-retry') });
    h.fake.scriptPayments('cus_test_rfretry', 'decline');
    await spend('rf-retry', 60n);
    await eventually(async () => {
      await refillPass();
      const [row] = await refills('rf-retry');
      return row?.status === 'succeeded' ? row : undefined;
    }, 'the retried refill to succeed');
    await workers().grants.relayOnce();
    expect(await packCredits('rf-retry')).toBe(500n);
    expect(intentsFor('rf-retry')).toHaveLength(1);
    expect((await h.db.query("SELECT count(*)::int AS n FROM alerts WHERE account_id = 'rf-retry'")).rows[0].n).toBe(0);
  });

  it('grants a processing payment on payment_intent.succeeded, once', async () => {
    await customer('rf-async');
    await handlers.setAutoRefill({ settings: settings('rf-async') });
    h.fake.scriptPayments('cus_test_rfasync', 'processing');
    await spend('rf-async', 60n);
    await refillPass();
    const [row] = await refills('rf-async');
    expect(row).toMatchObject({ status: 'processing' });
    const intent = { ...h.fake.paymentIntents.get(row?.payment_intent_id ?? ''), status: 'succeeded' };
    const first = await h.deliver(JSON.stringify(h.fake.event('payment_intent.succeeded', intent)));
    const again = await h.deliver(JSON.stringify(h.fake.event('payment_intent.succeeded', intent)));
    expect([first.body.outcome, again.body.outcome]).toEqual(['refill_succeeded', 'already_granted']);
    await workers().grants.relayOnce();
    expect(await packCredits('rf-async')).toBe(500n);
    expect((await refills('rf-async')).map((r) => r.status)).toEqual(['succeeded']);
    // A PaymentIntent meterd did not make for a refill (a Checkout payment) is not a refill.
    expect((await h.deliver(JSON.stringify(h.fake.event('payment_intent.succeeded', { id: 'pi_other', object: 'payment_intent', metadata: {} })))).body.outcome)
      .toBe('ignored');
  });

  it('retries on payment_intent.payment_failed after processing, on the same PaymentIntent', async () => {
    await customer('rf-late');
    await handlers.setAutoRefill({ settings: settings('rf-late') });
    h.fake.scriptPayments('cus_test_rflate', 'processing');
    await spend('rf-late', 60n);
    await refillPass();
    const [row] = await refills('rf-late');
    expect(row).toMatchObject({ status: 'processing', attempts: 1 });
    // The bank debit failed later: Stripe says so by webhook (the worker would only look in 15 minutes).
    const intent = h.fake.paymentIntents.get(row?.payment_intent_id ?? '') as Record<string, unknown>;
    Object.assign(intent, { status: 'requires_payment_method', last_payment_error: { message: 'The bank refused the debit.' } });
    expect((await h.deliver(JSON.stringify(h.fake.event('payment_intent.payment_failed', { ...intent })))).body.outcome).toBe('refill_payment_failed');
    expect((await refills('rf-late'))[0]).toMatchObject({ status: 'processing', last_error: 'The bank refused the debit.' });
    const done = await eventually(async () => {
      await refillPass();
      const [current] = await refills('rf-late');
      return current?.status === 'succeeded' ? current : undefined;
    }, 'the retried refill to succeed');
    expect(done).toMatchObject({ attempts: 2, payment_intent_id: row?.payment_intent_id });
    expect(h.fake.requestsTo('POST', `/v1/payment_intents/${row?.payment_intent_id}/confirm`)).toHaveLength(1);
    await workers().grants.relayOnce();
    expect(await packCredits('rf-late')).toBe(500n);
  });

  it('refills up to a target balance at the custom unit price', async () => {
    await customer('rf-target');
    await handlers.setAutoRefill({ settings: settings('rf-target', { packId: '', targetCredits: 1000n, monthlyCapCents: 100_000n }) });
    await spend('rf-target', 60n); // 90 available
    await refillPass();
    expect(intentsFor('rf-target')[0]?.params).toMatchObject({ amount: '22295' }); // 910 × $0.245 = $222.95
    await workers().grants.relayOnce();
    expect((await h.t.meterd.store.getBalance('rf-target')).available).toBe(1000n);
  });
});
