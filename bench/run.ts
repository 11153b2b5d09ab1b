/**
 * meterd's benchmark: one command that starts what it needs and measures, in one run on one machine,
 * meterd against the design a team would build instead and against the ceilings under it.
 *
 *   npm run bench -- [--quick] [--seconds 10] [--concurrency 64] [--parts 1,2,3,4,5,6,7] [--rate 1000]
 *                    [--flush-rate 5000] [--accounts 10000] [--profile] [--out bench/results]
 *
 * Parts (bench/README.md explains every figure):
 *   1 meterd unary API, closed loop: Reserve → Commit (95%) / Release (5%), one hot account and N accounts
 *   2 meterd high-throughput path (createMeterdClient({ highThroughput: true }) when src/client/index.ts has it)
 *   3 the Postgres design (bench/postgres-design.ts), same workloads and concurrency
 *   4 ceilings: an empty grpc-js unary call (bench/empty-grpc-server.ts), and the same Redis Functions
 *     driven straight at Redis (RedisCreditStore, pipelined: `--redis-inflight` calls in flight)
 *   5 open loop at --rate cycles/s: Reserve latency meterd adds over the empty call
 *   6 ledger flush into Postgres: drain events/s, commit → Postgres lag at --flush-rate commits/s (bench/flush.ts)
 *   7 Redis bytes per idle account (a redis-server of its own) and meterd's resident memory under load
 *
 * meterd (built: node dist/src/main.js) and the empty server run as child processes, so the load generator
 * (this process) never shares an event loop with them; CPU of client, server and Redis is sampled from
 * /proc and INFO for every closed-loop run. Writes bench/results/<timestamp>.json, latest.json, latest.svg.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { Client, credentials } from '@grpc/grpc-js';
import * as hdr from 'hdr-histogram-js';
import { Redis } from 'ioredis';
import pg from 'pg';
import { loadProductConfig, EXAMPLE_PRODUCT_CONFIG_PATH } from '../src/config/product-config.js';
import { systemClock } from '../src/domain/clock.js';
import { parseReserve, parseUpsertAccount } from '../src/domain/commands.js';
import { RedisCreditStore } from '../src/redis/redis-credit-store.js';
import { connectClients, type TestClients } from '../test/support/grpc-clients.js';
import { deleteKeys, dropDatabase, testDatabaseUrl } from '../test/support/meterd.js';
import { freePort } from '../test/support/redis-servers.js';
import { EMPTY_SERVICE } from './empty-grpc-server.js';
import { runFlushBench } from './flush.js';
import { setUpPostgresDesign } from './postgres-design.js';
import { summarizeAreas, summarizeProfile } from './profile-summary.js';
import { renderChart } from './chart.js';

const REPO_ROOT = fileURLToPath(new URL('../', import.meta.url));
const ALL_PARTS = [1, 2, 3, 4, 5, 6, 7];

export interface BenchOptions {
  quick: boolean;
  seconds: number;
  /** Unmeasured seconds before each closed-loop run (JIT, connections, pools). */
  warmup: number;
  concurrency: number;
  parts: number[];
  rate: number;
  flushRate: number;
  accounts: number;
  redisInflight: number;
  profile: boolean;
  out: string;
  redisUrl: string;
  log: (line: string) => void;
}

export function parseBenchArgs(argv: string[]): BenchOptions {
  const { values } = parseArgs({
    args: argv,
    options: {
      quick: { type: 'boolean', default: false },
      seconds: { type: 'string' },
      warmup: { type: 'string' },
      concurrency: { type: 'string', default: '64' },
      parts: { type: 'string', default: ALL_PARTS.join(',') },
      rate: { type: 'string', default: '1000' },
      'flush-rate': { type: 'string', default: '5000' },
      accounts: { type: 'string' },
      'redis-inflight': { type: 'string', default: '256' },
      profile: { type: 'boolean', default: false },
      out: { type: 'string', default: join(REPO_ROOT, 'bench/results') },
      redis: { type: 'string', default: process.env.TEST_REDIS_URL ?? 'redis://127.0.0.1:6379' },
    },
  });
  const quick = values.quick ?? false;
  const parts = String(values.parts).split(',').map((p) => Number(p.trim())).filter((p) => ALL_PARTS.includes(p));
  return {
    quick,
    seconds: Number(values.seconds ?? (quick ? 1.5 : 10)),
    warmup: Number(values.warmup ?? (quick ? 0.3 : 2)),
    concurrency: Number(values.concurrency),
    parts,
    rate: Number(values.rate),
    flushRate: Number(values['flush-rate']),
    accounts: Number(values.accounts ?? (quick ? 1000 : 10_000)),
    redisInflight: Number(values['redis-inflight']),
    profile: values.profile ?? false,
    out: String(values.out),
    redisUrl: String(values.redis),
    log: (line) => console.log(line),
  };
}

// ---------------------------------------------------------------- measuring helpers

const histogram = () => hdr.build({ lowestDiscernibleValue: 1, highestTrackableValue: 120_000_000, numberOfSignificantValueDigits: 3 });
type Histogram = ReturnType<typeof histogram>;
const nowUs = () => Number(process.hrtime.bigint() / 1000n);

export interface Percentiles { p50: number; p99: number; p999: number; max: number; count: number }
/** Microseconds → milliseconds, three decimals. */
function percentiles(h: Histogram): Percentiles {
  const ms = (us: number) => Math.round(us) / 1000;
  return { p50: ms(h.getValueAtPercentile(50)), p99: ms(h.getValueAtPercentile(99)), p999: ms(h.getValueAtPercentile(99.9)), max: ms(h.maxValue), count: h.totalCount };
}

const CLOCK_TICKS = 100; // USER_HZ on Linux
/** utime + stime of a process, seconds (fields 14 and 15 of /proc/<pid>/stat). */
function processCpuSeconds(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS;
  } catch {
    return NaN;
  }
}

function residentMb(pid: number): number {
  try {
    const match = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return match ? Number(match[1]) / 1024 : NaN;
  } catch {
    return NaN;
  }
}

async function redisCpuSeconds(redis: Redis): Promise<number> {
  const info = await redis.info('cpu');
  const get = (name: string) => Number(new RegExp(`${name}:([0-9.]+)`).exec(info)?.[1] ?? NaN);
  return get('used_cpu_sys') + get('used_cpu_user');
}

export interface CpuShare { clientPct: number; serverPct: number | null; redisPct: number | null; machineBusyPct: number }

/** Samples CPU of this process, the server child and Redis over a run (percent of one core). */
async function cpuMeter(serverPid: number | undefined, redis: Redis | undefined) {
  const wall = process.hrtime.bigint();
  const client = process.cpuUsage();
  const server = serverPid ? processCpuSeconds(serverPid) : NaN;
  const redisCpu = redis ? await redisCpuSeconds(redis) : NaN;
  const machine = os.cpus().map((c) => c.times);
  return async (): Promise<CpuShare> => {
    const seconds = Number(process.hrtime.bigint() - wall) / 1e9;
    const c = process.cpuUsage(client);
    const pct = (cpuSeconds: number) => Math.round((cpuSeconds / seconds) * 100);
    const after = os.cpus().map((x) => x.times);
    let busy = 0;
    let total = 0;
    after.forEach((t, i) => {
      const b = machine[i];
      if (!b) return;
      const all = (x: typeof t) => x.user + x.nice + x.sys + x.idle + x.irq;
      total += all(t) - all(b);
      busy += all(t) - all(b) - (t.idle - b.idle);
    });
    return {
      clientPct: pct((c.user + c.system) / 1e6),
      serverPct: serverPid ? pct(processCpuSeconds(serverPid) - server) : null,
      redisPct: redis ? pct((await redisCpuSeconds(redis)) - redisCpu) : null,
      machineBusyPct: total > 0 ? Math.round((busy / total) * 100) : NaN,
    };
  };
}

/** Machine busy % (all cores) over `ms`. */
async function machineBusy(ms: number): Promise<number> {
  const before = os.cpus().map((c) => c.times);
  await sleep(ms);
  let busy = 0;
  let total = 0;
  os.cpus().forEach((c, i) => {
    const b = before[i];
    if (!b) return;
    const t = c.times;
    const all = t.user + t.nice + t.sys + t.idle + t.irq - (b.user + b.nice + b.sys + b.idle + b.irq);
    total += all;
    busy += all - (t.idle - b.idle);
  });
  return total > 0 ? (busy / total) * 100 : 0;
}

/** Waits (≤ 30 s) until the machine is quiet (e.g. meterd's flusher has caught up) (< 25% busy), so one run's leftovers don't load the next. */
async function settle(log: (l: string) => void): Promise<void> {
  const started = Date.now();
  let busy = await machineBusy(300);
  while (busy >= 25 && Date.now() - started < 30_000) busy = await machineBusy(500);
  if (Date.now() - started > 1000) log(`  (waited ${((Date.now() - started) / 1000).toFixed(1)} s for the machine to settle: ${busy.toFixed(0)}% busy)`);
}

export interface ClosedLoopResult {
  name: string;
  concurrency: number;
  seconds: number;
  cycles: number;
  cyclesPerSecond: number;
  /** RPCs (or script calls, or transactions) per second: two per cycle. */
  callsPerSecond: number;
  errors: number;
  firstError?: string;
  /** The first call of a cycle (Reserve, or the first empty call). */
  reserveMs: Percentiles;
  /** The second call (Commit or Release). */
  settleMs: Percentiles;
  cycleMs: Percentiles;
  cpu: CpuShare;
  /** Redis CPU (INFO cpu, all clients of that Redis) per cycle, µs: two script calls plus the flusher's share. */
  redisCpuUsPerCycle?: number;
  /** The load generator's verdict: client CPU ≥ 90% of a core, or the machine ≥ 95% busy. */
  clientBound: boolean;
}

type Cycle = (worker: number, n: number, times: { reserved: () => void }) => Promise<void>;

/** `concurrency` loops, each running cycles back to back for `seconds`; progress once a second. */
async function closedLoop(name: string, options: BenchOptions & { concurrencyOverride?: number; serverPid?: number; redis?: Redis; onTick?: () => void }, cycle: Cycle): Promise<ClosedLoopResult> {
  if (!options.quick) await settle(options.log); // the smoke test does not wait for a quiet machine
  const concurrency = options.concurrencyOverride ?? options.concurrency;
  const reserveH = histogram();
  const settleH = histogram();
  const cycleH = histogram();
  let cycles = 0;
  let errors = 0;
  let firstError: string | undefined;
  let measuring = false;
  let meter: Awaited<ReturnType<typeof cpuMeter>> | undefined;
  let wall = process.hrtime.bigint();
  const started = Date.now();
  const deadline = started + (options.warmup + options.seconds) * 1000;
  let lastCycles = 0;
  const ticker = setInterval(() => {
    options.onTick?.();
    options.log(`  … ${name}: ${((Date.now() - started) / 1000 - options.warmup).toFixed(0)}/${options.seconds} s${measuring ? '' : ' (warm-up)'}, ${cycles - lastCycles} cycles in the last second, ${errors} errors`);
    lastCycles = cycles;
  }, 1000);
  const warmedUp = (async () => {
    await sleep(options.warmup * 1000);
    meter = await cpuMeter(options.serverPid, options.redis);
    reserveH.reset();
    settleH.reset();
    cycleH.reset();
    cycles = 0;
    lastCycles = 0;
    errors = 0;
    wall = process.hrtime.bigint();
    measuring = true;
  })();
  await Promise.all([warmedUp, ...Array.from({ length: concurrency }, async (_, worker) => {
    for (let n = 0; Date.now() < deadline; n++) {
      const start = nowUs();
      let reservedAt = start;
      try {
        await cycle(worker, n, { reserved: () => { reservedAt = nowUs(); } });
        const end = nowUs();
        if (!measuring) continue;
        reserveH.recordValue(Math.max(1, reservedAt - start));
        settleH.recordValue(Math.max(1, end - reservedAt));
        cycleH.recordValue(Math.max(1, end - start));
        cycles++;
      } catch (err) {
        errors++;
        firstError ??= err instanceof Error ? err.message : String(err);
        if (errors > 1000 && cycles === 0) break;
      }
    }
  })]);
  clearInterval(ticker);
  const seconds = Number(process.hrtime.bigint() - wall) / 1e9;
  const cpu = await (meter as NonNullable<typeof meter>)();
  // Redis CPU time per cycle, from INFO cpu (robust; INFO commandstats FCALL counts proved unreliable on a shared Redis).
  const redisCpuUsPerCycle = cpu.redisPct !== null && cycles > 0 ? Math.round(((cpu.redisPct / 100) * seconds * 1e6) / cycles) : undefined;
  const result: ClosedLoopResult = {
    name, concurrency, seconds, cycles, cyclesPerSecond: cycles / seconds, callsPerSecond: (2 * cycles) / seconds, errors,
    ...(firstError ? { firstError } : {}),
    reserveMs: percentiles(reserveH), settleMs: percentiles(settleH), cycleMs: percentiles(cycleH), cpu,
    ...(redisCpuUsPerCycle !== undefined ? { redisCpuUsPerCycle } : {}),
    clientBound: cpu.clientPct >= 90 || cpu.machineBusyPct >= 95,
  };
  options.log(`  ${name}: ${Math.round(result.cyclesPerSecond)} cycles/s, first call p50 ${result.reserveMs.p50} ms p99 ${result.reserveMs.p99} ms p99.9 ${result.reserveMs.p999} ms; ` +
    `CPU client ${cpu.clientPct}% server ${cpu.serverPct ?? '-'}% redis ${cpu.redisPct ?? '-'}% machine ${cpu.machineBusyPct}%` +
    `${redisCpuUsPerCycle !== undefined ? `; Redis CPU ${redisCpuUsPerCycle} µs per cycle` : ''}; ${errors} errors${firstError ? ` (${firstError})` : ''}`);
  return result;
}

export interface OpenLoopResult {
  name: string;
  offeredPerSecond: number;
  achievedPerSecond: number;
  seconds: number;
  /** From the scheduled start (so queueing in the generator counts: no coordinated omission). */
  reserveMs: Percentiles;
  cycleMs: Percentiles;
  errors: number;
  /** Cycles still running when the run ended. */
  lateAtEnd: number;
}

/** Starts one cycle every 1/rate s on a fixed schedule, whether or not earlier ones finished. */
async function openLoop(name: string, options: BenchOptions, rate: number, cycle: Cycle): Promise<OpenLoopResult> {
  if (!options.quick) await settle(options.log); // the smoke test does not wait for a quiet machine
  const reserveH = histogram();
  const cycleH = histogram();
  let errors = 0;
  let done = 0;
  let inFlight = 0;
  const intervalUs = 1e6 / rate;
  const total = Math.floor(rate * options.seconds);
  const startUs = nowUs() + 5_000;
  const wall = process.hrtime.bigint();
  const runs: Promise<void>[] = [];
  let issued = 0;
  let lastLog = Date.now();
  while (issued < total) {
    const now = nowUs();
    while (issued < total && startUs + issued * intervalUs <= now) {
      const scheduled = startUs + issued * intervalUs;
      const n = issued++;
      inFlight++;
      let reservedAt = 0;
      runs.push(cycle(n % 64, Math.floor(n / 64), { reserved: () => { reservedAt = nowUs(); } }).then(() => {
        const end = nowUs();
        reserveH.recordValue(Math.max(1, Math.round(reservedAt - scheduled)));
        cycleH.recordValue(Math.max(1, Math.round(end - scheduled)));
        done++;
      }, () => { errors++; }).finally(() => { inFlight--; }));
    }
    if (Date.now() - lastLog >= 1000) {
      lastLog = Date.now();
      options.log(`  … ${name}: ${issued}/${total} started, ${inFlight} in flight`);
    }
    if (runs.length > 10_000) runs.splice(0, runs.length - 1000); // keep memory flat; settled ones drop
    await sleep(1);
  }
  const lateAtEnd = inFlight;
  await Promise.all(runs);
  const seconds = Number(process.hrtime.bigint() - wall) / 1e9;
  const result = { name, offeredPerSecond: rate, achievedPerSecond: done / seconds, seconds, reserveMs: percentiles(reserveH), cycleMs: percentiles(cycleH), errors, lateAtEnd };
  options.log(`  ${name}: offered ${rate}/s, first call p50 ${result.reserveMs.p50} ms p99 ${result.reserveMs.p99} ms p99.9 ${result.reserveMs.p999} ms, ${errors} errors`);
  return result;
}

// ---------------------------------------------------------------- child processes

interface Child { child: ChildProcess; pid: number; output(): string; stop(): Promise<void> }

function startChild(args: string[], env: NodeJS.ProcessEnv): Child {
  const child = spawn(process.execPath, args, { cwd: REPO_ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] });
  let tail = '';
  const keep = (chunk: Buffer) => { tail = (tail + chunk.toString()).slice(-8000); };
  child.stdout?.on('data', keep);
  child.stderr?.on('data', keep);
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  if (child.pid === undefined) throw new Error(`could not start ${args.join(' ')}`);
  return {
    child, pid: child.pid, output: () => tail,
    async stop() {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
      const inTime = await Promise.race([exited.then(() => true), sleep(15_000).then(() => false)]);
      if (!inTime) {
        child.kill('SIGKILL');
        await exited;
      }
    },
  };
}

async function waitFor(what: string, child: Child, ready: () => Promise<boolean>, withinMs = 60_000): Promise<void> {
  const deadline = Date.now() + withinMs;
  while (Date.now() < deadline) {
    if (child.child.exitCode !== null) throw new Error(`${what} exited: ${child.output()}`);
    if (await ready().catch(() => false)) return;
    await sleep(100);
  }
  throw new Error(`${what} not ready within ${withinMs} ms: ${child.output()}`);
}

// ---------------------------------------------------------------- the parts

const FEATURE = 'content_rewrite';
const GRANT = 1_000_000_000n;

interface Machine {
  cpuModel: string; cores: number; memoryGiB: number; kernel: string; node: string; redis: string; postgres: string;
  grpcJs: string; ioredis: string; pg: string; meterdCommit?: string;
}

function packageVersion(name: string): string {
  try {
    return (JSON.parse(readFileSync(join(REPO_ROOT, 'node_modules', name, 'package.json'), 'utf8')) as { version: string }).version;
  } catch {
    return '?';
  }
}

async function describeMachine(redis: Redis, databaseServerUrl: string): Promise<Machine> {
  const info = await redis.info('server');
  const client = new pg.Client({ connectionString: databaseServerUrl });
  await client.connect();
  const version = (await client.query<{ server_version: string }>('SHOW server_version')).rows[0]?.server_version ?? '?';
  await client.end();
  return {
    cpuModel: os.cpus()[0]?.model ?? '?', cores: os.cpus().length, memoryGiB: Math.round(os.totalmem() / 2 ** 30),
    kernel: os.release(), node: process.version, redis: /redis_version:(\S+)/.exec(info)?.[1] ?? '?', postgres: version,
    grpcJs: packageVersion('@grpc/grpc-js'), ioredis: packageVersion('ioredis'), pg: packageVersion('pg'),
  };
}

export interface Row { part: number; figure: string; value: number | null; unit: string; target: string; pass: boolean | null; note?: string }

export interface BenchReport {
  startedAt: string;
  finishedAt: string;
  machine: Machine;
  settings: Record<string, unknown>;
  parts: Record<string, unknown>;
  rows: Row[];
  errors: string[];
}

export async function runBench(options: BenchOptions): Promise<BenchReport> {
  const log = options.log;
  const startedAt = new Date();
  const runId = randomBytes(4).toString('hex');
  const keyPrefix = `bench${runId}`;
  const databaseServerUrl = testDatabaseUrl('postgres');
  const meterdDatabaseUrl = testDatabaseUrl(`meterd_bench_${runId}`);
  const designDatabaseUrl = testDatabaseUrl(`meterd_bench_${runId}_pgdesign`);
  const redis = new Redis(options.redisUrl, { protocol: 2 });
  const machine = await describeMachine(redis, databaseServerUrl);
  const product = loadProductConfig(EXAMPLE_PRODUCT_CONFIG_PATH);
  const parts: Record<string, unknown> = {};
  const errors: string[] = [];
  const want = (p: number) => options.parts.includes(p);
  const settings = {
    quick: options.quick, secondsPerRun: options.seconds, concurrency: options.concurrency, accounts: options.accounts,
    openLoopRate: options.rate, flushRate: options.flushRate, redisInflight: options.redisInflight, parts: options.parts,
    workload: `Reserve ${FEATURE} (1 credit) then Commit (95%) or Release (5%); one gRPC channel (one HTTP/2 connection) from one client process`,
    meterd: 'child process `node dist/src/main.js serve` (built by the run), LOG_LEVEL=warn, auth off, ledger flush on (FLUSH_* defaults), product.example.yaml',
    redis: `${options.redisUrl} (shared machine Redis, own key prefix); part 7 on a redis-server of its own`,
    postgres: `${new URL(databaseServerUrl).host}, throwaway databases created and dropped by the run`,
  };
  log(`meterd bench ${startedAt.toISOString()}: ${machine.cores} × ${machine.cpuModel}, node ${machine.node}, redis ${machine.redis}, postgres ${machine.postgres}`);
  log(`settings: ${options.seconds} s per run, concurrency ${options.concurrency}, ${options.accounts} accounts, parts ${options.parts.join(',')}`);

  const cleanups: Array<() => Promise<void>> = [];
  let meterd: Child | undefined;
  let clients: TestClients | undefined;
  let rssPeakMb = 0;
  let meterdGrpcPort = 0;
  let meterdIdleRssMb = NaN;
  let meterdPid = 0;
  const sampleRss = () => {
    if (meterd) rssPeakMb = Math.max(rssPeakMb, residentMb(meterd.pid) || 0);
  };
  const accountIds = Array.from({ length: options.accounts }, (_, i) => `acct-${i}`);
  const hotAccount = 'hot';
  const attempt = async (name: string, work: () => Promise<void>) => {
    try {
      await work();
    } catch (err) {
      const message = `${name}: ${err instanceof Error ? err.stack ?? err.message : String(err)}`;
      errors.push(message);
      log(`! ${message}`);
    }
  };

  // Ctrl-C / SIGTERM: stop the children, drop the databases and keys, then exit.
  const onSignal = () => {
    log('interrupted: cleaning up');
    void (async () => {
      for (const cleanup of cleanups.reverse()) await cleanup().catch(() => {});
      process.exit(130);
    })();
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  const backgroundBusyPct = Math.round(await machineBusy(2000));
  (settings as Record<string, unknown>).machineBusyBeforeStartPct = backgroundBusyPct;
  log(`machine busy before start: ${backgroundBusyPct}% of ${machine.cores} cores${backgroundBusyPct > 15 ? ' — something else is running; figures will be low' : ''}`);
  try {
    // ------------------------------------------------ meterd child (parts 1, 2, 5, 7b)
    if ([1, 2, 5, 7].some(want)) {
      const grpcPort = await freePort();
      meterdGrpcPort = grpcPort;
      const httpPort = await freePort();
      const profileDir = join(options.out, 'profile');
      if (options.profile) mkdirSync(profileDir, { recursive: true });
      log(`starting meterd (grpc ${grpcPort}, http ${httpPort}, key prefix ${keyPrefix}, database ${new URL(meterdDatabaseUrl).pathname.slice(1)})${options.profile ? ' with --cpu-prof' : ''}`);
      // The built service, as production runs it (tsx would compile TypeScript inside the measured process).
      // build:dist, not build: regenerating src/gen would race the tests that import it when npm test runs the smoke run.
      log('building meterd (npm run build:dist)');
      execFileSync('npm', ['run', 'build:dist', '--silent'], { cwd: REPO_ROOT, stdio: 'ignore' });
      meterd = startChild([...(options.profile ? ['--cpu-prof', '--cpu-prof-dir', profileDir] : []), 'dist/src/main.js', 'serve'], {
        ...process.env, REDIS_URL: options.redisUrl, REDIS_KEY_PREFIX: keyPrefix, DATABASE_URL: meterdDatabaseUrl,
        GRPC_HOST: '127.0.0.1', GRPC_PORT: String(grpcPort), HTTP_HOST: '127.0.0.1', HTTP_PORT: String(httpPort),
        LOG_LEVEL: 'warn', AUTH_DATA_PLANE_TOKENS: '', AUTH_ADMIN_TOKENS: '', METERD_CONFIG: EXAMPLE_PRODUCT_CONFIG_PATH,
      });
      const child = meterd;
      cleanups.push(async () => {
        await child.stop();
        await deleteKeys(options.redisUrl, `${keyPrefix}:*`);
        await dropDatabase(meterdDatabaseUrl);
      });
      await waitFor('meterd', child, async () => (await fetch(`http://127.0.0.1:${httpPort}/readyz`)).ok);
      meterdIdleRssMb = residentMb(child.pid);
      meterdPid = child.pid;
      log(`meterd ready (pid ${child.pid}, RSS ${meterdIdleRssMb.toFixed(0)} MB)`);
      clients = connectClients(grpcPort);
      // Accounts straight through the credit store (the same scripts the Admin RPCs run; far quicker than 20,000 RPCs).
      const t = Date.now();
      await createAccounts(options.redisUrl, keyPrefix, product, [hotAccount, ...accountIds]);
      log(`created ${accountIds.length + 1} accounts (credit store, meterd's key prefix) in ${((Date.now() - t) / 1000).toFixed(1)} s`);
    }
    const metering = clients?.metering;

    const meterdCycle = (pick: (worker: number, n: number) => string): Cycle => async (worker, n, times) => {
      if (!metering) throw new Error('meterd is not running');
      const hold = await metering.reserveCredits({ accountId: pick(worker, n), feature: FEATURE, requestId: `${worker}-${n}-${randomBytes(3).toString('hex')}`, userId: `u${worker}`, labels: {} });
      times.reserved();
      if (n % 20 === 19) await metering.releaseReservation({ reservationId: hold.reservationId, reason: 'bench' });
      else await metering.commitReservation({ reservationId: hold.reservationId });
    };
    const spread = (worker: number, n: number) => accountIds[(worker * 7919 + n * options.concurrency + worker) % accountIds.length] as string;
    const hot = () => hotAccount;

    // ------------------------------------------------ part 1: unary
    if (want(1)) {
      log('part 1: meterd unary API (closed loop)');
      await attempt('part 1', async () => {
        const common = { ...options, serverPid: meterd?.pid, redis, onTick: sampleRss };
        parts.unaryHot = await closedLoop('meterd unary, 1 hot account', common, meterdCycle(hot));
        parts.unarySpread = await closedLoop(`meterd unary, ${options.accounts} accounts`, common, meterdCycle(spread));
      });
    }

    // ------------------------------------------------ part 2: high-throughput path (slot)
    if (want(2)) {
      log('part 2: meterd high-throughput path');
      await attempt('part 2', async () => {
        // ============ HIGH-THROUGHPUT SLOT ============
        // Uses createMeterdClient({ highThroughput: true }) from src/client/index.ts when it exists.
        // The shape assumed here (reserve/commit/release returning promises) may need adjusting
        // to the client as built; until then this part reports "not available".
        const modulePath = '../src/client/index.js';
        const exists = existsSync(join(REPO_ROOT, 'src/client/index.ts'));
        const module = exists ? (await import(modulePath).catch(() => null)) as Record<string, unknown> | null : null;
        const create = module?.createMeterdClient as ((o: Record<string, unknown>) => Record<string, unknown>) | undefined;
        if (!create || !meterd) {
          parts.highThroughput = { available: false, reason: exists ? 'src/client/index.ts has no createMeterdClient' : 'src/client/index.ts does not exist yet' };
          log(`  not available: ${(parts.highThroughput as { reason: string }).reason}`);
          return;
        }
        const client = create({ address: `127.0.0.1:${meterdGrpcPort}`, highThroughput: true }) as Record<string, (...a: unknown[]) => Promise<Record<string, unknown>>>;
        const reserve = client.reserveCredits ?? client.reserve;
        const commit = client.commitReservation ?? client.commit;
        const release = client.releaseReservation ?? client.release;
        if (!reserve || !commit || !release) {
          parts.highThroughput = { available: false, reason: 'createMeterdClient exists but has no reserve/commit/release methods this bench knows' };
          return;
        }
        const cycle = (pick: (w: number, n: number) => string): Cycle => async (worker, n, times) => {
          const hold = await reserve.call(client, { accountId: pick(worker, n), feature: FEATURE, requestId: `ht${worker}-${n}-${randomBytes(3).toString('hex')}`, userId: `u${worker}`, labels: {} });
          times.reserved();
          const reservationId = hold.reservationId;
          if (n % 20 === 19) await release.call(client, { reservationId, reason: 'bench' });
          else await commit.call(client, { reservationId });
        };
        const common = { ...options, concurrencyOverride: options.redisInflight, serverPid: meterd.pid, redis, onTick: sampleRss };
        parts.highThroughput = {
          available: true,
          hot: await closedLoop('meterd high-throughput, 1 hot account', common, cycle(hot)),
          spread: await closedLoop(`meterd high-throughput, ${options.accounts} accounts`, common, cycle(spread)),
        };
        await (client.close as unknown as (() => unknown) | undefined)?.call(client);
        // ============ END OF SLOT ============
      });
    }

    // ------------------------------------------------ part 5: open loop (before part 3/4 so meterd is warm and alone)
    if (want(5)) {
      log(`part 5: open loop at ${options.rate} cycles/s`);
      await attempt('part 5', async () => {
        // The empty call and meterd's cycle at one offered rate, side by side (their difference is what meterd adds).
        const atRate = async (rate: number, label: string) => {
          const emptyResult = await withEmptyServer(async (emptyCycle, call) => {
            await closedLoop('empty call warm-up', { ...options, seconds: 0.5, concurrency: 8 }, async () => { await call(); });
            return openLoop(`empty grpc-js call (open loop${label})`, options, rate, emptyCycle);
          });
          return { empty: emptyResult, meterd: await openLoop(`meterd Reserve → Commit (open loop${label})`, options, rate, meterdCycle(spread)) };
        };
        const full = await atRate(options.rate, '');
        parts.openLoopEmpty = full.empty;
        parts.openLoopMeterd = full.meterd;
        sampleRss();
        // When --rate is beyond what meterd sustains here, the figure above is queueing; also measure at half of capacity.
        const capacity = (parts.unarySpread as ClosedLoopResult | undefined)?.cyclesPerSecond;
        if (capacity !== undefined && options.rate > 0.8 * capacity) {
          const half = Math.max(10, Math.round(capacity / 2));
          const halfResults = await atRate(half, `, ${half}/s = half of closed-loop capacity`);
          parts.openLoopEmptyHalf = halfResults.empty;
          parts.openLoopMeterdHalf = halfResults.meterd;
        }
      });
    }
    if (meterd) {
      parts.meterdResidentMb = { idleAtStart: meterdIdleRssMb, peakUnderLoad: rssPeakMb, atEnd: residentMb(meterd.pid), runner: 'node dist/src/main.js (built)' };
      log(`meterd resident memory: peak ${rssPeakMb.toFixed(0)} MB under load`);
    }
    clients?.close();
    clients = undefined;
    // Stop meterd now: its flusher would go on draining the backlog into Postgres during the next parts.
    const stopMeterd = meterd ? cleanups.shift() : undefined;
    if (stopMeterd) {
      log('stopping meterd');
      await stopMeterd();
    }

    // ------------------------------------------------ part 3: the Postgres design
    if (want(3)) {
      log('part 3: the Postgres design (transactions through a pg Pool)');
      await attempt('part 3', async () => {
        const server = new pg.Client({ connectionString: databaseServerUrl });
        await server.connect();
        await server.query(`CREATE DATABASE "${new URL(designDatabaseUrl).pathname.slice(1)}"`);
        await server.end();
        cleanups.push(() => dropDatabase(designDatabaseUrl));
        const design = await setUpPostgresDesign(designDatabaseUrl, { poolSize: Math.min(options.concurrency, 64), accounts: options.accounts, idPrefix: 'acct-', balance: GRANT });
        await design.pool.query(`INSERT INTO accounts (id, balance) VALUES ('hot', $1) ON CONFLICT DO NOTHING`, [GRANT.toString()]);
        try {
          const cycle = (pick: (w: number, n: number) => string): Cycle => async (worker, n, times) => {
            const holdId = await design.reserve(pick(worker, n), 1);
            times.reserved();
            if (n % 20 === 19) await design.release(holdId);
            else await design.commit(holdId);
          };
          const common = { ...options };
          parts.postgresHot = await closedLoop('Postgres design, 1 hot account', common, cycle(hot));
          parts.postgresSpread = await closedLoop(`Postgres design, ${options.accounts} accounts`, common, cycle(spread));
          const check = await design.pool.query<{ bad: string }>('SELECT count(*) AS bad FROM accounts WHERE held <> 0 OR balance - held < 0');
          (parts.postgresSpread as Record<string, unknown>).accountsLeftHeld = Number(check.rows[0]?.bad ?? -1);
        } finally {
          await design.end();
        }
        parts.postgresSettings = { poolSize: Math.min(options.concurrency, 64), statementsPerCycle: 8, roundTripsPerCycle: 8, synchronousCommit: 'server default' };
      });
    }

    // ------------------------------------------------ part 4: ceilings
    if (want(4)) {
      log('part 4: ceilings');
      await attempt('part 4 (empty call)', async () => {
        parts.emptyCall = await withEmptyServer((emptyCycle, _call, pid) =>
          closedLoop('empty grpc-js unary call (2 per cycle)', { ...options, serverPid: pid }, emptyCycle));
      });
      await attempt('part 4 (Redis only)', async () => {
        const prefix = `${keyPrefix}x`;
        const connection = new Redis(options.redisUrl, { protocol: 2 });
        const store = new RedisCreditStore(connection, { keyPrefix: prefix, product, clock: systemClock });
        cleanups.push(async () => {
          connection.disconnect();
          await deleteKeys(options.redisUrl, `${prefix}:*`);
        });
        await store.loadScripts();
        await createAccounts(options.redisUrl, prefix, product, [hotAccount, ...accountIds]);
        const cycle = (pick: (w: number, n: number) => string): Cycle => async (worker, n, times) => {
          const hold = await store.reserve(parseReserve(product, { accountId: pick(worker, n), feature: FEATURE, requestId: `x${worker}-${n}-${randomBytes(3).toString('hex')}`, userId: `u${worker}`, labels: {} }));
          times.reserved();
          if (n % 20 === 19) await store.release({ reservationId: hold.reservationId, reason: 'bench' });
          else await store.commit({ reservationId: hold.reservationId });
        };
        const common = { ...options, concurrencyOverride: options.redisInflight, redis };
        parts.redisHot = await closedLoop(`Redis only (same functions, ${options.redisInflight} in flight), 1 hot account`, common, cycle(hot));
        parts.redisSpread = await closedLoop(`Redis only (same functions, ${options.redisInflight} in flight), ${options.accounts} accounts`, common, cycle(spread));
      });
    }

    // ------------------------------------------------ part 6: flush
    if (want(6)) {
      log(`part 6: ledger flush into Postgres (drain, then lag at ${options.flushRate} commits/s)`);
      await attempt('part 6', async () => {
        parts.flush = await runFlushBench({
          events: options.quick ? 10_000 : 100_000, seconds: options.seconds, concurrency: 64, rate: options.flushRate,
        });
        const f = parts.flush as Awaited<ReturnType<typeof runFlushBench>>;
        log(`  drain ${Math.round(f.drainEventsPerSecond)} events/s; steady ${Math.round(f.achievedCommitsPerSecond)} of ${f.offeredRate} commits/s offered; lag p50 ${f.lagMs.p50} ms p99 ${f.lagMs.p99} ms`);
      });
    }

    // ------------------------------------------------ part 7: Redis memory per idle account
    if (want(7)) {
      log('part 7: Redis memory per idle account (a redis-server of its own)');
      await attempt('part 7', async () => {
        parts.redisMemory = await redisMemoryPerAccount(options, product, log);
      });
    }
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    clients?.close();
    for (const cleanup of cleanups.reverse()) await cleanup().catch((err: unknown) => errors.push(`cleanup: ${String(err)}`));
    redis.disconnect();
  }

  if (options.profile) {
    const dir = join(options.out, 'profile');
    // CPU.<date>.<time>.<pid>.<thread>.<seq>.cpuprofile: this run's meterd, main thread (thread 0; 1 is tsx's loader).
    const files = existsSync(dir) ? readdirSync(dir).filter((f) => f.endsWith('.cpuprofile') && f.includes(`.${meterdPid}.0.`)) : [];
    const latest = files.at(-1);
    if (latest) {
      parts.profile = { file: join(dir, latest), areas: summarizeAreas(join(dir, latest)), top: summarizeProfile(join(dir, latest), 25) };
      log(`CPU profile of meterd: ${latest}`);
    }
  }

  const report: BenchReport = { startedAt: startedAt.toISOString(), finishedAt: new Date().toISOString(), machine, settings, parts, rows: buildRows(parts, options), errors };
  writeResults(report, options);
  printTable(report, log);
  return report;

  // -------------------------------------------- helpers with access to options
  async function startEmptyServer() {
    const port = await freePort();
    const empty = startChild(['--import', 'tsx', 'bench/empty-grpc-server.ts', String(port)], { ...process.env });
    await waitFor('empty grpc server', empty, async () => empty.output().includes('listening'));
    return { ...empty, port };
  }

  /** Runs `measure` against an empty server; emptyCycle is two empty calls, as meterd's cycle is two RPCs. */
  async function withEmptyServer<T>(measure: (emptyCycle: Cycle, call: () => Promise<void>, pid: number) => Promise<T>): Promise<T> {
    const empty = await startEmptyServer();
    const call = emptyCaller(empty.port);
    try {
      return await measure(async (_w, _n, times) => {
        await call();
        times.reserved();
        await call();
      }, call, empty.pid);
    } finally {
      call.close();
      await empty.stop();
    }
  }
}

async function createAccounts(redisUrl: string, keyPrefix: string, product: ReturnType<typeof loadProductConfig>, ids: string[]): Promise<void> {
  const connection = new Redis(redisUrl, { protocol: 2 });
  try {
    const store = new RedisCreditStore(connection, { keyPrefix, product, clock: systemClock });
    await store.loadScripts();
    let next = 0;
    await Promise.all(Array.from({ length: 128 }, async () => {
      while (next < ids.length) {
        const accountId = ids[next++] as string;
        await store.upsertAccount(parseUpsertAccount(product, { accountId, plan: 'pro', parentId: '', trialCredits: 0n, lowBalanceThreshold: 0n, lowBalancePercent: 0 }));
        await store.grant({ accountId, kind: 'PACK', credits: GRANT, grantId: `bench-${accountId}`, reason: 'bench' });
      }
    }));
  } finally {
    connection.disconnect();
  }
}

function emptyCaller(port: number) {
  const client = new Client(`127.0.0.1:${port}`, credentials.createInsecure());
  const empty = Buffer.alloc(0);
  const def = EMPTY_SERVICE.call as { path: string; requestSerialize: (b: Buffer) => Buffer; responseDeserialize: (b: Buffer) => Buffer };
  const call = () => new Promise<void>((resolve, reject) => {
    client.makeUnaryRequest(def.path, def.requestSerialize, def.responseDeserialize, empty, (err) => (err ? reject(err) : resolve()));
  });
  return Object.assign(call, { close: () => client.close() });
}

async function redisMemoryPerAccount(options: BenchOptions, product: ReturnType<typeof loadProductConfig>, log: (l: string) => void) {
  const port = await freePort();
  const server = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--maxmemory-policy', 'noeviction'], { stdio: 'ignore' });
  const exited = new Promise<void>((resolve) => server.once('exit', () => resolve()));
  const redis = new Redis(port, '127.0.0.1', { protocol: 2, lazyConnect: true, maxRetriesPerRequest: 1, retryStrategy: () => null });
  redis.on('error', () => {});
  try {
    for (let i = 0; ; i++) {
      try {
        await redis.connect();
        break;
      } catch {
        if (i > 50) throw new Error('redis-server did not start');
        await sleep(100);
      }
    }
    const used = async () => Number(/used_memory:(\d+)/.exec(await redis.info('memory'))?.[1]);
    const store = new RedisCreditStore(redis, { keyPrefix: 'mem', product, clock: systemClock });
    await store.loadScripts();
    const n = options.quick ? 2_000 : 20_000;
    // Warm: one account first, so the partition's shared keys (expiry set, ledger stream, …) exist before "before".
    const create = async (accountId: string, grant: boolean) => {
      await store.upsertAccount(parseUpsertAccount(product, { accountId, plan: 'pro', parentId: '', trialCredits: 0n, lowBalanceThreshold: 0n, lowBalancePercent: 0 }));
      if (grant) await store.grant({ accountId, kind: 'PACK', credits: GRANT, grantId: `g-${accountId}`, reason: '' });
    };
    const dropLedger = async () => {
      const streams = await redis.keys('mem:*ledger*');
      for (const key of streams) await redis.xtrim(key, 'MAXLEN', 0);
    };
    const measure = async (label: string, grant: boolean) => {
      for (let i = 0; i < 2000; i++) await create(`warm-${label}-${i}`, grant);
      await dropLedger();
      const before = await used();
      let next = 0;
      await Promise.all(Array.from({ length: 64 }, async () => {
        while (next < n) await create(`${label}-${next++}`, grant);
      }));
      const withLedger = await used();
      await dropLedger();
      const after = await used();
      return { accounts: n, bytesPerAccount: (after - before) / n, bytesPerAccountWithUnflushedLedger: (withLedger - before) / n };
    };
    const plain = await measure('plain', false);
    const granted = await measure('granted', true);
    const keysPerAccount = (await redis.dbsize()) / (2 * n + 4000);
    const version = /redis_version:(\S+)/.exec(await redis.info('server'))?.[1];
    log(`  ${Math.round(plain.bytesPerAccount)} B per idle account (upsert only), ${Math.round(granted.bytesPerAccount)} B with one grant (incl. its idempotency key); ${keysPerAccount.toFixed(2)} keys per account`);
    return { redisVersion: version, method: 'INFO memory used_memory delta over N accounts in a fresh redis-server, after trimming the ledger streams (the flusher trims them once in Postgres)', upsertOnly: plain, withGrant: granted, keysPerAccount };
  } finally {
    redis.disconnect();
    server.kill('SIGTERM');
    await exited;
  }
}

// ---------------------------------------------------------------- table, JSON, chart

function buildRows(parts: Record<string, unknown>, options: BenchOptions): Row[] {
  const rows: Row[] = [];
  const loop = (k: string) => parts[k] as ClosedLoopResult | undefined;
  const add = (row: Row) => rows.push(row);
  const na = (part: number, figure: string, unit: string, target: string, note = 'not run') => add({ part, figure, value: null, unit, target, pass: null, note });
  const ratio = (a?: number, b?: number) => (a !== undefined && b ? a / b : undefined);
  const latency = (part: number, name: string, l?: ClosedLoopResult) => {
    if (!l) return na(part, `${name} cycles/s`, 'cycles/s', '');
    add({ part, figure: `${name} cycles/s`, value: Math.round(l.cyclesPerSecond), unit: 'cycles/s', target: '', pass: null, note: `c=${l.concurrency}; CPU client ${l.cpu.clientPct}% server ${l.cpu.serverPct ?? '-'}% redis ${l.cpu.redisPct ?? '-'}% machine ${l.cpu.machineBusyPct}%${l.errors ? `; ${l.errors} errors` : ''}` });
    add({ part, figure: `${name} first call p50 / p99 / p99.9`, value: l.reserveMs.p99, unit: 'ms (p99)', target: '', pass: null, note: `${l.reserveMs.p50} / ${l.reserveMs.p99} / ${l.reserveMs.p999} ms` });
  };
  latency(1, 'unary, 1 hot account', loop('unaryHot'));
  latency(1, `unary, ${options.accounts} accounts`, loop('unarySpread'));
  const ht = parts.highThroughput as { available: boolean; reason?: string; hot?: ClosedLoopResult; spread?: ClosedLoopResult } | undefined;
  const redisCeiling = loop('redisSpread')?.cyclesPerSecond;
  const htTarget = Math.max(50_000, 0.4 * (redisCeiling ?? 0));
  if (ht?.available && ht.spread) {
    latency(2, 'high-throughput, 1 hot account', ht.hot);
    latency(2, `high-throughput, ${options.accounts} accounts`, ht.spread);
    add({ part: 2, figure: 'high-throughput reservations/s', value: Math.round(ht.spread.cyclesPerSecond), unit: 'reservations/s', target: `≥ ${Math.round(htTarget)} (max of 50,000 and 40% of Redis-only)`, pass: ht.spread.cyclesPerSecond >= htTarget });
  } else {
    add({ part: 2, figure: 'high-throughput reservations/s', value: null, unit: 'reservations/s', target: `≥ ${Math.round(htTarget)} (max of 50,000 and 40% of Redis-only)`, pass: null, note: `not available${ht?.reason ? `: ${ht.reason}` : ''}` });
  }
  latency(3, 'Postgres design, 1 hot account', loop('postgresHot'));
  latency(3, `Postgres design, ${options.accounts} accounts`, loop('postgresSpread'));
  const hotRatio = ratio(loop('unaryHot')?.cyclesPerSecond, loop('postgresHot')?.cyclesPerSecond);
  const spreadRatio = ratio(loop('unarySpread')?.cyclesPerSecond, loop('postgresSpread')?.cyclesPerSecond);
  add({ part: 3, figure: 'meterd unary ÷ Postgres design, 1 hot account', value: hotRatio === undefined ? null : Number(hotRatio.toFixed(2)), unit: '×', target: '≥ 10×', pass: hotRatio === undefined ? null : hotRatio >= 10 });
  add({ part: 3, figure: `meterd unary ÷ Postgres design, ${options.accounts} accounts`, value: spreadRatio === undefined ? null : Number(spreadRatio.toFixed(2)), unit: '×', target: '≥ 3×', pass: spreadRatio === undefined ? null : spreadRatio >= 3 });
  const empty = loop('emptyCall');
  if (empty) add({ part: 4, figure: 'empty grpc-js unary calls/s', value: Math.round(empty.callsPerSecond), unit: 'calls/s', target: '', pass: null, note: `c=${empty.concurrency}; p50 ${empty.reserveMs.p50} ms p99 ${empty.reserveMs.p99} ms; CPU client ${empty.cpu.clientPct}% server ${empty.cpu.serverPct}% machine ${empty.cpu.machineBusyPct}%` });
  else na(4, 'empty grpc-js unary calls/s', 'calls/s', '');
  const rpcRatio = ratio(loop('unarySpread')?.callsPerSecond, empty?.callsPerSecond);
  add({ part: 4, figure: `meterd RPCs/s (Reserve + Commit/Release, ${options.accounts} accounts) ÷ empty calls/s`, value: rpcRatio === undefined ? null : Number((rpcRatio * 100).toFixed(1)), unit: '%', target: '≥ 80%', pass: rpcRatio === undefined ? null : rpcRatio >= 0.8 });
  latency(4, 'Redis only, 1 hot account', loop('redisHot'));
  latency(4, `Redis only, ${options.accounts} accounts`, loop('redisSpread'));
  const openEmpty = parts.openLoopEmpty as OpenLoopResult | undefined;
  const openMeterd = parts.openLoopMeterd as OpenLoopResult | undefined;
  if (openEmpty && openMeterd) {
    const added = (k: keyof Percentiles) => Number((openMeterd.reserveMs[k] - openEmpty.reserveMs[k]).toFixed(3));
    add({ part: 5, figure: `Reserve latency added over the empty call at ${options.rate}/s, p99`, value: added('p99'), unit: 'ms', target: '≤ 2 ms', pass: added('p99') <= 2,
      note: `Reserve p50/p99/p99.9 ${openMeterd.reserveMs.p50}/${openMeterd.reserveMs.p99}/${openMeterd.reserveMs.p999} ms vs empty ${openEmpty.reserveMs.p50}/${openEmpty.reserveMs.p99}/${openEmpty.reserveMs.p999} ms; added p50 ${added('p50')} p99.9 ${added('p999')} ms; achieved ${Math.round(openMeterd.achievedPerSecond)}/s` });
  } else na(5, `Reserve latency added at ${options.rate}/s, p99`, 'ms', '≤ 2 ms');
  const emptyHalf = parts.openLoopEmptyHalf as OpenLoopResult | undefined;
  const meterdHalf = parts.openLoopMeterdHalf as OpenLoopResult | undefined;
  if (emptyHalf && meterdHalf) {
    const added = (k: keyof Percentiles) => Number((meterdHalf.reserveMs[k] - emptyHalf.reserveMs[k]).toFixed(3));
    add({ part: 5, figure: `Reserve latency added at ${meterdHalf.offeredPerSecond}/s (half of capacity here), p99`, value: added('p99'), unit: 'ms', target: '(context)', pass: null,
      note: `Reserve p50/p99/p99.9 ${meterdHalf.reserveMs.p50}/${meterdHalf.reserveMs.p99}/${meterdHalf.reserveMs.p999} ms vs empty ${emptyHalf.reserveMs.p50}/${emptyHalf.reserveMs.p99}/${emptyHalf.reserveMs.p999} ms; added p50 ${added('p50')} p99.9 ${added('p999')} ms` });
  }
  const flush = parts.flush as Awaited<ReturnType<typeof runFlushBench>> | undefined;
  if (flush) {
    add({ part: 6, figure: 'flush drain into Postgres', value: Math.round(flush.drainEventsPerSecond), unit: 'events/s', target: '≥ 20,000', pass: flush.drainEventsPerSecond >= 20_000, note: `${flush.drainedEvents} events, batch ${flush.batchEventsMax}` });
    const offeredOk = flush.achievedCommitsPerSecond >= 0.95 * flush.offeredRate;
    add({ part: 6, figure: `commit → Postgres lag p99 at ${Math.round(flush.achievedCommitsPerSecond)} commits/s (offered ${flush.offeredRate})`, value: flush.lagMs.p99, unit: 'ms', target: '≤ 1,000 ms at 5,000 commits/s', pass: flush.lagMs.p99 <= 1000 && offeredOk && flush.offeredRate >= 5000,
      note: `p50 ${flush.lagMs.p50} ms, max ${flush.lagMs.max} ms, ${flush.lagMs.samples} samples; flush interval ${flush.flushIntervalMs} ms${offeredOk ? '' : '; the load generator did not reach the offered rate'}` });
  } else {
    na(6, 'flush drain into Postgres', 'events/s', '≥ 20,000');
    na(6, 'commit → Postgres lag p99', 'ms', '≤ 1,000 ms at 5,000 commits/s');
  }
  const memory = parts.redisMemory as { upsertOnly: { bytesPerAccount: number }; withGrant: { bytesPerAccount: number } } | undefined;
  if (memory) {
    add({ part: 7, figure: 'Redis bytes per idle account (upsert + one grant)', value: Math.round(memory.withGrant.bytesPerAccount), unit: 'B', target: '≤ 512 B', pass: memory.withGrant.bytesPerAccount <= 512, note: `upsert only: ${Math.round(memory.upsertOnly.bytesPerAccount)} B` });
  } else na(7, 'Redis bytes per idle account', 'B', '≤ 512 B');
  const rss = parts.meterdResidentMb as { peakUnderLoad: number; idleAtStart: number } | undefined;
  if (rss && rss.peakUnderLoad > 0) add({ part: 7, figure: 'meterd resident memory under load (peak VmRSS)', value: Math.round(rss.peakUnderLoad), unit: 'MB', target: '≤ 150 MB', pass: rss.peakUnderLoad <= 150, note: `idle after start: ${Math.round(rss.idleAtStart)} MB; node dist/src/main.js` });
  else na(7, 'meterd resident memory under load', 'MB', '≤ 150 MB');
  return rows;
}

function printTable(report: BenchReport, log: (l: string) => void): void {
  const m = report.machine;
  log('');
  log(`meterd benchmark ${report.startedAt} — ${m.cores} × ${m.cpuModel}, ${m.memoryGiB} GiB, Linux ${m.kernel}; node ${m.node}, redis ${m.redis}, postgres ${m.postgres}, grpc-js ${m.grpcJs}, ioredis ${m.ioredis}, pg ${m.pg}`);
  log(`machine busy before start: ${String(report.settings.machineBusyBeforeStartPct)}%; settings: ${String(report.settings.secondsPerRun)} s per run, concurrency ${String(report.settings.concurrency)}, ${String(report.settings.accounts)} accounts${report.settings.quick ? ' (--quick: figures are a smoke test, not results)' : ''}`);
  const widths = [4, 78, 12, 16, 34, 6];
  const cell = (s: string, w: number) => (s.length > w ? s.slice(0, w - 1) + '…' : s.padEnd(w));
  log(['part', 'figure', 'value', 'unit', 'target', 'result'].map((s, i) => cell(s, widths[i] as number)).join(' '));
  for (const r of report.rows) {
    const value = r.value === null ? 'n/a' : r.value.toLocaleString('en-US');
    const result = r.pass === null ? '' : r.pass ? 'pass' : 'MISS';
    log([String(r.part), r.figure, value, r.unit, r.target, result].map((s, i) => cell(s, widths[i] as number)).join(' '));
    if (r.note) log(`${' '.repeat(5)}${r.note}`);
  }
  if (report.errors.length) log(`errors: ${report.errors.length}\n${report.errors.join('\n')}`);
}

function writeResults(report: BenchReport, options: BenchOptions): void {
  mkdirSync(options.out, { recursive: true });
  const stamp = report.startedAt.replace(/[:.]/g, '-');
  const json = JSON.stringify(report, null, 2);
  // --quick runs (the CI smoke test) never replace the latest full results.
  const latest = options.quick ? 'latest-quick' : 'latest';
  const file = join(options.out, `${stamp}${options.quick ? '-quick' : ''}.json`);
  writeFileSync(file, json);
  writeFileSync(join(options.out, `${latest}.json`), json);
  writeFileSync(join(options.out, `${latest}.svg`), renderChart(report));
  options.log(`wrote ${file}, ${latest}.json, ${latest}.svg`);
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const options = parseBenchArgs(process.argv.slice(2));
  const report = await runBench(options);
  process.exit(report.errors.length ? 1 : 0);
}
