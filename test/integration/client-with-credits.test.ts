import { randomBytes } from 'node:crypto';
import { status } from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createMeterdClient, MeterdError, withCredits, type ExtensionTimers, type MeterdClient } from '../../src/client/index.js';
import { startTestMeterd, type TestMeterd } from '../support/meterd.js';

/**
 * withCredits against a real meterd: success charges the returned cost, a throw or an abort releases
 * (nothing charged), and a long streaming call keeps its hold alive by extending it. Time is the
 * server's ManualClock, moved by hand, and the extension timer is fired by hand: no real waiting.
 */

/** Every test account starts on this plan: 1,000 credits. */
const PLAN = 'starter';
const PLAN_CREDITS = 1000n;
/** `chat` costs 2 credits per 1,000 units (TEST_PRODUCT). */
const CHAT_CREDITS_PER_THOUSAND_UNITS = 2n;
const STREAM_TTL_SECONDS = 60;
/** Each streamed chunk takes this long on the server's clock: two of them outlive the TTL. */
const CHUNK_MS = 40_000;
const CHUNKS = 4;
const UNITS_PER_CHUNK = 1000;

/** An extension timer the test fires: `fire()` runs every live tick and waits for them. */
function manualTimers(): ExtensionTimers & { fire(): Promise<void>; intervals: number[] } {
  const ticks = new Set<() => Promise<void>>();
  const intervals: number[] = [];
  return {
    intervals,
    every(intervalMs, tick) {
      intervals.push(intervalMs);
      ticks.add(tick);
      return () => ticks.delete(tick);
    },
    async fire() {
      await Promise.all([...ticks].map((tick) => tick()));
    },
  };
}

/** A promise and its resolve, to let a test step in at a chosen point of a callback. */
function signalPoint(): { reached: Promise<void>; reach(): void } {
  let reach!: () => void;
  const reached = new Promise<void>((resolve) => { reach = resolve; });
  return { reached, reach };
}

/** Resolves never; rejects when `signal` aborts (a model call that honours its AbortSignal). */
function untilAborted(signal: AbortSignal): Promise<never> {
  return new Promise<never>((_, reject) => signal.addEventListener('abort', () => reject(signal.reason), { once: true }));
}

describe('withCredits against a real meterd', () => {
  let t: TestMeterd;
  let client: MeterdClient;
  const run = randomBytes(4).toString('hex');
  let seq = 0;

  beforeAll(async () => {
    t = await startTestMeterd();
    client = createMeterdClient({ address: `127.0.0.1:${t.meterd.grpcPort}` });
  });
  afterAll(async () => {
    client?.close();
    await t?.stop();
  });

  const newAccount = async (plan = PLAN): Promise<string> => {
    const accountId = `acct-${run}-${++seq}`;
    await client.admin.upsertAccount({ account: { accountId, plan } });
    return accountId;
  };

  it('charges the cost the call returns and gives back the rest of the hold', async () => {
    const account = await newAccount();
    const outcome = await withCredits(client, { account, feature: 'chat', units: 10_000 }, async (hold) => {
      expect(hold.heldCredits).toBe(20n);
      return { units: 3000, text: 'hello' };
    });
    expect(outcome.result.text).toBe('hello');
    expect(outcome.charge.chargedCredits).toBe(6n);
    expect(outcome.charge.releasedCredits).toBe(14n);
    const balance = await client.getBalance(account);
    expect(balance.available).toBe(PLAN_CREDITS - 6n);
    expect(balance.held).toBe(0n);
  });

  it('maps a usage-shaped result through the cost option', async () => {
    const account = await newAccount();
    const outcome = await withCredits(client, {
      account, feature: 'chat', units: 10_000,
      cost: (response: { usage: { total_tokens: number } }) => ({ units: response.usage.total_tokens }),
    }, async () => ({ usage: { total_tokens: 5000 } }));
    expect(outcome.charge.chargedCredits).toBe(10n);
    expect((await client.getBalance(account)).available).toBe(PLAN_CREDITS - 10n);
  });

  it('releases the hold and rethrows when the call throws: nothing charged', async () => {
    const account = await newAccount();
    const failure = new Error('model returned 500');
    let reservationId = '';
    await expect(withCredits(client, { account, feature: 'image_2k' }, async (hold) => {
      reservationId = hold.reservationId;
      throw failure;
    })).rejects.toBe(failure);
    const balance = await client.getBalance(account);
    expect(balance.available).toBe(PLAN_CREDITS);
    expect(balance.held).toBe(0n);
    // Settled as released: a late commit is refused.
    await expect(client.commit({ reservationId })).rejects.toMatchObject({ reason: 'RESERVATION_RELEASED' });
  });

  it('releases the hold when the caller aborts mid-call, without waiting for the call to end', async () => {
    const account = await newAccount();
    const caller = new AbortController();
    const started = signalPoint();
    let reservationId = '';
    const metered = withCredits(client, { account, feature: 'image_2k', signal: caller.signal }, async (hold) => {
      reservationId = hold.reservationId;
      started.reach();
      return untilAborted(hold.signal);
    });
    await started.reached;
    expect((await client.getBalance(account)).held).toBe(60n);
    caller.abort(new Error('client disconnected'));
    await expect(metered).rejects.toThrow('client disconnected');
    const balance = await client.getBalance(account);
    expect(balance.available).toBe(PLAN_CREDITS);
    expect(balance.held).toBe(0n);
    await expect(client.commit({ reservationId })).rejects.toMatchObject({ reason: 'RESERVATION_RELEASED' });
  });

  it('holds nothing when the signal is already aborted', async () => {
    const account = await newAccount();
    const caller = new AbortController();
    caller.abort(new Error('gone before we started'));
    await expect(withCredits(client, { account, feature: 'image_2k', signal: caller.signal }, async () => 'never'))
      .rejects.toThrow('gone before we started');
    expect((await client.getBalance(account)).held).toBe(0n);
  });

  it('extends the hold while a long stream runs and commits what the stream used', async () => {
    const account = await newAccount();
    const timers = manualTimers();
    const outcome = await withCredits(client, { account, feature: 'chat', units: 1000, ttlSeconds: STREAM_TTL_SECONDS, timers }, async (hold) => {
      for (let chunk = 0; chunk < CHUNKS; chunk++) {
        hold.addUsage({ units: UNITS_PER_CHUNK });
        t.clock.advance(CHUNK_MS);
        await timers.fire(); // what the real timer does at half the TTL
      }
      return { extensions: hold.extensions, expiresAt: hold.expiresAt };
    });
    // 4 × 40 s = 160 s on the server's clock: well past the 60 s TTL, yet the hold was alive to commit.
    expect(timers.intervals).toEqual([STREAM_TTL_SECONDS * 1000 * 0.5]);
    expect(outcome.result.extensions).toBe(CHUNKS);
    expect(outcome.result.expiresAt?.getTime()).toBe(t.clock.nowMs() + STREAM_TTL_SECONDS * 1000);
    const usedCredits = (BigInt(CHUNKS * UNITS_PER_CHUNK) * CHAT_CREDITS_PER_THOUSAND_UNITS) / 1000n;
    expect(outcome.charge.chargedCredits).toBe(usedCredits);
    expect((await client.getBalance(account)).available).toBe(PLAN_CREDITS - usedCredits);
  });

  it('grows the hold when a stream outgrows its estimate', async () => {
    const account = await newAccount();
    const outcome = await withCredits(client, { account, feature: 'chat', units: 1000 }, async (hold) => {
      expect(hold.heldCredits).toBe(2n);
      await hold.extend(10);
      hold.addUsage({ units: 5000 });
      return hold.heldCredits;
    });
    expect(outcome.result).toBe(12n);
    expect(outcome.charge.chargedCredits).toBe(10n);
    expect(outcome.charge.releasedCredits).toBe(2n);
    expect((await client.getBalance(account)).held).toBe(0n);
  });

  it('without extensions the same stream outlives its hold: the commit is refused and nothing is charged', async () => {
    const account = await newAccount();
    const timers = manualTimers(); // never fired
    const metered = withCredits(client, { account, feature: 'chat', units: 1000, ttlSeconds: STREAM_TTL_SECONDS, timers }, async (hold) => {
      for (let chunk = 0; chunk < CHUNKS; chunk++) {
        hold.addUsage({ units: UNITS_PER_CHUNK });
        t.clock.advance(CHUNK_MS);
      }
      return 'done';
    });
    await expect(metered).rejects.toMatchObject({ reason: 'RESERVATION_EXPIRED', code: status.FAILED_PRECONDITION });
    const balance = await client.getBalance(account);
    expect(balance.available).toBe(PLAN_CREDITS);
    expect(balance.held).toBe(0n);
  });

  it('stops the call when the hold is lost (an extension is refused), and rejects with why', async () => {
    const account = await newAccount();
    const timers = manualTimers();
    const metered = withCredits(client, { account, feature: 'chat', units: 1000, ttlSeconds: STREAM_TTL_SECONDS, timers }, async (hold) => {
      t.clock.advance(STREAM_TTL_SECONDS * 1000 + 1); // the timer did not run in time (a paused process)
      void timers.fire();
      return untilAborted(hold.signal);
    });
    const error = await metered.then(() => null, (err: unknown) => err);
    expect(error).toBeInstanceOf(MeterdError);
    expect((error as MeterdError).reason).toBe('RESERVATION_EXPIRED');
    expect((await client.getBalance(account)).held).toBe(0n);
  });

  it('refuses with a typed INSUFFICIENT_CREDITS error carrying required and available', async () => {
    const account = await newAccount('free');
    let called = false;
    const error = await withCredits(client, { account, feature: 'content_rewrite', credits: 1000 }, async () => { called = true; })
      .then(() => null, (err: unknown) => err);
    expect(called).toBe(false);
    expect(error).toBeInstanceOf(MeterdError);
    const refusal = error as MeterdError;
    expect(refusal.code).toBe(status.RESOURCE_EXHAUSTED);
    expect(refusal.reason).toBe('INSUFFICIENT_CREDITS');
    expect(refusal.required).toBe(1000n);
    expect(refusal.available).toBe(250n);
    expect(refusal.held).toBe(0n);
    expect(refusal.retryable).toBe(false);
    expect(refusal.requestId).toMatch(/^[0-9a-f-]{36}$/);
  });
});
