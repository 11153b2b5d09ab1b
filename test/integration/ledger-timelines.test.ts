import fc from 'fast-check';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseLedgerEvent, type LedgerEvent } from '../../src/domain/ledger-event.js';
import { writeLedgerBatch, type WriteResult } from '../../src/postgres/ledger-writer.js';
import { migratedTestDatabase } from '../support/meterd.js';

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
  let db: pg.Pool;
  let drop: () => Promise<void> = async () => {};
  let pools = 0;

  beforeAll(async () => {
    ({ db, drop } = await migratedTestDatabase('meterd_timelines', 2));
  });
  afterAll(() => drop());

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

  async function parkedCount(accountId: string): Promise<number> {
    return Number((await db.query<{ n: string }>('SELECT count(*) AS n FROM ledger_parked WHERE account_id = $1', [accountId])).rows[0]?.n);
  }

  const shuffle = (events: LedgerEvent[], keys: number[]) =>
    events.map((e, i) => ({ e, k: keys[i] ?? i })).sort((a, b) => a.k - b.k).map((x) => x.e);

  const scenario = fc.record({
    m: fc.integer({ min: 0, max: 5 }),
    lost: fc.integer({ min: 1, max: 6 }), // N - M: events Postgres has and Redis lost
    beyond: fc.integer({ min: -5, max: 6 }), // R - N: how far the new timeline runs past Postgres
    ledgerOrder: fc.array(fc.nat(), { maxLength: 20 }),
    newOrder: fc.array(fc.nat(), { maxLength: 20 }),
    ledgerCuts: fc.array(fc.nat(), { maxLength: 5 }),
    newCuts: fc.array(fc.nat(), { maxLength: 6 }),
    redelivered: fc.nat(),
  });

  function timelines({ m, lost, beyond }: { m: number; lost: number; beyond: number }) {
    const accountId = `tl-${pools++}`;
    const n = m + lost;
    const r = Math.max(m + 1, n + beyond);
    return { accountId, n, ledger: timeline(accountId, 1, 1, n, ''), diverged: timeline(accountId, 2, m + 1, r, m === 0 ? '' : sidOf(1, m)) };
  }

  it('after a data loss, whatever order the new timeline\'s batches arrive in, all of it is kept apart and the ledger stays as it was', async () => {
    await fc.assert(fc.asyncProperty(scenario, async (x) => {
      const { accountId, n, ledger, diverged } = timelines(x);
      for (const batch of batches(shuffle(ledger, x.ledgerOrder), x.ledgerCuts)) await flush(batch);
      const delivered = batches(shuffle(diverged, x.newOrder), x.newCuts);
      for (const batch of delivered) await flush(batch);
      const replay = await flush(delivered[x.redelivered % Math.max(1, delivered.length)] ?? []); // delivered twice

      const { ledger: rows, apart } = await stored(accountId);
      expect(rows.map((row) => row.stream_entry_id)).toEqual(ledger.map((e) => e.streamEntryId));
      expect(apart.map((row) => [row.stream_entry_id, row.reason])).toEqual(diverged.map((e) =>
        [e.streamEntryId, e.seq <= BigInt(n) ? 'payload_differs' : 'diverged']));
      expect(await parkedCount(accountId)).toBe(0);
      expect(replay.inserted).toBe(0);
    }), { seed: FUZZ_SEED, numRuns: FUZZ_RUNS });
  });

  it('whatever the interleaving of two timelines\' batches, the ledger is one unbroken chain and every event is in it or kept apart', async () => {
    await fc.assert(fc.asyncProperty(scenario, fc.array(fc.nat(), { maxLength: 40 }), async (x, mix) => {
      const { accountId, ledger, diverged } = timelines(x);
      const everything = shuffle([...ledger, ...diverged], mix);
      for (const batch of batches(everything, [...x.ledgerCuts, ...x.newCuts])) await flush(batch);

      const { ledger: rows, apart } = await stored(accountId);
      const bySid = new Map(everything.map((e) => [e.streamEntryId, e]));
      rows.forEach((row, i) => {
        expect(Number(row.seq)).toBe(i + 1);
        const prev = bySid.get(row.stream_entry_id)?.prevStreamEntryId;
        expect(prev).toBe(i === 0 ? '' : rows[i - 1]?.stream_entry_id);
      });
      expect([...rows, ...apart].map((row) => row.stream_entry_id).sort()).toEqual(everything.map((e) => e.streamEntryId).sort());
      expect(await parkedCount(accountId)).toBe(0);
      // The ledger's sums stay those of one timeline: held never below zero.
      expect(rows.reduce((sum, row) => sum + BigInt(row.held), 0n) >= 0n).toBe(true);
    }), { seed: FUZZ_SEED, numRuns: FUZZ_RUNS });
  });

  it('an event flushed before the one it follows waits, parked, and joins right after it', async () => {
    const accountId = 'tl-own';
    const ledger = timeline(accountId, 1, 1, 6, '');
    const parkedAfter = [1, 2, 2, 3, 1, 0]; // seq 6, 3, 1 (joins), 4, 2 (2, 3, 4 join), 5 (5, 6 join)
    for (const [i, step] of [5, 2, 0, 3, 1, 4].entries()) {
      const result = await flush([ledger[step] as LedgerEvent]);
      expect(result).toMatchObject({ diverged: [], conflicting: [] });
      expect(await parkedCount(accountId)).toBe(parkedAfter[i]);
    }
    expect((await stored(accountId)).ledger.map((row) => Number(row.seq))).toEqual([1, 2, 3, 4, 5, 6]);
  });

  it('a parked event that turns out to follow a kept-apart one is kept apart with it', async () => {
    const accountId = 'tl-cascade';
    const ledger = timeline(accountId, 1, 1, 4, '');
    const diverged = timeline(accountId, 2, 3, 7, sidOf(1, 2)); // Redis went back to 2, ran on to 7
    await flush(ledger);
    expect((await flush(diverged.slice(3))).parked).toBe(2); // 6 and 7 before 5
    await flush(diverged.slice(0, 2)); // 3 and 4: payload conflicts
    const late = await flush([diverged[2] as LedgerEvent]); // 5 does not chain to the head (4)
    expect(late.diverged).toEqual([`${accountId}/5`, `${accountId}/6`, `${accountId}/7`]);
    expect(await parkedCount(accountId)).toBe(0);
  });
});
