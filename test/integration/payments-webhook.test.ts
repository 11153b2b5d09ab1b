import { request as httpRequest } from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { HTTP_BODY_BYTES_MAX } from '../../src/observability/http-server.js';
import { checkoutGrantId } from '../../src/payments/ids.js';
import { eventually, signWebhook, startPaymentsTest, TEST_WEBHOOK_SECRET, type PaymentsTest } from '../support/fake-stripe.js';

/**
 * POST /webhooks/stripe: signed events only, each recorded once, a paid Checkout Session granted
 * once however often and in whatever order its events arrive, and a grant that survives a crash
 * between Postgres and Redis.
 */
describe('Stripe webhook → credit grant', () => {
  let h: PaymentsTest;

  beforeAll(async () => {
    h = await startPaymentsTest();
  });
  afterAll(async () => {
    await h?.stop();
  });

  const createRoot = (accountId: string, plan = 'free') => h.t.clients.admin.upsertAccount({ account: {
    accountId, plan, parentId: '', trialCredits: 0n, lowBalanceThreshold: 0n, lowBalancePercent: 0, pendingPlan: '' } });

  /** A Checkout Session for a pack, created through payments like CreateCheckoutSession does. */
  const buy = async (accountId: string, packId = 'pack_500') => (await h.running.payments.createCheckoutSession({
    accountId, packId, credits: 0n, successUrl: 'https://app.example/ok', cancelUrl: 'https://app.example/cancel', requestId: '',
  })).sessionId;

  const packCredits = async (accountId: string) => (await h.t.meterd.store.getBalance(accountId)).packCredits;
  const count = async (sql: string, params: unknown[]) => (await h.db.query<{ n: number }>(sql, params)).rows[0]?.n ?? 0;
  const grantEvents = async (accountId: string, sessionId: string) => {
    await h.t.meterd.flusher!.drain();
    return count("SELECT count(*)::int AS n FROM ledger_events WHERE account_id = $1 AND kind = 'grant' AND op_id = $2",
      [accountId, checkoutGrantId(sessionId)]);
  };
  const applied = (grantId: string) => eventually(async () => {
    const row = (await h.db.query('SELECT 1 FROM credit_grant_outbox WHERE grant_id = $1 AND applied_at IS NOT NULL', [grantId])).rows[0];
    return row ? true : undefined;
  }, `grant ${grantId} applied`);
  const storedEvents = (eventId: string) => count('SELECT count(*)::int AS n FROM stripe_events WHERE event_id = $1', [eventId]);

  it('grants a paid session once when the same event arrives ten times at once', async () => {
    await createRoot('wh-ten');
    const sessionId = await buy('wh-ten');
    const event = h.fake.event('checkout.session.completed', h.fake.completedSession(sessionId));
    const body = JSON.stringify(event);
    const answers = await Promise.all(Array.from({ length: 10 }, () => h.deliver(body)));
    expect(answers.map((a) => a.status)).toEqual(Array(10).fill(200));
    expect(answers.filter((a) => a.body.duplicate === false).map((a) => a.body.outcome)).toEqual(['granted']);
    expect(answers.filter((a) => a.body.duplicate === true)).toHaveLength(9);
    await applied(checkoutGrantId(sessionId));
    expect(await packCredits('wh-ten')).toBe(500n);
    expect(await grantEvents('wh-ten', sessionId)).toBe(1);
    expect(await storedEvents(event.id as string)).toBe(1);
    expect((await h.db.query('SELECT type, outcome FROM stripe_events WHERE event_id = $1', [event.id])).rows)
      .toEqual([{ type: 'checkout.session.completed', outcome: 'granted' }]);
    expect((await h.db.query('SELECT status FROM checkout_sessions WHERE session_id = $1', [sessionId])).rows).toEqual([{ status: 'paid' }]);
  });

  it('grants once for completed and async_payment_succeeded of one session, in either order, even together', async () => {
    await createRoot('wh-both');
    const sessionId = await buy('wh-both', 'pack_2500');
    const completed = h.fake.event('checkout.session.completed', h.fake.completedSession(sessionId));
    const succeeded = h.fake.event('checkout.session.async_payment_succeeded', h.fake.completedSession(sessionId));
    const answers = await Promise.all([h.deliver(JSON.stringify(succeeded)), h.deliver(JSON.stringify(completed))]);
    expect(answers.map((a) => a.body.outcome).sort()).toEqual(['already_granted', 'granted']);
    await applied(checkoutGrantId(sessionId));
    // Delivered again later: still once.
    expect((await h.deliver(JSON.stringify(completed))).body).toMatchObject({ duplicate: true });
    expect(await packCredits('wh-both')).toBe(2500n);
    expect(await grantEvents('wh-both', sessionId)).toBe(1);
    expect(await count('SELECT count(*)::int AS n FROM credit_grant_outbox WHERE account_id = $1', ['wh-both'])).toBe(1);
  });

  it('grants nothing for an unpaid session, a failed async payment or an expired session', async () => {
    await createRoot('wh-unpaid');
    const pending = await buy('wh-unpaid');
    const failed = await buy('wh-unpaid');
    const expired = await buy('wh-unpaid');
    const outcomes = [];
    outcomes.push((await h.deliver(JSON.stringify(h.fake.event('checkout.session.completed', h.fake.completedSession(pending, 'unpaid'))))).body.outcome);
    outcomes.push((await h.deliver(JSON.stringify(h.fake.event('checkout.session.completed', h.fake.completedSession(failed, 'unpaid'))))).body.outcome);
    outcomes.push((await h.deliver(JSON.stringify(h.fake.event('checkout.session.async_payment_failed', h.fake.completedSession(failed, 'unpaid'))))).body.outcome);
    outcomes.push((await h.deliver(JSON.stringify(h.fake.event('checkout.session.expired', { ...h.fake.completedSession(expired, 'unpaid'), status: 'expired' })))).body.outcome);
    expect(outcomes).toEqual(['unpaid', 'unpaid', 'failed', 'expired']);
    await h.running.workers.grants.relayOnce();
    expect(await packCredits('wh-unpaid')).toBe(0n);
    expect(await count('SELECT count(*)::int AS n FROM credit_grant_outbox WHERE account_id = $1', ['wh-unpaid'])).toBe(0);
    expect((await h.db.query('SELECT session_id, status FROM checkout_sessions WHERE account_id = $1 ORDER BY created_at', ['wh-unpaid'])).rows.map((r) => r.status))
      .toEqual(['open', 'failed', 'expired']);
  });

  it('refuses a changed byte, a wrong secret, a stale timestamp or no signature with 400, recording nothing', async () => {
    await createRoot('wh-bad');
    const sessionId = await buy('wh-bad');
    const event = h.fake.event('checkout.session.completed', h.fake.completedSession(sessionId));
    const body = JSON.stringify(event);
    const signature = signWebhook(body, TEST_WEBHOOK_SECRET);
    const tampered = body.replace('"livemode":false', '"livemode":true ');
    expect(tampered).not.toBe(body);
    const staleSeconds = Math.floor(Date.now() / 1000) - 301;
    const refused = [
      await h.deliver(tampered, signature),
      await h.deliver(body, signWebhook(body, 'whsec_someone_else')),
      await h.deliver(body, signWebhook(body, TEST_WEBHOOK_SECRET, staleSeconds)),
      await h.deliver(body, ''),
      await h.deliver(body, 't=abc'),
    ];
    expect(refused.map((r) => [r.status, r.body.error])).toEqual([
      [400, 'webhook refused: signature does not match the body'],
      [400, 'webhook refused: signature does not match the body'],
      [400, 'webhook refused: timestamp outside the tolerance zone'],
      [400, 'missing Stripe-Signature header'],
      [400, 'webhook refused: malformed Stripe-Signature header'],
    ]);
    expect(await storedEvents(event.id as string)).toBe(0);
    await h.running.workers.grants.relayOnce();
    expect(await packCredits('wh-bad')).toBe(0n);
    expect(await count("SELECT count(*)::int AS n FROM checkout_sessions WHERE account_id = 'wh-bad' AND status <> 'open'", [])).toBe(0);
  });

  it('refuses a body past the limit with 413, declared or streamed', async () => {
    const big = JSON.stringify({ id: 'evt_big', padding: 'x'.repeat(HTTP_BODY_BYTES_MAX) });
    const answer = await h.deliver(big);
    expect(answer.status).toBe(413);
    // Chunked (no content-length): the limit is found while reading, and the 413 still arrives.
    const streamed = await new Promise<number>((resolve, reject) => {
      const outgoing = httpRequest(h.webhookUrl, { method: 'POST', headers: { 'stripe-signature': signWebhook(big, TEST_WEBHOOK_SECRET) } }, (incoming) => {
        incoming.resume();
        resolve(incoming.statusCode ?? 0);
      });
      outgoing.on('error', reject);
      const chunk = 64 * 1024;
      for (let i = 0; i < big.length; i += chunk) outgoing.write(big.slice(i, i + chunk));
      outgoing.end();
    });
    expect(streamed).toBe(413);
    expect(await storedEvents('evt_big')).toBe(0);
  });

  it('records an event type it does not handle as ignored and answers 200', async () => {
    const event = h.fake.event('customer.created', { id: 'cus_test_1', object: 'customer' });
    expect((await h.deliver(JSON.stringify(event))).body).toEqual({ received: true, duplicate: false, outcome: 'ignored' });
    expect((await h.db.query('SELECT outcome FROM stripe_events WHERE event_id = $1', [event.id])).rows).toEqual([{ outcome: 'ignored' }]);
  });

  it("lands a space's purchase on its parent", async () => {
    await createRoot('wh-parent');
    await h.t.clients.admin.upsertAccount({ account: {
      accountId: 'wh-space', plan: '', parentId: 'wh-parent', trialCredits: 0n, lowBalanceThreshold: 0n, lowBalancePercent: 0, pendingPlan: '' } });
    const sessionId = await buy('wh-space');
    await h.deliver(JSON.stringify(h.fake.event('checkout.session.completed', h.fake.completedSession(sessionId))));
    await applied(checkoutGrantId(sessionId));
    expect(await packCredits('wh-parent')).toBe(500n);
    expect(await grantEvents('wh-parent', sessionId)).toBe(1);
  });

  it('grants a session paid before meterd could record it, from its signed metadata', async () => {
    await createRoot('wh-lost');
    const sessionId = await buy('wh-lost');
    const session = h.fake.completedSession(sessionId);
    await h.db.query('DELETE FROM checkout_sessions WHERE session_id = $1', [sessionId]); // as if meterd died right after Stripe answered
    expect((await h.deliver(JSON.stringify(h.fake.event('checkout.session.completed', session)))).body.outcome).toBe('granted');
    await applied(checkoutGrantId(sessionId));
    expect(await packCredits('wh-lost')).toBe(500n);
    // A paid session of someone else's (no meterd metadata) grants nothing.
    const foreign = { ...session, id: 'cs_test_foreign', metadata: {} };
    expect((await h.deliver(JSON.stringify(h.fake.event('checkout.session.completed', foreign)))).body.outcome).toBe('unknown_session');
  });

  it('grants once after a crash between recording the event and granting (the outbox is replayed on start)', async () => {
    await createRoot('wh-crash');
    const sessionId = await buy('wh-crash', 'pack_12500');
    // The crash: payments recorded the event (COMMIT) but its relay never ran.
    await h.stopPayments();
    await h.restartPayments({ background: false });
    const event = h.fake.event('checkout.session.completed', h.fake.completedSession(sessionId));
    expect((await h.deliver(JSON.stringify(event))).body.outcome).toBe('granted');
    expect((await h.db.query('SELECT applied_at FROM credit_grant_outbox WHERE grant_id = $1', [checkoutGrantId(sessionId)])).rows)
      .toEqual([{ applied_at: null }]);
    expect(await packCredits('wh-crash')).toBe(0n);
    await h.stopPayments();
    // The restart: the relay replays the outbox at once.
    await h.restartPayments();
    await applied(checkoutGrantId(sessionId));
    expect(await packCredits('wh-crash')).toBe(12500n);
    // Stripe delivers the event again after the restart: nothing more.
    expect((await h.deliver(JSON.stringify(event))).body).toMatchObject({ duplicate: true });
    // Even if the row were applied again (a crash after the Redis grant, before applied_at), Redis grants once.
    await h.db.query('UPDATE credit_grant_outbox SET applied_at = NULL WHERE grant_id = $1', [checkoutGrantId(sessionId)]);
    await h.running.workers.grants.relayOnce();
    expect(await packCredits('wh-crash')).toBe(12500n);
    expect(await grantEvents('wh-crash', sessionId)).toBe(1);
  });
});
