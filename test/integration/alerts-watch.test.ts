import { randomBytes } from 'node:crypto';
import { credentials, Metadata, Server, ServerCredentials, status, type ClientReadableStream, type ServiceError, type StatusObject } from '@grpc/grpc-js';
import { setTimeout as sleep } from 'node:timers/promises';
import pg from 'pg';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { AlertFeed } from '../../src/alerts/alert-feed.js';
import { startAlerts, type RunningAlerts } from '../../src/alerts/index.js';
import { prepareDatabase } from '../../src/app.js';
import { loadSettings } from '../../src/config/settings.js';
import { ManualClock } from '../../src/domain/clock.js';
import type { CreditStore } from '../../src/domain/ports.js';
import { AdminServiceClient, AdminServiceService } from '../../src/gen/meterd/v1/admin_service.js';
import { AlertKind, type Alert, type WatchAlertsRequest } from '../../src/gen/meterd/v1/billing.js';
import { START_POSITION_HEADER } from '../../src/grpc/alert-handlers.js';
import { tokenAuthorizer } from '../../src/grpc/auth.js';
import { adminHandlers } from '../../src/grpc/handlers.js';
import { errorInfoOf } from '../../src/grpc/status-details.js';
import { dropDatabase, TEST_PRODUCT, testDatabaseUrl } from '../support/meterd.js';

const silent = pino({ level: 'silent' });
const ADMIN_TOKEN = 'admin-token-0123456789';
const DATA_PLANE_TOKEN = 'data-plane-token-0123456789';
/** How long the backpressure test leaves a client not reading (the feed would stream everything meanwhile without backpressure). */
const PAUSED_FOR_MS = 300;

/** An AdminService on a grpc-js server of the test's own, WatchAlerts fed by startAlerts' feed. */
async function startAdminServer(feed: AlertFeed | undefined): Promise<{ server: Server; port: number }> {
  const server = new Server();
  server.addService(AdminServiceService, adminHandlers({
    store: {} as CreditStore, // WatchAlerts never touches the credit store
    product: TEST_PRODUCT, clock: new ManualClock(0), logger: silent, observe: () => {},
    authorize: tokenAuthorizer([DATA_PLANE_TOKEN], [ADMIN_TOKEN]),
    ...(feed ? { alerts: feed } : {}),
  }));
  const port = await new Promise<number>((resolve, reject) => {
    server.bindAsync('127.0.0.1:0', ServerCredentials.createInsecure(), (err, bound) => (err ? reject(err) : resolve(bound)));
  });
  return { server, port };
}

interface Watch {
  call: ClientReadableStream<Alert>;
  alerts: Alert[];
  /** The position the stream starts after (its response header). */
  started: Promise<bigint>;
  /** The final status, however the stream ended. */
  ended: Promise<StatusObject & { reason: string }>;
  /** Resolves once `count` alerts have arrived (the test's timeout bounds the wait). */
  received(count: number): Promise<Alert[]>;
}

function watch(client: AdminServiceClient, request: Partial<WatchAlertsRequest>, token: string | null = ADMIN_TOKEN): Watch {
  const metadata = new Metadata();
  if (token !== null) metadata.set('authorization', `Bearer ${token}`);
  const call = client.watchAlerts({ accountId: '', afterPosition: 0n, ...request }, metadata);
  const alerts: Alert[] = [];
  const waiters: Array<{ count: number; resolve: (alerts: Alert[]) => void }> = [];
  call.on('data', (alert: Alert) => {
    alerts.push(alert);
    for (const waiter of [...waiters]) {
      if (alerts.length >= waiter.count) {
        waiters.splice(waiters.indexOf(waiter), 1);
        waiter.resolve(alerts.slice());
      }
    }
  });
  let lastError: ServiceError | undefined;
  call.on('error', (err: ServiceError) => (lastError = err)); // the outcome is read from 'status'
  return {
    call,
    alerts,
    started: new Promise((resolve) => call.on('metadata', (headers: Metadata) => resolve(BigInt(String(headers.get(START_POSITION_HEADER)[0] ?? '-1'))))),
    ended: new Promise((resolve) => call.on('status', (s: StatusObject) => {
      resolve({ ...s, reason: lastError ? errorInfoOf(lastError)?.reason ?? '' : '' });
    })),
    received(count) {
      if (alerts.length >= count) return Promise.resolve(alerts.slice());
      return new Promise((resolve) => waiters.push({ count, resolve }));
    },
  };
}

describe('WatchAlerts over gRPC', () => {
  let databaseUrl: string;
  let db: pg.Pool;
  let alerts: RunningAlerts;
  let server: Server;
  let client: AdminServiceClient;
  /** Every follow the handler started, to see each one end on the server side. */
  const follows: Array<Promise<void>> = [];
  /** Alerts the feed handed to the handler, over all streams. */
  let handedOut = 0;
  let sequence = 0;

  beforeAll(async () => {
    databaseUrl = testDatabaseUrl(`meterd_watch_${randomBytes(6).toString('hex')}`);
    const settings = loadSettings({ DATABASE_URL: databaseUrl, OUTBOX_POLL_INTERVAL_MS: '10' });
    db = await prepareDatabase(settings, silent);
    db.on('error', () => {});
    alerts = await startAlerts({ settings, database: db, logger: silent });
    const tracked: AlertFeed = {
      follow: (filter, onAlert, signal, onStart) => {
        const counted = async (alert: Alert) => {
          handedOut += 1;
          await onAlert(alert);
        };
        const following = alerts.feed.follow(filter, counted, signal, onStart);
        follows.push(following);
        return following;
      },
    };
    const started = await startAdminServer(tracked);
    server = started.server;
    client = new AdminServiceClient(`127.0.0.1:${started.port}`, credentials.createInsecure());
  });
  afterAll(async () => {
    client?.close();
    await alerts?.stop();
    server?.forceShutdown();
    await db?.end();
    if (databaseUrl) await dropDatabase(databaseUrl);
  });

  async function insertAlert(accountId: string, kind = 'low', available = 40n, threshold = 50n): Promise<{ position: bigint; alertId: string; occurredAt: Date }> {
    sequence += 1;
    const alertId = `${accountId}/${sequence}`;
    const occurredAt = new Date(Date.UTC(2026, 0, 15, 12, 0, sequence));
    const { rows } = await db.query<{ position: string }>(
      `INSERT INTO alerts (alert_id, account_id, kind, available, threshold, occurred_at)
       VALUES ($1, $2, $3, $4, $5, $6) RETURNING position::text AS position`,
      [alertId, accountId, kind, available.toString(), threshold.toString(), occurredAt],
    );
    return { position: BigInt((rows[0] as { position: string }).position), alertId, occurredAt };
  }

  it('streams alerts written after it starts, in position order, as proto Alerts; a cancel ends it on the server too', async () => {
    const before = await insertAlert('acct-a');
    const w = watch(client, {});
    expect(await w.started).toBe(before.position);
    const written = [
      { ...(await insertAlert('acct-a', 'low', 40n, 50n)), accountId: 'acct-a', kind: AlertKind.ALERT_KIND_LOW, available: 40n, threshold: 50n },
      { ...(await insertAlert('acct-b', 'exhausted', 0n, 50n)), accountId: 'acct-b', kind: AlertKind.ALERT_KIND_EXHAUSTED, available: 0n, threshold: 50n },
      { ...(await insertAlert('acct-a', 'recovered', 1_000n, 50n)), accountId: 'acct-a', kind: AlertKind.ALERT_KIND_RECOVERED, available: 1_000n, threshold: 50n },
      { ...(await insertAlert('acct-b', 'refill_failed', 3n, 100n)), accountId: 'acct-b', kind: AlertKind.ALERT_KIND_REFILL_FAILED, available: 3n, threshold: 100n },
    ];
    const received = await w.received(4);
    expect(received).toEqual(written.map((a) => ({
      position: a.position, alertId: a.alertId, accountId: a.accountId, kind: a.kind,
      availableCredits: a.available, thresholdCredits: a.threshold, occurredAt: a.occurredAt,
    })));

    const following = follows[follows.length - 1] as Promise<void>;
    w.call.cancel();
    expect((await w.ended).code).toBe(status.CANCELLED);
    await expect(following).resolves.toBeUndefined();
  });

  it('filters by account', async () => {
    const w = watch(client, { accountId: 'acct-b' });
    await w.started;
    await insertAlert('acct-a');
    const b1 = await insertAlert('acct-b');
    await insertAlert('acct-a');
    const b2 = await insertAlert('acct-b');
    // The second acct-b alert comes after both acct-a ones in position order: had they passed, they would be here.
    const received = await w.received(2);
    expect(received.map((a) => [a.accountId, a.position])).toEqual([['acct-b', b1.position], ['acct-b', b2.position]]);
    w.call.cancel();
    await w.ended;
  });

  it('resumes after a position: what came since, then what comes', async () => {
    const first = await insertAlert('acct-c');
    const second = await insertAlert('acct-c');
    const third = await insertAlert('acct-c');
    const w = watch(client, { accountId: 'acct-c', afterPosition: first.position });
    expect(await w.started).toBe(first.position);
    const fourth = await insertAlert('acct-c');
    expect((await w.received(3)).map((a) => a.position)).toEqual([second.position, third.position, fourth.position]);
    w.call.cancel();
    await w.ended;
  });

  it('holds the feed back while a client does not read (backpressure), then streams the backlog whole and in order', async () => {
    const start = await insertAlert('acct-d');
    const backlog = 20_000; // far beyond what HTTP/2 flow control and the stream's buffer hold, and many poll batches
    const w = watch(client, { accountId: 'acct-d', afterPosition: start.position });
    await w.started;
    w.call.pause();
    const handedBefore = handedOut;
    await db.query(
      `INSERT INTO alerts (alert_id, account_id, kind, available, threshold, occurred_at)
       SELECT 'acct-d/bulk-' || n, 'acct-d', 'low', n, 5000, now() FROM generate_series(1, $1) AS n`,
      [backlog],
    );
    while (handedOut === handedBefore) await sleep(10);
    await sleep(PAUSED_FOR_MS);
    expect(handedOut - handedBefore).toBeLessThan(backlog);
    w.call.resume();
    const received = await w.received(backlog);
    expect(received.map((a) => a.alertId)).toEqual(Array.from({ length: backlog }, (_, i) => `acct-d/bulk-${i + 1}`));
    expect(received.every((a, i) => i === 0 || a.position > (received[i - 1] as Alert).position)).toBe(true);
    w.call.cancel();
    await w.ended;
  });

  it('refuses a malformed account_id, a missing token and a data-plane token', async () => {
    const malformed = await watch(client, { accountId: 'no spaces{}' }).ended;
    expect(malformed).toMatchObject({ code: status.INVALID_ARGUMENT, reason: 'INVALID_ARGUMENT' });
    expect(malformed.details).toContain('account_id');
    expect((await watch(client, {}, null).ended)).toMatchObject({ code: status.UNAUTHENTICATED, reason: 'TOKEN_MISSING' });
    expect((await watch(client, {}, DATA_PLANE_TOKEN).ended)).toMatchObject({ code: status.PERMISSION_DENIED, reason: 'PERMISSION_DENIED' });
  });

  it('answers FAILED_PRECONDITION without the ledger', async () => {
    const { server: bare, port } = await startAdminServer(undefined);
    const bareClient = new AdminServiceClient(`127.0.0.1:${port}`, credentials.createInsecure());
    try {
      expect(await watch(bareClient, {}).ended).toMatchObject({ code: status.FAILED_PRECONDITION, reason: 'LEDGER_DISABLED' });
    } finally {
      bareClient.close();
      bare.forceShutdown();
    }
  });

  it('ends open streams with UNAVAILABLE when alerts stop (shutdown), so clients resume elsewhere', async () => {
    const w = watch(client, {});
    await w.started;
    const following = follows[follows.length - 1] as Promise<void>;
    await alerts.stop();
    expect(await w.ended).toMatchObject({ code: status.UNAVAILABLE, reason: 'BACKEND_UNAVAILABLE' });
    await expect(following).resolves.toBeUndefined();
  });
});
