import { status } from '@grpc/grpc-js';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { GrantKind, ReservationState } from '../../src/gen/meterd/v1/types.js';
import { rejection } from '../support/grpc-clients.js';
import { startTestMeterd, TEST_EPOCH_MS, type RedisTarget, type TestMeterd } from '../support/meterd.js';

const DAY_MS = 86_400_000;

/**
 * The credit engine's rules, end to end through gRPC, written from the seed docs' scenarios.
 * Runs against the machine's Redis and against a Redis Cluster (engine.*.test.ts).
 */
export function defineEngineSuite(name: string, target: () => Promise<{ redis: RedisTarget; stop(): Promise<void> }>): void {
  describe(`credit engine (${name})`, () => {
    let t: TestMeterd;
    let stopTarget: () => Promise<void>;
    let seq = 0;
    const unique = (base: string) => `${base}-${++seq}`;

    beforeAll(async () => {
      const started = await target();
      stopTarget = started.stop;
      t = await startTestMeterd({ target: started.redis });
    });
    // Tests move the clock; each starts again from the same moment.
    afterEach(() => t?.clock.set(TEST_EPOCH_MS));
    afterAll(async () => {
      await t?.stop();
      await stopTarget?.();
    });

    const metering = () => t.clients.metering;
    const admin = () => t.clients.admin;

    async function createAccount(plan: string, extra: Record<string, unknown> = {}): Promise<string> {
      const accountId = unique(`acct-${plan}`);
      await admin().upsertAccount({
        account: { accountId, plan, parentId: '', trialCredits: 0n, lowBalanceThreshold: 0n, lowBalancePercent: 0, pendingPlan: '', ...extra },
      });
      return accountId;
    }

    function reserve(accountId: string, feature: string, extra: Record<string, unknown> = {}) {
      return metering().reserveCredits({ accountId, feature, requestId: unique('req'), userId: '', labels: {}, ...extra });
    }

    /** Runs `count` operations of a feature to completion (reserve, then commit what was held). */
    async function use(accountId: string, feature: string, count: number, extra: Record<string, unknown> = {}) {
      for (let i = 0; i < count; i++) {
        const hold = await reserve(accountId, feature, extra);
        await metering().commitReservation({ reservationId: hold.reservationId });
      }
    }

    const balance = (accountId: string) => metering().getBalance({ accountId });

    describe('site builder: Free 250 / Starter 1,000 / Pro 5,000', () => {
      it('a 10-section landing page (205 credits) fits the Free plan', async () => {
        const site = await createAccount('free');
        await use(site, 'section_generate', 10);
        await use(site, 'content_rewrite', 15);
        await use(site, 'image_1k', 3);
        const after = await balance(site);
        expect(after.allowanceRemaining).toBe(45n);
        expect(after.available).toBe(45n);
        expect(after.held).toBe(0n);
      });

      it('refuses a hold that does not fit with a readable message and ErrorInfo, holding nothing', async () => {
        const site = await createAccount('free');
        await use(site, 'section_generate', 20);
        await use(site, 'content_rewrite', 5);
        const refused = await rejection(reserve(site, 'image_2k'));
        expect(refused.code).toBe(status.RESOURCE_EXHAUSTED);
        expect(refused.reason).toBe('INSUFFICIENT_CREDITS');
        expect(refused.message).toBe('image_2k needs 60 credits; 45 available');
        expect(refused.metadata).toMatchObject({ required: '60', available: '45', held: '0' });
        expect(refused.metadata.period_end).toBe(new Date(Date.UTC(2026, 1, 15, 12)).toISOString());
        expect((await balance(site)).held).toBe(0n);
      });

      it('770 credits of work needs Starter: Free stops at its allowance, Starter fits it', async () => {
        const workload = async (accountId: string) => {
          await use(accountId, 'section_generate', 30);
          await use(accountId, 'content_rewrite', 50);
          await use(accountId, 'image_1k', 10);
          await use(accountId, 'image_2k', 2);
        };
        const onFree = await createAccount('free');
        const refused = await rejection(workload(onFree));
        expect(refused.reason).toBe('INSUFFICIENT_CREDITS');
        const onStarter = await createAccount('starter');
        await workload(onStarter);
        expect((await balance(onStarter)).allowanceRemaining).toBe(230n);
      });
    });

    describe('periods and plans', () => {
      it('a Pro plan of 150/month resets on the anniversary without carrying credits over', async () => {
        const seeker = await createAccount('jobs_pro', { billingAnchor: new Date(TEST_EPOCH_MS - 10 * DAY_MS) });
        await use(seeker, 'candidate_evaluation', 130);
        expect((await balance(seeker)).available).toBe(20n);
        const period = await balance(seeker);
        t.clock.set(period.periodEnd!.getTime());
        const renewed = await balance(seeker);
        expect(renewed.available).toBe(150n);
        expect(renewed.periodStart!.getTime()).toBe(period.periodEnd!.getTime());
      });

      it('a pack survives the monthly reset while the allowance is burnt first', async () => {
        const team = await createAccount('free', { billingAnchor: new Date(TEST_EPOCH_MS) });
        await admin().grantCredits({ accountId: team, credits: 500n, kind: GrantKind.GRANT_KIND_PACK, grantId: unique('pack'), reason: 'stripe' });
        await use(team, 'image_1k', 10); // 300: 250 allowance, then 50 from the pack
        const before = await balance(team);
        expect(before.allowanceRemaining).toBe(0n);
        expect(before.packCredits).toBe(450n);
        t.clock.set(TEST_EPOCH_MS + 31 * DAY_MS);
        const after = await balance(team);
        expect(after.allowanceRemaining).toBe(250n);
        expect(after.packCredits).toBe(450n);
        expect(after.available).toBe(700n);
      });

      it('an upgrade mid-period resets the allowance to the new plan at once and keeps the period end', async () => {
        const site = await createAccount('free');
        await use(site, 'image_2k', 3);
        const before = await balance(site);
        expect(before.allowanceRemaining).toBe(70n);
        const account = await admin().changePlan({ accountId: site, plan: 'starter' });
        expect(account.plan).toBe('starter');
        const after = await balance(site);
        expect(after.allowanceRemaining).toBe(1000n);
        expect(after.allowanceTotal).toBe(1000n);
        expect(after.periodEnd).toEqual(before.periodEnd);
      });

      it('a downgrade waits for the next period', async () => {
        const site = await createAccount('starter', { billingAnchor: new Date(TEST_EPOCH_MS) });
        const account = await admin().changePlan({ accountId: site, plan: 'free' });
        expect(account.pendingPlan).toBe('free');
        expect((await balance(site)).allowanceTotal).toBe(1000n);
        t.clock.set(TEST_EPOCH_MS + 31 * DAY_MS);
        const renewed = await balance(site);
        expect(renewed.plan).toBe('free');
        expect(renewed.allowanceTotal).toBe(250n);
        expect(renewed.pendingPlan).toBe('');
      });
    });

    describe('teams and spaces', () => {
      it('seats share one pool and usage is attributed per user', async () => {
        const team = await createAccount('jobs_pro');
        await use(team, 'meeting_assistant', 2, { userId: 'alice' });
        await use(team, 'talent_search', 1, { userId: 'bob' });
        expect((await balance(team)).available).toBe(150n - 26n);
        const usage = await admin().getUsage({ accountId: team });
        expect(usage.credits).toBe(26n);
        expect(usage.operations).toBe(3n);
        expect(usage.users).toEqual([
          { userId: 'alice', operations: 2n, credits: 6n },
          { userId: 'bob', operations: 1n, credits: 20n },
        ]);
        expect(usage.features.map((f) => f.feature)).toEqual(['meeting_assistant', 'talent_search']);
      });

      it("an agency space draws on its root's pool within its own cap; its grants top up the root", async () => {
        const agency = await createAccount('starter');
        const space = unique('client-space');
        const created = await admin().upsertAccount({
          account: { accountId: space, plan: '', parentId: agency, spaceLimitCredits: 100n, trialCredits: 0n, lowBalanceThreshold: 0n, lowBalancePercent: 0, pendingPlan: '' },
        });
        expect(created.parentId).toBe(agency);
        await use(space, 'image_1k', 3);
        const spaceBalance = await balance(space);
        expect(spaceBalance.poolAccountId).toBe(agency);
        expect(spaceBalance.spaceLimitRemaining).toBe(10n);
        expect(spaceBalance.available).toBe(10n);
        expect((await balance(agency)).available).toBe(910n);
        const refused = await rejection(reserve(space, 'image_1k'));
        expect(refused.reason).toBe('INSUFFICIENT_CREDITS');
        expect(refused.metadata.available).toBe('10');
        await admin().grantCredits({ accountId: space, credits: 500n, kind: GrantKind.GRANT_KIND_PACK, grantId: unique('pack'), reason: '' });
        expect((await balance(agency)).packCredits).toBe(500n);
        const rootUsage = await admin().getUsage({ accountId: agency });
        expect(rootUsage.spaces).toEqual([{ spaceId: space, operations: 3n, credits: 90n }]);
        const spaceUsage = await admin().getUsage({ accountId: space });
        expect(spaceUsage.credits).toBe(90n);
        const moved = await rejection(admin().upsertAccount({
          account: { accountId: space, plan: '', parentId: await createAccount('free'), trialCredits: 0n, lowBalanceThreshold: 0n, lowBalancePercent: 0, pendingPlan: '' },
        }));
        expect(moved.reason).toBe('PARENT_IMMUTABLE');
      });
    });

    describe('settling holds', () => {
      it('a failed call is never charged: release returns the hold, and a repeat returns the first answer', async () => {
        const site = await createAccount('free');
        const hold = await reserve(site, 'image_2k');
        expect(hold.state).toBe(ReservationState.RESERVATION_STATE_HELD);
        expect(hold.balance!.available).toBe(190n);
        const released = await metering().releaseReservation({ reservationId: hold.reservationId, reason: 'provider 500' });
        expect(released.releasedCredits).toBe(60n);
        expect(released.balance!.available).toBe(250n);
        const again = await metering().releaseReservation({ reservationId: hold.reservationId, reason: 'retry' });
        expect(again.releasedCredits).toBe(60n);
        expect(again.replayed).toBe(true);
        const commit = await rejection(metering().commitReservation({ reservationId: hold.reservationId }));
        expect(commit.code).toBe(status.FAILED_PRECONDITION);
        expect(commit.reason).toBe('RESERVATION_RELEASED');
        expect((await balance(site)).available).toBe(250n);
      });

      it('commit below the hold returns the rest; a repeated commit returns the first answer', async () => {
        const site = await createAccount('free');
        const hold = await reserve(site, 'chat', { units: 50_000n }); // 2 per 1,000 → 100
        expect(hold.heldCredits).toBe(100n);
        const commit = await metering().commitReservation({ reservationId: hold.reservationId, units: 1_500n });
        expect(commit.chargedCredits).toBe(3n);
        expect(commit.releasedCredits).toBe(97n);
        expect(commit.balance!.available).toBe(247n);
        const again = await metering().commitReservation({ reservationId: hold.reservationId, credits: 99n });
        expect(again.chargedCredits).toBe(3n);
        expect(again.replayed).toBe(true);
        const release = await rejection(metering().releaseReservation({ reservationId: hold.reservationId, reason: '' }));
        expect(release.reason).toBe('RESERVATION_COMMITTED');
      });

      it('commit above the hold takes available credits, then overage, and records the rest as shortfall', async () => {
        const account = await createAccount('metered'); // 100 + 50 overage
        const hold = await reserve(account, 'content_rewrite', { credits: 80n });
        const commit = await metering().commitReservation({ reservationId: hold.reservationId, credits: 200n });
        expect(commit.chargedCredits).toBe(150n);
        expect(commit.overageCredits).toBe(50n);
        expect(commit.shortfallCredits).toBe(50n);
        expect(commit.balance!.available).toBe(0n);
        expect(commit.balance!.overageUsed).toBe(50n);
      });

      it('holds past their TTL release themselves: lazily on touch, and by the sweeper', async () => {
        const site = await createAccount('free');
        const lazy = await reserve(site, 'image_1k', { ttlSeconds: 10 });
        const swept = await reserve(site, 'image_1k', { ttlSeconds: 10 });
        expect((await balance(site)).held).toBe(60n);
        t.clock.advance(11_000);
        expect(await t.meterd.sweeper.sweepOnce()).toBeGreaterThanOrEqual(2);
        expect((await balance(site)).held).toBe(0n);
        expect((await balance(site)).available).toBe(250n);
        const late = await rejection(metering().commitReservation({ reservationId: lazy.reservationId }));
        expect(late.reason).toBe('RESERVATION_EXPIRED');
        const lateRelease = await rejection(metering().releaseReservation({ reservationId: swept.reservationId, reason: '' }));
        expect(lateRelease.reason).toBe('RESERVATION_EXPIRED');
        const touched = await reserve(site, 'image_1k', { ttlSeconds: 5 });
        t.clock.advance(6_000);
        expect((await balance(site)).held).toBe(0n); // released by the balance read itself
        const lateTouched = await rejection(metering().commitReservation({ reservationId: touched.reservationId }));
        expect(lateTouched.reason).toBe('RESERVATION_EXPIRED');
      });

      it('extend keeps a stream alive and grows the hold under reserve rules, once per request id', async () => {
        const site = await createAccount('free');
        const hold = await reserve(site, 'chat', { units: 10_000n, ttlSeconds: 30 }); // 20
        t.clock.advance(20_000);
        const grown = await metering().extendReservation({ reservationId: hold.reservationId, ttlSeconds: 60, additionalCredits: 30n, requestId: 'ext-1' });
        expect(grown.heldCredits).toBe(50n);
        expect(grown.expiresAt!.getTime()).toBe(t.clock.nowMs() + 60_000);
        const repeat = await metering().extendReservation({ reservationId: hold.reservationId, ttlSeconds: 60, additionalCredits: 30n, requestId: 'ext-1' });
        expect(repeat.heldCredits).toBe(50n);
        expect(repeat.replayed).toBe(true);
        const reused = await rejection(metering().extendReservation({ reservationId: hold.reservationId, ttlSeconds: 60, additionalCredits: 31n, requestId: 'ext-1' }));
        expect(reused.reason).toBe('IDEMPOTENCY_KEY_REUSED');
        const tooMuch = await rejection(metering().extendReservation({ reservationId: hold.reservationId, ttlSeconds: 0, additionalCredits: 201n, requestId: 'ext-2' }));
        expect(tooMuch.reason).toBe('INSUFFICIENT_CREDITS');
        t.clock.advance(40_000); // past the first TTL, within the extended one
        const commit = await metering().commitReservation({ reservationId: hold.reservationId, units: 24_000n });
        expect(commit.chargedCredits).toBe(48n);
        expect(commit.balance!.available).toBe(202n);
      });
    });

    describe('buckets: trial, promotional grants, packs, overage, free features', () => {
      it('trial credits are used first and vanish at the end of the trial', async () => {
        const trialist = await createAccount('free', { trialCredits: 100n, trialEndsAt: new Date(TEST_EPOCH_MS + 7 * DAY_MS) });
        await use(trialist, 'image_1k', 2);
        const during = await balance(trialist);
        expect(during.trialCredits).toBe(40n);
        expect(during.allowanceRemaining).toBe(250n);
        t.clock.set(TEST_EPOCH_MS + 8 * DAY_MS);
        const after = await balance(trialist);
        expect(after.trialCredits).toBe(0n);
        expect(after.available).toBe(250n);
      });

      it('promotional grants burn before packs, soonest expiry first, and expire', async () => {
        const account = await createAccount('jobs_free'); // 3 credits
        await admin().grantCredits({ accountId: account, credits: 100n, kind: GrantKind.GRANT_KIND_PACK, grantId: unique('pack'), reason: '' });
        await admin().grantCredits({ accountId: account, credits: 10n, kind: GrantKind.GRANT_KIND_PROMO, grantId: unique('promo-late'), reason: '', expiresAt: new Date(TEST_EPOCH_MS + 20 * DAY_MS) });
        await admin().grantCredits({ accountId: account, credits: 5n, kind: GrantKind.GRANT_KIND_PROMO, grantId: unique('promo-soon'), reason: '', expiresAt: new Date(TEST_EPOCH_MS + 2 * DAY_MS) });
        await use(account, 'content_rewrite', 3 + 5 + 2);
        const b = await balance(account);
        expect(b.allowanceRemaining).toBe(0n);
        expect(b.grantCredits).toBe(8n);
        expect(b.packCredits).toBe(100n);
        t.clock.set(TEST_EPOCH_MS + 21 * DAY_MS);
        const later = await balance(account);
        expect(later.grantCredits).toBe(0n);
        expect(later.packCredits).toBe(100n);
      });

      it('overage beyond the allowance up to the plan limit, billed apart, reset each period', async () => {
        const pro = await createAccount('pro', { billingAnchor: new Date(TEST_EPOCH_MS) });
        const big = await reserve(pro, 'content_rewrite', { credits: 5_500n });
        await metering().commitReservation({ reservationId: big.reservationId });
        const b = await balance(pro);
        expect(b.allowanceRemaining).toBe(0n);
        expect(b.overageUsed).toBe(500n);
        expect(b.available).toBe(1500n);
        expect((await rejection(reserve(pro, 'content_rewrite', { credits: 1_501n }))).reason).toBe('INSUFFICIENT_CREDITS');
        t.clock.set(TEST_EPOCH_MS + 31 * DAY_MS);
        const renewed = await balance(pro);
        expect(renewed.overageUsed).toBe(0n);
        expect(renewed.available).toBe(7000n);
      });

      it('a free feature is never blocked and still counted in usage', async () => {
        const site = await createAccount('jobs_free');
        await use(site, 'content_rewrite', 3);
        expect((await balance(site)).available).toBe(0n);
        await use(site, 'avatar_select', 2);
        const usage = await admin().getUsage({ accountId: site });
        expect(usage.features).toContainEqual({ feature: 'avatar_select', operations: 2n, credits: 0n });
      });

      it('an unknown feature is refused (fail closed)', async () => {
        const site = await createAccount('free');
        const refused = await rejection(reserve(site, 'image_8k'));
        expect(refused.code).toBe(status.INVALID_ARGUMENT);
        expect(refused.reason).toBe('UNKNOWN_FEATURE');
      });
    });

    describe('support: refunds and adjustments', () => {
      it('a refund gives back at most what the reservation was charged, once per refund id', async () => {
        const site = await createAccount('free');
        const hold = await reserve(site, 'image_2k');
        await metering().commitReservation({ reservationId: hold.reservationId });
        const first = await admin().refundCharge({ reservationId: hold.reservationId, credits: 40n, refundId: 'rf-1', reason: 'bad image' });
        expect(first.available).toBe(230n);
        const replay = await admin().refundCharge({ reservationId: hold.reservationId, credits: 40n, refundId: 'rf-1', reason: 'bad image' });
        expect(replay.available).toBe(230n);
        const tooMuch = await rejection(admin().refundCharge({ reservationId: hold.reservationId, credits: 21n, refundId: 'rf-2', reason: '' }));
        expect(tooMuch.reason).toBe('REFUND_EXCEEDS_CHARGE');
        const rest = await admin().refundCharge({ reservationId: hold.reservationId, refundId: 'rf-3', reason: '' });
        expect(rest.available).toBe(250n);
      });

      it('an adjustment never takes a balance below zero', async () => {
        const site = await createAccount('jobs_free');
        const refused = await rejection(admin().adjustCredits({ accountId: site, delta: -4n, adjustmentId: 'adj-1', reason: 'fix', actor: 'support-1' }));
        expect(refused.reason).toBe('ADJUSTMENT_EXCEEDS_BALANCE');
        expect((await balance(site)).available).toBe(3n);
        const added = await admin().adjustCredits({ accountId: site, delta: 10n, adjustmentId: 'adj-2', reason: 'goodwill', actor: 'support-1' });
        expect(added.available).toBe(13n);
        const removed = await admin().adjustCredits({ accountId: site, delta: -13n, adjustmentId: 'adj-3', reason: 'fix', actor: 'support-1' });
        expect(removed.available).toBe(0n);
      });
    });

    describe('idempotency', () => {
      it('a repeated request_id returns the original reservation; different parameters are refused', async () => {
        const site = await createAccount('free');
        const request = { accountId: site, feature: 'image_1k', requestId: 'same-request', userId: 'u1', labels: { model: 'flux' } };
        const first = await metering().reserveCredits(request);
        const second = await metering().reserveCredits(request);
        expect(second.reservationId).toBe(first.reservationId);
        expect(second.replayed).toBe(true);
        expect(second.balance!.held).toBe(30n);
        const reused = await rejection(metering().reserveCredits({ ...request, feature: 'image_2k' }));
        expect(reused.code).toBe(status.ALREADY_EXISTS);
        expect(reused.reason).toBe('IDEMPOTENCY_KEY_REUSED');
      });

      it('grants are idempotent on grant_id', async () => {
        const site = await createAccount('free');
        const grant = { accountId: site, credits: 500n, kind: GrantKind.GRANT_KIND_PACK, grantId: 'cs_test_1', reason: 'checkout' };
        await admin().grantCredits(grant);
        const again = await admin().grantCredits(grant);
        expect(again.packCredits).toBe(500n);
        expect((await rejection(admin().grantCredits({ ...grant, credits: 600n }))).reason).toBe('IDEMPOTENCY_KEY_REUSED');
      });
    });
  });
}
