import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { status, type ServiceError } from '@grpc/grpc-js';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GrantKind } from '../../src/gen/meterd/v1/types.js';
import { homePartition, partitionPrefix, reservationPartition } from '../../src/redis/keys.js';
import { rejection } from '../support/grpc-clients.js';
import { deleteKeys, LOCAL_REDIS, startTestMeterd, type TestMeterd } from '../support/meterd.js';
import { startTcpProxy, type TcpProxy } from '../support/tcp-proxy.js';

/**
 * A retry after a lost reply never charges twice.
 *
 * meterd talks to Redis through a TCP proxy that swallows one chosen reply and cuts the connection:
 * the script has run in Redis, but meterd never sees its answer (the case ioredis's
 * autoResendUnfulfilledCommands would "fix" by running it again; meterd turns that off). The caller
 * gets UNAVAILABLE and retries with the same ids, as a gateway does; the retry must find the first
 * outcome instead of making a second one.
 */

const REDIS_URL = LOCAL_REDIS.url ?? 'redis://127.0.0.1:6379';
const RETRY_ATTEMPTS_MAX = 20;
const RETRY_PAUSE_MS = 100;

function isUnavailable(err: unknown): boolean {
  return typeof err === 'object' && err !== null && (err as Partial<ServiceError>).code === status.UNAVAILABLE;
}

/** What a gateway client does: retry the same request on UNAVAILABLE, a bounded number of times. */
async function retryOnUnavailable<T>(call: () => Promise<T>): Promise<{ result: T; attempts: number }> {
  for (let attempt = 1; ; attempt++) {
    try {
      return { result: await call(), attempts: attempt };
    } catch (err) {
      if (!isUnavailable(err) || attempt >= RETRY_ATTEMPTS_MAX) throw err;
      await sleep(RETRY_PAUSE_MS);
    }
  }
}

/** The ledger events of one partition whose fields match `match` (XRANGE over the whole stream). */
async function ledgerEvents(redis: Redis, keyPrefix: string, partition: number, match: Record<string, string>): Promise<Array<Record<string, string>>> {
  const entries = await redis.xrange(`${partitionPrefix(keyPrefix, partition)}ledger`, '-', '+');
  const events = entries.map(([, flat]) => {
    const event: Record<string, string> = {};
    for (let i = 0; i + 1 < flat.length; i += 2) event[flat[i] as string] = flat[i + 1] as string;
    return event;
  });
  return events.filter((event) => Object.entries(match).every(([field, value]) => event[field] === value));
}

describe('a retry after a lost reply never charges twice', () => {
  let proxy: TcpProxy;
  let t: TestMeterd;
  let direct: Redis;
  const run = randomBytes(4).toString('hex');
  let seq = 0;
  const unique = (base: string) => `${base}-${run}-${++seq}`;

  beforeAll(async () => {
    const upstream = new URL(REDIS_URL);
    proxy = await startTcpProxy({ host: upstream.hostname, port: Number(upstream.port || 6379) });
    t = await startTestMeterd({ target: { url: proxy.url } });
    direct = new Redis(REDIS_URL, { protocol: 2, maxRetriesPerRequest: 1 });
  });
  afterAll(async () => {
    await t?.stop(); // also deletes the run's keys, through the proxy
    direct?.disconnect();
    await proxy?.close();
    if (t) await deleteKeys(REDIS_URL, `${t.keyPrefix}:*`); // directly too, in case the proxied delete failed
  });

  const metering = () => t.clients.metering;
  const admin = () => t.clients.admin;

  async function createAccount(): Promise<string> {
    const accountId = unique('acct');
    await retryOnUnavailable(() => admin().upsertAccount({
      account: { accountId, plan: 'free', parentId: '', trialCredits: 0n, lowBalanceThreshold: 0n, lowBalancePercent: 0, pendingPlan: '' },
    }));
    return accountId;
  }

  /** Reads through meterd, waiting out the reconnect after a cut connection. */
  const balance = async (accountId: string) => (await retryOnUnavailable(() => metering().getBalance({ accountId }))).result;

  it('ReserveCredits: the hold made before the reply was lost is returned, never made twice', async () => {
    const accountId = await createAccount();
    const requestId = unique('req');
    const request = { accountId, feature: 'image_1k', requestId, userId: 'alice', labels: { model: 'x' } };

    const connectionsBefore = proxy.connectionsAccepted;
    const swallowed = proxy.swallowNextReplyContaining(requestId);
    const lost = await rejection(metering().reserveCredits(request));
    expect(lost.code).toBe(status.UNAVAILABLE);
    expect(lost.reason).toBe('BACKEND_UNAVAILABLE');
    expect((await swallowed).toString()).toContain(requestId); // the reply really was the one dropped

    // The script did run: the credits are held although the caller saw UNAVAILABLE.
    const meanwhile = await balance(accountId);
    expect(meanwhile.held).toBe(30n);
    expect(meanwhile.available).toBe(220n);

    const { result: retried } = await retryOnUnavailable(() => metering().reserveCredits(request));
    expect(retried.replayed).toBe(true);
    expect(retried.requestId).toBe(requestId);
    expect(retried.heldCredits).toBe(30n);
    expect(retried.balance!.held).toBe(30n);
    expect(retried.balance!.available).toBe(220n);

    const after = await balance(accountId);
    expect(after.held).toBe(30n);
    expect(after.available).toBe(220n);
    expect(proxy.connectionsAccepted).toBeGreaterThan(connectionsBefore); // meterd reconnected in between

    const partition = reservationPartition(retried.reservationId);
    expect(partition).toBe(homePartition(accountId));
    const holds = await ledgerEvents(direct, t.keyPrefix, partition!, { kind: 'hold', account: accountId });
    expect(holds).toHaveLength(1);
    expect(holds[0]).toMatchObject({ reservation: retried.reservationId, held: '30' });
  });

  it('CommitReservation: the charge made before the reply was lost is returned, never made twice', async () => {
    const accountId = await createAccount();
    const { result: hold } = await retryOnUnavailable(() =>
      metering().reserveCredits({ accountId, feature: 'image_1k', requestId: unique('req'), userId: '', labels: {} }));
    expect(hold.replayed).toBe(false);

    const swallowed = proxy.swallowNextReplyContaining(hold.reservationId);
    const lost = await rejection(metering().commitReservation({ reservationId: hold.reservationId }));
    expect(lost.code).toBe(status.UNAVAILABLE);
    expect(lost.reason).toBe('BACKEND_UNAVAILABLE');
    expect((await swallowed).toString()).toContain(hold.reservationId);

    const meanwhile = await balance(accountId);
    expect(meanwhile.held).toBe(0n);
    expect(meanwhile.available).toBe(220n);

    const { result: retried } = await retryOnUnavailable(() => metering().commitReservation({ reservationId: hold.reservationId }));
    expect(retried.replayed).toBe(true);
    expect(retried.chargedCredits).toBe(30n);
    expect(retried.balance!.held).toBe(0n);
    expect(retried.balance!.available).toBe(220n);

    const after = await balance(accountId);
    expect(after.available).toBe(220n);
    expect(after.allowanceRemaining).toBe(220n);
    const { result: usage } = await retryOnUnavailable(() => admin().getUsage({ accountId }));
    expect(usage.credits).toBe(30n);
    expect(usage.operations).toBe(1n);

    const partition = reservationPartition(hold.reservationId)!;
    expect(await ledgerEvents(direct, t.keyPrefix, partition, { kind: 'hold', reservation: hold.reservationId })).toHaveLength(1);
    const commits = await ledgerEvents(direct, t.keyPrefix, partition, { kind: 'commit', reservation: hold.reservationId });
    expect(commits).toHaveLength(1);
    expect(commits[0]).toMatchObject({ charged: '30', held: '-30' });
  });

  it('GrantCredits (PACK): the grant made before the reply was lost is not granted again', async () => {
    const accountId = await createAccount();
    const grantId = unique('pack');
    const request = { accountId, credits: 500n, kind: GrantKind.GRANT_KIND_PACK, grantId, reason: 'stripe checkout' };

    // The grant's reply is the pool's balance: it names the (fresh, unique) account, not the grant.
    const swallowed = proxy.swallowNextReplyContaining(accountId);
    const lost = await rejection(admin().grantCredits(request));
    expect(lost.code).toBe(status.UNAVAILABLE);
    expect(lost.reason).toBe('BACKEND_UNAVAILABLE');
    expect((await swallowed).toString()).toContain(accountId);

    const meanwhile = await balance(accountId);
    expect(meanwhile.packCredits).toBe(500n);

    const { result: retried } = await retryOnUnavailable(() => admin().grantCredits(request));
    expect(retried.packCredits).toBe(500n);
    expect(retried.available).toBe(750n);

    const after = await balance(accountId);
    expect(after.packCredits).toBe(500n);
    expect(after.available).toBe(750n);

    const grants = await ledgerEvents(direct, t.keyPrefix, homePartition(accountId), { kind: 'grant', op_id: grantId });
    expect(grants).toHaveLength(1);
    expect(grants[0]).toMatchObject({ account: accountId, pack: '500' });
  });
});
