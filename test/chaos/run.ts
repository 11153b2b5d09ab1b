/**
 * One chaos run: start the cluster, create the accounts, run the workload with the nemesis for the
 * given time, heal, let the workload run on healthy for a moment, stop it, drain the ledger, check
 * every invariant and each pool's linearizability, print the summary line, stop everything.
 *
 *   npm run chaos -- [--seed S] [--minutes N | --seconds N] [--meterds K] [--appendfsync always|everysec]
 *                    [--workers W] [--faults kind,kind,...] [--keep]
 *
 * Every run prints its seed first; the same seed replays the same workload choices and fault
 * schedule (the interleaving still depends on timing). --keep leaves the work dir (meterd logs,
 * history.jsonl) in place.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { parseArgs } from 'node:util';
import { ChaosCluster } from './cluster.js';
import { History, type HistoryOp } from './history.js';
import { checkInvariants, drain, sampleRawPools, Violations, type CheckFigures } from './invariants.js';
import { checkPools, type LinearizabilityFigures } from './linearizable.js';
import { FAULT_KINDS, Nemesis, type FaultKind } from './nemesis.js';
import { chaosAccounts, Workload } from './workload.js';

export interface ChaosOptions {
  seed: number;
  durationMs: number;
  meterds: number;
  appendfsync: 'always' | 'everysec';
  workers: number;
  spreadAccounts: number;
  hotShare: number;
  faults: readonly FaultKind[];
  faultIntervalMs: [number, number];
  faultDurationMs: [number, number];
  /** Search budget per pool for the linearizability check. */
  linearizability: { maxSteps: number; timeoutMs: number };
  keepWorkDir: boolean;
  log: (line: string) => void;
}

export const CHAOS_DEFAULTS: Omit<ChaosOptions, 'seed' | 'log'> = {
  durationMs: 60_000,
  meterds: 2,
  appendfsync: 'always',
  workers: 8,
  spreadAccounts: 10,
  hotShare: 0.3,
  faults: FAULT_KINDS,
  faultIntervalMs: [1_000, 4_000],
  faultDurationMs: [500, 3_000],
  linearizability: { maxSteps: 1_000_000, timeoutMs: 30_000 },
  keepWorkDir: false,
};

/** The documented everysec window: about a second of writes, with margin for the fsync's own duration. */
export const EVERYSEC_WINDOW_MS = 2_000;

export interface ChaosResult {
  seed: number;
  operations: { total: number; ok: number; fail: number; unknown: number };
  faults: Map<FaultKind, number>;
  violations: Violations;
  figures: CheckFigures | undefined;
  linearizability: LinearizabilityFigures | undefined;
  summary: string;
  workDir: string;
}

export async function runChaos(options: ChaosOptions): Promise<ChaosResult> {
  const { log, seed } = options;
  log(`chaos: seed=${seed} duration=${Math.round(options.durationMs / 1000)}s meterds=${options.meterds} appendfsync=${options.appendfsync} workers=${options.workers}`);
  const cluster = new ChaosCluster({ meterds: options.meterds, appendfsync: options.appendfsync, log });
  const history = new History();
  const violations = new Violations();
  let nemesis: Nemesis | undefined;
  let workload: Workload | undefined;
  let figures: CheckFigures | undefined;
  let linearizability: LinearizabilityFigures | undefined;
  let sampler: NodeJS.Timeout | undefined;
  let failure: unknown;
  const accounts = chaosAccounts(options.spreadAccounts);
  const pools = [...new Set(accounts.map((a) => a.pool))];
  try {
    const t0 = Date.now();
    await cluster.start();
    log(`chaos: cluster up in ${Date.now() - t0} ms (work dir ${cluster.workDir}; clock skew ${cluster.clockSkewAvailable ? 'by libfaketime' : 'unavailable: libfaketime missing'})`);
    workload = new Workload(cluster, history, seed, accounts, { workers: options.workers, hotShare: options.hotShare, log });
    await workload.setup();
    nemesis = new Nemesis(cluster, seed, { kinds: options.faults, intervalMs: options.faultIntervalMs, durationMs: options.faultDurationMs, log });

    let sampling = false;
    sampler = setInterval(() => {
      if (sampling) return;
      sampling = true;
      sampleRawPools(cluster, pools, violations).catch(() => {}).finally(() => (sampling = false));
    }, 1_000);

    const started = Date.now();
    workload.start();
    nemesis.start();
    let nextProgress = started + 10_000;
    while (Date.now() - started < options.durationMs) {
      await sleep(250);
      if (Date.now() >= nextProgress) {
        nextProgress += 10_000;
        log(`chaos: ${Math.round((Date.now() - started) / 1000)}s ops=${history.ops.length} ok=${history.countBy('ok')} fail=${history.countBy('fail')} unknown=${history.countBy('unknown')} faults=${nemesis.faults.length}`);
      }
    }
    await nemesis.stop();
    await cluster.heal();
    await sleep(3_000); // healthy again: retries of unknown outcomes settle
    await workload.stop();
    clearInterval(sampler);
    sampler = undefined;
    history.close();

    log('chaos: healed; draining the ledger');
    await sleep(4_000); // short holds left to expire are swept (their expire events flushed below)
    if (nemesis.powerLossesAtMs.length > 0) {
      // Pools that lost events in Redis are rebuilt from the ledger (Postgres wins), as meterd's own
      // background check does; until then Redis is behind and the drain could not complete.
      for (let round = 1; ; round++) {
        const repairs = await cluster.repair();
        if (repairs.length > 0) log(`chaos: repaired ${repairs.map((r) => `${r.accountId} (${r.outcome}, seq ${r.redisSeq} → ${r.ledgerSeq}, ${r.conflicts} conflicts)`).join(', ')}`);
        try {
          await drain(cluster, pools, 5_000);
          if ((await cluster.repair()).length === 0) break;
        } catch (err) {
          if (round >= 12) throw err;
        }
      }
    }
    await drain(cluster, pools);
    figures = await checkInvariants(cluster, history, pools, violations, {
      appendfsync: options.appendfsync, powerLossesAtMs: nemesis.powerLossesAtMs, windowMs: EVERYSEC_WINDOW_MS,
    });
    await history.write(join(cluster.workDir, 'history.jsonl'));
    log('chaos: checking linearizability per pool');
    linearizability = checkPools(beforeFirstLoss(history, nemesis.powerLossesAtMs), accounts, options.linearizability, violations, log);
    log(`chaos: linearizability per pool: ${linearizability.details.join('; ')}`);
    log(`chaos: workload ${[...workload.counts].map(([k, n]) => `${k}=${n}`).join(' ')}`);
  } catch (err) {
    failure = err;
  } finally {
    if (sampler) clearInterval(sampler);
    if (workload) await workload.stop().catch(() => {});
    if (nemesis) await nemesis.stop().catch(() => {});
    history.close();
    await history.write(join(cluster.workDir, 'history.jsonl')).catch(() => {});
    if (failure !== undefined) {
      writeFileSync(join(cluster.workDir, 'failure.txt'), String(failure instanceof Error ? failure.stack : failure));
    }
    // Kept for a look (and --check-history) after a failure, a violation, or a pool the check could not decide.
    const keep = options.keepWorkDir || failure !== undefined || violations.count() > 0 || (linearizability?.unknown ?? 0) > 0;
    if (violations.count() > 0) await cluster.dumpForDiagnosis().catch((err: unknown) => log(`chaos: diagnosis dump failed: ${String(err)}`));
    await cluster.stop({ keepWorkDir: keep });
  }
  const faults = nemesis?.countsByKind() ?? new Map<FaultKind, number>();
  const operations = { total: history.ops.length, ok: history.countBy('ok'), fail: history.countBy('fail'), unknown: history.countBy('unknown') };
  const faultText = [...faults].map(([k, n]) => `${k}=${n}`).join(' ');
  const lin = linearizability ? `pools ok=${linearizability.ok} unknown=${linearizability.unknown} illegal=${linearizability.illegal}` : 'not run';
  const summary = `chaos summary: seed=${seed} ops=${operations.total} (ok ${operations.ok}, fail ${operations.fail}, unknown ${operations.unknown}) `
    + `faults=${nemesis?.faults.length ?? 0} [${faultText}] violations=${violations.count()} [${violations.summary()}] linearizability [${lin}]`
    + (figures ? ` acknowledged-commits=${figures.acknowledgedCommits} events=${figures.events}` : '')
    + (figures && options.appendfsync === 'everysec'
      ? ` everysec: power-losses=${nemesis?.powerLossesAtMs.length ?? 0} lost-within-window=${figures.lostWithinWindow} dropped-by-repair=${figures.droppedByRepair} loss-affected=${figures.lossAffected}`
      : '');
  log(summary);
  if (violations.count() > 0) log(`chaos: violations (seed ${seed}; work dir kept: ${cluster.workDir}):\n${violations.details()}`);
  if (failure !== undefined) {
    const err = failure instanceof Error ? failure : new Error(String(failure));
    err.message = `chaos run seed=${seed} failed: ${err.message} (work dir kept: ${cluster.workDir})\n${summary}`;
    throw err;
  }
  return { seed, operations, faults, violations, figures, linearizability, summary, workDir: cluster.workDir };
}

/**
 * After a simulated power loss acknowledged writes may be gone (the everysec window), so the history
 * is checked for linearizability up to the first one: operations begun before it, those still
 * running then counted as unknown.
 */
function beforeFirstLoss(history: History, powerLossesAtMs: number[]): History {
  const first = Math.min(...powerLossesAtMs);
  if (!Number.isFinite(first)) return history;
  const cut = new History();
  for (const op of history.ops) {
    if (op.wallCall >= first) continue;
    cut.ops.push(op.wallReturn < first ? op : { ...op, outcome: 'unknown', output: undefined, return: Infinity, wallReturn: Infinity });
  }
  return cut;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      seed: { type: 'string' },
      minutes: { type: 'string' },
      seconds: { type: 'string' },
      meterds: { type: 'string' },
      appendfsync: { type: 'string' },
      workers: { type: 'string' },
      faults: { type: 'string' },
      spread: { type: 'string' },
      keep: { type: 'boolean' },
      'check-history': { type: 'string' },
      pool: { type: 'string' },
    },
  });
  if (values['check-history']) {
    // Re-checks a kept run's history.jsonl (linearizability only), e.g. with a bigger budget.
    await recheckHistory(values['check-history'], values.pool, Number(values.spread ?? CHAOS_DEFAULTS.spreadAccounts));
    return;
  }
  const seed = values.seed !== undefined ? Number(values.seed) : Math.floor(Math.random() * 2 ** 31);
  const durationMs = values.seconds !== undefined ? Number(values.seconds) * 1000 : Number(values.minutes ?? 1) * 60_000;
  const appendfsync = values.appendfsync ?? 'always';
  if (appendfsync !== 'always' && appendfsync !== 'everysec') throw new Error('--appendfsync: always or everysec');
  const faults = values.faults ? values.faults.split(',') : [...FAULT_KINDS];
  for (const f of faults) if (!(FAULT_KINDS as readonly string[]).includes(f)) throw new Error(`--faults: unknown kind ${f} (${FAULT_KINDS.join(', ')})`);
  if (!Number.isSafeInteger(seed) || !(durationMs > 0)) throw new Error('--seed must be an integer and the duration positive');
  const result = await runChaos({
    ...CHAOS_DEFAULTS,
    seed, durationMs, appendfsync,
    meterds: Number(values.meterds ?? CHAOS_DEFAULTS.meterds),
    workers: Number(values.workers ?? CHAOS_DEFAULTS.workers),
    faults: faults as FaultKind[],
    // Longer runs: the hot pool's history grows; give its check more room.
    linearizability: { maxSteps: 20_000_000, timeoutMs: 300_000 },
    keepWorkDir: values.keep ?? false,
    log: (line) => console.log(`[${new Date().toISOString().slice(11, 23)}] ${line}`),
  });
  process.exitCode = result.violations.count() > 0 ? 1 : 0;
}

async function recheckHistory(path: string, pool: string | undefined, spread: number): Promise<void> {
  const history = new History();
  for (const line of readFileSync(path, 'utf8').split('\n')) {
    if (line.trim() === '') continue;
    const op = JSON.parse(line, (_k, v: unknown) => (v === 'Infinity' ? Infinity : v)) as HistoryOp;
    if (pool === undefined || op.pool === pool) history.ops.push(op);
  }
  const violations = new Violations();
  const log = (line: string) => console.log(line);
  const figures = checkPools(history, chaosAccounts(spread), { maxSteps: 50_000_000, timeoutMs: 600_000 }, violations, log);
  console.log(figures.details.join('\n'));
  if (violations.count() > 0) console.log(violations.details(3));
}

if (process.argv[1] && import.meta.url === new URL(`file://${process.argv[1]}`).href) {
  main().catch((err: unknown) => {
    console.error(err instanceof Error ? err.stack ?? err.message : err);
    process.exitCode = 2;
  });
}
