import { randomBytes } from 'node:crypto';
import { status } from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createMeterdClient, MeterdError, STREAM_IN_FLIGHT_MAX, withCredits, type MeterdClient } from '../../src/client/index.js';
import { STREAM_OPERATIONS_IN_FLIGHT_MAX } from '../../src/grpc/stream-operations.js';
import { startTestMeterd, type TestMeterd } from '../support/meterd.js';
import { startTcpProxy, type TcpProxy } from '../support/tcp-proxy.js';

/**
 * The high-throughput path (every operation over one StreamOperations stream) passes the same
 * correctness checks as the unary API: concurrent reserves never overspend, a repeated request id
 * holds once, the hard stop refuses with the same typed error, and withCredits works unchanged.
 */

/** The `free` plan's credits; `content_rewrite` costs 1, so exactly this many 1-credit holds fit. */
const FREE_CREDITS = 250;
const PARALLEL_RESERVES = 400;
/** Small on purpose: most of the parallel reserves wait for a slot (backpressure), none is lost. */
const SMALL_IN_FLIGHT_MAX = 8;

describe('the gateway client in high-throughput mode', () => {
  let t: TestMeterd;
  let proxy: TcpProxy;
  let client: MeterdClient;
  const run = randomBytes(4).toString('hex');
  let seq = 0;

  beforeAll(async () => {
    t = await startTestMeterd();
    proxy = await startTcpProxy({ host: '127.0.0.1', port: t.meterd.grpcPort });
    client = createMeterdClient({ address: `127.0.0.1:${proxy.port}`, highThroughput: true });
  });
  afterAll(async () => {
    client?.close();
    await proxy?.close();
    await t?.stop();
  });

  const newAccount = async (plan: string): Promise<string> => {
    const accountId = `acct-${run}-${++seq}`;
    await client.admin.upsertAccount({ account: { accountId, plan } });
    return accountId;
  };

  it('never has more in flight than the server accepts on one stream', () => {
    expect(STREAM_IN_FLIGHT_MAX).toBeLessThanOrEqual(STREAM_OPERATIONS_IN_FLIGHT_MAX);
  });

  it('concurrency: parallel reserves over one stream hold exactly what the pool has, never more', async () => {
    const account = await newAccount('free');
    const settled = await Promise.allSettled(Array.from({ length: PARALLEL_RESERVES },
      () => client.reserve({ accountId: account, feature: 'content_rewrite' })));
    const granted = settled.filter((s) => s.status === 'fulfilled');
    const refused = settled.flatMap((s) => (s.status === 'rejected' ? [s.reason as MeterdError] : []));
    expect(granted).toHaveLength(FREE_CREDITS);
    expect(refused).toHaveLength(PARALLEL_RESERVES - FREE_CREDITS);
    for (const refusal of refused) expect(refusal.reason).toBe('INSUFFICIENT_CREDITS');
    const balance = await client.getBalance(account);
    expect(balance.available).toBe(0n);
    expect(balance.held).toBe(BigInt(FREE_CREDITS));
  });

  it('backpressure: with a small in-flight bound every operation still completes, in order of its own answer', async () => {
    const account = await newAccount('starter');
    const bounded = createMeterdClient({ address: `127.0.0.1:${t.meterd.grpcPort}`, highThroughput: true, streamInFlightMax: SMALL_IN_FLIGHT_MAX });
    try {
      const reservations = await Promise.all(Array.from({ length: 100 },
        (_, i) => bounded.reserve({ accountId: account, feature: 'content_rewrite', requestId: `bp-${run}-${i}` })));
      expect(reservations.map((r) => r.requestId)).toEqual(Array.from({ length: 100 }, (_, i) => `bp-${run}-${i}`));
      expect((await bounded.getBalance(account)).held).toBe(100n);
    } finally {
      bounded.close();
    }
  });

  it('idempotency: the same request id twice (at once, then again) is one hold', async () => {
    const account = await newAccount('starter');
    const requestId = `req-${run}-${++seq}`;
    const [first, second] = await Promise.all([
      client.reserve({ accountId: account, feature: 'image_2k', requestId }),
      client.reserve({ accountId: account, feature: 'image_2k', requestId }),
    ]);
    const third = await client.reserve({ accountId: account, feature: 'image_2k', requestId });
    expect(second.reservationId).toBe(first.reservationId);
    expect(third.reservationId).toBe(first.reservationId);
    expect([first.replayed, second.replayed].filter(Boolean)).toHaveLength(1);
    expect(third.replayed).toBe(true);
    expect((await client.getBalance(account)).held).toBe(60n);
    // Same id, other parameters: the unary API's refusal, through the stream.
    await expect(client.reserve({ accountId: account, feature: 'image_1k', requestId }))
      .rejects.toMatchObject({ code: status.ALREADY_EXISTS, reason: 'IDEMPOTENCY_KEY_REUSED' });
  });

  it('hard stop: a hold that does not fit is refused with the typed error, nothing held', async () => {
    const account = await newAccount('free');
    await client.reserve({ accountId: account, feature: 'content_rewrite', credits: 200 });
    const error = await client.reserve({ accountId: account, feature: 'image_2k' }).then(() => null, (err: unknown) => err);
    expect(error).toBeInstanceOf(MeterdError);
    expect(error).toMatchObject({ code: status.RESOURCE_EXHAUSTED, reason: 'INSUFFICIENT_CREDITS', required: 60n, available: 50n, held: 200n });
    expect((error as MeterdError).message).toContain('60');
    expect((await client.getBalance(account)).held).toBe(200n);
  });

  it('settles once: commit, repeated commit, release after commit', async () => {
    const account = await newAccount('starter');
    const hold = await client.reserve({ accountId: account, feature: 'image_2k' });
    const charge = await client.commit({ reservationId: hold.reservationId, credits: 50 });
    const again = await client.commit({ reservationId: hold.reservationId, credits: 50 });
    expect(charge.chargedCredits).toBe(50n);
    expect(again.replayed).toBe(true);
    await expect(client.release({ reservationId: hold.reservationId, reason: 'late' }))
      .rejects.toMatchObject({ code: status.FAILED_PRECONDITION, reason: 'RESERVATION_COMMITTED' });
    expect((await client.getBalance(account)).available).toBe(950n);
  });

  it('withCredits works unchanged over the stream: success charges, a throw releases', async () => {
    const account = await newAccount('starter');
    const outcome = await withCredits(client, { account, feature: 'chat', units: 10_000 }, async () => ({ units: 2500 }));
    expect(outcome.charge.chargedCredits).toBe(5n);
    await expect(withCredits(client, { account, feature: 'image_2k' }, async () => { throw new Error('upstream 503'); }))
      .rejects.toThrow('upstream 503');
    const balance = await client.getBalance(account);
    expect(balance.available).toBe(995n);
    expect(balance.held).toBe(0n);
  });

  it('a broken stream fails its in-flight operations with UNAVAILABLE; they are retried on a new stream with the same ids', async () => {
    const account = await newAccount('starter');
    const requestId = `req-${run}-${++seq}`;
    const connectionsBefore = proxy.connectionsAccepted;
    const swallowed = proxy.swallowNextReplyContaining(requestId);
    const reservation = await client.reserve({ accountId: account, feature: 'image_2k', requestId });
    await swallowed;
    expect(proxy.connectionsAccepted).toBeGreaterThan(connectionsBefore);
    expect(reservation.replayed).toBe(true);
    expect((await client.getBalance(account)).held).toBe(60n);
    // And the new stream carries on.
    const next = await client.reserve({ accountId: account, feature: 'image_2k' });
    expect(next.replayed).toBe(false);
  });
});
