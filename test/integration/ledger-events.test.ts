import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GrantKind } from '../../src/gen/meterd/v1/types.js';
import { homePartition, partitionPrefix } from '../../src/redis/keys.js';
import { LOCAL_REDIS, startTestMeterd, TEST_EPOCH_MS, type TestMeterd } from '../support/meterd.js';

const DAY_MS = 86_400_000;

/**
 * The ledger stream is the input of the Postgres flush (next issue): summing one pool's events must
 * reproduce every bucket of that pool exactly, with a gap-free sequence.
 */
describe('ledger events', () => {
  let t: TestMeterd;
  let redis: Redis;
  beforeAll(async () => {
    t = await startTestMeterd();
    redis = new Redis(LOCAL_REDIS.url as string, { protocol: 2 });
  });
  afterAll(async () => {
    redis?.disconnect();
    await t?.stop();
  });

  it('summing a pool’s events reproduces its buckets, held and overage, with sequence numbers 1..n', async () => {
    const { metering, admin } = t.clients;
    const account = 'ledger-acme';
    const reserve = (requestId: string, credits: bigint, ttlSeconds = 300) =>
      metering.reserveCredits({ accountId: account, feature: 'content_rewrite', requestId, credits, ttlSeconds, userId: 'u1', labels: { model: 'm' } });
    await admin.upsertAccount({ account: {
      accountId: account, plan: 'metered', parentId: '', billingAnchor: new Date(TEST_EPOCH_MS),
      trialCredits: 20n, trialEndsAt: new Date(TEST_EPOCH_MS + 3 * DAY_MS), lowBalanceThreshold: 0n, lowBalancePercent: 0, pendingPlan: '',
    } });
    await admin.grantCredits({ accountId: account, credits: 40n, kind: GrantKind.GRANT_KIND_PACK, grantId: 'pack-1', reason: '' });
    await admin.grantCredits({ accountId: account, credits: 15n, kind: GrantKind.GRANT_KIND_PROMO, grantId: 'promo-1', reason: '', expiresAt: new Date(TEST_EPOCH_MS + 10 * DAY_MS) });
    const a = await reserve('a', 50n);
    await metering.commitReservation({ reservationId: a.reservationId, credits: 30n });
    const b = await reserve('b', 60n);
    await metering.releaseReservation({ reservationId: b.reservationId, reason: 'provider error' });
    const c = await reserve('c', 100n);
    const over = await metering.commitReservation({ reservationId: c.reservationId, credits: 180n }); // 45 more from the buckets, 35 from overage
    expect(over.overageCredits).toBe(35n);
    await admin.refundCharge({ reservationId: c.reservationId, credits: 10n, refundId: 'rf-1', reason: '' });
    // Credits left to expire: a later promo, and a trial raised by 10 (trial_changed) that then ends.
    await admin.grantCredits({ accountId: account, credits: 5n, kind: GrantKind.GRANT_KIND_PROMO, grantId: 'promo-2', reason: '', expiresAt: new Date(TEST_EPOCH_MS + 10 * DAY_MS) });
    await admin.upsertAccount({ account: {
      accountId: account, plan: 'metered', parentId: '', billingAnchor: new Date(TEST_EPOCH_MS),
      trialCredits: 30n, trialEndsAt: new Date(TEST_EPOCH_MS + 3 * DAY_MS), lowBalanceThreshold: 0n, lowBalancePercent: 0, pendingPlan: '',
    } });
    await reserve('d', 5n, 10); // left to expire
    t.clock.advance(4 * DAY_MS); // trial ends, hold d expires
    await admin.adjustCredits({ accountId: account, delta: 7n, adjustmentId: 'adj-1', reason: 'goodwill', actor: 'support' });
    await admin.changePlan({ accountId: account, plan: 'starter' }); // upgrade resets the allowance
    const e = await reserve('e', 30n);
    await metering.extendReservation({ reservationId: e.reservationId, ttlSeconds: 60, additionalCredits: 5n, requestId: 'x1' });
    t.clock.advance(8 * DAY_MS); // the promo and hold e expire
    await metering.getBalance({ accountId: account });
    t.clock.set(TEST_EPOCH_MS + 35 * DAY_MS); // next period
    await metering.getBalance({ accountId: account });

    const prefix = partitionPrefix(t.keyPrefix, homePartition(account));
    const events = (await redis.xrange(`${prefix}ledger`, '-', '+'))
      .map(([, flat]) => Object.fromEntries(Array.from({ length: flat.length / 2 }, (_, i) => [flat[2 * i], flat[2 * i + 1]])) as Record<string, string>)
      .filter((event) => event.account === account);
    const total = (field: string) => events.reduce((sum, event) => sum + BigInt(event[field] ?? '0'), 0n);

    expect(events.map((event) => Number(event.seq))).toEqual(events.map((_, i) => i + 1));
    expect(events.map((event) => event.id)).toEqual(events.map((_, i) => `${account}/${i + 1}`));
    expect(new Set(events.map((event) => event.kind))).toEqual(new Set([
      'account_created', 'grant', 'hold', 'commit', 'release', 'refund', 'expire', 'trial_expired', 'adjust',
      'plan_upgrade', 'extend', 'grant_expired', 'period_reset', 'trial_changed', 'account_settings',
    ]));

    const pool = await redis.hgetall(`${prefix}a/${account}`);
    expect({
      trial: total('trial'), allowance: total('allowance'), promo: total('promo'), pack: total('pack'),
      overage: total('overage'), held: total('held'),
    }).toEqual({
      trial: BigInt(pool.trial ?? '0'), allowance: BigInt(pool.allow ?? '0'), promo: BigInt(pool.promo ?? '0'),
      pack: BigInt(pool.pack ?? '0'), overage: BigInt(pool.ovg ?? '0'), held: BigInt(pool.held ?? '0'),
    });
    expect(total('charged')).toBe(30n + over.chargedCredits - 10n);
    // The refund gives back overage first (reverse burn order): 35 - 10 billed separately.
    expect(total('charged_overage')).toBe(25n);
  });
});
