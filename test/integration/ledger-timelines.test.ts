import { randomBytes } from 'node:crypto';
import fc from 'fast-check';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseLedgerEvent, type LedgerEvent } from '../../src/domain/ledger-event.js';
import { writeLedgerBatch, type WriteResult } from '../../src/postgres/ledger-writer.js';
import { migrate } from '../../src/postgres/migrator.js';
import { dropDatabase, testDatabaseUrl } from '../support/meterd.js';

const FUZZ_SEED = process.env.FUZZ_SEED === undefined ? undefined : Number(process.env.FUZZ_SEED);
const FUZZ_RUNS = Number(process.env.FUZZ_RUNS ?? 60);

/**
 * One pool's event at `seq` on a Redis timeline: holds on odd sequence numbers, their commits on
 * even ones, so a commit flushed without its hold would leave the ledger's held negative. `timeline`
 * tells the stream entry ids (and payloads) of two timelines apart; prev chains each to the one before.
 */
function event(accountId: string, timeline: number, seq: number, prevSid: string): LedgerEvent {
  const hold = seq % 2 === 1;
  const reservation = `${timeline}-r${hold ? seq : seq - 1}`;
  const fields = ['id', `${accountId}/${seq}`, 'seq', String(seq), 'kind', hold ? 'hold' : 'commit', 'account', accountId,
    'time', String(1_790_000_000_000 + timeline * 100_000 + seq), 'reservation', reservation, 'feature', 'chat',
    'held', hold ? '4' : '-4', 'allowance', hold ? '-4' : '0', 'charged', hold ? '0' : '4'];
  if (prevSid !== '') fields.push('prev', prevSid);
  return parseLedgerEvent(sidOf(timeline, seq), fields);
}

const sidOf = (timeline: number, seq: number) => `${timeline * 100_000 + seq}-0`;

/** Events lastSeq..from of one timeline; the first chains to `prevSid`. */
function timeline(accountId: string, id: number, from: number, to: number, prevSid: string): LedgerEvent[] {
  const events: LedgerEvent[] = [];
  for (let seq = from; seq <= to; seq++) events.push(event(accountId, id, seq, seq === from ? prevSid : sidOf(id, seq - 1)));
  return events;
}

/**
 * A Redis that lost the tail of its data (everysec AOF + power loss, a failover to a lagging replica)
 * hands out the lost sequence numbers again. Postgres holds the ledger's timeline L (1..N); Redis
 * went back to M < N and wrote a new timeline D (M+1..R), perhaps past N. Flush lanes and replicas
 * deliver D's batches in any order. Every event of D must be kept apart in ledger_conflicts, none
 * mixed into the ledger: a commit of D past N without its hold (on N, a payload conflict) once made
 * the repair rebuild a pool with held = -4.
 */
describe('ledger timelines: events of a Redis that lost data never mix into the ledger', () => {
  const databaseUrl = testDatabaseUrl(`meterd_timelines_${randomBytes(4).toString('hex')}`);
  let db: pg.Pool;
  let pools = 0;

  beforeAll(async () => {
    const admin = new pg.Client({ connectionString: testDatabaseUrl('postgres') });
    await admin.connect();
    await admin.query(`CREATE DATABASE ${new URL(databaseUrl).pathname.slice(1)}`);
    await admin.end();
    db = new pg.Pool({ connectionString: databaseUrl, max: 2 });
    db.on('error', () => {}); // a connection ended by DROP DATABASE at teardown is not a test failure
    await migrate(db);
  });
  afterAll(async () => {
    await db?.end();
    await dropDatabase(databaseUrl);
  });

  /** One flush transaction; each batch in stream order, as one read of a stream delivers it. */
  async function flush(batch: LedgerEvent[]): Promise<WriteResult> {
    const client = await db.connect();
    try {
      await client.query('BEGIN');
      const result = await writeLedgerBatch(client, [...batch].sort((a, b) => (a.streamEntryId < b.streamEntryId ? -1 : 1)));
      await client.query('COMMIT');
      return result;
    } finally {
      client.release();
    }
  }

  async function stored(accountId: string) {
    const ledger = (await db.query<{ seq: string; stream_entry_id: string; held: string }>(
      'SELECT seq, stream_entry_id, held FROM ledger_events WHERE account_id = $1 ORDER BY seq', [accountId])).rows;
    const apart = (await db.query<{ seq: string; stream_entry_id: string; reason: string }>(
      'SELECT seq, stream_entry_id, reason FROM ledger_conflicts WHERE account_id = $1 ORDER BY seq', [accountId])).rows;
    return { ledger, apart };
  }

  /** Cuts a delivery order into batches at the given points. */
  function batches(events: LedgerEvent[], cuts: number[]): LedgerEvent[][] {
    const at = [...new Set(cuts.map((c) => c % (events.length + 1)))].sort((a, b) => a - b);
    const out: LedgerEvent[][] = [];
    let from = 0;
    for (const cut of [...at, events.length]) {
      if (cut > from) out.push(events.slice(from, cut));
      from = Math.max(from, cut);
    }
    return out;
  }

  it('whatever order its batches arrive in (those past Postgres\' last event in sequence order), the new timeline is kept apart whole', async () => {
    await fc.assert(fc.asyncProperty(
      fc.record({
        m: fc.integer({ min: 0, max: 5 }),
        lost: fc.integer({ min: 1, max: 6 }), // N - M: events Postgres has and Redis lost
        beyond: fc.integer({ min: -5, max: 6 }), // R - N: how far the new timeline runs past Postgres
        ledgerOrder: fc.array(fc.nat(), { maxLength: 20 }),
        newOrder: fc.array(fc.nat(), { maxLength: 20 }),
        ledgerCuts: fc.array(fc.nat(), { maxLength: 5 }),
        newCuts: fc.array(fc.nat(), { maxLength: 6 }),
        redelivered: fc.nat(),
      }),
      async ({ m, lost, beyond, ledgerOrder, newOrder, ledgerCuts, newCuts, redelivered }) => {
        const accountId = `tl-${pools++}`;
        const n = m + lost;
        const r = Math.max(m + 1, n + beyond);
        const ledger = timeline(accountId, 1, 1, n, '');
        const diverged = timeline(accountId, 2, m + 1, r, m === 0 ? '' : sidOf(1, m));
        const shuffle = (events: LedgerEvent[], keys: number[]) =>
          events.map((e, i) => ({ e, k: keys[i] ?? i })).sort((a, b) => a.k - b.k).map((x) => x.e);
        // Any order, except that events past N arrive in sequence order (else one past N+1 cannot be
        // judged when it arrives: see the stranded case below).
        const past = (e: LedgerEvent) => e.seq > BigInt(n);
        const order = shuffle(diverged, newOrder);
        const chained = order.filter(past).sort((a, b) => (a.seq < b.seq ? -1 : 1));
        const delivery = order.map((e) => (past(e) ? (chained.shift() as LedgerEvent) : e));

        for (const batch of batches(shuffle(ledger, ledgerOrder), ledgerCuts)) await flush(batch);
        const results: WriteResult[] = [];
        for (const batch of batches(delivery, newCuts)) results.push(await flush(batch));
        const again = batches(delivery, newCuts)[redelivered % Math.max(1, batches(delivery, newCuts).length)] ?? [];
        const replay = await flush(again); // a batch delivered twice (a crash between COMMIT and XACK)

        const { ledger: rows, apart } = await stored(accountId);
        expect(rows.map((x) => x.stream_entry_id)).toEqual(ledger.map((e) => e.streamEntryId));
        expect(apart.map((x) => [x.stream_entry_id, x.reason])).toEqual(diverged.map((e) =>
          [e.streamEntryId, e.seq <= BigInt(n) ? 'payload_differs' : 'diverged']));
        expect(results.flatMap((x) => x.stranded)).toEqual([]);
        expect(replay.inserted).toBe(0);
      },
    ), { seed: FUZZ_SEED, numRuns: FUZZ_RUNS });
  });

  it('an event past Postgres\' last one flushed before the one it follows cannot be judged: once that one is found diverged, it is reported stranded', async () => {
    const accountId = 'tl-stranded';
    const ledger = timeline(accountId, 1, 1, 4, '');
    const diverged = timeline(accountId, 2, 3, 6, sidOf(1, 2)); // Redis went back to 2, ran on to 6
    await flush(ledger);
    await flush(diverged.slice(0, 2)); // 3 and 4: payload conflicts
    expect((await flush([diverged[3] as LedgerEvent])).inserted).toBe(1); // 6 before 5: not judged
    const late = await flush([diverged[2] as LedgerEvent]); // 5 breaks the chain at 4: diverged
    expect(late.diverged).toEqual([`${accountId}/5`]);
    expect(late.stranded).toEqual([`${accountId}/6`]);
  });

  it('the ledger\'s own events arriving out of order are judged against each other and all kept', async () => {
    const accountId = 'tl-own';
    const ledger = timeline(accountId, 1, 1, 6, '');
    for (const i of [5, 2, 0, 3, 1, 4]) {
      const result = await flush([ledger[i] as LedgerEvent]);
      expect(result).toMatchObject({ inserted: 1, diverged: [], stranded: [], conflicting: [] });
    }
    expect((await stored(accountId)).ledger.map((x) => Number(x.seq))).toEqual([1, 2, 3, 4, 5, 6]);
  });
});
