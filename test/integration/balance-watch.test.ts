import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { verifyAlertSignature } from '../../src/alerts/index.js';
import { connectMeterd } from '../../src/client/connection.js';
import { AlertKind, type Alert } from '../../src/gen/meterd/v1/billing.js';
import { GrantKind } from '../../src/gen/meterd/v1/types.js';
import { startAlertReceiver } from '../support/alert-receiver.js';
import { rejection } from '../support/grpc-clients.js';
import { startTestMeterd, type TestMeterd } from '../support/meterd.js';

/**
 * Balance alerts and auto-refill are decided in the scripts that move credits (not by polling):
 * each crossing appends one ledger event, and the flush turns them into rows of the alerts and
 * refill_attempts outboxes, once.
 */
describe('balance alerts and auto-refill detection', () => {
  let t: TestMeterd;
  let db: pg.Pool;

  beforeAll(async () => {
    t = await startTestMeterd({ postgres: true });
    db = new pg.Pool({ connectionString: t.databaseUrl, max: 2 });
    db.on('error', () => {});
  });
  afterAll(async () => {
    await db?.end();
    await t?.stop();
  });

  const create = (accountId: string, plan: string, low: bigint, percent = 0) => t.clients.admin.upsertAccount({ account: {
    accountId, plan, parentId: '', trialCredits: 0n, lowBalanceThreshold: low, lowBalancePercent: percent, pendingPlan: '',
  } });
  let n = 0;
  const spend = async (accountId: string, credits: bigint) => {
    const hold = await t.clients.metering.reserveCredits({ accountId, feature: 'content_rewrite', credits, requestId: `w${n++}`, userId: '', labels: {} });
    await t.clients.metering.commitReservation({ reservationId: hold.reservationId });
  };
  const alertsOf = async (accountId: string) => {
    await t.meterd.flusher!.drain();
    return (await db.query<{ kind: string; available: string; threshold: string }>(
      'SELECT kind, available::text, threshold::text FROM alerts WHERE account_id = $1 ORDER BY position', [accountId])).rows;
  };

  it('alerts once per crossing: low, exhausted (a refusal with credits left), recovered by a grant', async () => {
    await create('wa-a', 'jobs_pro', 50n); // 150 credits a month
    await spend('wa-a', 90n); // 60 left: above 50
    expect(await alertsOf('wa-a')).toEqual([]);
    await spend('wa-a', 15n); // 45: low
    await spend('wa-a', 5n); // 40: still low, no second alert
    expect(await alertsOf('wa-a')).toEqual([{ kind: 'low', available: '45', threshold: '50' }]);

    // A reserve refused for credits means exhausted, even with 40 left; spending more stays exhausted.
    expect((await rejection(t.clients.metering.reserveCredits({ accountId: 'wa-a', feature: 'content_rewrite', credits: 41n, requestId: 'big', userId: '', labels: {} }))).reason)
      .toBe('INSUFFICIENT_CREDITS');
    await spend('wa-a', 10n);
    // A grant lifts it above the threshold: recovered.
    await t.clients.admin.grantCredits({ accountId: 'wa-a', credits: 100n, kind: GrantKind.GRANT_KIND_PACK, grantId: 'topup', reason: '' });
    expect(await alertsOf('wa-a')).toEqual([
      { kind: 'low', available: '45', threshold: '50' },
      { kind: 'exhausted', available: '40', threshold: '50' },
      { kind: 'recovered', available: '130', threshold: '50' },
    ]);
  });

  it('takes the larger of the credit threshold and the percentage of the allowance; zero is exhausted', async () => {
    await create('wa-p', 'jobs_pro', 10n, 20); // 20% of 150 = 30
    await spend('wa-p', 119n); // 31 left
    await spend('wa-p', 1n); // 30: low
    await spend('wa-p', 30n); // 0: exhausted
    expect(await alertsOf('wa-p')).toEqual([
      { kind: 'low', available: '30', threshold: '30' },
      { kind: 'exhausted', available: '0', threshold: '30' },
    ]);
    expect((await t.clients.admin.getAccount({ accountId: 'wa-p' })).lowBalancePercent).toBe(20);
    expect((await rejection(t.clients.admin.upsertAccount({ account: {
      accountId: 'wa-p', plan: 'jobs_pro', parentId: '', trialCredits: 0n, lowBalanceThreshold: 0n, lowBalancePercent: 101, pendingPlan: '',
    } }))).metadata).toMatchObject({ field: 'account.low_balance_percent', limit: '100' });
  });

  it('asks for one refill per fall below the threshold, even under concurrent reserves, until the refill ends', async () => {
    await create('wa-r', 'jobs_pro', 0n);
    const store = t.meterd.store;
    expect(await store.setAutoRefillThreshold('wa-r', 100n)).toEqual({ accountId: 'wa-r', thresholdCredits: 100n, pendingSinceMs: null });
    await spend('wa-r', 40n); // 110 left: nothing
    await Promise.all(Array.from({ length: 20 }, (_, i) => t.clients.metering.reserveCredits({
      accountId: 'wa-r', feature: 'content_rewrite', credits: 3n, requestId: `c${i}`, userId: '', labels: {},
    }))); // 50 left, holds counted
    await t.meterd.flusher!.drain();
    const refills = async () => (await db.query<{ status: string }>("SELECT status FROM refill_attempts WHERE account_id = 'wa-r'")).rows;
    expect(await refills()).toEqual([{ status: 'due' }]);
    expect((await store.clearRefillPending('wa-r')).pendingSinceMs).toBeNull();
    await spend('wa-r', 1n); // still below: a new refill is asked for
    await t.meterd.flusher!.drain();
    expect(await refills()).toHaveLength(2);
    expect((await store.setAutoRefillThreshold('wa-r', null)).thresholdCredits).toBe(0n);
    await spend('wa-r', 1n);
    await t.meterd.flusher!.drain();
    expect(await refills()).toHaveLength(2);
    await expect(store.setAutoRefillThreshold('nobody', 5n)).rejects.toMatchObject({ reason: 'ACCOUNT_NOT_FOUND' });
  });
});

describe('balance alerts end to end', () => {
  it('a crossing in a script reaches a webhook receiver (signed) and a WatchAlerts stream of the real server', { timeout: 60_000 }, async () => {
    const receiver = await startAlertReceiver(() => 200);
    const secret = 'alert-secret-0123456789';
    const t = await startTestMeterd({ postgres: true, flushLoop: true, env: {
      ALERT_WEBHOOK_URLS: receiver.url, ALERT_WEBHOOK_SECRET: secret, OUTBOX_POLL_INTERVAL_MS: '50', FLUSH_INTERVAL_MS: '20',
    } });
    const connection = connectMeterd({ address: `127.0.0.1:${t.meterd.grpcPort}` });
    const watching = new AbortController();
    const streamed: Alert[] = [];
    try {
      await t.clients.admin.upsertAccount({ account: {
        accountId: 'e2e-a', plan: 'jobs_free', parentId: '', trialCredits: 0n, lowBalanceThreshold: 2n, lowBalancePercent: 0, pendingPlan: '',
      } }); // 3 credits
      let started!: () => void;
      const startedAt = new Promise<void>((resolve) => (started = resolve));
      const watch = connection.watchAlerts({ accountId: 'e2e-a' }, (alert) => {
        streamed.push(alert);
        if (streamed.length === 2) watching.abort();
      }, watching.signal, () => started());
      await startedAt; // the stream starts from "now": the server has fixed that position
      const hold = await t.clients.metering.reserveCredits({ accountId: 'e2e-a', feature: 'content_rewrite', credits: 1n, requestId: 'e1', userId: '', labels: {} });
      await t.clients.metering.commitReservation({ reservationId: hold.reservationId }); // 2 left: low
      const last = await t.clients.metering.reserveCredits({ accountId: 'e2e-a', feature: 'content_rewrite', credits: 2n, requestId: 'e2', userId: '', labels: {} });
      await t.clients.metering.commitReservation({ reservationId: last.reservationId }); // 0: exhausted

      const requests = await receiver.received(2);
      const bodies = requests.map((r) => {
        expect(verifyAlertSignature(r.rawBody, r.headers, secret)).toBe(true);
        return JSON.parse(r.rawBody.toString('utf8')) as { type: string; account_id: string; available_credits: string };
      });
      expect(bodies.map((b) => [b.type, b.account_id, b.available_credits])).toEqual([
        ['balance.low', 'e2e-a', '2'], ['balance.exhausted', 'e2e-a', '0'],
      ]);
      await watch;
      expect(streamed.map((a) => [a.kind, a.availableCredits])).toEqual([[AlertKind.ALERT_KIND_LOW, 2n], [AlertKind.ALERT_KIND_EXHAUSTED, 0n]]);
      // The receiver has answered; the worker records the outcome right after.
      let text = '';
      for (let i = 0; i < 100 && !/meterd_alert_deliveries_total\{outcome="delivered"\} 2/.test(text); i++) {
        await new Promise((resolve) => setTimeout(resolve, 20));
        text = await t.meterd.metrics.registry.metrics();
      }
      expect(text).toMatch(/meterd_alert_deliveries_total\{outcome="delivered"\} 2/);
    } finally {
      watching.abort();
      connection.close();
      await t.stop();
      await receiver.close();
    }
  });
});
