/**
 * The system under test for the chaos suite, all on free loopback ports: a redis-server with AOF
 * (appendfsync always or everysec), a private PostgreSQL, and N meterd processes, each reaching
 * Redis and Postgres through its own fault proxy. Each meterd runs under libfaketime with a
 * timestamp file of its own, so the nemesis can skew one process's clock at run time (the file
 * holds an offset such as "+2"; meterd re-reads it at most once a second). Everything is stopped
 * and its temp dirs removed by stop(), also after a failure.
 */
import { cpSync, createWriteStream, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, truncateSync, writeFileSync, type WriteStream } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { Redis } from 'ioredis';
import pg from 'pg';
import { parseProductConfig, type ProductConfig } from '../../src/config/product-config.js';
import { systemClock } from '../../src/domain/clock.js';
import { ensureDatabase, migrate } from '../../src/postgres/migrator.js';
import { poolsToRepair, reconcile, type SnapshotReader } from '../../src/postgres/reconciler.js';
import { repairPool, type RepairReport } from '../../src/postgres/rebuild.js';
import { RedisCreditStore } from '../../src/redis/redis-credit-store.js';
import { createMeterdClient, type MeterdClient } from '../../src/client/index.js';
import { kill9MeterdProcess, startMeterdProcess, stopMeterdProcess, writeProductConfig, type MeterdProcess } from '../support/meterd-process.js';
import { startPostgresServer, type PostgresServerHandle } from '../support/postgres-server.js';
import { startRedisServer, type RedisServerHandle } from '../support/redis-servers.js';
import { startFaultProxy, type FaultProxy } from './fault-proxy.js';

export const KEY_PREFIX = 'chaos';
const DATABASE = 'meterd_chaos';

/** Plans: two without overage room, two with; features priced by explicit credits (1 per credit). */
export const CHAOS_PRODUCT_YAML = `
plans:
  - { id: small, monthly_credits: 300, price_cents: 0 }
  - { id: medium, monthly_credits: 600, price_cents: 1000, overage_limit: 100 }
  - { id: large, monthly_credits: 1500, price_cents: 3000, overage_limit: 300 }
  - { id: huge, monthly_credits: 4000, price_cents: 9000, overage_limit: 800 }
features:
  - { id: work, credits: 1 }
`;
export const CHAOS_PRODUCT: ProductConfig = parseProductConfig({
  plans: [
    { id: 'small', monthly_credits: 300, price_cents: 0 },
    { id: 'medium', monthly_credits: 600, price_cents: 1000, overage_limit: 100 },
    { id: 'large', monthly_credits: 1500, price_cents: 3000, overage_limit: 300 },
    { id: 'huge', monthly_credits: 4000, price_cents: 9000, overage_limit: 800 },
  ],
  features: [{ id: 'work', credits: 1 }],
});

/** Where libfaketime lives (Debian's `faketime` package; scripts/install-test-tools.sh installs it). */
export function libfaketimePath(): string | undefined {
  for (const dir of ['/usr/lib/x86_64-linux-gnu/faketime', '/usr/lib/aarch64-linux-gnu/faketime', '/usr/lib/faketime']) {
    const path = join(dir, 'libfaketime.so.1');
    if (existsSync(path)) return path;
  }
  return undefined;
}

export interface ClusterOptions {
  meterds: number;
  appendfsync: 'always' | 'everysec';
  /** Log lines of each meterd (warn and above) go to files here. */
  log: (line: string) => void;
}

export interface MeterdSlot {
  index: number;
  /** Up (serving) or down (killed by the nemesis, not yet restarted). */
  up: boolean;
  process: MeterdProcess | undefined;
  unary: MeterdClient | undefined;
  stream: MeterdClient | undefined;
  redisProxy: FaultProxy;
  postgresProxy: FaultProxy;
  clockFile: string;
  clockOffsetSeconds: number;
  starts: number;
}

export class ChaosCluster {
  readonly slots: MeterdSlot[] = [];
  redis!: RedisServerHandle;
  postgres!: PostgresServerHandle;
  /** Direct connections (no proxy) for the nemesis and the checks. */
  admin!: Redis;
  db!: pg.Pool;
  store!: RedisCreditStore;
  databaseUrl = '';
  readonly workDir: string;
  private config: { path: string; remove(): Promise<void> } | undefined;
  private readonly processes: MeterdProcess[] = [];
  private readonly logs: WriteStream[] = [];
  private readonly faketime: string | undefined;
  /** everysec: the AOF's size over the last few seconds, for a simulated power loss. */
  private aofSizes: Array<[atMs: number, bytes: number]> = [];
  private aofSampler: NodeJS.Timeout | undefined;

  constructor(readonly options: ClusterOptions) {
    this.workDir = mkdtempSync(join(tmpdir(), 'meterd-chaos-'));
    this.faketime = libfaketimePath();
  }

  get snapshot(): SnapshotReader {
    return (p, ids, max) => this.store.snapshotLedger(p, ids, max);
  }

  get clockSkewAvailable(): boolean {
    return this.faketime !== undefined;
  }

  async start(): Promise<void> {
    [this.redis, this.postgres] = await Promise.all([
      startRedisServer({ appendonly: true, extraArgs: ['--appendfsync', this.options.appendfsync] }),
      startPostgresServer(),
    ]);
    const url = new URL(this.postgres.url);
    url.pathname = `/${DATABASE}`;
    this.databaseUrl = url.toString();
    await ensureDatabase(this.databaseUrl);
    this.db = new pg.Pool({ connectionString: this.databaseUrl, max: 4 });
    this.db.on('error', () => {}); // Postgres is killed on purpose; queries after heal reconnect
    await migrate(this.db);
    this.admin = new Redis(this.redis.url, { protocol: 2, commandTimeout: 5_000, maxRetriesPerRequest: 2 });
    this.admin.on('error', () => {});
    this.store = new RedisCreditStore(this.admin, { keyPrefix: KEY_PREFIX, product: CHAOS_PRODUCT, clock: systemClock });
    this.config = await writeProductConfig(CHAOS_PRODUCT_YAML);
    for (let i = 0; i < this.options.meterds; i++) {
      const clockFile = join(this.workDir, `clock-${i}.txt`);
      writeFileSync(clockFile, '+0\n');
      this.slots.push({
        index: i, up: false, process: undefined, unary: undefined, stream: undefined,
        redisProxy: await startFaultProxy(`redis-${i}`, { host: this.redis.host, port: this.redis.port }),
        postgresProxy: await startFaultProxy(`postgres-${i}`, { host: this.postgres.host, port: this.postgres.port }),
        clockFile, clockOffsetSeconds: 0, starts: 0,
      });
    }
    if (this.options.appendfsync === 'everysec') {
      this.aofSampler = setInterval(() => {
        const file = this.aofIncrFile();
        if (!file) return;
        try {
          this.aofSizes.push([Date.now(), statSync(file).size]);
        } catch {
          return; // Redis is restarting
        }
        if (this.aofSizes.length > 200) this.aofSizes.splice(0, 50);
      }, 25);
    }
    // One at a time: two processes migrating the same fresh database would only wait on its lock.
    for (const slot of this.slots) await this.startMeterd(slot.index);
  }

  private env(slot: MeterdSlot): Record<string, string> {
    const dbUrl = new URL(this.databaseUrl);
    dbUrl.port = String(slot.postgresProxy.port);
    dbUrl.searchParams.set('application_name', `meterd-chaos-${slot.index}`);
    const env: Record<string, string> = {
      REDIS_URL: `redis://${slot.redisProxy.host}:${slot.redisProxy.port}`,
      REDIS_KEY_PREFIX: KEY_PREFIX,
      REDIS_COMMAND_TIMEOUT_MS: '1000',
      DATABASE_URL: dbUrl.toString(),
      DATABASE_STATEMENT_TIMEOUT_MS: '5000',
      METERD_CONFIG: this.config?.path ?? '',
      LOG_LEVEL: 'warn',
      SHUTDOWN_GRACE_MS: '2000',
      SWEEP_INTERVAL_MS: '500',
      FLUSH_INTERVAL_MS: '50',
      FLUSH_RECLAIM_IDLE_MS: '2000',
      // everysec: a simulated power loss leaves pools behind Postgres; meterd's own check repairs them.
      RECONCILE_INTERVAL_MS: this.options.appendfsync === 'everysec' ? '3000' : '0',
      OUTBOX_POLL_INTERVAL_MS: '5000',
    };
    if (this.faketime) {
      Object.assign(env, {
        LD_PRELOAD: this.faketime,
        FAKETIME_TIMESTAMP_FILE: slot.clockFile,
        FAKETIME_CACHE_DURATION: '1',
        // Only the wall clock moves: timers and timeouts (monotonic) keep real time.
        FAKETIME_DONT_FAKE_MONOTONIC: '1',
      });
    }
    return env;
  }

  /** Starts (or restarts) the meterd of a slot on a new free port and opens its clients. */
  async startMeterd(index: number): Promise<void> {
    const slot = this.slot(index);
    const proc = await startMeterdProcess(this.env(slot), `chaos-probe-${index}`, this.processes);
    slot.starts += 1;
    const log = createWriteStream(join(this.workDir, `meterd-${index}.log`), { flags: 'a' });
    this.logs.push(log);
    log.write(`--- start ${slot.starts} on port ${proc.port} at ${new Date().toISOString()}\n`);
    const onLine = (chunk: Buffer) => {
      log.write(chunk);
      for (const line of chunk.toString('utf8').split('\n')) if (/"level":(50|60)/.test(line)) this.options.log(`meterd-${index}: ${line.slice(0, 400)}`);
    };
    proc.child.stdout?.on('data', onLine);
    proc.child.stderr?.on('data', onLine);
    slot.process = proc;
    const address = `127.0.0.1:${proc.port}`;
    slot.unary = createMeterdClient({ address, deadlineMs: 4_000, retry: { attemptsMax: 3, backoffBaseMs: 50, backoffMaxMs: 300 } });
    slot.stream = createMeterdClient({ address, deadlineMs: 4_000, highThroughput: true, retry: { attemptsMax: 3, backoffBaseMs: 50, backoffMaxMs: 300 } });
    slot.up = true;
  }

  /** kill -9 of a slot's meterd (its whole process group). */
  async kill9Meterd(index: number): Promise<void> {
    const slot = this.slot(index);
    slot.up = false;
    const proc = slot.process;
    slot.process = undefined;
    if (proc) await kill9MeterdProcess(proc);
    this.closeClients(slot);
  }

  private closeClients(slot: MeterdSlot): void {
    slot.unary?.close();
    slot.stream?.close();
    slot.unary = undefined;
    slot.stream = undefined;
  }

  /** Sets a slot's clock offset (seconds, may be negative); meterd sees it within about a second. */
  setClockOffset(index: number, seconds: number): void {
    const slot = this.slot(index);
    slot.clockOffsetSeconds = seconds;
    writeFileSync(slot.clockFile, `${seconds >= 0 ? '+' : ''}${seconds}\n`);
  }

  /** Redis' pid (for SIGSTOP/SIGCONT), read while it answers. */
  async redisPid(): Promise<number> {
    const info = await this.admin.info('server');
    const pid = /process_id:(\d+)/.exec(info)?.[1];
    if (pid === undefined) throw new Error('redis INFO has no process_id');
    return Number(pid);
  }

  /** The AOF file Redis appends to now (from the manifest of its appendonlydir). */
  aofIncrFile(): string | undefined {
    const dir = join(this.redis.dir, 'appendonlydir');
    try {
      const manifest = readFileSync(join(dir, 'appendonly.aof.manifest'), 'utf8');
      const name = manifest.split('\n').map((l) => /^file (\S+) seq \d+ type i/.exec(l)?.[1]).filter((n) => n !== undefined).at(-1);
      return name ? join(dir, name) : undefined;
    } catch {
      return undefined;
    }
  }

  /**
   * A power loss of Redis' machine under appendfsync everysec: kill -9, then the AOF cut back to
   * what it was `windowMs` earlier (the writes an fsync a second would not have made durable yet),
   * then a restart (Redis loads a truncated AOF up to its last whole command). Returns bytes lost.
   */
  async powerLossRedis(windowMs: number): Promise<number> {
    const killAtMs = Date.now();
    const file = this.aofIncrFile();
    await this.redis.kill9();
    let lost = 0;
    if (file) {
      const before = this.aofSizes.filter(([at]) => at <= killAtMs - windowMs).at(-1)?.[1];
      const size = statSync(file).size;
      if (before !== undefined && before < size) {
        truncateSync(file, before);
        lost = size - before;
      }
    }
    this.aofSizes = [];
    await this.redis.restart();
    return lost;
  }

  /** Reconcile, and rebuild from the ledger each pool that lost events in Redis (what meterd's background check does). */
  async repair(): Promise<RepairReport[]> {
    const report = await reconcile(this.db, this.snapshot);
    const repairs: RepairReport[] = [];
    for (const accountId of poolsToRepair(report)) repairs.push(await repairPool(this.db, CHAOS_PRODUCT, Date.now(), accountId, this.store));
    return repairs;
  }

  /** kill -9 of the postmaster, then a restart on the same port and data (crash recovery from WAL). */
  async kill9Postgres(downMs: number): Promise<void> {
    const pid = this.postgres.pid();
    if (pid !== undefined) process.kill(pid, 'SIGKILL');
    await this.postgres.shutdown('immediate'); // reaps the killed postmaster
    await sleep(downMs);
    // Orphaned backends notice the postmaster's death and exit; until they have, a new postmaster
    // refuses the data dir, so retry for a while.
    for (let attempt = 1; ; attempt++) {
      try {
        await this.postgres.restart();
        return;
      } catch (err) {
        if (attempt >= 20) throw err;
        await sleep(500);
      }
    }
  }

  /** Every fault off: proxies healed, clocks true, Redis running and writable, every meterd up. */
  async heal(): Promise<void> {
    for (const slot of this.slots) {
      slot.redisProxy.heal();
      slot.postgresProxy.heal();
      if (slot.clockOffsetSeconds !== 0) this.setClockOffset(slot.index, 0);
    }
    try {
      process.kill(await this.redisPid(), 'SIGCONT');
    } catch {
      // not stopped, or not answering: restarted below if it is down
    }
    await this.admin.config('SET', 'maxmemory', '0').catch(() => {});
    for (const slot of this.slots) if (!slot.up) await this.startMeterd(slot.index);
  }

  upSlots(): MeterdSlot[] {
    return this.slots.filter((s) => s.up && s.unary !== undefined);
  }

  slot(index: number): MeterdSlot {
    const slot = this.slots[index];
    if (!slot) throw new Error(`no meterd slot ${index}`);
    return slot;
  }

  /** Stops everything (gracefully first: the last flush), closes connections, removes temp dirs. */
  async stop(options: { keepWorkDir?: boolean } = {}): Promise<void> {
    if (this.aofSampler) clearInterval(this.aofSampler);
    const errors: unknown[] = [];
    const attempt = async (what: () => Promise<unknown>) => {
      try {
        await what();
      } catch (err) {
        errors.push(err);
      }
    };
    for (const slot of this.slots) this.closeClients(slot);
    if (this.redis) {
      await attempt(async () => {
        try {
          process.kill(await this.redisPid(), 'SIGCONT');
        } catch {
          // fine
        }
      });
    }
    await Promise.all(this.processes.map((p) => attempt(() => stopMeterdProcess(p))));
    for (const slot of this.slots) {
      await attempt(() => slot.redisProxy.close());
      await attempt(() => slot.postgresProxy.close());
    }
    this.admin?.disconnect();
    await attempt(() => this.db?.end() ?? Promise.resolve());
    await attempt(() => this.config?.remove() ?? Promise.resolve());
    await Promise.all([attempt(() => this.redis?.stop() ?? Promise.resolve()), attempt(() => this.postgres?.stop() ?? Promise.resolve())]);
    for (const log of this.logs) log.end();
    if (!options.keepWorkDir) rmSync(this.workDir, { recursive: true, force: true });
    if (errors.length > 0) this.options.log(`cluster stop: ${errors.length} errors, first: ${String(errors[0])}`);
  }

  /** For a failed run: the ledger tables as JSON lines and a copy of Redis' AOF, into the work dir. */
  async dumpForDiagnosis(): Promise<void> {
    for (const table of ['ledger_events', 'ledger_conflicts', 'reservation_outcomes']) {
      const rows = (await this.db.query<{ row: unknown }>(`SELECT row_to_json(t) AS row FROM ${table} t`)).rows;
      writeFileSync(join(this.workDir, `postgres-${table}.jsonl`), rows.map((r) => JSON.stringify(r.row)).join('\n'));
    }
    await this.admin.call('BGREWRITEAOF').catch(() => {});
    cpSync(join(this.redis.dir, 'appendonlydir'), join(this.workDir, 'redis-appendonlydir'), { recursive: true });
  }

  /** The meterd log files (kept in workDir until stop). */
  logFiles(): string[] {
    return readdirSync(this.workDir).filter((f) => f.endsWith('.log')).map((f) => join(this.workDir, f));
  }
}
