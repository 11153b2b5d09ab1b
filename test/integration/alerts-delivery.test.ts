import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import pg from 'pg';
import { pino, type Logger } from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { startAlerts, verifyAlertSignature, type RunningAlerts } from '../../src/alerts/index.js';
import { ALERT_RETRY_DELAY_MS_MAX, ALERT_RETRY_JITTER_FRACTION, retryDelayMs } from '../../src/alerts/delivery-worker.js';
import { ALERT_LAST_ERROR_CHARS_MAX } from '../../src/alerts/webhook-post.js';
import { signatureHeaders } from '../../src/alerts/webhook-signature.js';
import { prepareDatabase } from '../../src/app.js';
import { loadSettings } from '../../src/config/settings.js';
import { startAlertReceiver, type AlertReceiver, type ReceivedRequest } from '../support/alert-receiver.js';
import { startPostgresServer } from '../support/postgres-server.js';
import { freePort } from '../support/redis-servers.js';
import { dropDatabase, testDatabaseUrl } from '../support/meterd.js';

const SECRET = 'whsec-test-0123456789abcdef';
const silent = pino({ level: 'silent' });
/** How often a test looks at Postgres while it waits for the worker (the test timeout bounds the wait). */
const LOOK_EVERY_MS = 10;

/** Everything a test started, undone after it whatever happened. */
const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup().catch(() => {});
});

/** A migrated database of this test's own (on the machine's Postgres, or `server`), and a pool on it. */
async function freshDatabase(server?: string): Promise<{ url: string; db: pg.Pool }> {
  const url = testDatabaseUrl(`meterd_alerts_${randomBytes(6).toString('hex')}`, server);
  const db = await prepareDatabase(loadSettings({ DATABASE_URL: url }), silent);
  db.on('error', () => {}); // DROP DATABASE ends idle connections at teardown
  cleanups.push(async () => {
    await db.end();
    await dropDatabase(url);
  });
  return { url, db };
}

async function receiver(...args: Parameters<typeof startAlertReceiver>): Promise<AlertReceiver> {
  const started = await startAlertReceiver(...args);
  cleanups.push(() => started.close());
  return started;
}

/** startAlerts as app.ts runs it (its own pool: a replica), with fast retries. */
async function alertsWorker(databaseUrl: string, urls: string[], env: Record<string, string> = {}, logger: Logger = silent): Promise<RunningAlerts> {
  const settings = loadSettings({
    DATABASE_URL: databaseUrl, ALERT_WEBHOOK_URLS: urls.join(','), ALERT_WEBHOOK_SECRET: SECRET,
    ALERT_RETRY_BASE_MS: '10', OUTBOX_POLL_INTERVAL_MS: '10', ALERT_DELIVERY_TIMEOUT_MS: '5000', ...env,
  });
  const database = new pg.Pool({ connectionString: databaseUrl, max: 3 });
  database.on('error', () => {});
  const alerts = await startAlerts({ settings, database, logger });
  let stopped = false;
  const stop = async () => {
    if (stopped) return;
    stopped = true;
    await alerts.stop();
    await database.end();
  };
  cleanups.push(stop);
  return { ...alerts, stop };
}

interface AlertInsert {
  alertId: string;
  accountId?: string;
  kind?: 'low' | 'exhausted' | 'recovered' | 'refill_failed';
  available?: bigint;
  threshold?: bigint;
  occurredAt?: Date;
}

/** Writes an alert as the ledger flush does in production; returns its position. */
async function insertAlert(db: pg.Pool, alert: AlertInsert): Promise<bigint> {
  const { rows } = await db.query<{ position: string }>(
    `INSERT INTO alerts (alert_id, account_id, kind, available, threshold, occurred_at)
     VALUES ($1, $2, $3, $4, $5, $6) RETURNING position::text AS position`,
    [alert.alertId, alert.accountId ?? 'acct-1', alert.kind ?? 'low', (alert.available ?? 40n).toString(),
      (alert.threshold ?? 50n).toString(), alert.occurredAt ?? new Date('2026-01-15T12:00:00.000Z')],
  );
  return BigInt((rows[0] as { position: string }).position);
}

interface DeliveryRow {
  alert_id: string;
  url: string;
  attempts: number;
  last_status: number | null;
  last_error: string;
  delivered_at: Date | null;
  gave_up_at: Date | null;
}

async function deliveries(db: pg.Pool): Promise<DeliveryRow[]> {
  const { rows } = await db.query<DeliveryRow>(
    'SELECT alert_id, url, attempts, last_status, last_error, delivered_at, gave_up_at FROM alert_deliveries ORDER BY alert_id, url');
  return rows;
}

/** Waits until `done` holds for the delivery log. */
async function untilDeliveries(db: pg.Pool, done: (rows: DeliveryRow[]) => boolean): Promise<DeliveryRow[]> {
  for (;;) {
    const rows = await deliveries(db);
    if (done(rows)) return rows;
    await sleep(LOOK_EVERY_MS);
  }
}

const finished = (row: DeliveryRow) => row.delivered_at !== null || row.gave_up_at !== null;

/** A promise and the function that resolves it (to hold a receiver's answer until the test says so). */
function gate(): { opened: Promise<void>; open: () => void } {
  let open = () => {};
  const opened = new Promise<void>((resolve) => (open = resolve));
  return { opened, open };
}

function verify(request: ReceivedRequest, secret = SECRET): boolean {
  return verifyAlertSignature(request.rawBody, request.headers, secret, 300, Math.floor(Date.now() / 1000));
}

describe('alert webhook deliveries', () => {
  it('retries with backoff until the receiver answers 200, logging each attempt, every request signed', async () => {
    const { url, db } = await freshDatabase();
    const third = gate();
    const hook = await receiver(async (request) => {
      if (request.number <= 2) return { status: 500, body: `not yet ${request.number}` };
      await third.opened;
      return 200;
    });
    await alertsWorker(url, [hook.url]);
    const position = await insertAlert(db, { alertId: 'acct-1/7', accountId: 'acct-1', kind: 'low', available: 40n, threshold: 50n });

    // While the third attempt is in flight the log shows the second one's failure.
    await hook.received(3);
    const [during] = await untilDeliveries(db, (rows) => rows[0]?.last_error === 'HTTP 500: not yet 2');
    expect(during).toMatchObject({ alert_id: 'acct-1/7', url: hook.url, attempts: 3, last_status: 500, delivered_at: null, gave_up_at: null });
    third.open();

    const [done] = await untilDeliveries(db, (rows) => rows.length === 1 && finished(rows[0] as DeliveryRow));
    expect(done).toMatchObject({ attempts: 3, last_status: 200, last_error: '', gave_up_at: null });
    expect(done?.delivered_at).toBeInstanceOf(Date);
    expect(hook.requests).toHaveLength(3);

    for (const request of hook.requests) {
      expect(request.method).toBe('POST');
      expect(request.headers['content-type']).toBe('application/json');
      expect(request.headers['user-agent']).toMatch(/^meterd\//);
      expect(request.headers['meterd-signature']).toMatch(/^v1=[0-9a-f]{64}$/);
      expect(verify(request)).toBe(true);
      expect(JSON.parse(request.rawBody.toString('utf8'))).toEqual({
        id: 'acct-1/7', type: 'balance.low', account_id: 'acct-1', available_credits: '40', threshold_credits: '50',
        occurred_at: '2026-01-15T12:00:00.000Z', position: position.toString(),
      });
      // A changed body, another secret, or a replay outside the tolerance do not verify.
      const tampered = Buffer.from(request.rawBody.toString('utf8').replace('"40"', '"4000"'));
      expect(verifyAlertSignature(tampered, request.headers, SECRET)).toBe(false);
      expect(verify(request, `${SECRET}x`)).toBe(false);
      const signedAt = Number(request.headers['meterd-timestamp']);
      expect(verifyAlertSignature(request.rawBody, request.headers, SECRET, 300, signedAt + 301)).toBe(false);
      expect(verifyAlertSignature(request.rawBody, request.headers, SECRET, 300, signedAt + 300)).toBe(true);
    }
  });

  it('delivers each kind to every configured URL, one log row per alert and URL', async () => {
    const { url, db } = await freshDatabase();
    const first = await receiver();
    const second = await receiver();
    await alertsWorker(url, [first.url, second.url]);
    const kinds = ['low', 'exhausted', 'recovered', 'refill_failed'] as const;
    for (const [i, kind] of kinds.entries()) {
      await insertAlert(db, { alertId: `acct-2/${i + 1}`, accountId: 'acct-2', kind, available: BigInt(i), threshold: 9_007_199_254_740_993n });
    }
    const rows = await untilDeliveries(db, (r) => r.length === 8 && r.every(finished));
    expect(rows.every((row) => row.attempts === 1 && row.last_status === 200 && row.delivered_at !== null)).toBe(true);
    for (const hook of [first, second]) {
      expect(hook.requests).toHaveLength(4);
      const bodies = hook.requests.map((r) => JSON.parse(r.rawBody.toString('utf8')) as Record<string, string>);
      expect(bodies.map((b) => b.type).sort()).toEqual(['auto_refill.failed', 'balance.exhausted', 'balance.low', 'balance.recovered']);
      // Amounts beyond 2^53 arrive exact, as decimal strings.
      expect(bodies.every((b) => b.threshold_credits === '9007199254740993')).toBe(true);
      expect(hook.requests.every((r) => verify(r))).toBe(true);
    }
  });

  it('survives a restart: a stopped worker finishes its attempt, a new one resumes from Postgres', async () => {
    const { url, db } = await freshDatabase();
    const firstAnswer = gate();
    const hook = await receiver(async () => {
      await firstAnswer.opened;
      return 503;
    });
    const before = await alertsWorker(url, [hook.url]);
    await insertAlert(db, { alertId: 'acct-3/1', accountId: 'acct-3' });
    await hook.received(1);

    // Stop while the POST is in flight: stop() waits for it and records its outcome.
    const stopping = before.stop();
    firstAnswer.open();
    await stopping;
    const [afterStop] = await deliveries(db);
    expect(afterStop).toMatchObject({ alert_id: 'acct-3/1', attempts: 1, last_status: 503, delivered_at: null, gave_up_at: null });

    // Written while no worker runs (the final flush of a stopping replica does this).
    await insertAlert(db, { alertId: 'acct-3/2', accountId: 'acct-3', kind: 'exhausted', available: 0n });
    hook.answerWith(() => 200);
    await alertsWorker(url, [hook.url]);
    const rows = await untilDeliveries(db, (r) => r.length === 2 && r.every(finished));
    expect(rows.map((r) => [r.alert_id, r.attempts, r.last_status, r.delivered_at !== null])).toEqual([
      ['acct-3/1', 2, 200, true],
      ['acct-3/2', 1, 200, true],
    ]);
    expect(hook.requests.map((r) => (JSON.parse(r.rawBody.toString('utf8')) as { id: string }).id).sort())
      .toEqual(['acct-3/1', 'acct-3/1', 'acct-3/2']);
  });

  it('shares the work between two workers: each delivery is made once', async () => {
    const { url, db } = await freshDatabase();
    const hook = await receiver();
    await Promise.all([alertsWorker(url, [hook.url]), alertsWorker(url, [hook.url])]);
    const count = 50; // more than one claim batch, so both workers take some
    for (let i = 1; i <= count; i++) await insertAlert(db, { alertId: `acct-4/${i}`, accountId: 'acct-4' });
    const rows = await untilDeliveries(db, (r) => r.length === count && r.every(finished));
    expect(rows.every((row) => row.attempts === 1 && row.last_status === 200)).toBe(true);
    const ids = hook.requests.map((r) => (JSON.parse(r.rawBody.toString('utf8')) as { id: string }).id);
    expect(ids).toHaveLength(count);
    expect(new Set(ids).size).toBe(count);
  });

  it('gives up after ALERT_DELIVERY_ATTEMPTS_MAX attempts and logs it as an error', async () => {
    const { url, db } = await freshDatabase();
    const hook = await receiver(() => ({ status: 503, body: 'down for maintenance' }));
    const lines: Array<{ level: number; msg: string; alertId?: string }> = [];
    const logger = pino({ level: 'info' }, { write: (line: string) => void lines.push(JSON.parse(line)) });
    const alerts = await alertsWorker(url, [hook.url], { ALERT_DELIVERY_ATTEMPTS_MAX: '3' }, logger);
    await insertAlert(db, { alertId: 'acct-5/1', accountId: 'acct-5' });
    const [row] = await untilDeliveries(db, (r) => r.length === 1 && finished(r[0] as DeliveryRow));
    expect(row).toMatchObject({ attempts: 3, last_status: 503, last_error: 'HTTP 503: down for maintenance', delivered_at: null });
    expect(row?.gave_up_at).toBeInstanceOf(Date);
    await alerts.stop();
    expect(hook.requests).toHaveLength(3);
    expect(lines.filter((l) => l.level === 50 && l.alertId === 'acct-5/1').map((l) => l.msg)).toEqual(['alert delivery given up after its last attempt']);
  });

  it('gives up a delivery whose last attempt was interrupted, and leaves URLs no longer configured alone', async () => {
    const { url, db } = await freshDatabase();
    const hook = await receiver();
    const removed = 'http://127.0.0.1:9/removed';
    await insertAlert(db, { alertId: 'acct-9/1', accountId: 'acct-9' });
    // As a replica dying during its third and last attempt leaves it: attempts used up, the lease run out.
    await db.query(
      `INSERT INTO alert_deliveries (alert_id, url, attempts, next_attempt_at, last_status, last_error)
       VALUES ('acct-9/1', $1, 3, now(), NULL, ''), ('acct-9/1', $2, 1, now(), 500, 'HTTP 500')`,
      [hook.url, removed],
    );
    const alerts = await alertsWorker(url, [hook.url], { ALERT_DELIVERY_ATTEMPTS_MAX: '3' });
    const rows = await untilDeliveries(db, (r) => r.some((row) => row.url === hook.url && finished(row)));
    await alerts.stop();
    expect(rows.find((r) => r.url === hook.url)).toMatchObject({ attempts: 3, last_error: 'last attempt interrupted', delivered_at: null });
    expect(rows.find((r) => r.url === removed)).toMatchObject({ attempts: 1, delivered_at: null, gave_up_at: null });
    expect(hook.requests).toHaveLength(0);
  });

  it('never follows redirects, bounds the time and the response it reads, and logs a refused connection', async () => {
    const { url, db } = await freshDatabase();
    const target = await receiver();
    const redirecting = await receiver(() => ({ status: 307, headers: { location: target.url } }));
    const verbose = await receiver(() => ({ status: 500, body: `${'x'.repeat(100_000)}\n` }));
    const hanging = await receiver(() => new Promise<number>(() => {}));
    const refusing = `http://127.0.0.1:${await freePort()}/alerts`;
    await alertsWorker(url, [redirecting.url, verbose.url, hanging.url, refusing], {
      ALERT_DELIVERY_ATTEMPTS_MAX: '1', ALERT_DELIVERY_TIMEOUT_MS: '200',
    });
    await insertAlert(db, { alertId: 'acct-6/1', accountId: 'acct-6' });
    const rows = await untilDeliveries(db, (r) => r.length === 4 && r.every(finished));
    const byUrl = new Map(rows.map((r) => [r.url, r]));
    expect(rows.every((r) => r.attempts === 1 && r.delivered_at === null && r.gave_up_at !== null)).toBe(true);
    expect(byUrl.get(redirecting.url)).toMatchObject({ last_status: 307, last_error: `HTTP 307: redirect to ${target.url} not followed` });
    expect(target.requests).toHaveLength(0);
    const verboseError = byUrl.get(verbose.url)?.last_error ?? '';
    expect(verboseError).toMatch(/^HTTP 500: x+$/);
    expect(verboseError.length).toBe(ALERT_LAST_ERROR_CHARS_MAX);
    expect(byUrl.get(hanging.url)).toMatchObject({ last_status: null, last_error: 'no answer within 200 ms' });
    expect(byUrl.get(refusing)?.last_status).toBeNull();
    expect(byUrl.get(refusing)?.last_error).toContain('ECONNREFUSED');
  });

  it('delivers only alerts written after deliveries were turned on for a URL', async () => {
    const { url, db } = await freshDatabase();
    await insertAlert(db, { alertId: 'acct-7/old' });
    const first = await receiver();
    const one = await alertsWorker(url, [first.url]);
    await insertAlert(db, { alertId: 'acct-7/1' });
    await untilDeliveries(db, (r) => r.length === 1 && r.every(finished));
    await one.stop();
    // A URL added later gets what comes from then on; the first URL keeps its log.
    const second = await receiver();
    await alertsWorker(url, [first.url, second.url]);
    await insertAlert(db, { alertId: 'acct-7/2' });
    const rows = await untilDeliveries(db, (r) => r.length === 3 && r.every(finished));
    expect(rows.map((r) => `${r.alert_id} ${r.url}`).sort()).toEqual([
      `acct-7/1 ${first.url}`, `acct-7/2 ${first.url}`, `acct-7/2 ${second.url}`,
    ].sort());
  });

  it('carries on through a Postgres outage and delivers what is written once it is back', async () => {
    const server = await startPostgresServer();
    cleanups.push(() => server.stop());
    const { url, db } = await freshDatabase(server.url);
    const hook = await receiver();
    const lines: Array<{ level: number; msg: string }> = [];
    const logger = pino({ level: 'warn' }, { write: (line: string) => void lines.push(JSON.parse(line)) });
    const alerts = await alertsWorker(url, [hook.url], {}, logger);
    await insertAlert(db, { alertId: 'acct-8/1', accountId: 'acct-8' });
    await untilDeliveries(db, (r) => r.length === 1 && r.every(finished));

    await server.shutdown();
    while (!lines.some((l) => l.msg.startsWith('alert delivery round failed'))) await sleep(LOOK_EVERY_MS);
    await server.restart();
    await insertAlert(db, { alertId: 'acct-8/2', accountId: 'acct-8' });
    alerts.nudge(); // instead of waiting out the loop's backoff
    const rows = await untilDeliveries(db, (r) => r.length === 2 && r.every(finished));
    expect(rows.map((r) => [r.alert_id, r.attempts, r.last_status])).toEqual([['acct-8/1', 1, 200], ['acct-8/2', 1, 200]]);
    expect(hook.requests).toHaveLength(2);
  });
});

describe('retry delays and signatures', () => {
  it('doubles from the base, never exceeds its cap, and jitters downwards only', () => {
    expect(retryDelayMs(1_000, 1, () => 0)).toBe(1_000);
    expect(retryDelayMs(1_000, 2, () => 0)).toBe(2_000);
    expect(retryDelayMs(1_000, 5, () => 0)).toBe(16_000);
    expect(retryDelayMs(1_000, 5, () => 1)).toBe(16_000 * (1 - ALERT_RETRY_JITTER_FRACTION));
    expect(retryDelayMs(1_000, 99, () => 0)).toBe(ALERT_RETRY_DELAY_MS_MAX);
  });

  it('verifies with any header casing, several v1 entries, and rejects malformed headers', () => {
    const body = '{"id":"a/1"}';
    const now = 1_768_478_400;
    const signed = signatureHeaders(SECRET, now, body);
    expect(verifyAlertSignature(body, signed, SECRET, 300, now)).toBe(true);
    expect(verifyAlertSignature(Buffer.from(body), new Headers(signed), SECRET, 300, now)).toBe(true);
    expect(verifyAlertSignature(body, { 'Meterd-Timestamp': signed['meterd-timestamp'], 'Meterd-Signature': signed['meterd-signature'] }, SECRET, 300, now)).toBe(true);
    const rotated = { ...signed, 'meterd-signature': `v0=abc, v1=${'0'.repeat(64)}, ${signed['meterd-signature']}` };
    expect(verifyAlertSignature(body, rotated, SECRET, 300, now)).toBe(true);
    expect(verifyAlertSignature(body, { ...signed, 'meterd-signature': `v1=${'0'.repeat(64)}` }, SECRET, 300, now)).toBe(false);
    expect(verifyAlertSignature(body, { ...signed, 'meterd-timestamp': 'soon' }, SECRET, 300, now)).toBe(false);
    expect(verifyAlertSignature(body, { 'meterd-signature': signed['meterd-signature'] }, SECRET, 300, now)).toBe(false);
    expect(verifyAlertSignature(body, signed, SECRET, 300, now - 301)).toBe(false); // from the future
    expect(verifyAlertSignature(body, signed, '', 300, now)).toBe(false);
  });
});
