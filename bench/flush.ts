/**
 * Ledger flush into Postgres: throughput of a drain, and the commit-to-Postgres lag under load.
 *
 *   npm run bench:flush -- [--events 100000] [--seconds 10] [--concurrency 16] [--rate 1000]
 *
 * 1. Backlog: writes --events/2 reserve+commit pairs (each pair = 2 ledger events) straight through
 *    the credit store with the flusher stopped, then times flusher.drain() → events/s into Postgres.
 * 2. Steady load: --rate reserve+commit pairs per second through the store with the flush loop on;
 *    a sampler commits one more pair at a time and measures the time until its reservation outcome is visible in Postgres (HDR histogram).
 * Uses a database and key prefix of its own and removes them afterwards. bench/run.ts (part 6) calls
 * runFlushBench(); this file stays a command of its own.
 */
import { randomBytes } from 'node:crypto';
import os from 'node:os';
import { parseArgs } from 'node:util';
import * as hdr from 'hdr-histogram-js';
import { pino } from 'pino';
import { startMeterd } from '../src/app.js';
import { loadProductConfig } from '../src/config/product-config.js';
import { loadSettings } from '../src/config/settings.js';
import { parseReserve, parseUpsertAccount } from '../src/domain/commands.js';
import { deleteKeys, dropDatabase, testDatabaseUrl } from '../test/support/meterd.js';

export interface FlushBenchOptions { events: number; seconds: number; concurrency: number; rate: number }
export interface FlushBenchResult {
  drainedEvents: number; drainSeconds: number; drainEventsPerSecond: number; batchEventsMax: number; flushIntervalMs: number;
  offeredRate: number; achievedCommitsPerSecond: number; lagMs: { p50: number; p99: number; max: number; samples: number };
}

export async function runFlushBench(values: FlushBenchOptions): Promise<FlushBenchResult> {
  const keyPrefix = `fbench${randomBytes(4).toString('hex')}`;
  const databaseUrl = testDatabaseUrl(`meterd_${keyPrefix}`);
  const settings = loadSettings({ ...process.env, REDIS_KEY_PREFIX: keyPrefix, DATABASE_URL: databaseUrl, GRPC_HOST: '127.0.0.1', GRPC_PORT: '0', HTTP_HOST: '127.0.0.1', HTTP_PORT: '0' });
  const product = loadProductConfig(settings.productConfigPath);
  const meterd = await startMeterd({ settings, product, logger: pino({ level: 'warn' }), flushLoop: false, sweeper: false });
  const { store, flusher, database } = meterd;
  if (!flusher || !database) throw new Error('the ledger is off');

  const accounts = Array.from({ length: 100 }, (_, i) => `fb-${i}`);
  for (const accountId of accounts) {
    await store.upsertAccount(parseUpsertAccount(product, { accountId, plan: 'pro', parentId: '', trialCredits: 0n, lowBalanceThreshold: 0n , lowBalancePercent: 0}));
    await store.grant({ accountId, kind: 'PACK', credits: 10n ** 12n, grantId: 'bench', reason: '' });
  }
  await flusher.drain();

  let n = 0;
  async function pair(): Promise<string> {
    const i = n++;
    const hold = await store.reserve(parseReserve(product, { accountId: accounts[i % accounts.length] as string, feature: 'content_rewrite', requestId: `q${i}`, userId: `u${i % 7}`, labels: {} }));
    await store.commit({ reservationId: hold.reservationId });
    return hold.reservationId;
  }

  // 1. Backlog drain.
  const pairs = Math.floor(Number(values.events) / 2);
  for (let done = 0; done < pairs; done += 64) await Promise.all(Array.from({ length: Math.min(64, pairs - done) }, pair));
  let started = process.hrtime.bigint();
  const drained = await meterd.drainLedger(); // every flush lane (FLUSH_LANES), as a running meterd flushes
  const drainSeconds = Number(process.hrtime.bigint() - started) / 1e9;

  // 2. Steady load with the flush loop on; lag = commit answered → outcome row visible.
  flusher.start();
  const lag = hdr.build({ lowestDiscernibleValue: 1, highestTrackableValue: 60_000_000, numberOfSignificantValueDigits: 3 });
  const deadline = Date.now() + Number(values.seconds) * 1000;
  let operations = 0;
  started = process.hrtime.bigint();
  const sampler = (async () => {
    while (Date.now() < deadline) {
      const reservationId = await pair();
      const committedAt = process.hrtime.bigint();
      for (;;) {
        const found = await database.query('SELECT 1 FROM reservation_outcomes WHERE reservation_id = $1', [reservationId]);
        if (found.rowCount) break;
        await new Promise((resolve) => setTimeout(resolve, 2));
      }
      lag.recordValue(Number((process.hrtime.bigint() - committedAt) / 1000n));
    }
  })();
  // Paced workers: worker w takes slots w, w+c, w+2c, ... of a fixed schedule at --rate per second.
  const concurrency = Number(values.concurrency);
  const slotMs = 1000 / Number(values.rate);
  const loadStart = Date.now();
  await Promise.all([sampler, ...Array.from({ length: concurrency }, async (_, worker) => {
    for (let slot = worker; Date.now() < deadline; slot += concurrency) {
      const wait = loadStart + slot * slotMs - Date.now();
      if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
      await pair();
      operations++;
    }
  })]);
  const loadSeconds = Number(process.hrtime.bigint() - started) / 1e9;
  await meterd.stop();
  await deleteKeys(settings.redisUrl, `${keyPrefix}:*`);
  await dropDatabase(databaseUrl);
  return {
    drainedEvents: drained, drainSeconds, drainEventsPerSecond: drained / drainSeconds, batchEventsMax: settings.flushBatchEventsMax,
    flushIntervalMs: settings.flushIntervalMs, offeredRate: Number(values.rate), achievedCommitsPerSecond: operations / loadSeconds,
    lagMs: { p50: lag.getValueAtPercentile(50) / 1000, p99: lag.getValueAtPercentile(99) / 1000, max: lag.maxValue / 1000, samples: lag.totalCount },
  };
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const { values } = parseArgs({ options: {
    events: { type: 'string', default: '100000' },
    seconds: { type: 'string', default: '10' },
    concurrency: { type: 'string', default: '16' },
    rate: { type: 'string', default: '1000' },
  } });
  const r = await runFlushBench({ events: Number(values.events), seconds: Number(values.seconds), concurrency: Number(values.concurrency), rate: Number(values.rate) });
  console.log(`machine: ${os.cpus().length} × ${os.cpus()[0]?.model ?? '?'}, node ${process.version}; Redis and Postgres local`);
  console.log(`drain: ${r.drainedEvents} events in ${r.drainSeconds.toFixed(2)} s = ${r.drainEventsPerSecond.toFixed(0)} events/s into Postgres (batch ${r.batchEventsMax})`);
  console.log(`steady load: ${r.achievedCommitsPerSecond.toFixed(0)} reserve+commit/s (${(2 * r.achievedCommitsPerSecond).toFixed(0)} events/s), flush interval ${r.flushIntervalMs} ms`);
  console.log(`commit → Postgres lag: p50 ${r.lagMs.p50.toFixed(1)} ms  p99 ${r.lagMs.p99.toFixed(1)} ms  max ${r.lagMs.max.toFixed(1)} ms (${r.lagMs.samples} samples)`);
  process.exit(0);
}
