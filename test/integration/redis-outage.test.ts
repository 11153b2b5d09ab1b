import { status } from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { rejection } from '../support/grpc-clients.js';
import { startTestMeterd, type TestMeterd } from '../support/meterd.js';
import { startRedisServer, type RedisServerHandle } from '../support/redis-servers.js';

/** No hold means no model call: when Redis is gone, meterd refuses (UNAVAILABLE) and recovers by itself. */
describe('Redis outage', () => {
  let redis: RedisServerHandle;
  let t: TestMeterd;

  beforeAll(async () => {
    redis = await startRedisServer({ appendonly: true, extraArgs: ['--appendfsync', 'always'] });
    t = await startTestMeterd({ target: { url: redis.url } });
  });
  afterAll(async () => {
    await t?.stop();
    await redis?.stop();
  });

  it('fails closed with UNAVAILABLE while Redis is down, then serves the same state after it restarts', async () => {
    const { metering, admin } = t.clients;
    await admin.upsertAccount({ account: { accountId: 'acme', plan: 'free', parentId: '', trialCredits: 0n, lowBalanceThreshold: 0n, lowBalancePercent: 0, pendingPlan: '' } });
    const hold = await metering.reserveCredits({ accountId: 'acme', feature: 'image_1k', requestId: 'before', userId: '', labels: {} });

    await redis.kill9();
    const refused = await rejection(metering.reserveCredits({ accountId: 'acme', feature: 'image_1k', requestId: 'during', userId: '', labels: {} }));
    expect(refused.code).toBe(status.UNAVAILABLE);
    expect(refused.reason).toBe('BACKEND_UNAVAILABLE');

    await redis.restart();
    // ioredis reconnects on its own; a gateway retries UNAVAILABLE with the same ids.
    let commit: Awaited<ReturnType<typeof metering.commitReservation>> | undefined;
    for (let attempt = 0; attempt < 50 && commit === undefined; attempt++) {
      try {
        commit = await metering.commitReservation({ reservationId: hold.reservationId });
      } catch (err) {
        if ((err as { code?: number }).code !== status.UNAVAILABLE) throw err;
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
    }
    expect(commit?.chargedCredits).toBe(30n);
    expect(commit?.balance?.available).toBe(220n);
  });
});
