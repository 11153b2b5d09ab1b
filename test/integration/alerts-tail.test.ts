import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import pg from 'pg';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AlertTail } from '../../src/alerts/alert-tail.js';
import { prepareDatabase } from '../../src/app.js';
import { loadSettings } from '../../src/config/settings.js';
import { dropDatabase, testDatabaseUrl } from '../support/meterd.js';

const silent = pino({ level: 'silent' });

const INSERT_ALERT = `INSERT INTO alerts (alert_id, account_id, kind, available, threshold, occurred_at)
  VALUES ($1, 'acct-t', 'low', 1, 5, now()) ON CONFLICT (alert_id) DO NOTHING`;

/**
 * Positions come from a sequence and commit out of order; the tail behind WatchAlerts and the
 * delivery outbox must never jump over a position that may still appear.
 */
describe('AlertTail: reading alerts in position order without losing late commits', () => {
  let databaseUrl: string;
  let db: pg.Pool;

  beforeAll(async () => {
    databaseUrl = testDatabaseUrl(`meterd_tail_${randomBytes(6).toString('hex')}`);
    db = await prepareDatabase(loadSettings({ DATABASE_URL: databaseUrl }), silent);
    db.on('error', () => {});
  });
  afterAll(async () => {
    await db?.end();
    if (databaseUrl) await dropDatabase(databaseUrl);
  });

  async function newestPosition(): Promise<bigint> {
    const { rows } = await db.query<{ p: string }>('SELECT coalesce(max(position), 0)::text AS p FROM alerts');
    return BigInt((rows[0] as { p: string }).p);
  }

  /** An open transaction that has inserted an alert (its position taken, not committed). */
  async function openInsert(alertId: string): Promise<pg.PoolClient> {
    const client = await db.connect();
    await client.query('BEGIN');
    await client.query(INSERT_ALERT, [alertId]);
    return client;
  }

  it('holds later positions back while an earlier one is uncommitted, then hands both out in order', async () => {
    const tail = new AlertTail(db, await newestPosition(), silent);
    const inFlight = await openInsert('late-1');
    await db.query(INSERT_ALERT, ['early-2']);
    expect(await tail.next()).toEqual({ alerts: [], more: false });
    expect(await tail.next()).toEqual({ alerts: [], more: false }); // still running: still held
    await inFlight.query('COMMIT');
    inFlight.release();
    expect((await tail.next()).alerts.map((a) => a.alertId)).toEqual(['late-1', 'early-2']);
  });

  it('passes positions that will never appear (rolled back, or spent by ON CONFLICT) once their writers ended', async () => {
    const tail = new AlertTail(db, await newestPosition(), silent);
    const rolledBack = await openInsert('gone-1');
    await rolledBack.query('ROLLBACK');
    rolledBack.release();
    await db.query(INSERT_ALERT, ['kept-2']);
    await db.query(INSERT_ALERT, ['kept-2']); // a redelivered insert spends a position too
    await db.query(INSERT_ALERT, ['kept-3']);
    // The first read sees the gap and notes the snapshot; a later one, once every transaction
    // running then has ended (other databases' too: the horizon is the server's), passes it.
    expect(await tail.next()).toEqual({ alerts: [], more: false });
    let alerts: string[] = [];
    while (alerts.length === 0) {
      await sleep(10);
      alerts = (await tail.next()).alerts.map((a) => a.alertId);
    }
    expect(alerts).toEqual(['kept-2', 'kept-3']);
    expect(tail.position).toBe(await newestPosition());
  });

  it('skips a gap still open after the gap wait, with a warning (its alert is then lost to the tail)', async () => {
    let nowMs = 0;
    const lines: Array<{ level: number; msg: string }> = [];
    const logger = pino({ level: 'warn' }, { write: (line: string) => void lines.push(JSON.parse(line)) });
    const tail = new AlertTail(db, await newestPosition(), logger, { gapWaitMsMax: 1_000, nowMs: () => nowMs });
    const stuck = await openInsert('stuck-1');
    await db.query(INSERT_ALERT, ['after-2']);
    expect((await tail.next()).alerts).toEqual([]);
    nowMs += 999;
    expect((await tail.next()).alerts).toEqual([]);
    nowMs += 1;
    expect((await tail.next()).alerts.map((a) => a.alertId)).toEqual(['after-2']);
    expect(lines.filter((l) => l.level === 40).map((l) => l.msg)).toEqual([expect.stringContaining('skipped')]);
    await stuck.query('COMMIT');
    stuck.release();
    expect((await tail.next()).alerts).toEqual([]);
  });

  it('reads a long backlog in bounded batches, saying when more waits', async () => {
    const tail = new AlertTail(db, await newestPosition(), silent, { batchMax: 3 });
    await db.query(`INSERT INTO alerts (alert_id, account_id, kind, available, threshold, occurred_at)
      SELECT 'batch-' || n, 'acct-t', 'low', 1, 5, now() FROM generate_series(1, 7) AS n`);
    const batches: Array<[string[], boolean]> = [];
    for (let i = 0; i < 3; i++) {
      const { alerts, more } = await tail.next();
      batches.push([alerts.map((a) => a.alertId), more]);
    }
    expect(batches).toEqual([
      [['batch-1', 'batch-2', 'batch-3'], true],
      [['batch-4', 'batch-5', 'batch-6'], true],
      [['batch-7'], false],
    ]);
  });
});
