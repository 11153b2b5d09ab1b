import { Writable } from 'node:stream';
import { credentials, Metadata, status, type ServiceError } from '@grpc/grpc-js';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MeteringServiceClient } from '../../src/gen/meterd/v1/metering_service.js';
import { GrantKind } from '../../src/gen/meterd/v1/types.js';
import { makeTestCertificates, type TestCertificates } from '../support/certificates.js';
import { connectClients, rejection, type TestClients } from '../support/grpc-clients.js';
import { startTestMeterd, type TestMeterd } from '../support/meterd.js';
import { sample } from '../support/prometheus-text.js';

const GATEWAY_TOKEN = 'gw-token-0123456789abcdef';
const ADMIN_TOKEN = 'admin-token-0123456789abcdef';
const account = (accountId: string, plan: string) => ({ account: { accountId, plan, parentId: '', trialCredits: 0n, lowBalanceThreshold: 0n, lowBalancePercent: 0, pendingPlan: '' } });

/** Every log line a meterd writes, as text. */
function capturedLogger() {
  const lines: string[] = [];
  const logger = pino({ level: 'debug' }, new Writable({ write(chunk: Buffer, _encoding, done) { lines.push(chunk.toString('utf8')); done(); } }));
  return { logger, lines };
}

describe('bearer tokens per service', () => {
  let t: TestMeterd;
  let gateway: TestClients;
  let admin: TestClients;
  const logs = capturedLogger();

  beforeAll(async () => {
    t = await startTestMeterd({ env: { AUTH_DATA_PLANE_TOKENS: GATEWAY_TOKEN, AUTH_ADMIN_TOKENS: ADMIN_TOKEN }, logger: logs.logger });
    gateway = connectClients(t.meterd.grpcPort, { token: GATEWAY_TOKEN });
    admin = connectClients(t.meterd.grpcPort, { token: ADMIN_TOKEN });
    await admin.admin.upsertAccount(account('au-a', 'jobs_pro'));
  });
  afterAll(async () => {
    gateway?.close();
    admin?.close();
    await t?.stop();
  });

  const available = async () => (await admin.metering.getBalance({ accountId: 'au-a' })).available;

  it('refuses a call without a token, with a wrong token, or with another scheme, and changes nothing', async () => {
    const before = await available();
    const reserve = { accountId: 'au-a', feature: 'talent_search', requestId: 'x1', userId: '', labels: {} };
    const missing = await rejection(t.clients.metering.reserveCredits(reserve));
    expect(missing).toMatchObject({ code: status.UNAUTHENTICATED, reason: 'TOKEN_MISSING' });
    const wrong = connectClients(t.meterd.grpcPort, { token: 'gw-token-0123456789abcdeX' });
    expect(await rejection(wrong.metering.reserveCredits(reserve))).toMatchObject({ code: status.UNAUTHENTICATED, reason: 'TOKEN_INVALID' });
    wrong.close();
    // The right token under another scheme is still not a bearer token.
    const basic = new MeteringServiceClient(`127.0.0.1:${t.meterd.grpcPort}`, credentials.createInsecure());
    const metadata = new Metadata();
    metadata.set('authorization', `Basic ${GATEWAY_TOKEN}`);
    const basicError = await new Promise<ServiceError>((resolve) => basic.getBalance({ accountId: 'au-a' }, metadata, (err) => resolve(err as ServiceError)));
    expect(basicError.code).toBe(status.UNAUTHENTICATED);
    basic.close();
    expect(await available()).toBe(before);
  });

  it('lets a data-plane token meter but not administer; an admin token does both', async () => {
    const denied = await rejection(gateway.admin.grantCredits({ accountId: 'au-a', credits: 1000n, kind: GrantKind.GRANT_KIND_PACK, grantId: 'steal', reason: '' }));
    expect(denied).toMatchObject({ code: status.PERMISSION_DENIED, reason: 'PERMISSION_DENIED' });
    expect(await available()).toBe(150n);
    const hold = await gateway.metering.reserveCredits({ accountId: 'au-a', feature: 'talent_search', requestId: 'ok1', userId: '', labels: {} });
    await gateway.metering.commitReservation({ reservationId: hold.reservationId });
    expect(await available()).toBe(130n);
    const viaAdmin = await admin.metering.reserveCredits({ accountId: 'au-a', feature: 'talent_search', requestId: 'ok2', userId: '', labels: {} });
    expect(viaAdmin.heldCredits).toBe(20n);
  });

  it('counts refusals by kind and never logs a token', async () => {
    const text = await t.meterd.metrics.registry.metrics();
    expect(sample(text, 'meterd_errors_total', { kind: 'auth_missing' })).toBeGreaterThanOrEqual(1);
    expect(sample(text, 'meterd_errors_total', { kind: 'auth_invalid' })).toBeGreaterThanOrEqual(2);
    expect(sample(text, 'meterd_errors_total', { kind: 'auth_forbidden' })).toBe(1);
    const all = logs.lines.join('');
    expect(all).toContain('call refused: credentials');
    expect(all).not.toContain(GATEWAY_TOKEN.slice(0, 12));
    expect(all).not.toContain(ADMIN_TOKEN.slice(0, 12));
  });
});

describe('TLS and mutual TLS on the gRPC port', () => {
  let certs: TestCertificates;
  beforeAll(() => {
    certs = makeTestCertificates();
  });
  afterAll(() => certs?.remove());

  it('serves TLS to a client that trusts the CA, and nothing to a plaintext client', async () => {
    const t = await startTestMeterd({ env: { GRPC_TLS_CERT_FILE: certs.serverCertFile, GRPC_TLS_KEY_FILE: certs.serverKeyFile } });
    try {
      const tls = connectClients(t.meterd.grpcPort, { channel: credentials.createSsl(certs.ca) });
      expect((await tls.admin.upsertAccount(account('tls-a', 'free'))).accountId).toBe('tls-a');
      tls.close();
      expect((await rejection(t.clients.metering.getBalance({ accountId: 'tls-a' }))).code).toBe(status.UNAVAILABLE);
    } finally {
      await t.stop();
    }
  });

  it('with a client CA, accepts only clients with a certificate that CA signed', async () => {
    const t = await startTestMeterd({ env: {
      GRPC_TLS_CERT_FILE: certs.serverCertFile, GRPC_TLS_KEY_FILE: certs.serverKeyFile, GRPC_TLS_CLIENT_CA_FILE: certs.caFile,
    } });
    const attempt = async (channel: ReturnType<typeof credentials.createSsl>) => {
      const clients = connectClients(t.meterd.grpcPort, { channel });
      try {
        return await clients.admin.upsertAccount(account('mtls-a', 'free')).then(() => 'ok', (err: ServiceError) => status[err.code]);
      } finally {
        clients.close();
      }
    };
    try {
      expect(await attempt(credentials.createSsl(certs.ca))).toBe('UNAVAILABLE');
      expect(await attempt(credentials.createSsl(certs.ca, certs.rogueClient.key, certs.rogueClient.cert))).toBe('UNAVAILABLE');
      expect(await attempt(credentials.createSsl(certs.ca, certs.client.key, certs.client.cert))).toBe('ok');
    } finally {
      await t.stop();
    }
  });
});

describe('shadow mode', () => {
  let t: TestMeterd;
  beforeAll(async () => {
    t = await startTestMeterd({ env: { SHADOW_MODE: 'true' } });
    await t.clients.admin.upsertAccount(account('sh-a', 'jobs_free')); // 3 credits a month
  });
  afterAll(async () => {
    await t?.stop();
  });

  it('never refuses a reserve: the refusal is reported and counted, nothing is held, the commit charges what there is', async () => {
    const { metering } = t.clients;
    const request = { accountId: 'sh-a', feature: 'talent_search', requestId: 's1', userId: '', labels: {} };
    const shadow = await metering.reserveCredits(request);
    expect(shadow.heldCredits).toBe(0n);
    expect(shadow.shadowRefusal).toEqual({
      reason: 'INSUFFICIENT_CREDITS', message: 'talent_search needs 20 credits; 3 available',
      metadata: expect.objectContaining({ required: '20', available: '3' }),
    });
    const replay = await metering.reserveCredits(request);
    expect(replay.replayed).toBe(true);
    expect(replay.shadowRefusal?.reason).toBe('INSUFFICIENT_CREDITS');

    const committed = await metering.commitReservation({ reservationId: shadow.reservationId, credits: 20n });
    expect(committed).toMatchObject({ chargedCredits: 3n, shortfallCredits: 17n });
    expect((await metering.getBalance({ accountId: 'sh-a' })).available).toBe(0n);

    const text = await t.meterd.metrics.registry.metrics();
    expect(sample(text, 'meterd_reservations_total', { result: 'shadow_refused' })).toBe(1);
    expect(sample(text, 'meterd_shadow_refusals_total', { reason: 'INSUFFICIENT_CREDITS' })).toBe(1);
    expect(sample(text, 'meterd_credits_total', { movement: 'shortfall' })).toBe(17);
  });

  it('holds normally when the credits are there', async () => {
    await t.clients.admin.grantCredits({ accountId: 'sh-a', credits: 50n, kind: GrantKind.GRANT_KIND_PACK, grantId: 'p', reason: '' });
    const hold = await t.clients.metering.reserveCredits({ accountId: 'sh-a', feature: 'talent_search', requestId: 's2', userId: '', labels: {} });
    expect(hold.heldCredits).toBe(20n);
    expect(hold.shadowRefusal).toBeUndefined();
  });
});
