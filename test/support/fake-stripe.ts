import { randomBytes } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import pg from 'pg';
import { pino } from 'pino';
import Stripe from 'stripe';
import { parseProductConfig, type ProductConfig } from '../../src/config/product-config.js';
import { loadSettings, type Settings } from '../../src/config/settings.js';
import { startHttpServer, type RunningHttpServer } from '../../src/observability/http-server.js';
import { startPayments, type RunningPayments } from '../../src/payments/index.js';
import { startTestMeterd, TEST_PRODUCT, type TestMeterd } from './meterd.js';

/**
 * A local HTTP server that answers like Stripe's API, for the real stripe SDK pointed at it
 * (STRIPE_API_URL). It records every request (method, path, idempotency key, API version, the
 * form-encoded parameters decoded into objects), keeps the objects it created (Checkout Sessions,
 * PaymentIntents, meter events), replays the first answer for a repeated idempotency key (and refuses
 * one reused with other parameters, as Stripe does), and lets a test script failures.
 *
 * Answered: POST /v1/checkout/sessions, GET /v1/checkout/sessions/:id, POST /v1/payment_intents,
 * GET /v1/payment_intents/:id, POST /v1/payment_intents/:id/confirm, POST /v1/billing/meter_events.
 * Anything else: 404 like Stripe's "Unrecognized request URL".
 */

export type FormValue = string | FormObject | FormValue[];
export interface FormObject { [key: string]: FormValue }

export interface RecordedRequest {
  method: string;
  path: string;
  idempotencyKey: string;
  stripeVersion: string;
  authorization: string;
  params: FormObject;
  /** The answer was the stored first answer of its idempotency key. */
  replayed: boolean;
  status: number;
}

export interface FakeAnswer {
  status: number;
  body: unknown;
}

/** How the next payment (PaymentIntent create or confirm) ends. */
export type PaymentOutcome = 'succeed' | 'decline' | 'processing';

interface Stored {
  paramsText: string;
  path: string;
  answer: FakeAnswer;
}

/** Decodes Stripe's form encoding (`a[b][0][c]=v`) into nested objects and arrays. */
export function decodeForm(text: string): FormObject {
  const root: FormObject = {};
  for (const pair of text.split('&')) {
    if (pair === '') continue;
    const eq = pair.indexOf('=');
    const key = decodeURIComponent((eq < 0 ? pair : pair.slice(0, eq)).replace(/\+/g, ' '));
    const value = eq < 0 ? '' : decodeURIComponent(pair.slice(eq + 1).replace(/\+/g, ' '));
    const path = key.split(/\[|\]\[|\]/).filter((p) => p !== '');
    let node: FormObject | FormValue[] = root;
    path.forEach((part, i) => {
      const last = i === path.length - 1;
      const nextIsIndex = !last && /^\d+$/.test(path[i + 1] as string);
      const container = node as Record<string, FormValue>;
      if (last) {
        container[part] = value;
        return;
      }
      container[part] ??= nextIsIndex ? [] : {};
      node = container[part] as FormObject | FormValue[];
    });
  }
  return root;
}

function stripeError(status: number, error: Record<string, unknown>): FakeAnswer {
  return { status, body: { error: { type: 'invalid_request_error', ...error } } };
}

function id(prefix: string): string {
  return `${prefix}_test_${randomBytes(12).toString('hex')}`;
}

const nowSeconds = () => Math.floor(Date.now() / 1000);

export class FakeStripe {
  readonly requests: RecordedRequest[] = [];
  readonly sessions = new Map<string, Record<string, unknown>>();
  readonly paymentIntents = new Map<string, Record<string, unknown>>();
  /** Meter events by identifier (a repeated identifier is refused, as Stripe does within 24 h). */
  readonly meterEvents = new Map<string, Record<string, unknown>>();
  /** Outcomes of the next payments of each customer (cus_...), in order; when none is left, payments succeed. */
  readonly paymentOutcomes = new Map<string, PaymentOutcome[]>();
  private readonly idempotency = new Map<string, Stored>();
  private readonly scripted: Array<{ method: string; path: RegExp; answer: FakeAnswer; times: number }> = [];

  private constructor(private readonly server: Server, readonly url: string) {}

  static async start(): Promise<FakeStripe> {
    let fake: FakeStripe | undefined;
    const server = createServer((request, response) => {
      fake?.handle(request, response).catch((err: unknown) => {
        response.writeHead(500, { 'content-type': 'application/json' });
        response.end(JSON.stringify({ error: { type: 'api_error', message: String(err) } }));
      });
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const address = server.address();
    const port = typeof address === 'object' && address ? address.port : 0;
    fake = new FakeStripe(server, `http://127.0.0.1:${port}`);
    return fake;
  }

  async close(): Promise<void> {
    await new Promise<void>((resolve) => {
      this.server.close(() => resolve());
      this.server.closeAllConnections();
    });
  }

  /** The next `times` requests matching method and path get `answer` (not stored under their
   *  idempotency key when status ≥ 500: Stripe stores only answers of requests it began executing). */
  failNext(method: string, path: RegExp, answer: FakeAnswer, times = 1): void {
    this.scripted.push({ method, path, answer, times });
  }

  /** Requests to one endpoint ("POST /v1/payment_intents"), answered or not. */
  requestsTo(method: string, path: string | RegExp): RecordedRequest[] {
    return this.requests.filter((r) => r.method === method && (typeof path === 'string' ? r.path === path : path.test(r.path)));
  }

  /** A Stripe event as a webhook delivers it. */
  event(type: string, object: Record<string, unknown>, overrides: Record<string, unknown> = {}): Record<string, unknown> {
    return {
      id: id('evt'), object: 'event', api_version: Stripe.API_VERSION, created: nowSeconds(), livemode: false,
      pending_webhooks: 1, request: { id: null, idempotency_key: null }, type, data: { object }, ...overrides,
    };
  }

  /** A session meterd created, as Stripe shows it once the buyer finished Checkout. */
  completedSession(sessionId: string, paymentStatus: 'paid' | 'unpaid' = 'paid'): Record<string, unknown> {
    const session = this.sessions.get(sessionId);
    if (!session) throw new Error(`fake stripe: no session ${sessionId}`);
    return { ...session, status: 'complete', payment_status: paymentStatus, payment_intent: id('pi') };
  }

  private async handle(request: IncomingMessage, response: ServerResponse): Promise<void> {
    const chunks: Buffer[] = [];
    for await (const chunk of request) chunks.push(chunk as Buffer);
    const [pathname = '/', query = ''] = (request.url ?? '/').split('?');
    const method = request.method ?? 'GET';
    const paramsText = method === 'GET' ? query : Buffer.concat(chunks).toString('utf8');
    const params = decodeForm(paramsText);
    const header = (name: string) => String(request.headers[name] ?? '');
    const recorded: RecordedRequest = {
      method, path: pathname, idempotencyKey: header('idempotency-key'), stripeVersion: header('stripe-version'),
      authorization: header('authorization'), params, replayed: false, status: 0,
    };
    this.requests.push(recorded);
    let answer: FakeAnswer;
    const stored = recorded.idempotencyKey === '' || method !== 'POST' ? undefined : this.idempotency.get(recorded.idempotencyKey);
    if (!/^Bearer sk_(test|live)_\S+$/.test(recorded.authorization)) {
      answer = { status: 401, body: { error: { type: 'invalid_request_error', message: 'Invalid API Key provided' } } };
    } else if (stored) {
      if (stored.paramsText !== paramsText || stored.path !== pathname) {
        answer = { status: 400, body: { error: { type: 'idempotency_error',
          message: `Keys for idempotent requests can only be used with the same parameters they were first used with. Try using a key other than '${recorded.idempotencyKey}' if you meant to execute a different request.` } } };
      } else {
        answer = stored.answer;
        recorded.replayed = true;
      }
    } else {
      const script = this.scripted.find((s) => s.method === method && s.path.test(pathname) && s.times > 0);
      if (script) {
        script.times -= 1;
        answer = script.answer;
      } else {
        answer = this.route(method, pathname, params);
      }
      if (method === 'POST' && recorded.idempotencyKey !== '' && answer.status < 500) {
        this.idempotency.set(recorded.idempotencyKey, { paramsText, path: pathname, answer });
      }
    }
    recorded.status = answer.status;
    const text = JSON.stringify(answer.body);
    const headers: Record<string, string | number> = {
      'content-type': 'application/json', 'content-length': Buffer.byteLength(text), 'request-id': id('req'),
      'stripe-version': recorded.stripeVersion || Stripe.API_VERSION,
    };
    if (recorded.replayed) headers['idempotent-replayed'] = 'true';
    if (recorded.idempotencyKey !== '') headers['idempotency-key'] = recorded.idempotencyKey;
    // Never ask the SDK to retry by itself: tests count requests.
    headers['stripe-should-retry'] = 'false';
    response.writeHead(answer.status, headers);
    response.end(text);
  }

  private route(method: string, path: string, params: FormObject): FakeAnswer {
    let match: RegExpExecArray | null;
    if (method === 'POST' && path === '/v1/checkout/sessions') return this.createSession(params);
    if (method === 'GET' && (match = /^\/v1\/checkout\/sessions\/([^/]+)$/.exec(path))) {
      const session = this.sessions.get(match[1] as string);
      return session ? { status: 200, body: session } : stripeError(404, { code: 'resource_missing', message: `No such checkout.session: '${match[1]}'` });
    }
    if (method === 'POST' && path === '/v1/payment_intents') return this.createPaymentIntent(params);
    if (method === 'GET' && (match = /^\/v1\/payment_intents\/([^/]+)$/.exec(path))) {
      const intent = this.paymentIntents.get(match[1] as string);
      return intent ? { status: 200, body: intent } : stripeError(404, { code: 'resource_missing', message: `No such payment_intent: '${match[1]}'` });
    }
    if (method === 'POST' && (match = /^\/v1\/payment_intents\/([^/]+)\/confirm$/.exec(path))) return this.confirmPaymentIntent(match[1] as string, params);
    if (method === 'POST' && path === '/v1/billing/meter_events') return this.createMeterEvent(params);
    return stripeError(404, { message: `Unrecognized request URL (${method}: ${path}). Please see https://stripe.com/docs` });
  }

  private createSession(params: FormObject): FakeAnswer {
    for (const required of ['mode', 'success_url']) {
      if (typeof params[required] !== 'string') return stripeError(400, { code: 'parameter_missing', param: required, message: `Missing required param: ${required}.` });
    }
    const items = (params.line_items ?? []) as FormObject[];
    let total = 0;
    for (const item of items) {
      const price = item.price_data as FormObject | undefined;
      total += Number(price?.unit_amount ?? 0) * Number(item.quantity ?? 1);
    }
    const currency = ((items[0]?.price_data as FormObject | undefined)?.currency as string | undefined) ?? 'usd';
    const sessionId = id('cs');
    const session: Record<string, unknown> = {
      id: sessionId, object: 'checkout.session', mode: params.mode, status: 'open', payment_status: 'unpaid',
      url: `https://checkout.stripe.com/c/pay/${sessionId}`, amount_subtotal: total, amount_total: total, currency,
      client_reference_id: params.client_reference_id ?? null, customer: params.customer ?? null,
      metadata: params.metadata ?? {}, success_url: params.success_url, cancel_url: params.cancel_url ?? null,
      payment_intent: null, created: nowSeconds(), expires_at: nowSeconds() + 86_400, livemode: false,
    };
    this.sessions.set(sessionId, session);
    return { status: 200, body: session };
  }

  /** The next payments of `customer` end this way (then they succeed again). */
  scriptPayments(customer: string, ...outcomes: PaymentOutcome[]): void {
    this.paymentOutcomes.set(customer, [...(this.paymentOutcomes.get(customer) ?? []), ...outcomes]);
  }

  private pay(intent: Record<string, unknown>): FakeAnswer {
    const outcome = this.paymentOutcomes.get(String(intent.customer ?? ''))?.shift() ?? 'succeed';
    if (outcome === 'succeed') {
      Object.assign(intent, { status: 'succeeded', last_payment_error: null, latest_charge: id('ch') });
      return { status: 200, body: intent };
    }
    if (outcome === 'processing') {
      Object.assign(intent, { status: 'processing', last_payment_error: null });
      return { status: 200, body: intent };
    }
    const error = { type: 'card_error', code: 'card_declined', decline_code: 'insufficient_funds', message: 'Your card has insufficient funds.' };
    Object.assign(intent, { status: 'requires_payment_method', last_payment_error: error });
    return { status: 402, body: { error: { ...error, charge: id('ch'), payment_intent: { ...intent } } } };
  }

  private createPaymentIntent(params: FormObject): FakeAnswer {
    for (const required of ['amount', 'currency']) {
      if (typeof params[required] !== 'string') return stripeError(400, { code: 'parameter_missing', param: required, message: `Missing required param: ${required}.` });
    }
    const intent: Record<string, unknown> = {
      id: id('pi'), object: 'payment_intent', amount: Number(params.amount), currency: params.currency, customer: params.customer ?? null,
      payment_method: params.payment_method ?? null, metadata: params.metadata ?? {}, description: params.description ?? null,
      status: 'requires_confirmation', last_payment_error: null, created: nowSeconds(), livemode: false,
    };
    this.paymentIntents.set(intent.id as string, intent);
    return params.confirm === 'true' ? this.pay(intent) : { status: 200, body: intent };
  }

  private confirmPaymentIntent(intentId: string, params: FormObject): FakeAnswer {
    const intent = this.paymentIntents.get(intentId);
    if (!intent) return stripeError(404, { code: 'resource_missing', message: `No such payment_intent: '${intentId}'` });
    if (intent.status !== 'requires_payment_method' && intent.status !== 'requires_confirmation') {
      return stripeError(400, { code: 'payment_intent_unexpected_state', message: `This PaymentIntent's status is ${String(intent.status)}; it cannot be confirmed.` });
    }
    if (typeof params.payment_method === 'string') intent.payment_method = params.payment_method;
    return this.pay(intent);
  }

  private createMeterEvent(params: FormObject): FakeAnswer {
    const identifier = typeof params.identifier === 'string' ? params.identifier : id('mev');
    if (this.meterEvents.has(identifier)) {
      return stripeError(400, { code: 'resource_already_exists', message: `An event with identifier ${identifier} already exists.` });
    }
    const event = {
      object: 'billing.meter_event', created: nowSeconds(), event_name: params.event_name, identifier,
      livemode: false, payload: params.payload ?? {}, timestamp: Number(params.timestamp ?? nowSeconds()),
    };
    this.meterEvents.set(identifier, event);
    return { status: 200, body: event };
  }
}

/** Signs a webhook body as Stripe does (Stripe-Signature: t=...,v1=...). */
export function signWebhook(payload: string, secret: string, timestampSeconds?: number): string {
  return Stripe.webhooks.generateTestHeaderString({
    payload, secret, ...(timestampSeconds === undefined ? {} : { timestamp: timestampSeconds }),
  });
}

// ---------------------------------------------------------------------------------------------
// The payments test harness: a meterd with its own Postgres database, a fake Stripe, payments
// started against both, and an HTTP server with the webhook route.

export const TEST_STRIPE_SECRET_KEY = 'sk_test_x';
export const TEST_WEBHOOK_SECRET = 'whsec_x';

export interface PaymentsTest {
  t: TestMeterd;
  fake: FakeStripe;
  running: RunningPayments;
  settings: Readonly<Settings>;
  /** A second pool on the test's database, for assertions. */
  db: pg.Pool;
  webhookUrl: string;
  /** POSTs a body with a valid signature (or the given Stripe-Signature header). */
  deliver(body: string, signature?: string): Promise<{ status: number; body: Record<string, unknown> }>;
  /** Stops payments and its HTTP server (the "crash"), keeping meterd and the database. */
  stopPayments(): Promise<void>;
  /** Starts payments again on the same meterd and database (a restart). */
  restartPayments(options?: { background?: boolean }): Promise<void>;
  stop(): Promise<void>;
}

/**
 * meterd itself starts WITHOUT Stripe settings, so whatever app.ts wires never runs a second relay
 * behind a test's back; this harness starts payments with the Stripe settings on meterd's store and
 * database (as app.ts does), with background loops unless `background: false`.
 */
export async function startPaymentsTest(options: {
  env?: Record<string, string>; product?: ProductConfig; background?: boolean;
} = {}): Promise<PaymentsTest> {
  const product = options.product ?? TEST_PAYMENTS_PRODUCT;
  const fake = await FakeStripe.start();
  const t = await startTestMeterd({ postgres: true, product });
  const settings = loadSettings({
    STRIPE_SECRET_KEY: TEST_STRIPE_SECRET_KEY, STRIPE_WEBHOOK_SECRET: TEST_WEBHOOK_SECRET, STRIPE_API_URL: fake.url,
    STRIPE_MAX_NETWORK_RETRIES: '0', STRIPE_TIMEOUT_MS: '5000', OUTBOX_POLL_INTERVAL_MS: '50', REFILL_RETRY_BASE_MS: '10',
    OVERAGE_REPORT_INTERVAL_MS: '0', ...options.env,
  });
  const logger = pino({ level: process.env.TEST_LOG_LEVEL ?? 'silent' });
  const db = new pg.Pool({ connectionString: t.databaseUrl, max: 4 });
  db.on('error', () => {});
  let running: RunningPayments | null = null;
  let http: RunningHttpServer | null = null;
  const harness: PaymentsTest = {
    t, fake, settings, db, webhookUrl: '',
    get running() {
      if (!running) throw new Error('payments are stopped');
      return running;
    },
    async deliver(body, signature) {
      const response = await fetch(harness.webhookUrl, {
        method: 'POST', body,
        headers: { 'content-type': 'application/json', 'stripe-signature': signature ?? signWebhook(body, TEST_WEBHOOK_SECRET) },
      });
      return { status: response.status, body: (await response.json()) as Record<string, unknown> };
    },
    async stopPayments() {
      await http?.close();
      await running?.stop();
      http = null;
      running = null;
    },
    async restartPayments(restart = {}) {
      running = await startPayments({ settings, product, store: t.meterd.store, database: t.meterd.database as pg.Pool, logger, clock: t.clock },
        { background: restart.background ?? true });
      if (!running) throw new Error('payments did not start');
      http = await startHttpServer('127.0.0.1', 0, running.routes, logger);
      harness.webhookUrl = `http://127.0.0.1:${http.port}/webhooks/stripe`;
    },
    async stop() {
      await harness.stopPayments();
      await db.end();
      await t.stop();
      await fake.close();
    },
  } as PaymentsTest;
  await harness.restartPayments({ background: options.background ?? true });
  return harness;
}

/** The test product plus the seed docs' packs ($20 → 500, $100 → 2,500, $500 → 12,500) and a custom
 *  quantity at $0.245 a credit, where a Free account buying 200+ is better off on Starter ($49, +750). */
export const TEST_PAYMENTS_PRODUCT: ProductConfig = parseProductConfig({
  plans: [...TEST_PRODUCT.plans.values()].map((p) => ({
    id: p.id, monthly_credits: Number(p.monthlyCredits), price_cents: p.priceCents,
    ...(p.overageLimit > 0n ? { overage_limit: Number(p.overageLimit) } : {}),
  })),
  features: [...TEST_PRODUCT.features.values()].map((f) => ({
    id: f.id, credits: f.credits, ...(f.perUnits > 0 ? { per_units: f.perUnits, min_credits: f.minCredits } : {}),
  })),
  packs: [
    { id: 'pack_500', credits: 500, price_cents: 2000, currency: 'usd' },
    { id: 'pack_2500', credits: 2500, price_cents: 10000, currency: 'usd' },
    { id: 'pack_12500', credits: 12500, price_cents: 50000, currency: 'usd' },
  ],
  custom_quantity: { unit_price_centi_cents: 2450, currency: 'usd', min_credits: 10, max_credits: 100000, quick_picks: [100, 250, 500, 1000] },
});

/** Waits until `probe` returns something other than undefined (no timing is asserted; `limitMs` only
 *  turns a hang into a readable failure). */
export async function eventually<T>(probe: () => Promise<T | undefined>, what: string, limitMs = 10_000): Promise<T> {
  const deadline = Date.now() + limitMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`still waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}
