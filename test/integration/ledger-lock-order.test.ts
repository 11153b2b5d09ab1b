import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseLedgerEvent, type LedgerEvent } from '../../src/domain/ledger-event.js';
import { migrate } from '../../src/postgres/migrator.js';
import { writeLedgerBatch } from '../../src/postgres/ledger-writer.js';
import { dropDatabase, testDatabaseUrl } from '../support/meterd.js';
import { randomBytes } from 'node:crypto';

const PERIOD_MS = Date.UTC(2026, 0, 1);
let seq = 0;

/** A commit event as the scripts write it (only the fields the usage projection reads). */
function commit(userId: string): LedgerEvent {
  seq += 1;
  return parseLedgerEvent(`${seq}-0`, ['id', `lock-acct/${seq}`, 'seq', String(seq), 'kind', 'commit', 'account', 'lock-acct',
    'time', String(PERIOD_MS + seq), 'user', userId, 'feature', 'chat', 'reservation', `r${seq}`, 'charged', '1', 'held', '-1',
    'period_start', String(PERIOD_MS)]);
}

/**
 * Two flush lanes (or replicas) can write batches touching the same projection rows at once. Each
 * upsert takes its rows in key order, whatever order the batch lists them in, so two such
 * transactions queue instead of deadlocking (Postgres' "deadlock detected", seen under load with
 * two lanes before the rows were ordered). Shown here without timing: while lane A holds user b's
 * usage row, lane B's batch listing b before a must already hold a's row (taken first) as it waits.
 */
describe('projection rows are locked in key order', () => {
  const databaseUrl = testDatabaseUrl(`meterd_lock_${randomBytes(4).toString('hex')}`);
  let db: pg.Pool;

  beforeAll(async () => {
    const admin = new pg.Client({ connectionString: testDatabaseUrl('postgres') });
    await admin.connect();
    await admin.query(`CREATE DATABASE ${new URL(databaseUrl).pathname.slice(1)}`);
    await admin.end();
    db = new pg.Pool({ connectionString: databaseUrl, max: 4 });
    db.on('error', () => {}); // a connection ended by DROP DATABASE at teardown is not a test failure
    await migrate(db);
    const setup = await db.connect();
    await writeLedgerBatch(setup, [commit('a'), commit('b')]); // both usage rows exist
    setup.release();
  });
  afterAll(async () => {
    await db?.end();
    await dropDatabase(databaseUrl);
  });

  it('a batch naming user b before user a locks a first', async () => {
    const laneA = await db.connect();
    const laneB = await db.connect();
    const probe = await db.connect();
    try {
      await laneA.query('BEGIN');
      await writeLedgerBatch(laneA, [commit('b')]); // lane A holds b's row
      await laneB.query('BEGIN');
      const laneBPid = (await laneB.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0]?.pid;
      const laneBWrite = writeLedgerBatch(laneB, [commit('b'), commit('a')]);
      // Wait until lane B is blocked on a lock (on b's row, held by lane A).
      for (let i = 0; ; i++) {
        const waiting = await probe.query('SELECT 1 FROM pg_stat_activity WHERE pid = $1 AND wait_event_type = $2', [laneBPid, 'Lock']);
        if (waiting.rowCount === 1) break;
        if (i > 500) throw new Error('lane B never waited for lane A');
        await new Promise((resolve) => setTimeout(resolve, 10));
      }
      await probe.query('BEGIN');
      const aRow = await probe.query(`SELECT operations FROM usage_rollups WHERE user_id = 'a' FOR UPDATE NOWAIT`).then(
        () => 'free', (err: { code?: string }) => (err.code === '55P03' ? 'locked' : `error ${err.code}`));
      await probe.query('ROLLBACK');
      expect(aRow, "user a's row while lane B waits for b's").toBe('locked');
      await laneA.query('COMMIT');
      await laneBWrite;
      await laneB.query('COMMIT');
      const rows = (await db.query<{ user_id: string; operations: string }>('SELECT user_id, operations FROM usage_rollups ORDER BY user_id')).rows;
      expect(rows.map((r) => [r.user_id, Number(r.operations)])).toEqual([['a', 2], ['b', 3]]);
    } finally {
      laneA.release();
      laneB.release();
      probe.release();
    }
  });
});
