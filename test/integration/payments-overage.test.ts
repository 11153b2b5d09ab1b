import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TEST_EPOCH_MS } from '../support/meterd.js';
import { startPaymentsTest, type PaymentsTest } from '../support/fake-stripe.js';

/**
 * Overage billed separately: the overage a pool used in a period is reported to Stripe as Billing
 * Meter events, one identifier per account, period and batch, so no retry ever bills twice.
 */
describe('overage reported to Stripe Billing Meters', () => {
  let h: PaymentsTest;

  beforeAll(async () => {
    h = await startPaymentsTest({ background: false });
  });
  afterAll(async () => {
    await h?.stop();
  });

  /** A root on the `metered` plan: 100 credits a month, then up to 50 of overage. */
  const metered = async (accountId: string, stripeCustomerId?: string) => {
    await h.t.clients.admin.upsertAccount({ account: {
      accountId, plan: 'metered', parentId: '', trialCredits: 0n, lowBalanceThreshold: 0n, lowBalancePercent: 0, pendingPlan: '' } });
    if (stripeCustomerId) await h.running.payments.setStripeCustomer(accountId, stripeCustomerId);
  };
  let n = 0;
  const spend = async (accountId: string, credits: bigint) => {
    const hold = await h.t.clients.metering.reserveCredits({ accountId, feature: 'content_rewrite', credits, requestId: `o${n++}`, userId: '', labels: {} });
    return h.t.clients.metering.commitReservation({ reservationId: hold.reservationId });
  };
  const report = async () => {
    await h.t.meterd.flusher!.drain();
    await h.running.workers.overage.runOnce();
  };
  const sentFor = (customer: string) => h.fake.requestsTo('POST', '/v1/billing/meter_events')
    .filter((r) => (r.params.payload as Record<string, string> | undefined)?.stripe_customer_id === customer);
  const rows = async (accountId: string) => (await h.db.query<{ batch: number; credits: string; identifier: string; reported: boolean; last_error: string }>(
    `SELECT batch, credits::text, identifier, reported_at IS NOT NULL AS reported, last_error FROM overage_reports
      WHERE account_id = $1 ORDER BY batch`, [accountId])).rows;

  it("reports a period's overage once, then only what is new, each batch under its own identifier", async () => {
    await metered('ov-a', 'cus_test_ova');
    await spend('ov-a', 90n);
    expect((await spend('ov-a', 30n)).overageCredits).toBe(20n);
    await report();
    const first = `ovg:ov-a:${TEST_EPOCH_MS}:1`;
    expect(sentFor('cus_test_ova').map((r) => [r.idempotencyKey, r.params])).toEqual([[first, {
      event_name: 'meterd_overage_credits', identifier: first, payload: { stripe_customer_id: 'cus_test_ova', value: '20' },
    }]]);
    expect(await rows('ov-a')).toEqual([{ batch: 1, credits: '20', identifier: first, reported: true, last_error: '' }]);

    await report(); // nothing new
    expect(sentFor('cus_test_ova')).toHaveLength(1);

    await spend('ov-a', 25n);
    await report();
    expect(sentFor('cus_test_ova').map((r) => (r.params.payload as Record<string, string>).value)).toEqual(['20', '25']);
    expect((await rows('ov-a')).map((r) => [r.batch, r.credits, r.identifier])).toEqual([
      [1, '20', first], [2, '25', `ovg:ov-a:${TEST_EPOCH_MS}:2`],
    ]);
  });

  it('keeps a batch whose call failed and sends the same identifier until Stripe has it', async () => {
    await metered('ov-b', 'cus_test_ovb');
    await spend('ov-b', 110n);
    h.fake.failNext('POST', /^\/v1\/billing\/meter_events$/, { status: 500, body: { error: { type: 'api_error', message: 'try later' } } });
    await report();
    expect(await rows('ov-b')).toMatchObject([{ batch: 1, credits: '10', reported: false, last_error: expect.stringContaining('try later') }]);
    await report();
    const identifier = `ovg:ov-b:${TEST_EPOCH_MS}:1`;
    expect(sentFor('cus_test_ovb').map((r) => r.idempotencyKey)).toEqual([identifier, identifier]);
    expect(await rows('ov-b')).toMatchObject([{ batch: 1, credits: '10', reported: true }]);
    expect([...h.fake.meterEvents.keys()].filter((k) => k.startsWith('ovg:ov-b:'))).toEqual([identifier]);
  });

  it('treats "identifier already exists" as reported (an earlier answer was lost)', async () => {
    await metered('ov-c', 'cus_test_ovc');
    await spend('ov-c', 105n);
    const identifier = `ovg:ov-c:${TEST_EPOCH_MS}:1`;
    h.fake.meterEvents.set(identifier, { identifier }); // Stripe got it; meterd never heard back
    await report();
    expect(await rows('ov-c')).toMatchObject([{ credits: '5', reported: true, last_error: '' }]);
  });

  it('reports nothing for a pool without a Stripe customer, nor for overage refunded before reporting', async () => {
    await metered('ov-none');
    await spend('ov-none', 120n);
    await metered('ov-refund', 'cus_test_ovr');
    const commit = await spend('ov-refund', 120n);
    await h.t.clients.admin.refundCharge({ reservationId: commit.reservationId, refundId: 'rf-1', reason: 'model failed' });
    await report();
    expect(await rows('ov-none')).toEqual([]);
    expect(await rows('ov-refund')).toEqual([]);
    expect(sentFor('cus_test_ovr')).toEqual([]);
  });
});
