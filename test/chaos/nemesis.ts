/**
 * The nemesis: faults on a seeded schedule, one at a time, each injected, held for a while, and
 * healed; every fault is recorded (kind, target, when, what it did). Kinds are drawn from a
 * shuffled bag (every kind once before any repeats), targets and durations at random. Kinds:
 *  kill-meterd        kill -9 of one meterd process group, restarted after the hold
 *  kill-redis         kill -9 of redis-server, restarted from its AOF
 *  kill-postgres      kill -9 of the postmaster, restarted (crash recovery)
 *  pause-redis        SIGSTOP of redis-server beyond the client timeout, then SIGCONT
 *  blackhole-redis    one meterd's Redis proxy holds every byte back (a partition); healed by
 *                     delivering late or resetting the connections
 *  blackhole-postgres the same between one meterd and Postgres
 *  reset-redis        one meterd's Redis connections reset and refused for a while
 *  reset-postgres     the same for Postgres
 *  cut-redis          replies from Redis dropped and the connection cut after the request ran
 *                     (lost replies), a few times
 *  latency-redis      latency and jitter on one meterd's Redis connection (sometimes past the
 *                     command timeout)
 *  function-flush     FUNCTION FLUSH + SCRIPT FLUSH: meterd's library is gone until it reloads it
 *  redis-maxmemory    maxmemory set to what Redis uses now (noeviction: writes refused with OOM)
 *  clock-skew         one meterd's wall clock moved by ±1–3 s (libfaketime)
 *  power-loss-redis   (appendfsync everysec only) kill -9 of redis-server with the AOF cut back to its
 *                     size POWER_LOSS_WINDOW_MS earlier: what a machine crash loses when Redis fsyncs
 *                     once a second; restarted from what is left
 */
import { setTimeout as sleep } from 'node:timers/promises';
import type { ChaosCluster } from './cluster.js';
import { Rng } from './rng.js';

export const FAULT_KINDS = [
  'kill-meterd', 'kill-redis', 'kill-postgres', 'pause-redis', 'blackhole-redis', 'blackhole-postgres', 'reset-redis',
  'reset-postgres', 'cut-redis', 'latency-redis', 'function-flush', 'redis-maxmemory', 'clock-skew', 'power-loss-redis',
] as const;
export type FaultKind = (typeof FAULT_KINDS)[number];

/** The most a meterd's clock is skewed, in seconds (the model's expiry tolerance builds on it). */
export const CLOCK_SKEW_SECONDS_MAX = 3;

/** A power loss under everysec loses the AOF writes of about the last second. */
export const POWER_LOSS_WINDOW_MS = 1_000;

export interface FaultRecord {
  kind: FaultKind;
  target: number;
  startMs: number;
  endMs: number;
  detail: string;
}

export interface NemesisOptions {
  kinds: readonly FaultKind[];
  /** Quiet time between faults, ms (min, max). */
  intervalMs: [number, number];
  /** How long a fault is held, ms (min, max). */
  durationMs: [number, number];
  log: (line: string) => void;
}

export class Nemesis {
  readonly faults: FaultRecord[] = [];
  /** Wall-clock ms of each Redis kill (the everysec loss window is measured back from them). */
  readonly redisKillsAtMs: number[] = [];
  /** Wall-clock ms of each simulated power loss (acknowledged writes before it may be gone). */
  readonly powerLossesAtMs: number[] = [];
  private stopping = false;
  private loop: Promise<void> | undefined;
  private readonly rng: Rng;

  constructor(private readonly cluster: ChaosCluster, seed: number, private readonly options: NemesisOptions) {
    this.rng = Rng.fork(seed, 'nemesis');
  }

  start(): void {
    this.loop = this.run();
  }

  /** Stops after the fault in progress is healed. */
  async stop(): Promise<void> {
    this.stopping = true;
    await this.loop;
  }

  countsByKind(): Map<FaultKind, number> {
    const counts = new Map<FaultKind, number>();
    for (const kind of this.activeKinds()) counts.set(kind, 0);
    for (const f of this.faults) counts.set(f.kind, (counts.get(f.kind) ?? 0) + 1);
    return counts;
  }

  /** The kinds this cluster can have: clock skew needs libfaketime, a power loss loses something only with everysec. */
  activeKinds(): FaultKind[] {
    return this.options.kinds.filter((k) => (k !== 'clock-skew' || this.cluster.clockSkewAvailable)
      && (k !== 'power-loss-redis' || this.cluster.options.appendfsync === 'everysec'));
  }

  private async pause(ms: number): Promise<void> {
    const until = Date.now() + ms;
    while (!this.stopping && Date.now() < until) await sleep(Math.min(100, until - Date.now()));
  }

  private async run(): Promise<void> {
    const kinds = this.activeKinds();
    if (kinds.length === 0) return;
    while (!this.stopping) {
      await this.pause(this.rng.int(...this.options.intervalMs));
      if (this.stopping) break;
      const kind = this.nextKind(kinds);
      const target = this.rng.int(0, this.cluster.slots.length - 1);
      const holdMs = this.rng.int(...this.options.durationMs);
      const variant = this.rng.u32();
      const record: FaultRecord = { kind, target, startMs: Date.now(), endMs: 0, detail: '' };
      try {
        record.detail = await this.inject(kind, target, holdMs, variant);
      } catch (err) {
        record.detail = `inject failed: ${err instanceof Error ? err.message : String(err)}`;
        this.options.log(`nemesis: ${kind} on ${target}: ${record.detail}`);
        await this.cluster.heal().catch((e: unknown) => this.options.log(`nemesis: heal failed: ${String(e)}`));
      }
      record.endMs = Date.now();
      this.faults.push(record);
      this.options.log(`nemesis: ${kind} target=${target} ${record.endMs - record.startMs} ms ${record.detail}`);
    }
  }

  private bag: FaultKind[] = [];

  /** Kinds come from a shuffled bag, refilled when empty: every kind before any repeats. */
  private nextKind(kinds: FaultKind[]): FaultKind {
    if (this.bag.length === 0) {
      this.bag = [...kinds];
      for (let i = this.bag.length - 1; i > 0; i--) {
        const j = this.rng.int(0, i);
        [this.bag[i], this.bag[j]] = [this.bag[j] as FaultKind, this.bag[i] as FaultKind];
      }
    }
    return this.bag.pop() as FaultKind;
  }

  /** Injects one fault, holds it for `holdMs`, heals it; returns what it did. */
  private async inject(kind: FaultKind, target: number, holdMs: number, variant: number): Promise<string> {
    const c = this.cluster;
    const slot = c.slot(target);
    switch (kind) {
      case 'kill-meterd': {
        await c.kill9Meterd(target);
        await sleep(holdMs);
        await c.startMeterd(target);
        return `meterd-${target} killed, restarted`;
      }
      case 'kill-redis': {
        this.redisKillsAtMs.push(Date.now());
        await c.redis.kill9();
        await sleep(Math.min(holdMs, 1_500));
        await c.redis.restart();
        return 'redis killed, restarted from its AOF';
      }
      case 'power-loss-redis': {
        this.redisKillsAtMs.push(Date.now());
        this.powerLossesAtMs.push(Date.now());
        const lost = await c.powerLossRedis(POWER_LOSS_WINDOW_MS);
        return `redis power loss: ${lost} AOF bytes of the last ${POWER_LOSS_WINDOW_MS} ms lost, restarted`;
      }
      case 'kill-postgres': {
        await c.kill9Postgres(holdMs);
        return 'postgres killed, restarted';
      }
      case 'pause-redis': {
        const pid = await c.redisPid();
        const stoppedMs = Math.max(holdMs, 1_500); // past REDIS_COMMAND_TIMEOUT_MS (1 s)
        process.kill(pid, 'SIGSTOP');
        try {
          await sleep(stoppedMs);
        } finally {
          process.kill(pid, 'SIGCONT');
        }
        return `redis stopped ${stoppedMs} ms`;
      }
      case 'blackhole-redis':
      case 'blackhole-postgres': {
        const proxy = kind === 'blackhole-redis' ? slot.redisProxy : slot.postgresProxy;
        const how = variant % 2 === 0 ? 'deliver' : 'reset';
        proxy.blackhole(true);
        await sleep(holdMs);
        proxy.endBlackhole(how);
        return `${proxy.name} blackholed, then ${how === 'deliver' ? 'delivered late' : 'reset'}`;
      }
      case 'reset-redis':
      case 'reset-postgres': {
        const proxy = kind === 'reset-redis' ? slot.redisProxy : slot.postgresProxy;
        const downMs = Math.min(holdMs, 800);
        proxy.down(true);
        await sleep(downMs);
        proxy.down(false);
        return `${proxy.name} reset, refused ${downMs} ms`;
      }
      case 'cut-redis': {
        const cuts = 1 + (variant % 3);
        let done = 0;
        const until = Date.now() + holdMs;
        for (let i = 0; i < cuts && Date.now() < until; i++) {
          const cut = slot.redisProxy.cutAfterRequest();
          const fired = await Promise.race([cut.then(() => true), sleep(until - Date.now()).then(() => false)]);
          if (fired) done++;
        }
        slot.redisProxy.heal();
        return `${done} replies cut on ${slot.redisProxy.name}`;
      }
      case 'latency-redis': {
        const ms = [20, 100, 400, 1_200][variant % 4] as number;
        const jitterMs = Math.round(ms / 2);
        slot.redisProxy.latency(ms, jitterMs);
        await sleep(holdMs);
        slot.redisProxy.heal();
        return `${slot.redisProxy.name} latency ${ms}±${jitterMs} ms`;
      }
      case 'function-flush': {
        await c.admin.call('FUNCTION', 'FLUSH');
        await c.admin.call('SCRIPT', 'FLUSH');
        return 'functions and scripts flushed';
      }
      case 'redis-maxmemory': {
        const used = Number(/used_memory:(\d+)/.exec(await c.admin.info('memory'))?.[1] ?? 0);
        await c.admin.config('SET', 'maxmemory', String(used));
        try {
          await sleep(holdMs);
        } finally {
          await c.admin.config('SET', 'maxmemory', '0');
        }
        return `maxmemory ${used} bytes for ${holdMs} ms`;
      }
      case 'clock-skew': {
        const magnitude = 1 + (variant % CLOCK_SKEW_SECONDS_MAX);
        const seconds = (variant >>> 8) % 2 === 0 ? magnitude : -magnitude;
        c.setClockOffset(target, seconds);
        await sleep(holdMs);
        c.setClockOffset(target, 0);
        return `meterd-${target} clock ${seconds > 0 ? '+' : ''}${seconds} s`;
      }
    }
  }
}
