/**
 * The history of a chaos run, as Jepsen/Knossos record one: every operation's invocation and its
 * completion — ok (with what the reply said), fail (a refusal: meterd changed nothing) or unknown
 * (UNAVAILABLE, DEADLINE_EXCEEDED, a cut connection: it may or may not have happened). The
 * linearizability check reads it per pool; the invariants read it whole. Amounts are numbers (the
 * workload stays far below 2^53).
 */
import { createWriteStream } from 'node:fs';
import { status } from '@grpc/grpc-js';
import { MeterdError } from '../../src/client/index.js';
import type { Balance } from '../../src/gen/meterd/v1/types.js';

export type OpInput =
  | { kind: 'reserve'; account: string; requestId: string; credits: number; ttlSeconds: number }
  | { kind: 'commit'; reservationId: string; credits: number | undefined }
  | { kind: 'release'; reservationId: string }
  | { kind: 'extend'; reservationId: string; ttlSeconds: number; additional: number; requestId: string }
  | { kind: 'grant'; account: string; grantId: string; credits: number }
  | { kind: 'changePlan'; account: string; plan: string }
  | { kind: 'refund'; reservationId: string; refundId: string; credits: number | undefined }
  | { kind: 'balance'; account: string };

export type OpKind = OpInput['kind'];

/** The balance fields the model predicts exactly. */
export interface BalanceOut {
  available: number;
  held: number;
  allowance: number;
  pack: number;
  overageUsed: number;
}

export type OpOutput =
  | { ok: true; kind: 'reserve'; reservationId: string; held: number; expiresAtMs: number; replayed: boolean; balance: BalanceOut | undefined }
  | { ok: true; kind: 'commit'; charged: number; overage: number; shortfall: number; released: number; replayed: boolean; balance: BalanceOut | undefined }
  | { ok: true; kind: 'release'; released: number; replayed: boolean; balance: BalanceOut | undefined }
  | { ok: true; kind: 'extend'; held: number; expiresAtMs: number; replayed: boolean; balance: BalanceOut | undefined }
  | { ok: true; kind: 'grant' | 'refund' | 'balance'; balance: BalanceOut | undefined }
  | { ok: true; kind: 'changePlan'; plan: string; pendingPlan: string }
  | { ok: false; reason: string };

export type Outcome = 'ok' | 'fail' | 'unknown';

export interface HistoryOp {
  id: number;
  /** The worker (one operation in flight each, background extensions get their own number). */
  client: number;
  /** The pool the operation works on (a space's parent): the unit of the linearizability check. */
  pool: string;
  input: OpInput;
  /** Which meterd served it and how (unary RPC, StreamOperations, admin RPC). */
  meterd: number;
  path: 'unary' | 'stream' | 'admin';
  /** performance.now() at invocation and completion (Infinity while unknown). */
  call: number;
  return: number;
  /** Wall-clock ms at invocation and completion, for hold expiry (the servers' clocks are wall clocks). */
  wallCall: number;
  wallReturn: number;
  outcome: Outcome | 'pending';
  output: OpOutput | undefined;
  /** For fail and unknown: the gRPC code name and the reason / message. */
  error?: string;
}

export function balanceOut(b: Balance | undefined): BalanceOut | undefined {
  if (!b) return undefined;
  return {
    available: Number(b.available), held: Number(b.held), allowance: Number(b.allowanceRemaining),
    pack: Number(b.packCredits), overageUsed: Number(b.overageUsed),
  };
}

/** Codes after which the operation may or may not have taken effect. */
const UNKNOWN_CODES = new Set<number>([status.UNAVAILABLE, status.DEADLINE_EXCEEDED, status.CANCELLED, status.UNKNOWN, status.INTERNAL]);

export class History {
  readonly ops: HistoryOp[] = [];
  /** INTERNAL answers: bugs by meterd's own definition, reported as violations. */
  readonly internalErrors: HistoryOp[] = [];
  private nextId = 0;

  invoke(client: number, pool: string, input: OpInput, meterd: number, path: HistoryOp['path']): HistoryOp {
    const op: HistoryOp = {
      id: this.nextId++, client, pool, input, meterd, path,
      call: performance.now(), return: Infinity, wallCall: Date.now(), wallReturn: Infinity, outcome: 'pending', output: undefined,
    };
    this.ops.push(op);
    return op;
  }

  ok(op: HistoryOp, output: OpOutput): void {
    op.return = performance.now();
    op.wallReturn = Date.now();
    op.outcome = 'ok';
    op.output = output;
  }

  /** A thrown error: a definite refusal (fail) or an unknown outcome. Returns which. */
  failed(op: HistoryOp, err: unknown): Outcome {
    const e = MeterdError.from(err);
    op.error = `${status[e.code] ?? e.code}/${e.reason}: ${e.message.slice(0, 160)}`;
    if (e.code === status.INTERNAL) this.internalErrors.push(op);
    if (UNKNOWN_CODES.has(e.code)) {
      op.outcome = 'unknown';
      return 'unknown';
    }
    op.return = performance.now();
    op.wallReturn = Date.now();
    op.outcome = 'fail';
    op.output = { ok: false, reason: e.reason };
    return 'fail';
  }

  /** Operations still pending when the run ended count as unknown. */
  close(): void {
    for (const op of this.ops) if (op.outcome === 'pending') op.outcome = 'unknown';
  }

  countBy(outcome: Outcome): number {
    return this.ops.filter((op) => op.outcome === outcome).length;
  }

  /** One JSON line per operation (for replay diagnosis). */
  async write(path: string): Promise<void> {
    const out = createWriteStream(path);
    for (const op of this.ops) out.write(`${JSON.stringify(op, (_k, v: unknown) => (v === Infinity ? 'Infinity' : v))}\n`);
    await new Promise<void>((resolve) => out.end(() => resolve()));
  }
}

export function describeOp(op: HistoryOp): string {
  const input = JSON.stringify(op.input);
  const out = op.outcome === 'ok' ? JSON.stringify(op.output) : op.outcome === 'fail' ? `fail ${op.error}` : `unknown ${op.error ?? ''}`;
  return `#${op.id} w${op.client} m${op.meterd}/${op.path} ${input} → ${out}`;
}
