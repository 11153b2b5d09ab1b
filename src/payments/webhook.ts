import type { IncomingMessage, ServerResponse } from 'node:http';
import type pg from 'pg';
import Stripe from 'stripe';
import { HTTP_BODY_BYTES_MAX, sendJson, type HttpHandler } from '../observability/http-server.js';
import type { Logger } from '../observability/logger.js';
import { METADATA_SOURCE } from './checkout.js';
import { checkoutGrantId } from './ids.js';
import type { PaymentsObserver } from './observer.js';
import { markRefillSucceeded } from './refill-worker.js';
import { inTransaction } from '../postgres/transaction.js';

/** What handling an event did, stored in stripe_events.outcome for the operator. */
export type EventOutcome =
  | 'granted' | 'already_granted' | 'unpaid' | 'failed' | 'expired' | 'unknown_session'
  | 'refill_succeeded' | 'refill_payment_failed' | 'ignored';

export interface WebhookDependencies {
  stripe: Stripe;
  webhookSecret: string;
  database: pg.Pool;
  logger: Logger;
  observer: PaymentsObserver;
  /** A grant row was written: the relay should run now. */
  grantQueued(): void;
  /** A refill's payment failed: the refill worker should look (it retries with backoff). */
  refillChanged(): void;
  refillRetryBaseMs: number;
}

class BodyTooLarge extends Error {}

/**
 * The raw body, byte for byte (the signature is over these bytes), refused past HTTP_BODY_BYTES_MAX.
 * Past the limit the rest is read and dropped rather than the socket destroyed, so the 413 reaches
 * the sender.
 */
function readRawBody(request: IncomingMessage): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const declared = Number(request.headers['content-length'] ?? '0');
    if (declared > HTTP_BODY_BYTES_MAX) {
      request.resume();
      reject(new BodyTooLarge());
      return;
    }
    const chunks: Buffer[] = [];
    let size = 0;
    let tooLarge = false;
    request.on('data', (chunk: Buffer) => {
      if (tooLarge) return;
      size += chunk.length;
      if (size > HTTP_BODY_BYTES_MAX) {
        tooLarge = true;
        chunks.length = 0;
        reject(new BodyTooLarge());
        return;
      }
      chunks.push(chunk);
    });
    request.on('end', () => {
      if (!tooLarge) resolve(Buffer.concat(chunks));
    });
    request.on('error', reject);
  });
}

const NOT_AN_EVENT = 'not an event';
/** Event times Postgres' to_timestamp takes (epoch seconds up to 9999-12-31). */
const EVENT_CREATED_SECONDS_MAX = 253_402_300_799;

/**
 * Whether a verified body has the shape every handled event needs (Stripe's always has): anything
 * else would fail in Postgres or in applyEvent on every delivery, answered 500 and delivered forever.
 */
function isEvent(event: Stripe.Event): boolean {
  const data = event.data as Stripe.Event.Data | undefined;
  return typeof event.id === 'string' && event.id !== '' && typeof event.type === 'string'
    && Number.isSafeInteger(event.created) && event.created >= 0 && event.created <= EVENT_CREATED_SECONDS_MAX
    && typeof data?.object === 'object' && data.object !== null;
}

/** Postgres text and jsonb cannot hold NUL: a verified event's NULs (in keys and strings) become U+FFFD. */
function withoutNul<T>(value: T): T {
  if (typeof value === 'string') return value.replaceAll('\u0000', '\uFFFD') as T;
  if (Array.isArray(value)) return value.map(withoutNul) as T;
  if (value !== null && typeof value === 'object') {
    return Object.fromEntries(Object.entries(value).map(([key, inner]) => [withoutNul(key), withoutNul(inner)])) as T;
  }
  return value;
}

/** A short reason for a refused delivery (never the secret, never the expected signature). */
function signatureFailure(err: unknown): string {
  const message = err instanceof Error ? err.message : '';
  if (err instanceof SyntaxError) return err.message === NOT_AN_EVENT ? 'body is not a Stripe event' : 'body is not JSON';
  if (/tolerance/i.test(message)) return 'timestamp outside the tolerance zone';
  if (/Unable to extract timestamp and signatures|expected scheme/i.test(message)) return 'malformed Stripe-Signature header';
  if (/No signatures found/i.test(message)) return 'signature does not match the body';
  return 'signature verification failed';
}

/**
 * POST /webhooks/stripe: verifies the signature over the raw body (constructEvent, 300 s tolerance),
 * then in ONE Postgres transaction records the event once by id and applies it: a paid Checkout
 * Session writes its grant to the outbox (keyed by the session, so `completed` and
 * `async_payment_succeeded` grant once), a refill's PaymentIntent settles it. 200 after COMMIT (also
 * for a duplicate or an event type we do not handle); 400 and nothing recorded when the signature
 * fails; 500 when Postgres fails (Stripe delivers again).
 */
export function stripeWebhookHandler(deps: WebhookDependencies): HttpHandler {
  return async (request: IncomingMessage, response: ServerResponse) => {
    let body: Buffer;
    try {
      body = await readRawBody(request);
    } catch (err) {
      if (!(err instanceof BodyTooLarge)) throw err;
      deps.observer.webhook('too_large');
      response.setHeader('connection', 'close');
      sendJson(response, 413, { error: `body larger than ${HTTP_BODY_BYTES_MAX} bytes` });
      return;
    }
    const signature = request.headers['stripe-signature'];
    if (typeof signature !== 'string' || signature === '') {
      deps.observer.webhook('invalid_signature');
      sendJson(response, 400, { error: 'missing Stripe-Signature header' });
      return;
    }
    let event: Stripe.Event;
    try {
      event = deps.stripe.webhooks.constructEvent(body, signature, deps.webhookSecret);
      if (!isEvent(event)) throw new SyntaxError(NOT_AN_EVENT);
    } catch (err) {
      const reason = signatureFailure(err);
      deps.observer.webhook('invalid_signature');
      deps.logger.warn({ reason, remote: request.socket.remoteAddress }, 'stripe webhook refused');
      sendJson(response, 400, { error: `webhook refused: ${reason}` });
      return;
    }
    // The stored payload is the body as received, unless it carries NULs Postgres would refuse.
    const hasNul = body.includes('\\u0000');
    if (hasNul) event = withoutNul(event);
    const payload = hasNul ? JSON.stringify(event) : body.toString('utf8');
    let handled: { duplicate: boolean; outcome: EventOutcome | '' };
    try {
      handled = await inTransaction(deps.database, async (client) => {
        const inserted = await client.query(
          `INSERT INTO stripe_events (event_id, type, created, payload) VALUES ($1, $2, to_timestamp($3), $4::jsonb)
           ON CONFLICT (event_id) DO NOTHING`, [event.id, event.type, event.created, payload]);
        if (inserted.rowCount === 0) return { duplicate: true, outcome: '' as const };
        const outcome = await applyEvent(client, event, deps);
        await client.query('UPDATE stripe_events SET outcome = $2 WHERE event_id = $1', [event.id, outcome]);
        return { duplicate: false, outcome };
      });
    } catch (err) {
      deps.observer.webhook('failed');
      deps.logger.error({ err, eventId: event.id, type: event.type }, 'stripe webhook not recorded; Stripe will deliver it again');
      sendJson(response, 500, { error: 'not recorded; deliver again' });
      return;
    }
    deps.observer.webhook(handled.duplicate ? 'duplicate' : handled.outcome === 'ignored' ? 'ignored' : 'processed');
    deps.logger.info({ eventId: event.id, type: event.type, duplicate: handled.duplicate, outcome: handled.outcome }, 'stripe webhook');
    if (handled.outcome === 'granted' || handled.outcome === 'refill_succeeded') deps.grantQueued();
    if (handled.outcome === 'refill_payment_failed') deps.refillChanged();
    sendJson(response, 200, { received: true, duplicate: handled.duplicate, outcome: handled.outcome });
  };
}

async function applyEvent(client: pg.PoolClient, event: Stripe.Event, deps: WebhookDependencies): Promise<EventOutcome> {
  switch (event.type) {
    case 'checkout.session.completed': {
      const session = event.data.object;
      return session.payment_status === 'paid' ? fulfilCheckout(client, session, deps) : 'unpaid';
    }
    case 'checkout.session.async_payment_succeeded':
      return fulfilCheckout(client, event.data.object, deps);
    case 'checkout.session.async_payment_failed':
      await client.query("UPDATE checkout_sessions SET status = 'failed' WHERE session_id = $1 AND status = 'open'", [event.data.object.id]);
      return 'failed';
    case 'checkout.session.expired':
      await client.query("UPDATE checkout_sessions SET status = 'expired' WHERE session_id = $1 AND status = 'open'", [event.data.object.id]);
      return 'expired';
    case 'payment_intent.succeeded':
      return refillSucceeded(client, event.data.object, deps);
    case 'payment_intent.payment_failed':
      return refillPaymentFailed(client, event.data.object, deps);
    default:
      return 'ignored';
  }
}

interface SessionRow { account_id: string; credits: string; amount_cents: string; currency: string }

/**
 * A paid Checkout Session: marks it paid and writes its grant to the outbox, at most once per session
 * (grant_id 'checkout:<session id>' is the outbox's primary key). A session meterd created but did
 * not get to record (a crash right after Stripe answered) is taken from its metadata, which only
 * meterd's secret key could have set and Stripe's signature vouches for.
 */
async function fulfilCheckout(client: pg.PoolClient, session: Stripe.Checkout.Session, deps: WebhookDependencies): Promise<EventOutcome> {
  let row = (await client.query<SessionRow>(
    `SELECT account_id, credits::text AS credits, amount_cents::text AS amount_cents, currency FROM checkout_sessions
      WHERE session_id = $1 FOR UPDATE`, [session.id])).rows[0];
  if (!row) {
    const metadata = session.metadata ?? {};
    const credits = metadata.credits ?? '';
    if (metadata.source !== METADATA_SOURCE || !metadata.account_id || !/^[1-9]\d{0,15}$/.test(credits)) {
      deps.logger.warn({ sessionId: session.id }, 'paid checkout session meterd does not know; nothing granted');
      return 'unknown_session';
    }
    row = { account_id: metadata.account_id, credits, amount_cents: String(session.amount_total ?? 0), currency: session.currency ?? '' };
    await client.query(
      `INSERT INTO checkout_sessions (session_id, account_id, requested_by, pack_id, credits, amount_cents, currency)
       VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (session_id) DO NOTHING`,
      [session.id, row.account_id, metadata.requested_by ?? row.account_id, metadata.pack_id ?? '', credits, row.amount_cents, row.currency]);
  }
  if (session.amount_total !== null && String(session.amount_total) !== row.amount_cents) {
    deps.logger.warn({ sessionId: session.id, expected: row.amount_cents, paid: session.amount_total }, 'checkout session paid another amount than priced');
  }
  await client.query("UPDATE checkout_sessions SET status = 'paid', paid_at = COALESCE(paid_at, now()) WHERE session_id = $1", [session.id]);
  const inserted = await client.query(
    'INSERT INTO credit_grant_outbox (grant_id, account_id, credits, reason) VALUES ($1, $2, $3, $4) ON CONFLICT (grant_id) DO NOTHING',
    [checkoutGrantId(session.id), row.account_id, row.credits, `stripe checkout ${session.id}`.slice(0, 256)]);
  return (inserted.rowCount ?? 0) > 0 ? 'granted' : 'already_granted';
}

/** An auto-refill's PaymentIntent succeeded: the refill is paid and its credits are owed, whatever the worker thought. */
async function refillSucceeded(client: pg.PoolClient, intent: Stripe.PaymentIntent, deps: WebhookDependencies): Promise<EventOutcome> {
  const refillId = intent.metadata?.refill_id;
  if (!refillId || intent.metadata?.source !== METADATA_SOURCE) return 'ignored';
  const row = (await client.query<{ refill_id: string; account_id: string; credits: string; amount_cents: string }>(
    'SELECT refill_id, account_id, credits::text AS credits, amount_cents::text AS amount_cents FROM refill_attempts WHERE refill_id = $1 FOR UPDATE',
    [refillId])).rows[0];
  if (!row) return 'ignored';
  if (row.credits === '0') {
    deps.logger.error({ refillId, paymentIntentId: intent.id }, 'refill paid before it was priced; nothing granted (review it)');
    return 'ignored';
  }
  return (await markRefillSucceeded(client, row, intent.id)) ? 'refill_succeeded' : 'already_granted';
}

/** A refill's payment failed (possibly after `processing`): bring its retry forward to the backoff. */
async function refillPaymentFailed(client: pg.PoolClient, intent: Stripe.PaymentIntent, deps: WebhookDependencies): Promise<EventOutcome> {
  const refillId = intent.metadata?.refill_id;
  if (!refillId || intent.metadata?.source !== METADATA_SOURCE) return 'ignored';
  const message = (intent.last_payment_error?.message ?? 'payment failed').slice(0, 500);
  const updated = await client.query(
    `UPDATE refill_attempts SET payment_intent_id = CASE WHEN payment_intent_id = '' THEN $2 ELSE payment_intent_id END, last_error = $3,
       next_attempt_at = LEAST(next_attempt_at, now() + $4 * power(2, GREATEST(attempts - 1, 0)) * interval '1 millisecond')
      WHERE refill_id = $1 AND status = 'processing'`, [refillId, intent.id, message, deps.refillRetryBaseMs]);
  return (updated.rowCount ?? 0) > 0 ? 'refill_payment_failed' : 'ignored';
}
