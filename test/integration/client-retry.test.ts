import { randomBytes } from 'node:crypto';
import { status } from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createMeterdClient, MeterdError, withCredits, type MeterdClient } from '../../src/client/index.js';
import { startTestMeterd, type TestMeterd } from '../support/meterd.js';
import { startTcpProxy, type TcpProxy } from '../support/tcp-proxy.js';

/**
 * Retries of UNAVAILABLE reuse the same ids. The gateway client reaches meterd through a TCP proxy
 * that swallows one chosen answer and cuts the connection: meterd did the work, the client never
 * heard. Its retry (on a new connection) must get the first outcome, never a second hold or charge.
 */

const PLAN_CREDITS = 1000n;
const IMAGE_2K_CREDITS = 60n;

describe('the gateway client retries UNAVAILABLE with the same ids', () => {
  let t: TestMeterd;
  let proxy: TcpProxy;
  let client: MeterdClient;
  const run = randomBytes(4).toString('hex');
  let seq = 0;

  beforeAll(async () => {
    t = await startTestMeterd();
    proxy = await startTcpProxy({ host: '127.0.0.1', port: t.meterd.grpcPort });
    client = createMeterdClient({ address: `127.0.0.1:${proxy.port}` });
  });
  afterAll(async () => {
    client?.close();
    await proxy?.close();
    await t?.stop();
  });

  const newAccount = async (): Promise<string> => {
    const accountId = `acct-${run}-${++seq}`;
    await client.admin.upsertAccount({ account: { accountId, plan: 'starter' } });
    return accountId;
  };

  it('a reserve whose answer was lost is retried with the same request id: one hold', async () => {
    const account = await newAccount();
    const requestId = `req-${run}-${++seq}`;
    const connectionsBefore = proxy.connectionsAccepted;
    const swallowed = proxy.swallowNextReplyContaining(requestId);
    const reservation = await client.reserve({ accountId: account, feature: 'image_2k', requestId });
    await swallowed;
    expect(proxy.connectionsAccepted).toBeGreaterThan(connectionsBefore);
    expect(reservation.requestId).toBe(requestId);
    expect(reservation.replayed).toBe(true); // the first attempt made the hold; the retry found it
    const balance = await client.getBalance(account);
    expect(balance.held).toBe(IMAGE_2K_CREDITS);
  });

  it('generates the request id before the first attempt, so the retry repeats it', async () => {
    const account = await newAccount();
    // The reservation's answer names the account: swallow that one (the caller gave no request id).
    const swallowed = proxy.swallowNextReplyContaining(account);
    const reservation = await client.reserve({ accountId: account, feature: 'image_2k' });
    await swallowed;
    expect(reservation.requestId).toMatch(/^[0-9a-f-]{36}$/);
    expect(reservation.replayed).toBe(true);
    expect((await client.getBalance(account)).held).toBe(IMAGE_2K_CREDITS);
  });

  it('a commit whose answer was lost is retried by reservation id: charged once', async () => {
    const account = await newAccount();
    const outcome = await withCredits(client, { account, feature: 'image_2k' }, async (hold) => {
      proxy.swallowNextReplyContaining(hold.reservationId); // the reserve's answer is already in
      return { credits: 45 };
    });
    expect(outcome.charge.replayed).toBe(true);
    expect(outcome.charge.chargedCredits).toBe(45n);
    const balance = await client.getBalance(account);
    expect(balance.available).toBe(PLAN_CREDITS - 45n);
    expect(balance.held).toBe(0n);
  });

  it('gives up after its attempts with a retryable MeterdError that names the request id', async () => {
    const account = await newAccount();
    const noRetries = createMeterdClient({ address: `127.0.0.1:${proxy.port}`, retry: { attemptsMax: 1 } });
    try {
      const requestId = `req-${run}-${++seq}`;
      const swallowed = proxy.swallowNextReplyContaining(requestId);
      const error = await noRetries.reserve({ accountId: account, feature: 'image_2k', requestId }).then(() => null, (err: unknown) => err);
      await swallowed;
      expect(error).toBeInstanceOf(MeterdError);
      expect((error as MeterdError).code).toBe(status.UNAVAILABLE);
      expect((error as MeterdError).retryable).toBe(true);
      expect((error as MeterdError).requestId).toBe(requestId);
      // The caller's own later retry with that id is just as safe.
      const retried = await noRetries.reserve({ accountId: account, feature: 'image_2k', requestId });
      expect(retried.replayed).toBe(true);
      expect((await noRetries.getBalance(account)).held).toBe(IMAGE_2K_CREDITS);
    } finally {
      noRetries.close();
    }
  });

  it('does not retry a refusal', async () => {
    const account = await newAccount();
    const error = await client.reserve({ accountId: account, feature: 'no_such_feature' }).then(() => null, (err: unknown) => err);
    expect(error).toMatchObject({ code: status.INVALID_ARGUMENT, reason: 'UNKNOWN_FEATURE', retryable: false });
  });
});
