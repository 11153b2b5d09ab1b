import { connect } from 'node:net';
import { credentials, Metadata, type ServiceError } from '@grpc/grpc-js';
import fc from 'fast-check';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AdminServiceClient } from '../../src/gen/meterd/v1/admin_service.js';
import type { CheckoutSession, CreateCheckoutSessionRequest } from '../../src/gen/meterd/v1/billing.js';
import { HTTP_BODY_BYTES_MAX } from '../../src/observability/http-server.js';
import { checkoutGrantId } from '../../src/payments/ids.js';
import {
  eventually, FakeStripe, signWebhook, TEST_PAYMENTS_PRODUCT, TEST_STRIPE_SECRET_KEY, TEST_WEBHOOK_SECRET,
} from '../support/fake-stripe.js';
import { startTestMeterd, type TestMeterd } from '../support/meterd.js';
import { sample } from '../support/prometheus-text.js';

/**
 * Fuzzing meterd's HTTP port (A5 of the reliability note): /metrics, /healthz, /readyz and
 * POST /webhooks/stripe, through raw sockets (so methods, paths, header bytes and bodies are exactly
 * what the test wrote, with nothing normalised by a client). Every request gets a clean answer — the
 * route's 200, or a 4xx — never a 5xx and never a dropped connection; the server keeps serving; and a
 * webhook is accepted only with a valid signature: every flipped byte, a wrong secret, a timestamp
 * outside Stripe's 300 s tolerance, a re-serialised body are refused with nothing recorded, and a
 * replayed event grants once.
 *
 * Deterministic by default: FUZZ_SEED and FUZZ_RUNS (per property) override.
 */
const SEED = Number(process.env.FUZZ_SEED ?? 20_261_125);
const RUNS = Number(process.env.FUZZ_RUNS ?? 120);
console.log(`fuzz-http: seed ${SEED}, ${RUNS} runs per property (set FUZZ_SEED / FUZZ_RUNS to change)`);
const fcParams = (runs = RUNS): fc.Parameters<unknown> => ({ seed: SEED, numRuns: runs, endOnFailure: true });

const WEBHOOK_PATH = '/webhooks/stripe';
const GET_ROUTES = ['/metrics', '/healthz', '/readyz'];
const ANSWER_LIMIT_MS = 15_000;

interface RawResponse {
  /** 0 when the server closed the connection without an answer. */
  status: number;
  headers: Record<string, string>;
  body: string;
}

/**
 * Writes bytes to the HTTP port as they are and parses what comes back (every request says
 * `Connection: close`, so the server closes after answering). The socket is not half-closed: Node's
 * HTTP server takes a client's FIN as an abort of the request in flight.
 */
function rawHttp(port: number, request: Buffer): Promise<RawResponse> {
  return new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1');
    const chunks: Buffer[] = [];
    // A hang is a failure (status 0), not a wait: no test passes by timing.
    const limit = setTimeout(() => socket.destroy(), ANSWER_LIMIT_MS);
    socket.on('data', (chunk: Buffer) => chunks.push(chunk));
    socket.on('error', () => {}); // EPIPE / ECONNRESET once the server answered early (413) and closed
    socket.on('close', () => {
      clearTimeout(limit);
      resolve(parseResponse(Buffer.concat(chunks)));
    });
    socket.write(request);
  });
}

function parseResponse(bytes: Buffer): RawResponse {
  // Interim answers (100 Continue) come first: the final one follows.
  const text = bytes.toString('latin1').replace(/^(HTTP\/1\.[01] 1\d\d [^\r]*\r\n(?:[^\r]+\r\n)*\r\n)+/, '');
  const end = text.indexOf('\r\n\r\n');
  if (end < 0) return { status: 0, headers: {}, body: text };
  const [statusLine = '', ...lines] = text.slice(0, end).split('\r\n');
  const match = /^HTTP\/1\.[01] (\d{3}) /.exec(statusLine);
  const headers: Record<string, string> = {};
  for (const line of lines) {
    const colon = line.indexOf(':');
    if (colon > 0) headers[line.slice(0, colon).toLowerCase()] = line.slice(colon + 1).trim();
  }
  return { status: match ? Number(match[1]) : 0, headers, body: Buffer.from(text.slice(end + 4), 'latin1').toString('utf8') };
}

/** One HTTP/1.1 request as bytes: request line, headers (name, raw value bytes), body. */
function httpRequest(method: string, path: string | Buffer, headers: Array<[string, string | Buffer]>, body: Buffer = Buffer.alloc(0),
  options: { contentLength?: boolean } = {}): Buffer {
  const head: Buffer[] = [Buffer.from(`${method} `, 'latin1'), Buffer.isBuffer(path) ? path : Buffer.from(path, 'latin1'), Buffer.from(' HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n', 'latin1')];
  for (const [name, value] of headers) head.push(Buffer.from(`${name}: `, 'latin1'), Buffer.isBuffer(value) ? value : Buffer.from(value, 'latin1'), Buffer.from('\r\n'));
  if (options.contentLength ?? true) head.push(Buffer.from(`Content-Length: ${body.length}\r\n`));
  head.push(Buffer.from('\r\n'));
  return Buffer.concat([...head, body]);
}

describe('HTTP fuzzing: clean 4xx for everything but the routes, signed webhooks only', () => {
  let fake: FakeStripe;
  let t: TestMeterd;
  let db: pg.Pool;
  let admin: AdminServiceClient;
  let port: number;
  const stats = { requests: 0, byStatus: new Map<number, number>() };

  /** What a rejected delivery must not change: events recorded, grants queued, sessions paid. */
  async function paymentsState(): Promise<{ events: number; grants: number; paid: number }> {
    const { rows } = await db.query<{ events: number; grants: number; paid: number }>(`SELECT
      (SELECT count(*)::int FROM stripe_events) AS events,
      (SELECT count(*)::int FROM credit_grant_outbox) AS grants,
      (SELECT count(*)::int FROM checkout_sessions WHERE status = 'paid') AS paid`);
    return rows[0] as { events: number; grants: number; paid: number };
  }

  const checkout = (request: CreateCheckoutSessionRequest) => new Promise<CheckoutSession>((resolve, reject) => {
    admin.createCheckoutSession(request, new Metadata(), (err: ServiceError | null, session: CheckoutSession) => (err ? reject(err) : resolve(session)));
  });

  beforeAll(async () => {
    fake = await FakeStripe.start();
    t = await startTestMeterd({
      postgres: true, product: TEST_PAYMENTS_PRODUCT,
      env: {
        STRIPE_SECRET_KEY: TEST_STRIPE_SECRET_KEY, STRIPE_WEBHOOK_SECRET: TEST_WEBHOOK_SECRET, STRIPE_API_URL: fake.url,
        STRIPE_MAX_NETWORK_RETRIES: '0', OVERAGE_REPORT_INTERVAL_MS: '0', OUTBOX_POLL_INTERVAL_MS: '50',
      },
    });
    port = t.meterd.httpPort;
    db = new pg.Pool({ connectionString: t.databaseUrl, max: 2 });
    db.on('error', () => {});
    admin = new AdminServiceClient(`127.0.0.1:${t.meterd.grpcPort}`, credentials.createInsecure());
    await t.clients.admin.upsertAccount({ account: {
      accountId: 'fh-buyer', plan: 'free', parentId: '', trialCredits: 0n, lowBalanceThreshold: 0n, lowBalancePercent: 0, pendingPlan: '',
    } });
  });

  afterAll(async () => {
    console.log(`fuzz-http: ${stats.requests} requests; by status ${JSON.stringify(Object.fromEntries([...stats.byStatus].sort()))}`);
    admin?.close();
    await db?.end();
    await t?.stop();
    await fake?.close();
  });

  /** Sends, counts, and checks the answer is clean (a status line, never 5xx); then that /healthz still answers. */
  async function send(request: Buffer, what: string): Promise<RawResponse> {
    const response = await rawHttp(port, request);
    stats.requests += 1;
    stats.byStatus.set(response.status, (stats.byStatus.get(response.status) ?? 0) + 1);
    const shown = `${what}: ${request.subarray(0, 120).toString('latin1').replace(/[^\x20-\x7e]/g, '·')}`;
    expect(response.status, `${shown} → no answer`).toBeGreaterThan(0);
    expect(response.status, `${shown} → ${response.body.slice(0, 200)}`).toBeLessThan(500);
    const alive = await rawHttp(port, httpRequest('GET', '/healthz', []));
    expect(alive.status, `after ${shown}: /healthz`).toBe(200);
    return response;
  }

  /** The answer a request must get: 200 from a GET route, the webhook's refusal, or 404/405/400 from the router and parser. */
  function expectedStatuses(method: string, path: string): number[] {
    const route = path.split('?')[0] as string;
    if (GET_ROUTES.includes(route)) return method === 'GET' ? [200] : [405, 400];
    if (route === WEBHOOK_PATH) return method === 'POST' ? [400, 413] : [405, 400];
    return [404, 400, 405];
  }

  // ------------------------------------------------------------------------------------------
  // Random requests to every route and to paths around them.

  const methodArb = fc.constantFrom('GET', 'POST', 'PUT', 'DELETE', 'PATCH', 'HEAD', 'OPTIONS', 'TRACE', 'PROPFIND', 'BREW', 'get');
  const pathArb = fc.oneof(
    fc.constantFrom(...GET_ROUTES, WEBHOOK_PATH, '/', '*', '//metrics', '/metrics/', '/METRICS', '/metrics/../healthz', '/%2e%2e/metrics',
      '/webhooks/stripe/', '/webhooks/stripe/..', '/webhooks//stripe', '/webhooks/stripe%00', '/healthz#x', `/${'a'.repeat(8_000)}`,
      `/metrics?${'q='.repeat(2_000)}`, '/readyz?verbose=1&x[]=%ff', '/webhooks/stripe?x=1', `/${encodeURIComponent('métriques/\u{1F4B3}')}`),
    fc.tuple(fc.constantFrom(...GET_ROUTES, WEBHOOK_PATH), fc.string({ maxLength: 40 })).map(([route, query]) => `${route}?${encodeURIComponent(query)}`),
    fc.string({ unit: fc.constantFrom('/', '.', '%', '2', 'e', 'a', '?', '&', '=', 'm'), maxLength: 30 }).map((p) => `/${p}`),
  );
  const headerNameArb = fc.constantFrom('Content-Type', 'Stripe-Signature', 'Accept', 'X-Forwarded-For', 'Transfer-Encoding', 'Expect', 'X-Fuzz', 'Authorization');
  const headerValueArb = fc.oneof(
    fc.constantFrom('application/json', 'text/plain', 'multipart/form-data; boundary=x', 'application/x-www-form-urlencoded', 'identity',
      't=1,v1=00', 't=,v1=', 'v1=' + 'a'.repeat(64), 'Bearer x', '100-continue', '*/*', '\u00ff\u00fe'),
    fc.string({ unit: fc.integer({ min: 0x20, max: 0x7e }).map((c) => String.fromCharCode(c)), maxLength: 200 }),
  );
  const bodyArb = fc.oneof(
    { weight: 3, arbitrary: fc.uint8Array({ maxLength: 2_048 }).map((b) => Buffer.from(b)) },
    { weight: 2, arbitrary: fc.json().map((j) => Buffer.from(j)) },
    { weight: 1, arbitrary: fc.constant(Buffer.from(JSON.stringify({ id: 'evt_1', type: 'checkout.session.completed', data: { object: { id: 'cs_1' } } }))) },
    { weight: 1, arbitrary: fc.constant(Buffer.alloc(0)) },
  );

  it('random methods, paths, headers and bodies: the route\'s 200 or a clean 4xx, never a 5xx; the server keeps serving; nothing recorded', async () => {
    const before = await paymentsState();
    await fc.assert(fc.asyncProperty(methodArb, pathArb, fc.array(fc.tuple(headerNameArb, headerValueArb), { maxLength: 4 }), bodyArb,
      async (method, path, headers, body) => {
        // Transfer-Encoding with Content-Length is a smuggling attempt: send it as is (the parser must refuse it, 400).
        const response = await send(httpRequest(method, path, headers, body), 'random request');
        const expected = headers.some(([name]) => name === 'Transfer-Encoding' || name === 'Expect') ? [...expectedStatuses(method, path), 400, 417] : expectedStatuses(method, path);
        expect(expected, `${method} ${path.slice(0, 80)} answered ${response.status}`).toContain(response.status);
      }), fcParams());
    expect(await paymentsState()).toEqual(before);
  }, 120_000);

  it('random bytes as a whole request (and request lines with raw Unicode, NUL, CR/LF): a 400-class answer, never a crash', async () => {
    const fixed = [
      Buffer.from('GET /m\u00e9trics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n', 'utf8'),
      Buffer.from('GET /metrics\u0000 HTTP/1.1\r\nHost: x\r\n\r\n', 'latin1'),
      Buffer.from('GET /metrics HTTP/1.1\r\nHost: x\r\nX-A: a\rb\r\n\r\n', 'latin1'),
      Buffer.from('POST /webhooks/stripe HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!', 'latin1'),
      Buffer.from('POST /webhooks/stripe HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n', 'latin1'),
      Buffer.from('POST /webhooks/stripe HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n', 'latin1'),
      Buffer.from(`GET /${'a'.repeat(20_000)} HTTP/1.1\r\nHost: x\r\n\r\n`, 'latin1'),
      Buffer.from(`GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: ${'b'.repeat(20_000)}\r\n\r\n`, 'latin1'),
      Buffer.from('GET /metrics HTTP/9.9\r\nHost: x\r\n\r\n', 'latin1'),
    ];
    for (const request of fixed) {
      const response = await send(request, 'malformed request');
      expect(response.status, request.subarray(0, 60).toString('latin1')).toBeGreaterThanOrEqual(400);
    }
    await fc.assert(fc.asyncProperty(fc.uint8Array({ minLength: 1, maxLength: 512 }), async (bytes) => {
      const response = await send(Buffer.concat([Buffer.from(bytes), Buffer.from('\r\n\r\n')]), 'random bytes');
      expect(response.status).toBeGreaterThanOrEqual(400);
    }), fcParams());
  }, 120_000);

  it('bodies past 1 MiB are 413 (declared or chunked), with nothing recorded; exactly 1 MiB is read (and refused for its signature)', async () => {
    const before = await paymentsState();
    const signature: [string, string] = ['Stripe-Signature', signWebhook('{}', TEST_WEBHOOK_SECRET)];
    const big = Buffer.alloc(HTTP_BODY_BYTES_MAX + 1, 0x20);
    expect((await send(httpRequest('POST', WEBHOOK_PATH, [['Content-Type', 'application/json'], signature], big), 'declared too large')).status).toBe(413);
    const chunked = Buffer.concat([
      httpRequest('POST', WEBHOOK_PATH, [['Content-Type', 'application/json'], signature, ['Transfer-Encoding', 'chunked']], Buffer.alloc(0), { contentLength: false }),
      Buffer.from(`${big.length.toString(16)}\r\n`), big, Buffer.from('\r\n0\r\n\r\n'),
    ]);
    expect((await send(chunked, 'chunked too large')).status).toBe(413);
    const exact = Buffer.alloc(HTTP_BODY_BYTES_MAX, 0x20);
    expect((await send(httpRequest('POST', WEBHOOK_PATH, [['Content-Type', 'application/json'], signature], exact), 'exactly the limit')).status).toBe(400);
    expect(await paymentsState()).toEqual(before);
  }, 60_000);

  // ------------------------------------------------------------------------------------------
  // Webhook signatures.

  describe('Stripe webhook signatures', () => {
    let sessionId = '';
    let body = '';
    let valid = '';
    const deliver = (payload: string | Buffer, signature: string | Buffer | undefined, what: string, contentType = 'application/json') => send(httpRequest('POST', WEBHOOK_PATH, [
      ['Content-Type', contentType], ...(signature === undefined ? [] : [['Stripe-Signature', signature] as [string, string | Buffer]]),
    ], Buffer.isBuffer(payload) ? payload : Buffer.from(payload, 'utf8')), what);
    const packCredits = async () => (await t.clients.metering.getBalance({ accountId: 'fh-buyer' })).packCredits;
    const invalidSignatureCount = async () => sample(await t.meterd.metrics.registry.metrics(), 'meterd_stripe_webhooks_total', { result: 'invalid_signature' }) ?? 0;

    beforeAll(async () => {
      sessionId = (await checkout({
        accountId: 'fh-buyer', packId: 'pack_500', credits: 0n, successUrl: 'https://app.example/ok', cancelUrl: 'https://app.example/no', requestId: 'fh-1',
      })).sessionId;
      body = JSON.stringify(fake.event('checkout.session.completed', fake.completedSession(sessionId)));
      valid = signWebhook(body, TEST_WEBHOOK_SECRET);
    });

    /** A refused delivery: 400, the refusal counted, nothing recorded, no credits. */
    async function expectRefused(payload: string | Buffer, signature: string | Buffer | undefined, what: string, contentType?: string) {
      const before = await paymentsState();
      const countBefore = await invalidSignatureCount();
      const response = await deliver(payload, signature, what, contentType);
      expect(response.status, `${what}: ${response.body}`).toBe(400);
      expect(await paymentsState(), what).toEqual(before);
      expect(await invalidSignatureCount(), `${what}: counted as invalid_signature`).toBe(countBefore + 1);
    }

    it('refuses a missing, empty, wrong-secret, stale or malformed signature, and a re-serialised or re-typed body', async () => {
      const now = Math.floor(Date.now() / 1000);
      await expectRefused(body, undefined, 'no Stripe-Signature');
      await expectRefused(body, '', 'empty Stripe-Signature');
      await expectRefused(body, signWebhook(body, 'whsec_wrong'), 'wrong secret');
      await expectRefused(body, signWebhook(body, `${TEST_WEBHOOK_SECRET} `), 'secret with a trailing space');
      await expectRefused(body, signWebhook(body, TEST_WEBHOOK_SECRET, now - 301), 'timestamp 301 s old');
      await expectRefused(body, signWebhook(body, TEST_WEBHOOK_SECRET, now - 86_400), 'timestamp a day old');
      await expectRefused(body, signWebhook(body, TEST_WEBHOOK_SECRET, 1), 'timestamp 1 (1970)');
      await expectRefused(body, valid.replace(/v1=[0-9a-f]+/, 'v1='), 'no v1 value');
      await expectRefused(body, valid.replace(/v1=/, 'v0='), 'v0 scheme only');
      await expectRefused(body, valid.replace(/t=\d+/, 't=abc'), 'non-numeric timestamp');
      await expectRefused(body, valid.replace(/,?v1=[0-9a-f]+/, ''), 'timestamp only');
      await expectRefused(body, `${valid},v1=${'0'.repeat(64)}`.replace(/v1=[0-9a-f]{64}/, `v1=${'f'.repeat(64)}`), 'two wrong v1 values');
      await expectRefused(JSON.stringify(JSON.parse(body), null, 2), valid, 'body re-serialised (pretty-printed)');
      await expectRefused(`${body}\n`, valid, 'body with a trailing newline');
      await expectRefused(` ${body}`, valid, 'body with a leading space');
      await expectRefused(body.replace('"checkout.session.completed"', '"checkout.session.expired"'), valid, 'event type changed');
      await expectRefused(Buffer.from(body, 'utf8').toString('latin1'), signWebhook(Buffer.from(body, 'utf8').toString('latin1'), 'whsec_wrong'), 'latin1 body, wrong secret');
      await expectRefused('x'.repeat(1000), signWebhook('x'.repeat(1000), TEST_WEBHOOK_SECRET), 'signed, but not JSON');
      await expectRefused(Buffer.from([0xff, 0xfe, 0x00, 0x7b]), valid, 'binary body');
      expect(await packCredits()).toBe(0n);
    });

    it('refuses the signature header with any single byte flipped (every position), and the body with sampled bytes flipped', async () => {
      const header = Buffer.from(valid, 'latin1');
      for (let at = 0; at < header.length; at++) {
        for (const bit of [0, 5]) {
          const flipped = Buffer.from(header);
          flipped[at] = (flipped[at] as number) ^ (1 << bit);
          const response = await deliver(body, flipped, `header byte ${at} bit ${bit}`);
          expect(response.status, `header byte ${at} bit ${bit}: ${response.body}`).toBe(400);
        }
      }
      const bodyBytes = Buffer.from(body, 'utf8');
      await fc.assert(fc.asyncProperty(fc.nat({ max: bodyBytes.length - 1 }), fc.integer({ min: 0, max: 7 }), async (at, bit) => {
        const flipped = Buffer.from(bodyBytes);
        flipped[at] = (flipped[at] as number) ^ (1 << bit);
        const response = await deliver(flipped, valid, `body byte ${at} bit ${bit}`);
        expect(response.status, `body byte ${at} bit ${bit}: ${response.body}`).toBe(400);
      }), fcParams(Math.min(RUNS, 80)));
      expect(await paymentsState()).toMatchObject({ events: 0, grants: 0, paid: 0 });
      expect(await packCredits()).toBe(0n);
    }, 120_000);

    it('signed events of any shape (missing data, odd ids, types, timestamps, NUL): 200 or 400, never 5xx; none grants', async () => {
      const shapeArb = fc.record({
        id: fc.oneof(fc.constantFrom('evt_fz', '', 'evt_\u0000', 'x'.repeat(10_000)), fc.string(), fc.integer(), fc.constant(null)),
        type: fc.oneof(fc.constantFrom('checkout.session.completed', 'checkout.session.async_payment_succeeded', 'checkout.session.expired',
          'checkout.session.async_payment_failed', 'payment_intent.succeeded', 'payment_intent.payment_failed', 'charge.refunded'), fc.string()),
        created: fc.oneof(fc.constant(Math.floor(Date.now() / 1000)), fc.integer(), fc.double(), fc.string(), fc.constant(null), fc.constant(1e300)),
        data: fc.oneof(
          fc.constant(undefined), fc.constant(null), fc.constant({}), fc.jsonValue(),
          fc.record({ object: fc.oneof(fc.constant(null), fc.jsonValue(), fc.record({
            id: fc.oneof(fc.constant('cs_test_unknown'), fc.string(), fc.integer()),
            payment_status: fc.constantFrom('paid', 'unpaid', undefined, 7),
            metadata: fc.oneof(fc.constant(undefined), fc.constant(null), fc.dictionary(fc.string(), fc.string())),
            amount_total: fc.oneof(fc.integer(), fc.constant(null), fc.string()),
          }, { requiredKeys: [] })) }),
        ),
      }, { requiredKeys: [] });
      const sessionsPaid = async () => (await paymentsState()).paid;
      const grantsBefore = (await paymentsState()).grants;
      let serial = 0;
      await fc.assert(fc.asyncProperty(shapeArb, async (shape) => {
        // A fresh id per run when the shape has a string id, so dedup does not hide what the handler does.
        const event = typeof shape.id === 'string' && shape.id.startsWith('evt_fz') ? { ...shape, id: `evt_fz_${serial++}` } : shape;
        const payload = JSON.stringify(event);
        const response = await deliver(payload, signWebhook(payload, TEST_WEBHOOK_SECRET), 'signed event of any shape');
        expect([200, 400], response.body).toContain(response.status);
      }), fcParams());
      expect((await paymentsState()).grants).toBe(grantsBefore);
      expect(await sessionsPaid()).toBe(0);
    }, 120_000);

    it('refuses (400, nothing recorded) signed events Postgres could never store: created 1e300, created as text, no data.object', async () => {
      const base = JSON.parse(body) as Record<string, unknown>;
      for (const [what, change] of [
        ['created 1e300', { created: 1e300 }], ['created "1"', { created: '1' }], ['created -1', { created: -1 }],
        ['no data', { data: undefined }], ['data.object null', { data: { object: null } }],
      ] as const) {
        const payload = JSON.stringify({ ...base, id: `evt_shape_${what.replace(/\W/g, '_')}`, ...change });
        await expectRefused(payload, signWebhook(payload, TEST_WEBHOOK_SECRET), `signed, ${what}`);
      }
    });

    it('records and grants a paid session whose event carries NUL characters (Postgres refuses NUL: stored as U+FFFD)', async () => {
      const nulSession = (await checkout({
        accountId: 'fh-buyer', packId: 'pack_500', credits: 0n, successUrl: 'https://app.example/ok', cancelUrl: 'https://app.example/no', requestId: 'fh-nul',
      })).sessionId;
      const event = fake.event('checkout.session.completed', { ...fake.completedSession(nulSession), customer_details: { name: 'Ada\u0000Lovelace' } });
      const payload = JSON.stringify(event);
      expect(payload).toContain('\\u0000');
      const answer = await deliver(payload, signWebhook(payload, TEST_WEBHOOK_SECRET), 'paid event with a NUL');
      expect({ status: answer.status, body: JSON.parse(answer.body) as unknown }).toEqual({ status: 200, body: { received: true, duplicate: false, outcome: 'granted' } });
      const stored = await db.query<{ name: string }>("SELECT payload->'data'->'object'->'customer_details'->>'name' AS name FROM stripe_events WHERE event_id = $1", [event.id]);
      expect(stored.rows).toEqual([{ name: 'Ada\uFFFDLovelace' }]);
      expect((await deliver(payload, signWebhook(payload, TEST_WEBHOOK_SECRET), 'again')).status).toBe(200);
      await eventually(async () => ((await packCredits()) === 500n ? true : undefined), 'the pack granted');
      expect((await db.query('SELECT grant_id FROM credit_grant_outbox')).rows).toEqual([{ grant_id: checkoutGrantId(nulSession) }]);
    });

    it('accepts the valid delivery once: a replay and a re-signed event with the same id are duplicates; one grant', async () => {
      const stateBefore = await paymentsState();
      const creditsBefore = await packCredits();
      const first = await deliver(body, valid, 'valid');
      expect({ status: first.status, body: JSON.parse(first.body) as unknown }).toEqual({ status: 200, body: { received: true, duplicate: false, outcome: 'granted' } });
      const replay = await deliver(body, valid, 'replayed as is');
      expect(JSON.parse(replay.body)).toMatchObject({ duplicate: true });
      // The same event id re-signed over another body (e.g. another session): still that event, recorded once.
      const otherSession = (await checkout({
        accountId: 'fh-buyer', packId: 'pack_2500', credits: 0n, successUrl: 'https://app.example/ok', cancelUrl: 'https://app.example/no', requestId: 'fh-2',
      })).sessionId;
      const sameId = JSON.stringify({ ...(JSON.parse(body) as Record<string, unknown>), data: { object: fake.completedSession(otherSession) } });
      const resigned = await deliver(sameId, signWebhook(sameId, TEST_WEBHOOK_SECRET), 'same event id, other body, re-signed');
      expect(JSON.parse(resigned.body)).toMatchObject({ duplicate: true });
      // A fresh signature of the old body (a replay with a new timestamp): a duplicate too.
      const fresh = await deliver(body, signWebhook(body, TEST_WEBHOOK_SECRET, Math.floor(Date.now() / 1000) - 10), 'replayed with a new timestamp');
      expect(JSON.parse(fresh.body)).toMatchObject({ duplicate: true });
      await eventually(async () => ((await packCredits()) === creditsBefore + 500n ? true : undefined), 'the pack granted');
      expect(await paymentsState()).toEqual({ events: stateBefore.events + 1, grants: stateBefore.grants + 1, paid: stateBefore.paid + 1 });
      const grants = await db.query('SELECT grant_id FROM credit_grant_outbox WHERE grant_id = $1', [checkoutGrantId(sessionId)]);
      expect(grants.rows).toHaveLength(1);
      expect(await packCredits()).toBe(creditsBefore + 500n);
    });
  });

  it('after everything, each route still answers as documented', async () => {
    expect((await send(httpRequest('GET', '/healthz', []), 'healthz')).body).toBe('{"status":"alive"}');
    expect(JSON.parse((await send(httpRequest('GET', '/readyz', []), 'readyz')).body)).toMatchObject({ ready: true });
    expect((await send(httpRequest('GET', '/metrics', []), 'metrics')).status).toBe(200);
    expect(stats.byStatus.get(500) ?? 0).toBe(0);
  });
});
