import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { cpSync, existsSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { status } from '@grpc/grpc-js';
import { Redis } from 'ioredis';
import pg from 'pg';
import { pino, type Logger } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PARTITION_COUNT } from '../../src/config/limits.js';
import { systemClock } from '../../src/domain/clock.js';
import { ensureDatabase, migrate } from '../../src/postgres/migrator.js';
import { reconcile, type SnapshotReader } from '../../src/postgres/reconciler.js';
import { partitionPrefix, reservationPartition } from '../../src/redis/keys.js';
import { FLUSH_GROUP } from '../../src/redis/ledger-streams.js';
import { RedisCreditStore } from '../../src/redis/redis-credit-store.js';
import { connectClients, type TestClients } from '../support/grpc-clients.js';
import {
  checkLedgerInvariants, createLoadAccounts, CreditLoad, isServiceError, LOAD_PRODUCT, LOAD_PRODUCT_YAML,
  postgresSequences, redisSeqs, streamLengths, waitUntilFlushed, type LedgerView,
} from '../support/ledger-load.js';
import {
  kill9MeterdProcess, processGroupPids, startMeterdProcess, stopMeterdProcess, writeProductConfig, type MeterdProcess,
} from '../support/meterd-process.js';
import { dropDatabase, startTestMeterd, testDatabaseUrl, type TestMeterd } from '../support/meterd.js';
import { startPostgresServer, type PostgresServerHandle } from '../support/postgres-server.js';
import { startRedisServer, type RedisServerHandle } from '../support/redis-servers.js';

/**
 * The durable ledger under faults: a meterd process killed in the middle of a flush, PostgreSQL
 * stopped under load, Redis killed and restarted from its AOF (and an AOF that lost its tail).
 * After each recovery: every pool's fields in Redis equal the sum of its events in Postgres
 * (reconcile), per-pool sequence numbers in Postgres are 1..n, and every charge a client saw
 * committed is in Postgres exactly once (checkLedgerInvariants in test/support/ledger-load.ts).
 * Each part runs on servers of its own (a throwaway PostgreSQL and redis-server on free loopback
 * ports, removed with their data afterwards, and when the run is interrupted).
 * LEDGER_FAULTS_VERBOSE=1 prints what each fault showed (the durability window is always printed).
 */

const verbose = process.env.LEDGER_FAULTS_VERBOSE !== undefined;
const note = (label: string, data: Record<string, unknown>, always = false): void => {
  if (verbose || always) console.log(`[ledger-faults] ${label} ${JSON.stringify(data, (_k, v: unknown) => (typeof v === 'bigint' ? v.toString() : v))}`);
};

/** A pino logger whose JSON lines the test can read. */
function captureLogs(): { logger: Logger; entries(): Array<Record<string, unknown>>; messages(msg: string): Array<Record<string, unknown>> } {
  const lines: string[] = [];
  const logger = pino({ level: 'info' }, { write: (line: string) => void lines.push(line) });
  const entries = () => lines.map((l) => JSON.parse(l) as Record<string, unknown>);
  return { logger, entries, messages: (msg) => entries().filter((e) => typeof e.msg === 'string' && e.msg.startsWith(msg)) };
}

const CONFLICT_MSG = 'ledger events already in Postgres with another payload';
const DIVERGED_MSG = 'ledger events of a Redis timeline that diverged from the ledger';

async function waitFor<T>(what: string, probe: () => Promise<T | undefined>, withinMs = 20_000, everyMs = 20): Promise<T> {
  const deadline = Date.now() + withinMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`${what}: not within ${withinMs} ms`);
    await sleep(everyMs);
  }
}

/** Bounded poll until Postgres holds, per pool, at least the events Redis had at `seqs` (the load may still be running). */
async function waitUntilCaughtUp(view: LedgerView, seqs: Map<string, bigint>, withinMs = 30_000): Promise<void> {
  await waitFor('Postgres catching up with the backlog', async () => {
    const stored = await postgresSequences(view);
    return view.accounts.every((a) => (stored.get(a)?.n ?? 0n) >= (seqs.get(a) ?? 0n)) ? true : undefined;
  }, withinMs, 100);
}

// ───────────────────────────── 1. kill -9 of a meterd process mid-flush ─────────────────────────────

// Fault injection inside this test's own database: every flush transaction passes two gates, one
// before its INSERT and one at COMMIT (a deferred constraint trigger runs inside COMMIT). Each gate
// takes a shared advisory lock keyed by the backend's application name, which each replica sets to
// its own; while the test holds the victim's lock exclusively, only the victim's flushes stop
// there, so it can be killed at a known point of a flush while the survivors flush on. Unlocked,
// the gates cost next to nothing. A backend whose client died while it waits at the COMMIT gate
// still commits once the gate opens (Postgres only looks at the client socket when it next reads
// or writes it, with the default client_connection_check_interval = 0): exactly a replica dying
// between COMMIT and XACK.
const GATE_BEFORE_INSERT = 4_243_101;
const GATE_AT_COMMIT = 4_243_102;
const GATES_SQL = `
  CREATE FUNCTION test_gate_before_insert() RETURNS trigger LANGUAGE plpgsql AS $$
  BEGIN PERFORM pg_advisory_xact_lock_shared(${GATE_BEFORE_INSERT}, hashtext(current_setting('application_name'))); RETURN NULL; END $$;
  CREATE TRIGGER test_gate_before_insert BEFORE INSERT ON ledger_events
    FOR EACH STATEMENT EXECUTE FUNCTION test_gate_before_insert();
  CREATE FUNCTION test_gate_at_commit() RETURNS trigger LANGUAGE plpgsql AS $$
  BEGIN PERFORM pg_advisory_xact_lock_shared(${GATE_AT_COMMIT}, hashtext(current_setting('application_name'))); RETURN NULL; END $$;
  CREATE CONSTRAINT TRIGGER test_gate_at_commit AFTER INSERT ON ledger_events
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION test_gate_at_commit();`;

interface Replica {
  label: string;
  app: string;
  process: MeterdProcess;
  clients: TestClients;
}

interface PendingEntry {
  partition: number;
  entryId: string;
  consumer: string;
}

interface KillReport {
  victim: string;
  /** Entries the victim had read but not acknowledged when it died. */
  left: number;
  /** How many of those were in Postgres once its backend was gone (0: killed before COMMIT; all: after COMMIT). */
  committedByVictim: number;
  /** Whether they were still the dead consumer's when counted (nobody had reclaimed them yet). */
  stillOwned: boolean;
}

describe('kill -9 of a meterd process in the middle of a flush, under load', () => {
  const run = randomBytes(5).toString('hex');
  const keyPrefix = `tk${run}`;
  const accounts = Array.from({ length: 12 }, (_, i) => `kill-${run}-${i}`);
  const processes: MeterdProcess[] = [];
  const clientsOpen: TestClients[] = [];
  let pgServer: PostgresServerHandle | undefined;
  let redisServer: RedisServerHandle | undefined;
  let databaseUrl = '';
  let config: { path: string; remove(): Promise<void> } | undefined;
  let redis: Redis;
  let db: pg.Pool;
  let gate: pg.Client;
  let store: RedisCreditStore;
  let load: CreditLoad | undefined;
  let view: LedgerView;

  const appName = (label: string) => `meterd-${run}-${label}`;
  const env = (label: string): Record<string, string> => ({
    REDIS_URL: redisServer?.url ?? '',
    REDIS_KEY_PREFIX: keyPrefix,
    // The application name tells this replica's Postgres backends apart in pg_stat_activity.
    DATABASE_URL: `${databaseUrl}?application_name=${appName(label)}`,
    LOG_LEVEL: 'warn',
    METERD_CONFIG: config?.path ?? '',
    SHUTDOWN_GRACE_MS: '2000',
    FLUSH_INTERVAL_MS: '20',
    FLUSH_RECLAIM_IDLE_MS: '1000',
    RECONCILE_INTERVAL_MS: '0',
    // One flush lane per replica: the kill points below stop THE flush in flight, and the checks
    // count what that one consumer left pending (lanes are separate consumers, reclaimed the same way).
    FLUSH_LANES: '1',
  });

  async function startReplica(label: string): Promise<Replica> {
    const proc = await startMeterdProcess(env(label), `probe-${run}`, processes);
    const clients = connectClients(proc.port);
    clientsOpen.push(clients);
    return { label, app: appName(label), process: proc, clients };
  }

  beforeAll(async () => {
    [pgServer, redisServer] = await Promise.all([startPostgresServer(), startRedisServer()]);
    databaseUrl = testDatabaseUrl(`meterd_${keyPrefix}`, pgServer.url);
    config = await writeProductConfig(LOAD_PRODUCT_YAML);
    await ensureDatabase(databaseUrl);
    db = new pg.Pool({ connectionString: databaseUrl, max: 3 });
    db.on('error', () => {}); // DROP DATABASE ... WITH (FORCE) may still meet a closing connection
    await migrate(db);
    await db.query(GATES_SQL);
    gate = new pg.Client({ connectionString: databaseUrl });
    gate.on('error', () => {});
    await gate.connect();
    redis = new Redis(redisServer.url, { protocol: 2 });
    store = new RedisCreditStore(redis, { keyPrefix, product: LOAD_PRODUCT, clock: systemClock });
    await store.loadScripts();
    view = { db, redis, keyPrefix, accounts };
  });

  afterAll(async () => {
    await load?.stop();
    for (const c of clientsOpen) c.close();
    await Promise.all(processes.map((p) => stopMeterdProcess(p)));
    await gate?.end().catch(() => {});
    await db?.end();
    redis?.disconnect();
    await config?.remove();
    await Promise.all([pgServer?.stop(), redisServer?.stop()]); // their databases and keys go with them
  });

  /** The flush consumers (one per partition stream) of a running replica: their names carry its pid. */
  async function consumersOf(replica: Replica): Promise<Set<string>> {
    const pids = replica.process.child.pid === undefined ? [] : processGroupPids(replica.process.child.pid);
    const pipeline = redis.pipeline();
    for (let p = 0; p < PARTITION_COUNT; p++) pipeline.xinfo('CONSUMERS', `${partitionPrefix(keyPrefix, p)}ledger`, FLUSH_GROUP);
    const names = new Set<string>();
    for (const [err, reply] of (await pipeline.exec()) ?? []) {
      if (err) throw err;
      for (const consumer of reply as string[][]) {
        const name = consumer[1] as string;
        if (pids.some((pid) => name.includes(`-${pid}-`))) names.add(name);
      }
    }
    if (names.size === 0) throw new Error(`no flush consumer of replica ${replica.label} (pids ${pids.join(',')})`);
    return names;
  }

  async function pendingOf(consumers: Set<string>): Promise<PendingEntry[]> {
    const pipeline = redis.pipeline();
    for (let p = 0; p < PARTITION_COUNT; p++) {
      for (const consumer of consumers) pipeline.xpending(`${partitionPrefix(keyPrefix, p)}ledger`, FLUSH_GROUP, '-', '+', 100_000, consumer);
    }
    const replies = (await pipeline.exec()) ?? [];
    const entries: PendingEntry[] = [];
    let i = 0;
    for (let p = 0; p < PARTITION_COUNT; p++) {
      for (const consumer of consumers) {
        const [err, reply] = replies[i++] ?? [null, []];
        if (err) throw err;
        for (const [entryId] of reply as Array<[string, string, number, number]>) entries.push({ partition: p, entryId, consumer });
      }
    }
    return entries;
  }

  /** Ledger event ids of stream entries (read while they are still in the stream: pending entries are never trimmed). */
  async function eventIdsOf(entries: PendingEntry[]): Promise<string[]> {
    const pipeline = redis.pipeline();
    for (const e of entries) pipeline.xrange(`${partitionPrefix(keyPrefix, e.partition)}ledger`, e.entryId, e.entryId);
    const ids: string[] = [];
    for (const [err, reply] of (await pipeline.exec()) ?? []) {
      if (err) throw err;
      const fields = (reply as Array<[string, string[]]>)[0]?.[1] ?? [];
      const at = fields.indexOf('id');
      if (at >= 0 && fields[at + 1] !== undefined) ids.push(fields[at + 1] as string);
    }
    return ids;
  }

  async function storedCount(eventIds: string[]): Promise<number> {
    const row = (await db.query<{ n: string }>('SELECT count(*) AS n FROM ledger_events WHERE event_id = ANY($1::text[])', [eventIds])).rows[0];
    return Number(row?.n ?? 0);
  }

  async function backendsOf(app: string): Promise<Array<{ query: string; wait_event: string | null; in_xact: boolean }>> {
    return (await db.query<{ query: string; wait_event: string | null; in_xact: boolean }>(
      'SELECT query, wait_event, xact_start IS NOT NULL AS in_xact FROM pg_stat_activity WHERE application_name = $1', [app])).rows;
  }

  /** The victim's Postgres backends end once they notice the client is gone (after the gate opens). */
  async function waitForBackendsGone(app: string): Promise<void> {
    await waitFor(`backends of ${app} ending`, async () => ((await backendsOf(app)).length === 0 ? true : undefined), 15_000);
  }

  /**
   * Bounded poll until a survivor took over (XAUTOCLAIM) everything the dead consumer left and
   * wrote it to Postgres (taken over is not yet written: the survivor flushes it on its next turn).
   */
  async function waitUntilReclaimed(consumers: Set<string>, eventIds: string[]): Promise<void> {
    await waitFor('the dead consumer\'s entries reclaimed and written', async () =>
      ((await pendingOf(consumers)).length === 0 && (await storedCount(eventIds)) === eventIds.length ? true : undefined), 20_000, 100);
  }

  /**
   * A survivor logs its reclaim after its pass over every partition, so the entries can be seen
   * reclaimed (and, killed at COMMIT, already stored) a moment before the line is written.
   */
  async function waitUntilLogged(replica: Replica, line: string): Promise<void> {
    await waitFor(`"${line}" in the log`, async () => (replica.process.output().includes(line) ? true : undefined), 20_000, 100);
  }

  /** What every replica's backends are doing (for failure messages and the verbose log). */
  async function activity(): Promise<string> {
    const rows = (await db.query<{ app: string; wait: string | null; query: string; xact_ms: string | null }>(`
      SELECT application_name AS app, wait_event_type || '/' || wait_event AS wait, left(query, 30) AS query,
        (extract(epoch FROM now() - xact_start) * 1000)::bigint AS xact_ms
      FROM pg_stat_activity WHERE datname = current_database() AND application_name LIKE 'meterd-%' AND xact_start IS NOT NULL`)).rows;
    return rows.map((r) => `${r.app.split('-').at(-1)}: ${r.wait ?? 'running'} in "${r.query}" for ${r.xact_ms} ms`).join('; ') || 'no open transaction';
  }

  /**
   * Stops the victim's next flush at a gate, kills the process there, opens the gate. Should the
   * victim be held up elsewhere instead (behind a survivor's uncommitted rows of the same usage
   * rollup, on a loaded machine), the gate opens for a moment and closes again.
   */
  async function killAtGate(victim: Replica, where: 'before-insert' | 'at-commit'): Promise<KillReport & { consumers: Set<string>; eventIds: string[]; attempts: string[] }> {
    const lock = where === 'before-insert' ? GATE_BEFORE_INSERT : GATE_AT_COMMIT;
    const atGate = async () => (await backendsOf(victim.app)).some((b) => b.wait_event === 'advisory'
      && (where === 'at-commit' ? b.query === 'COMMIT' : b.query.includes('INSERT INTO ledger_events')));
    const attempts: string[] = [];
    let locked = false;
    try {
      for (;;) {
        await gate.query('SELECT pg_advisory_lock($1, hashtext($2))', [lock, victim.app]);
        locked = true;
        const deadline = Date.now() + 3_000;
        let waiting = await atGate();
        while (!waiting && Date.now() < deadline) {
          await sleep(20);
          waiting = await atGate();
        }
        if (waiting) break;
        attempts.push(await activity());
        await gate.query('SELECT pg_advisory_unlock($1, hashtext($2))', [lock, victim.app]);
        locked = false;
        if (attempts.length >= 5) throw new Error(`${victim.label}'s flush never waited at the ${where} gate: ${attempts.join(' | ')}`);
        await sleep(100);
      }
      const consumers = await consumersOf(victim);
      const left = await pendingOf(consumers);
      const eventIds = await eventIdsOf(left);
      load?.markDead(victim.label);
      await kill9MeterdProcess(victim.process);
      await gate.query('SELECT pg_advisory_unlock($1, hashtext($2))', [lock, victim.app]);
      locked = false;
      await waitForBackendsGone(victim.app);
      const committedByVictim = await storedCount(eventIds);
      const stillOwned = (await pendingOf(consumers)).length === left.length;
      return { victim: victim.label, left: left.length, committedByVictim, stillOwned, consumers, eventIds, attempts };
    } finally {
      if (locked) await gate.query('SELECT pg_advisory_unlock($1, hashtext($2))', [lock, victim.app]);
    }
  }

  /** No gate: kills the victim the moment one of its flush transactions is seen open. */
  async function killDuringFlush(victim: Replica): Promise<KillReport & { consumers: Set<string>; eventIds: string[] }> {
    const consumers = await consumersOf(victim);
    await waitFor(`a flush transaction of ${victim.label}`, async () => ((await backendsOf(victim.app)).some((b) => b.in_xact) ? true : undefined), 20_000, 2);
    load?.markDead(victim.label);
    await kill9MeterdProcess(victim.process);
    await waitForBackendsGone(victim.app);
    const left = await pendingOf(consumers);
    const eventIds = await eventIdsOf(left);
    const committedByVictim = await storedCount(eventIds);
    return { victim: victim.label, left: left.length, committedByVictim, stillOwned: true, consumers, eventIds };
  }

  it('the batch of a killed replica is reclaimed by a survivor (killed before COMMIT, between COMMIT and XACK, and at a random point); nothing lost or doubled', { timeout: 120_000 }, async () => {
    const [a, b] = await Promise.all([startReplica('a'), startReplica('b')]);
    await createLoadAccounts(a.clients, accounts);
    load = new CreditLoad(accounts, run);
    load.setTargets([{ name: 'a', clients: a.clients, live: true }, { name: 'b', clients: b.clients, live: true }]);
    load.start(6);
    await load.waitForOps(150);

    // 1. a dies inside its flush transaction, before COMMIT: nothing of its batch is in Postgres;
    //    b reclaims the batch once it has been idle FLUSH_RECLAIM_IDLE_MS and writes it.
    const k1 = await killAtGate(a, 'before-insert');
    note('kill before COMMIT', { ...k1, consumers: undefined, eventIds: undefined });
    expect(k1.left).toBeGreaterThan(0);
    if (k1.stillOwned) expect(k1.committedByVictim).toBe(0);
    await load.waitForOps(100); // b alone serves on
    await waitUntilReclaimed(k1.consumers, k1.eventIds);
    await waitUntilLogged(b, 'reclaimed ledger entries left pending by another consumer');

    const c = await startReplica('c');
    load.addTarget({ name: 'c', clients: c.clients, live: true });
    await load.waitForOps(150);

    // 2. b dies inside COMMIT: its backend finishes the commit, the entries are never acknowledged
    //    (the crash between COMMIT and XACK). c reclaims them; their insert is a no-op.
    const k2 = await killAtGate(b, 'at-commit');
    note('kill between COMMIT and XACK', { ...k2, consumers: undefined, eventIds: undefined });
    expect(k2.left).toBeGreaterThan(0);
    if (k2.stillOwned) expect(k2.committedByVictim).toBe(k2.left);
    await load.waitForOps(100);
    await waitUntilReclaimed(k2.consumers, k2.eventIds);
    await waitUntilLogged(c, 'reclaimed ledger entries left pending by another consumer');

    const d = await startReplica('d');
    load.addTarget({ name: 'd', clients: d.clients, live: true });
    await load.waitForOps(150);

    // 3. c dies at whatever point of a flush transaction it is in; d carries the load alone.
    const k3 = await killDuringFlush(c);
    note('kill at a random point of a flush', { ...k3, consumers: undefined, eventIds: undefined });
    await load.waitForOps(200);
    await load.stop();

    await waitUntilFlushed(view, 30_000);
    const checked = await checkLedgerInvariants(view, (p, ids, max) => store.snapshotLedger(p, ids, max), load.committed);
    expect(load.errors).toEqual([]);
    for (const p of processes) expect(p.output()).not.toContain(CONFLICT_MSG); // redelivered batches were plain duplicates
    note('process kills: invariants hold', { ops: load.ops, retriedUnavailable: load.retries, events: checked.events, commits: checked.commits, charged: checked.charged });
  });
});

// ───────────────────────────── 2. PostgreSQL stopped under load ─────────────────────────────

describe('PostgreSQL stopped under load, then restarted', () => {
  const run = randomBytes(5).toString('hex');
  const accounts = Array.from({ length: 8 }, (_, i) => `pgdown-${run}-${i}`);
  const ALARM_EVENTS = 200;
  const logs = captureLogs();
  let server: PostgresServerHandle | undefined;
  let redisServer: RedisServerHandle | undefined;
  let t: TestMeterd | undefined;
  let redis: Redis;
  let db: pg.Pool;
  let load: CreditLoad | undefined;

  beforeAll(async () => {
    [server, redisServer] = await Promise.all([startPostgresServer(), startRedisServer()]);
    t = await startTestMeterd({
      target: { url: redisServer.url }, postgres: true, databaseServerUrl: server.url, flushLoop: true, product: LOAD_PRODUCT, logger: logs.logger,
      env: { FLUSH_INTERVAL_MS: '20', FLUSH_BACKLOG_ALARM_EVENTS: String(ALARM_EVENTS), RECONCILE_INTERVAL_MS: '0' },
    });
    redis = new Redis(redisServer.url, { protocol: 2 });
    db = new pg.Pool({ connectionString: t.databaseUrl, max: 2 });
    db.on('error', () => {}); // idle connections die with the server; the pool replaces them
  });

  afterAll(async () => {
    await load?.stop();
    if (server && server.pid() === undefined) await server.restart().catch(() => {}); // t.stop() drops its database there
    await db?.end();
    redis?.disconnect();
    try {
      await t?.stop();
    } finally {
      await Promise.all([server?.stop(), redisServer?.stop()]);
    }
  });

  it('reserve/commit go on while Postgres is down, the backlog grows and raises the alarm, and after the restart every event arrives once', { timeout: 90_000 }, async () => {
    const meterd = t as TestMeterd;
    const pgServer = server as PostgresServerHandle;
    const flusher = meterd.meterd.flusher!;
    const view: LedgerView = { db, redis, keyPrefix: meterd.keyPrefix, accounts };
    await createLoadAccounts(meterd.clients, accounts);
    load = new CreditLoad(accounts, run);
    load.setTargets([{ name: 'in-process', clients: meterd.clients, live: true }]);
    load.start(4);
    await load.waitForOps(100);
    await waitFor('the first events in Postgres', async () => ((await postgresSequences(view)).size > 0 ? true : undefined));

    // Outage 1: a fast shutdown (pg_ctl stop -m fast) for as long as it takes the backlog to pass the bound twice over.
    await pgServer.shutdown('fast');
    const opsAtStop = load.ops;
    const backlogAtStop = await streamLengths(redis, meterd.keyPrefix);
    const backlog = await waitFor('the backlog growing past the alarm bound', async () => {
      const events = await streamLengths(redis, meterd.keyPrefix);
      return events > 2 * ALARM_EVENTS && load!.ops >= opsAtStop + 100 ? events : undefined;
    }, 30_000, 50);
    expect(load.errors).toEqual([]); // every reserve and commit succeeded without Postgres...
    expect(load.ops - opsAtStop).toBeGreaterThanOrEqual(100); // ...and they went on
    expect(backlog).toBeGreaterThan(backlogAtStop);
    const alarm = await flusher.checkBacklog();
    expect(alarm.alarm).toBe(true);
    expect(alarm.events).toBeGreaterThan(ALARM_EVENTS);
    expect(logs.messages('ledger backlog past its bound')).not.toHaveLength(0);
    expect(logs.messages('ledger flush failed')).not.toHaveLength(0);
    note('postgres down (fast)', { opsWhileDown: load.ops - opsAtStop, backlogAtStop, backlog, alarm, flushFailuresLogged: logs.messages('ledger flush failed').length });

    const seqsAtRestart = await redisSeqs(view);
    await pgServer.restart();
    await waitUntilCaughtUp(view, seqsAtRestart);

    // Outage 2: an immediate shutdown (a crash: in-flight transactions, maybe a COMMIT, are cut off).
    await load.waitForOps(100);
    await pgServer.shutdown('immediate');
    await load.waitForOps(150);
    expect(load.errors).toEqual([]);
    const seqsAtRestart2 = await redisSeqs(view);
    await pgServer.restart();
    await waitUntilCaughtUp(view, seqsAtRestart2);
    await load.waitForOps(100);

    await load.stop();
    await flusher.stop(); // stops the loop and runs the final drain
    await waitUntilFlushed(view);
    const checked = await checkLedgerInvariants(view, (p, ids, max) => meterd.meterd.store.snapshotLedger(p, ids, max), load.committed);
    expect(await flusher.checkBacklog()).toEqual({ events: 0, alarm: false });
    expect(logs.messages('ledger backlog back under its bound')).not.toHaveLength(0);
    expect(logs.messages(CONFLICT_MSG)).toEqual([]);
    note('postgres outages: invariants hold', { ops: load.ops, events: checked.events, commits: checked.commits, charged: checked.charged });
  });
});

// ───────────────────────────── 3. Redis restarted from its AOF ─────────────────────────────

/** The AOF file Redis appends to now (Redis 7 multi-part AOF: the manifest's last incr file). */
function aofIncrFile(dir: string): string {
  const aofDir = join(dir, 'appendonlydir');
  const manifest = readFileSync(join(aofDir, 'appendonly.aof.manifest'), 'utf8');
  const incr = manifest.split('\n').map((l) => /^file (\S+) seq \d+ type i$/.exec(l.trim())?.[1]).filter((f): f is string => f !== undefined);
  const last = incr.at(-1);
  if (last === undefined) throw new Error(`no incr file in ${manifest}`);
  return join(aofDir, last);
}

interface RedisMeterd {
  server: RedisServerHandle;
  t: TestMeterd;
  logs: ReturnType<typeof captureLogs>;
  redis: Redis;
  db: pg.Pool;
  view: LedgerView;
  snapshot: SnapshotReader;
  load: CreditLoad;
  /** False between kill9() and restart(): cleanup restarts it first (t.stop() deletes the keys there). */
  up: boolean;
}

describe('Redis restarted from its AOF', () => {
  let pgServer: PostgresServerHandle | undefined;
  beforeAll(async () => {
    pgServer = await startPostgresServer();
  });
  afterAll(async () => {
    await pgServer?.stop();
  });

  /**
   * A throwaway Redis (AOF on, the given fsync policy) and an in-process meterd on it flushing into
   * a database of its own on the machine's Postgres; `body` runs with them, then both are removed.
   */
  async function withRedisMeterd(fsync: 'always' | 'everysec', accounts: string[], body: (env: RedisMeterd) => Promise<void>): Promise<void> {
    const server = await startRedisServer({ appendonly: true, extraArgs: ['--appendfsync', fsync] });
    const logs = captureLogs();
    let t: TestMeterd;
    try {
      t = await startTestMeterd({
        target: { url: server.url }, postgres: true, databaseServerUrl: pgServer?.url, flushLoop: true, product: LOAD_PRODUCT, logger: logs.logger,
        env: { FLUSH_INTERVAL_MS: '20', RECONCILE_INTERVAL_MS: '0' },
      });
    } catch (err) {
      await server.stop();
      throw err;
    }
    const redis = new Redis(server.url, { protocol: 2 });
    redis.on('error', () => {}); // it reconnects after a restart
    const db = new pg.Pool({ connectionString: t.databaseUrl, max: 2 });
    db.on('error', () => {}); // DROP DATABASE ... WITH (FORCE) may still meet a closing connection
    const env: RedisMeterd = {
      server, t, logs, redis, db, up: true,
      view: { db, redis, keyPrefix: t.keyPrefix, accounts },
      snapshot: (p, ids, max) => t.meterd.store.snapshotLedger(p, ids, max),
      load: new CreditLoad(accounts, randomBytes(4).toString('hex')),
    };
    env.load.setTargets([{ name: 'in-process', clients: t.clients, live: true }]);
    try {
      await createLoadAccounts(t.clients, accounts);
      await body(env);
    } finally {
      await env.load.stop();
      if (!env.up) await server.restart().catch(() => {}); // t.stop() deletes its keys there
      await db.end();
      redis.disconnect();
      try {
        await t.stop();
      } finally {
        await dropDatabase(t.databaseUrl).catch(() => {});
        await server.stop();
      }
    }
  }

  /** Until meterd answers again after a Redis restart (ioredis reconnects by itself). */
  async function waitUntilServing(env: RedisMeterd, accountId: string): Promise<void> {
    await waitFor('meterd serving after the Redis restart', async () => {
      try {
        await env.t.clients.metering.getBalance({ accountId });
        return true;
      } catch (err) {
        if (isServiceError(err)) return undefined;
        throw err;
      }
    }, 20_000, 50);
  }

  it('appendfsync always: kill -9 of Redis mid-load and a restart from the AOF lose nothing; every event reaches Postgres once', { timeout: 90_000 }, async () => {
    const accounts = Array.from({ length: 8 }, (_, i) => `aof-${i}`);
    await withRedisMeterd('always', accounts, async (env) => {
      const { load } = env;
      load.start(4);
      await load.waitForOps(150);
      for (let cycle = 0; cycle < 2; cycle++) {
        await env.server.kill9();
        env.up = false;
        await sleep(200); // calls meanwhile fail with UNAVAILABLE; the load retries them with the same ids
        await env.server.restart();
        env.up = true;
        await load.waitForOps(150);
      }
      await load.stop();
      await env.t.meterd.flusher!.stop(); // the final drain
      await waitUntilFlushed(env.view);
      const checked = await checkLedgerInvariants(env.view, env.snapshot, load.committed);
      expect(load.errors).toEqual([]);
      expect(env.logs.messages(CONFLICT_MSG)).toEqual([]);
      note('redis kill -9 (always): invariants hold', { ops: load.ops, retriedUnavailable: load.retries, events: checked.events, commits: checked.commits, charged: checked.charged });
    });
  });

  it('appendfsync everysec: the window a crash can lose, measured (reported, not asserted)', { timeout: 90_000 }, async () => {
    const accounts = Array.from({ length: 8 }, (_, i) => `win-${i}`);
    await withRedisMeterd('everysec', accounts, async (env) => {
      const { load, server } = env;
      const incr = aofIncrFile(server.dir);
      load.start(4);
      await load.waitForOps(50);

      // fsync times: strace on Redis' background fsync thread only (the main thread runs untraced).
      const fsyncTrace = await traceFsyncs(env.redis, join(server.dir, 'fsync.trace'));
      // AOF size over time, to know how much of it each fsync covered.
      const samples: Array<[atMs: number, bytes: number]> = [];
      const sampler = setInterval(() => {
        try {
          samples.push([Date.now(), statSync(incr).size]);
        } catch {
          // the file is being replaced: skip this sample
        }
      }, 5);
      const loadStart = { ms: Date.now(), ops: load.ops };
      await sleep(2_000 + Math.floor(Math.random() * 1_000)); // a random instant, at least one fsync cycle in
      const info = await env.redis.info('persistence');
      const opsAtKill = load.ops;
      const killAtMs = Date.now();
      await server.kill9();
      env.up = false;
      clearInterval(sampler);
      const fsyncs = await fsyncTrace.stop();
      const aofBytes = statSync(incr).size;

      // A process crash keeps what Redis wrote to the page cache. An OS crash or power loss keeps
      // only what was fsynced: the start of the last fsync that finished before the kill covers
      // every byte written before it (bounded below by the last size sampled before it).
      const done = fsyncs.filter((f) => f.atMs + f.durationMs <= killAtMs);
      const last = done.at(-1);
      const durableBytes = last === undefined ? undefined : Math.max(0, ...samples.filter(([at]) => at <= last.atMs).map(([, bytes]) => bytes));
      const tail = durableBytes === undefined ? '' : readFileSync(incr).subarray(durableBytes).toString('latin1');
      const tailEventIds = [...tail.matchAll(/\$4\r\nXADD\r\n\$\d+\r\n[^\r]*\r\n\$\d+\r\n[^\r]*\r\n\$2\r\nid\r\n\$\d+\r\n([^\r]*)\r\n/g)].map((m) => m[1] as string);
      const tailCommits = [...tail.matchAll(/\$4\r\nkind\r\n\$6\r\ncommit\r\n/g)].length;
      const tailInPostgres = tailEventIds.length === 0 ? 0 : Number((await env.db.query<{ n: string }>(
        'SELECT count(*) AS n FROM ledger_events WHERE event_id = ANY($1::text[])', [tailEventIds])).rows[0]?.n ?? 0);
      const intervals = fsyncs.slice(1).map((f, i) => f.atMs - (fsyncs[i] as { atMs: number }).atMs).sort((x, y) => x - y);
      const seconds = (killAtMs - loadStart.ms) / 1000;

      // What the kill -9 itself (a process crash) lost: restart from the whole AOF and compare.
      await server.restart();
      env.up = true;
      await load.waitForOps(100);
      await load.stop();
      await env.t.meterd.flusher!.stop();
      const lostAcknowledged = await acknowledgedCommitsLost(env);
      let invariants = 'hold';
      try {
        await waitUntilFlushed(env.view, 10_000);
        await checkLedgerInvariants(env.view, env.snapshot, load.committed);
      } catch (err) {
        invariants = err instanceof Error ? err.message : String(err);
      }
      note('durability window (appendfsync everysec)', {
        fsyncTraced: fsyncTrace.available ? fsyncs.length : `no (${fsyncTrace.why})`,
        fsyncIntervalMs: intervals.length > 0 ? intervals.map(Math.round) : null,
        fsyncDurationMsMax: fsyncs.length > 0 ? Math.max(...fsyncs.map((f) => f.durationMs)) : null,
        sampleEveryMsMedian: medianGap(samples.map(([at]) => at)),
        aofDelayedFsync: /aof_delayed_fsync:(\d+)/.exec(info)?.[1],
        loadEventsPerSecond: Math.round(((opsAtKill - loadStart.ops) * 2) / seconds),
        aofBytesPerSecond: Math.round((aofBytes - (samples[0]?.[1] ?? 0)) / ((killAtMs - (samples[0]?.[0] ?? killAtMs)) / 1000)),
        // What an OS crash at the kill instant would have lost: the AOF written but not yet fsynced.
        unsyncedTailAtKill: last === undefined ? (fsyncTrace.available ? 'no fsync completed' : 'not measured') : {
          msSinceLastFsyncStarted: Math.round(killAtMs - last.atMs),
          bytes: aofBytes - (durableBytes ?? 0),
          ledgerEvents: tailEventIds.length,
          commitEvents: tailCommits,
          ledgerEventsAlreadyInPostgres: tailInPostgres,
        },
        processCrash: { acknowledgedCommitsLost: lostAcknowledged, conflictsLogged: conflictCount(env), invariants },
      }, true);
    });
  });

  it('an AOF that lost its tail (an older copy restored): Postgres holds events Redis lost; reused sequence numbers hit the conflict path and reconcile reports drift; the background check rebuilds those pools from the ledger and all is clean again', { timeout: 90_000 }, async () => {
    const accounts = Array.from({ length: 4 }, (_, i) => `tail-${i}`);
    await withRedisMeterd('everysec', accounts, async (env) => {
      const { server, t } = env;
      const committed: Record<string, string[]> = {};
      const pairs = async (round: string, n: number, credits: bigint): Promise<bigint> => {
        let charged = 0n;
        for (const accountId of accounts) {
          for (let i = 0; i < n; i++) {
            const hold = await t.clients.metering.reserveCredits({ accountId, feature: 'work', credits: 4n, requestId: `${round}-${i}`, userId: '', labels: {} });
            charged += (await t.clients.metering.commitReservation({ reservationId: hold.reservationId, credits })).chargedCredits;
            (committed[round] ??= []).push(hold.reservationId);
          }
        }
        return charged;
      };

      const chargedA = await pairs('a', 3, 2n);
      await waitUntilFlushed(env.view);
      const aofDir = join(server.dir, 'appendonlydir');
      const olderCopy = join(server.dir, 'appendonlydir-older');
      cpSync(aofDir, olderCopy, { recursive: true }); // the AOF as it is now: everything up to here

      const chargedB = await pairs('b', 3, 3n); // the tail Redis will lose: already flushed to Postgres
      await waitUntilFlushed(env.view);
      const seqsBefore = await redisSeqs(env.view);

      await server.kill9();
      env.up = false;
      rmSync(aofDir, { recursive: true, force: true });
      cpSync(olderCopy, aofDir, { recursive: true });
      await server.restart();
      env.up = true;
      await waitUntilServing(env, accounts[0] as string);

      const seqsAfter = await redisSeqs(env.view);
      const stored = await postgresSequences(env.view);
      const lost = accounts.map((a) => ({ accountId: a, redisSeq: seqsAfter.get(a) ?? 0n, postgresMaxSeq: stored.get(a)?.max ?? 0n, seqBeforeLoss: seqsBefore.get(a) ?? 0n }));
      for (const l of lost) expect(l.redisSeq).toBeLessThan(l.seqBeforeLoss); // Redis lost its tail...
      const ahead = lost.filter((l) => l.postgresMaxSeq > l.redisSeq); // ...which Postgres holds
      expect(ahead.map((l) => l.accountId)).toEqual(accounts); // round b was flushed everywhere
      // Reconcile names every pool whose Redis is behind what Postgres already holds.
      const early = await reconcile(env.db, env.snapshot);
      expect(early.drifts.filter((d) => d.field === 'events_lost_in_redis').map((d) => d.accountId).sort())
        .toEqual(ahead.map((l) => l.accountId).sort());

      // Redis reuses the lost sequence numbers for new events with other payloads, and runs on past
      // what Postgres had: a lone hold first, so one hold sits on Postgres' last sequence number and
      // its commit on the next (the commit must not reach the ledger without its hold).
      for (const accountId of accounts) {
        await t.clients.metering.reserveCredits({ accountId, feature: 'work', credits: 4n, requestId: 'c-lone', userId: '', labels: {} });
      }
      const chargedC = await pairs('c', 4, 5n);
      await waitUntilFlushed(env.view);
      const reused = lost.reduce((sum, l) => sum + Number(l.postgresMaxSeq - l.redisSeq), 0);
      const eventsOfC = accounts.length * 9;
      expect(conflictCount(env)).toBe(reused); // logged as errors, the stored rows kept...
      expect(conflictCount(env, 'diverged')).toBe(eventsOfC - reused); // ...and the new timeline past them kept out
      const keptApart = await env.db.query<{ reason: string; n: string }>(
        'SELECT reason, count(*) AS n FROM ledger_conflicts WHERE account_id = ANY($1::text[]) GROUP BY reason ORDER BY reason', [accounts]);
      expect(keptApart.rows).toEqual([ // every event of the new timeline kept apart, never dropped
        { reason: 'diverged', n: String(eventsOfC - reused) }, { reason: 'payload_differs', n: String(reused) }]);
      expect(await postgresSequences(env.view)).toEqual(stored); // the ledger itself unchanged
      const late = await reconcile(env.db, env.snapshot);
      expect(late.drifts.length).toBeGreaterThan(0);

      // The repair: each such pool rebuilt from its ledger (Postgres wins); the conflicts are marked
      // repaired but kept; reconcile is clean again and new events no longer collide.
      const { repairs } = await t.meterd.reconcileNow(); // what the background check does each interval
      expect(repairs.map((r) => r.accountId).sort()).toEqual(accounts);
      for (const r of repairs) expect(r.outcome).toBe('repaired');
      expect((await reconcile(env.db, env.snapshot)).drifts).toEqual([]);
      for (const accountId of accounts) {
        const balance = await t.clients.metering.getBalance({ accountId });
        expect(balance.held).toBe(0n); // the repaired pool is the ledger's: no hold of the lost timeline
      }
      // A charge only the lost timeline made cannot be refunded (that would give back credits the
      // ledger never charged); one the ledger has, Redis lost, is not refundable from Redis either.
      for (const reservationId of [committed.c?.at(-1), committed.b?.at(-1)]) {
        const refund = await t.clients.admin.refundCharge({ reservationId: reservationId as string, credits: 1n, refundId: `rf-${reservationId}`, reason: '' })
          .then(() => 'refunded', (err: { code?: number }) => err.code);
        expect(refund).toBe(status.NOT_FOUND);
      }
      const conflictsBeforeD = conflictCount(env) + conflictCount(env, 'diverged');
      await pairs('d', 2, 1n);
      await waitUntilFlushed(env.view);
      expect(conflictCount(env) + conflictCount(env, 'diverged')).toBe(conflictsBeforeD);
      expect((await reconcile(env.db, env.snapshot)).drifts).toEqual([]);
      const keptRows = await env.db.query<{ n: string; repaired: string }>(
        'SELECT count(*) AS n, count(repaired_at) AS repaired FROM ledger_conflicts WHERE account_id = ANY($1::text[])', [accounts]);
      expect(keptRows.rows[0]).toEqual({ n: String(eventsOfC), repaired: String(eventsOfC) });
      const postgresCharged = BigInt((await env.db.query<{ s: string | null }>(
        "SELECT sum(charged) AS s FROM ledger_events WHERE kind = 'commit' AND account_id = ANY($1::text[])", [accounts])).rows[0]?.s ?? '0');
      note('lost AOF tail', {
        lost: lost.map((l) => `${l.accountId}: seq ${l.seqBeforeLoss} → ${l.redisSeq} in Redis, ${l.postgresMaxSeq} in Postgres`),
        reconcileRightAfterTheLoss: early.drifts.map((d) => `${d.accountId}.${d.field} redis=${d.redis} ledger=${d.ledger}`),
        conflictsLogged: conflictCount(env),
        reconcileAfterReuse: late.drifts.map((d) => `${d.accountId}.${d.field} redis=${d.redis} ledger=${d.ledger}`),
        repairs: repairs.map((r) => `${r.accountId}: Redis seq ${r.redisSeq} → ${r.ledgerSeq}, ${r.conflicts} conflicts kept for review`),
        clientsSawCommitted: chargedA + chargedB + chargedC,
        ledgerKeeps: chargedA + chargedB, // Postgres wins: round c's charges are kept apart for an operator
        postgresCharged,
    });
    });
  });
});

/** Events the flusher logged as kept apart, for one reason. */
function conflictCount(env: RedisMeterd, reason: 'payload_differs' | 'diverged' = 'payload_differs'): number {
  return env.logs.messages(reason === 'diverged' ? DIVERGED_MSG : CONFLICT_MSG).reduce((sum, e) => sum + Number(e.count ?? 0), 0);
}

function medianGap(times: number[]): number | null {
  const gaps = times.slice(1).map((at, i) => at - (times[i] as number)).sort((x, y) => x - y);
  return gaps.length > 0 ? (gaps[Math.floor(gaps.length / 2)] as number) : null;
}

/** Commits a client saw acknowledged whose reservation Redis no longer shows committed. */
async function acknowledgedCommitsLost(env: RedisMeterd): Promise<number> {
  const pipeline = env.redis.pipeline();
  for (const { reservationId } of env.load.acknowledged) {
    pipeline.hget(`${partitionPrefix(env.t.keyPrefix, reservationPartition(reservationId) ?? 0)}r/${reservationId}`, 'state');
  }
  return ((await pipeline.exec()) ?? []).filter(([err, state]) => err !== null || state !== 'C').length;
}

interface FsyncTrace {
  available: boolean;
  why?: string;
  stop(): Promise<Array<{ atMs: number; durationMs: number }>>;
}

/** strace -p on Redis' bio_aof_fsync thread: when each fdatasync started and how long it took. */
async function traceFsyncs(redis: Redis, file: string): Promise<FsyncTrace> {
  const unavailable = (why: string): FsyncTrace => ({ available: false, why, stop: async () => [] });
  const pid = /process_id:(\d+)/.exec(await redis.info('server'))?.[1];
  if (pid === undefined) return unavailable('no process_id');
  if (spawnSync('strace', ['-V']).status !== 0) return unavailable('strace not installed');
  const tid = readdirSync(`/proc/${pid}/task`).find((t) => {
    try {
      return readFileSync(`/proc/${pid}/task/${t}/comm`, 'utf8').trim() === 'bio_aof_fsync';
    } catch {
      return false;
    }
  });
  if (tid === undefined) return unavailable('no bio_aof_fsync thread');
  const child: ChildProcess = spawn('strace', ['-qq', '-ttt', '-T', '-e', 'trace=fdatasync,fsync', '-p', tid, '-o', file], { stdio: 'ignore' });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const tracer = () => {
    try {
      return Number(/TracerPid:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/task/${tid}/status`, 'utf8'))?.[1] ?? 0);
    } catch {
      return 0;
    }
  };
  const deadline = Date.now() + 3_000;
  while (tracer() === 0 && child.exitCode === null && Date.now() < deadline) await sleep(10);
  if (tracer() === 0) {
    child.kill('SIGKILL');
    return unavailable('strace could not attach');
  }
  return {
    available: true,
    async stop() {
      child.kill('SIGINT'); // a no-op when it ended with its tracee
      await Promise.race([exited, sleep(3_000)]);
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      const text = existsSync(file) ? readFileSync(file, 'utf8') : '';
      return text.split('\n').flatMap((line) => {
        const m = /^(\d+\.\d+) f(?:data)?sync\(\d+\)\s+=\s+0\s+<(\d+\.\d+)>/.exec(line);
        return m ? [{ atMs: Number(m[1]) * 1000, durationMs: Number(m[2]) * 1000 }] : [];
      });
    },
  };
}
