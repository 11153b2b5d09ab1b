import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseLedgerEvent, type LedgerEvent } from '../../src/domain/ledger-event.js';
import { writeLedgerBatch } from '../../src/postgres/ledger-writer.js';
import { migratedTestDatabase } from '../support/meterd.js';

const PERIOD_MS = Date.UTC(2026, 0, 1);
const seqs = new Map<string, number>();
let entry = 0;

/** A commit event of pool `lock-<pool>` as the scripts write it (only the fields the usage projection reads). */
function commit(pool: string): LedgerEvent {
  const accountId = `lock-${pool}`;
  const seq = (seqs.get(accountId) ?? 0) + 1;
  seqs.set(accountId, seq);
  entry += 1;
  return parseLedgerEvent(`${entry}-0`, ['id', `${accountId}/${seq}`, 'seq', String(seq), 'kind', 'commit', 'account', accountId,
    'time', String(PERIOD_MS + entry), 'user', 'u', 'feature', 'chat', 'reservation', `r${entry}`, 'charged', '1', 'held', '-1',
    'period_start', String(PERIOD_MS)]);
}

/**
 * Two flush lanes (or replicas) can write batches of the same pools at once. A batch locks its
 * pools' ledger heads in key order in one statement, and every projection row belongs to one pool
 * (written only under that pool's head), so two flushes queue instead of deadlocking (Postgres'
 * "deadlock detected", seen under load with two lanes before rows were taken in order). Shown
 * without timing: while lane A holds pool b, lane B's batch of b and a waits — holding nothing of a
 * meanwhile, so a third flush of pool a goes through — and finishes once A commits.
 */
describe('flushes of one pool take turns', () => {
  let db: pg.Pool;
  let drop: () => Promise<void> = async () => {};

  beforeAll(async () => {
    ({ db, drop } = await migratedTestDatabase('meterd_lock', 4));
    const setup = await db.connect();
    await writeLedgerBatch(setup, [commit('a'), commit('b')]); // both heads and usage rows exist
    setup.release();
  });
  afterAll(() => drop());

  it('a batch waiting for pool b holds nothing of pool a meanwhile, and finishes once b is free', async () => {
    const laneA = await db.connect();
    const laneB = await db.connect();
    const probe = await db.connect();
    try {
      await laneA.query('BEGIN');
      await writeLedgerBatch(laneA, [commit('b')]); // lane A holds b's head
      await laneB.query('BEGIN');
      const laneBPid = (await laneB.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0]?.pid;
      const laneBWrite = writeLedgerBatch(laneB, [commit('b'), commit('a')]);
      // Wait until lane B is blocked on a lock (on b's head, held by lane A).
      for (let i = 0; ; i++) {
        const waiting = await probe.query('SELECT 1 FROM pg_stat_activity WHERE pid = $1 AND wait_event_type = $2', [laneBPid, 'Lock']);
        if (waiting.rowCount === 1) break;
        if (i > 500) throw new Error('lane B never waited for lane A');
        await new Promise((resolve) => setTimeout(resolve, 10));
      }
      const laneC = await db.connect();
      try {
        await laneC.query('BEGIN');
        await writeLedgerBatch(laneC, [commit('a')]); // would wait if lane B held a's head
        await laneC.query('COMMIT');
      } finally {
        laneC.release();
      }
      await laneA.query('COMMIT');
      await laneBWrite;
      await laneB.query('COMMIT');
      const rows = (await db.query<{ account_id: string; operations: string }>('SELECT account_id, operations FROM usage_rollups ORDER BY account_id')).rows;
      expect(rows.map((r) => [r.account_id, Number(r.operations)])).toEqual([['lock-a', 3], ['lock-b', 3]]);
    } finally {
      laneA.release();
      laneB.release();
      probe.release();
    }
  });
});
