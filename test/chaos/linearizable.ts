/**
 * The linearizability check of a chaos history: split by pool (every operation touches one pool,
 * so each is checked alone — P-compositionality), each against the reference model of the credit
 * engine (credit-model.ts) with the generic checker (linearizability.ts). A pool whose search runs
 * out of budget (the hot one, in long runs) is reported as unknown, not as a violation.
 */
import { CHAOS_PRODUCT } from './cluster.js';
import { creditModel, type ModelInput } from './credit-model.js';
import { describeOp, type History, type HistoryOp, type OpOutput } from './history.js';
import type { Violations } from './invariants.js';
import { checkLinearizable, type Operation } from './linearizability.js';
import { CLOCK_SKEW_SECONDS_MAX } from './nemesis.js';
import type { AccountSpec } from './workload.js';

/** Skew tolerance: the nemesis' largest skew, libfaketime's 1 s cache, and timer slack. */
export const EXPIRY_TOLERANCE_MS = CLOCK_SKEW_SECONDS_MAX * 1000 + 1_500;

/** How long after the last recorded operation an unknown one may still have taken effect (the drain follows). */
const HORIZON_SLACK_MS = 120_000;

export interface LinearizabilityFigures {
  ok: number;
  unknown: number;
  illegal: number;
  /** Per pool: operations and the result. */
  details: string[];
}

function reservationRefs(ops: HistoryOp[]): Map<string, HistoryOp[]> {
  const byRequest = new Map<string, string>();
  for (const op of ops) {
    if (op.input.kind === 'reserve' && op.output?.ok && op.output.kind === 'reserve') byRequest.set(`${op.input.account}/${op.input.requestId}`, op.output.reservationId);
  }
  const refs = new Map<string, HistoryOp[]>();
  const add = (id: string, op: HistoryOp) => refs.set(id, [...(refs.get(id) ?? []), op]);
  for (const op of ops) {
    const input = op.input;
    if ('reservationId' in input) add(input.reservationId, op);
    else if (input.kind === 'reserve') {
      const id = byRequest.get(`${input.account}/${input.requestId}`);
      if (id !== undefined) add(id, op);
    }
  }
  return refs;
}

/** Model inputs for a pool's operations, with the reservations each one is the last to name. */
export function toOperations(ops: HistoryOp[]): Operation<ModelInput, OpOutput>[] {
  const forgetAfter = new Map<number, string[]>();
  const grantRefs = new Map<string, HistoryOp[]>();
  for (const op of ops) if (op.input.kind === 'grant') grantRefs.set(op.input.grantId, [...(grantRefs.get(op.input.grantId) ?? []), op]);
  const refsByName = [
    ...[...reservationRefs(ops)].map(([id, refs]) => [`r:${id}`, refs] as const),
    ...[...grantRefs].map(([id, refs]) => [`g:${id}`, refs] as const),
  ];
  // A name is forgotten in the step of the first completed operation that began after every
  // operation naming it had returned: by then each of those is linearized (real-time order), so
  // nothing can ask for it any more. Names with an operation of unknown outcome are kept.
  const known = ops.filter((op) => op.outcome !== 'unknown').sort((a, b) => a.call - b.call);
  const firstCalledAfter = (t: number): HistoryOp | undefined => {
    let lo = 0;
    let hi = known.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if ((known[mid] as HistoryOp).call > t) hi = mid;
      else lo = mid + 1;
    }
    return known[lo];
  };
  for (const [name, refs] of refsByName) {
    if (refs.some((r) => r.outcome === 'unknown')) continue;
    const after = firstCalledAfter(Math.max(...refs.map((r) => r.return)));
    if (after) forgetAfter.set(after.id, [...(forgetAfter.get(after.id) ?? []), name]);
  }
  // An unknown outcome took effect, if at all, before the run ended: its latest possible moment
  // bounds which holds may have expired by then (not Infinity, which would let every hold expire).
  let horizon = 0;
  for (const op of ops) horizon = Math.max(horizon, op.wallCall, Number.isFinite(op.wallReturn) ? op.wallReturn : 0);
  horizon += HORIZON_SLACK_MS;
  return ops.map((op) => ({
    id: op.id,
    client: op.client,
    input: { op: op.input, wallCall: op.wallCall, wallReturn: op.outcome === 'unknown' ? horizon : op.wallReturn, forget: forgetAfter.get(op.id) ?? [] },
    call: op.call,
    return: op.outcome === 'unknown' ? Infinity : op.return,
    output: op.outcome === 'unknown' ? undefined : op.output,
  }));
}

export function checkPools(
  history: History, accounts: AccountSpec[], budget: { maxSteps: number; timeoutMs: number }, violations: Violations, log: (line: string) => void,
): LinearizabilityFigures {
  const figures: LinearizabilityFigures = { ok: 0, unknown: 0, illegal: 0, details: [] };
  const byPool = new Map<string, HistoryOp[]>();
  for (const op of history.ops) byPool.set(op.pool, [...(byPool.get(op.pool) ?? []), op]);
  for (const [pool, ops] of byPool) {
    const root = accounts.find((a) => a.id === pool);
    if (!root) throw new Error(`no account spec for pool ${pool}`);
    const model = creditModel(CHAOS_PRODUCT, root.plan, EXPIRY_TOLERANCE_MS);
    const started = performance.now();
    const result = checkLinearizable(model, toOperations(ops), budget);
    const ms = Math.round(performance.now() - started);
    const unknowns = ops.filter((o) => o.outcome === 'unknown').length;
    const line = `${pool}: ${ops.length} ops (${unknowns} unknown) ${result.result} in ${ms} ms`;
    figures.details.push(line);
    if (result.result === 'ok') figures.ok++;
    else if (result.result === 'unknown') {
      figures.unknown++;
      log(`linearizability: ${line}: ${result.reason}`);
    } else {
      figures.illegal++;
      const byId = new Map(ops.map((o) => [o.id, o]));
      const tail = result.longestLinearized.slice(-8).map((o) => describeOp(byId.get(o.id) as HistoryOp));
      const stuck = result.stuckAt.slice(0, 4).map((o) => describeOp(byId.get(o.id) as HistoryOp));
      violations.add('linearizability', `${line}\n    last linearized:\n      ${tail.join('\n      ')}\n    stuck at:\n      ${stuck.join('\n      ')}\n    ${result.explanation.slice(0, 2_000)}`);
    }
  }
  return figures;
}
