/**
 * A linearizability checker: the Wing & Gong search with Lowe's memoisation, as in Porcupine's
 * `checkSingle`. It knows nothing about meterd; a Model describes the object under test.
 *
 * Operations become call and return entries in one doubly linked list sorted by time. The search
 * linearizes the first call entry the model accepts, lifting it and its return out of the list,
 * and backtracks when it reaches a return entry (that operation had to come earlier). A set of
 * (linearized operations, model state) pairs already explored prunes repeated work.
 *
 * Cost: roughly linear on linearizable histories, since the first order tried mostly works.
 * Proving a history illegal means exhausting every reachable (set, state) pair before the
 * failure: up to 2^(concurrent operations) per point, doubled by each pending unknown-outcome
 * operation. One that never took effect stays pending to the end unless it has a `settledBy`,
 * and a few dozen such can exhaust the budget even on a legal history. Hence the step budget,
 * and a report of the deepest point reached when it runs out.
 * Models must not mutate states: the search keeps and reuses them.
 */
import { inspect } from 'node:util';

export interface Operation<I, O> {
  /** Unique within the history. */
  id: number;
  /** The client (process/worker) that issued it; one client has at most one operation in flight. */
  client: number;
  input: I;
  /** Invocation time (any monotonic clock, e.g. performance.now() or hrtime in ms). */
  call: number;
  /** Completion time; Infinity when the outcome is unknown (timeout, crash, UNAVAILABLE after send). */
  return: number;
  /** The observed output; undefined when the outcome is unknown. */
  output: O | undefined;
  /**
   * Optional, for an unknown outcome only: a time by which the operation has taken effect or never
   * will (e.g. the server restarted, or the client saw a later operation's effect that must follow
   * it). Each one given prunes the search a lot: otherwise an operation that never took effect
   * stays a candidate to the end of the history.
   */
  settledBy?: number;
}

export interface Model<S, I, O> {
  init(): S;
  /**
   * Every state the model may be in after `input` took effect from `state` and produced `output`
   * (nondeterministic models, e.g. a hold that may or may not have expired yet, return several).
   * An empty array: `output` is impossible from `state`. `output` undefined: the outcome is unknown,
   * return every state the operation could have led to.
   */
  step(state: S, input: I, output: O | undefined): S[];
  /** A canonical string of a state, for memoising (linearized-set, state) pairs. */
  key(state: S): string;
  /** Optional: human description of an operation for failure reports. */
  describe?(input: I, output: O | undefined): string;
  /**
   * Optional: true when the operation never changes the state, from any state (a plain read).
   * The search then linearizes it as soon as it fits instead of trying it at every later point,
   * which keeps histories with many concurrent reads tractable. Not for a read that may also
   * observe a nondeterministic change (e.g. a hold expiring): return false for those.
   */
  readOnly?(input: I): boolean;
}

export type CheckResult<I, O> =
  | { result: 'ok' }
  | {
      result: 'illegal';
      /** the longest prefix of operations the search could linearize */
      longestLinearized: Operation<I, O>[];
      /** the completed operations that could not be placed after it */
      stuckAt: Operation<I, O>[];
      explanation: string;
    }
  | { result: 'unknown'; reason: string }; // search budget exhausted

export interface CheckOptions {
  /** Search steps (entries visited) before giving up with 'unknown'. */
  maxSteps?: number;
  /** Wall-clock limit of the search; unset means none, so results stay deterministic. */
  timeoutMs?: number;
}

export const maxStepsDefault = 5_000_000;

/** Splits a history by object (e.g. account): each part can be checked on its own. */
export function partitionBy<I, O>(
  history: readonly Operation<I, O>[],
  keyOf: (op: Operation<I, O>) => string,
): Map<string, Operation<I, O>[]> {
  const parts = new Map<string, Operation<I, O>[]>();
  for (const op of history) {
    const key = keyOf(op);
    const part = parts.get(key);
    if (part) part.push(op);
    else parts.set(key, [op]);
  }
  return parts;
}

const NIL = -1;
/** Distinct states kept for the failure report; more only repeats the point. */
const reportedStatesMax = 8;
/** Clock reads are costly; look at the time once per this many steps. */
const stepsPerClockCheck = 4096;

export function checkLinearizable<S, I, O>(
  model: Model<S, I, O>,
  history: readonly Operation<I, O>[],
  options: CheckOptions = {},
): CheckResult<I, O> {
  assertWellFormed(history);
  return new Search(model, history, options).run();
}

interface Frame<S> {
  /** The call entry linearized (entry = 2 * op index; its return entry is entry + 1). */
  entry: number;
  before: S;
  /** What the model allowed; `index` is the one taken, later ones are tried on backtracking. */
  states: S[];
  index: number;
  /** An unknown operation given up at its settledBy time: taken out, not linearized. */
  dropped: boolean;
}

class Search<S, I, O> {
  private readonly maxSteps: number;
  private readonly deadline: number;
  private readonly entries: EntryList;
  private readonly known: Uint8Array;
  private readonly readOnly: Uint8Array;
  private readonly linearized: LinearizedSet;
  private readonly explored = new ExploredPairs();
  private readonly stack: Frame<S>[] = [];
  private state: S;
  private knownLeft: number;
  /** The deepest point reached, for reports. The stack below `lowWater` has not changed since. */
  private best: { frames: Frame<S>[]; state: S; stateKeys: Set<string>; stuck: number[] };
  private lowWater = 0;

  constructor(
    private readonly model: Model<S, I, O>,
    private readonly ops: readonly Operation<I, O>[],
    private readonly options: CheckOptions,
  ) {
    this.maxSteps = options.maxSteps ?? maxStepsDefault;
    this.deadline = options.timeoutMs === undefined ? Infinity : performance.now() + options.timeoutMs;
    this.entries = new EntryList(ops);
    this.known = Uint8Array.from(ops, (op) => (op.return === Infinity ? 0 : 1));
    this.readOnly = Uint8Array.from(ops, (op) => (model.readOnly?.(op.input) ? 1 : 0));
    this.linearized = new LinearizedSet(ops.length);
    this.state = model.init();
    this.knownLeft = this.known.reduce((sum, k) => sum + k, 0);
    this.best = { frames: [], state: this.state, stateKeys: new Set([model.key(this.state)]), stuck: this.candidates() };
  }

  /**
   * Tries the candidates (call entries before the first return entry) in time order. Reaching a
   * completed operation's return means it had to come earlier: backtrack. Reaching an unknown
   * one's settledBy means it never happened: drop it. Unknown operations are tried in time order
   * too; trying them last was far slower on histories where they took effect, the common case.
   */
  run(): CheckResult<I, O> {
    const { model, ops, readOnly, known, entries } = this;
    let entry = entries.first();
    let backtracking = false;
    for (let steps = 1; this.knownLeft > 0; steps++) {
      if (steps > this.maxSteps) return this.outOfBudget(`${this.maxSteps} steps (maxSteps)`);
      if (steps % stepsPerClockCheck === 0 && performance.now() > this.deadline) {
        return this.outOfBudget(`${this.options.timeoutMs} ms (timeoutMs) after ${steps} steps`);
      }
      if (!backtracking) {
        const op = entry >> 1;
        if ((entry & 1) === 0) {
          const states = model.step(this.state, ops[op]!.input, ops[op]!.output);
          if (readOnly[op] === 1) this.assertUnchanged(op, states);
          if (this.place(entry, states, 0)) {
            entry = entries.first();
            continue;
          }
          // A read-only operation that fits here but was explored already: this point fails too.
          if (readOnly[op] === 0 || states.length === 0) {
            entry = entries.next[entry]!;
            continue;
          }
        } else if (known[op] === 0 && this.drop(entry - 1)) {
          entry = entries.first();
          continue;
        }
      }
      // Every candidate failed here: undo the last operation linearized and try what follows it.
      backtracking = false;
      const frame = this.unplace();
      if (!frame) return this.illegal();
      if (frame.dropped || readOnly[frame.entry >> 1] === 1) {
        // Dropping was the last option; a read-only operation loses nothing by going first.
        backtracking = true;
      } else if (this.place(frame.entry, frame.states, frame.index + 1)) {
        entry = entries.first();
      } else {
        entry = entries.next[frame.entry]!;
      }
    }
    return { result: 'ok' };
  }

  /** An unknown operation's settledBy came: from here on it can only never have happened. */
  private drop(entry: number): boolean {
    const op = entry >> 1;
    const stateKey = this.model.key(this.state);
    // Same bit as linearized: either way it is out of the list and only the state matters.
    this.linearized.toggle(op);
    if (!this.explored.add(this.linearized, this.explored.numberOf(stateKey))) {
      this.linearized.toggle(op);
      return false;
    }
    this.stack.push({ entry, before: this.state, states: [], index: 0, dropped: true });
    this.entries.lift(entry);
    this.recordProgress(stateKey);
    return true;
  }

  /** Linearizes the call entry's operation into the first of `states[from..]` not yet explored. */
  private place(entry: number, states: S[], from: number): boolean {
    const op = entry >> 1;
    this.linearized.toggle(op);
    for (let i = from; i < states.length; i++) {
      const after = states[i]!;
      const afterKey = this.model.key(after);
      if (!this.explored.add(this.linearized, this.explored.numberOf(afterKey))) continue;
      this.stack.push({ entry, before: this.state, states, index: i, dropped: false });
      this.entries.lift(entry);
      this.state = after;
      if (this.known[op] === 1) this.knownLeft--;
      this.recordProgress(afterKey);
      return true;
    }
    this.linearized.toggle(op);
    return false;
  }

  private unplace(): Frame<S> | undefined {
    const frame = this.stack.pop();
    if (!frame) return undefined;
    const op = frame.entry >> 1;
    this.lowWater = Math.min(this.lowWater, this.stack.length);
    this.entries.unlift(frame.entry);
    this.linearized.toggle(op);
    this.state = frame.before;
    if (this.known[op] === 1) this.knownLeft++;
    return frame;
  }

  private assertUnchanged(op: number, states: S[]): void {
    const before = this.model.key(this.state);
    const changed = states.find((after) => this.model.key(after) !== before);
    if (changed !== undefined) {
      const id = this.ops[op]!.id;
      throw new Error(`model.readOnly holds for operation ${id}, but its step changed ${before} to ${this.model.key(changed)}`);
    }
  }

  private recordProgress(stateKey: string): void {
    const { stack, best } = this;
    if (stack.length === best.frames.length) {
      if (best.stateKeys.size < reportedStatesMax) best.stateKeys.add(stateKey);
      return;
    }
    if (stack.length < best.frames.length) return;
    best.frames.length = this.lowWater;
    for (let i = this.lowWater; i < stack.length; i++) best.frames.push(stack[i]!);
    this.lowWater = stack.length;
    best.state = this.state;
    best.stateKeys = new Set([stateKey]);
    best.stuck = this.candidates();
  }

  /** The known operations that could come next: call entries before the first return entry. */
  private candidates(): number[] {
    const found: number[] = [];
    const { next } = this.entries;
    for (let e = this.entries.first(); e !== NIL && (e & 1) === 0; e = next[e]!) {
      if (this.known[e >> 1] === 1) found.push(e >> 1);
    }
    return found;
  }

  private outOfBudget(limit: string): CheckResult<I, O> {
    const lines = [`search budget exhausted: ${limit}; the deepest point reached so far:`, ...this.describeBest()];
    return { result: 'unknown', reason: lines.join('\n') };
  }

  private illegal(): CheckResult<I, O> {
    return {
      result: 'illegal',
      longestLinearized: this.bestLinearized(),
      stuckAt: this.best.stuck.map((i) => this.ops[i]!),
      explanation: ['not linearizable:', ...this.describeBest()].join('\n'),
    };
  }

  private bestLinearized(): Operation<I, O>[] {
    return this.best.frames.filter((frame) => !frame.dropped).map((frame) => this.ops[frame.entry >> 1]!);
  }

  private describeBest(): string[] {
    const { model, best } = this;
    const describe = (op: Operation<I, O>): string =>
      `#${op.id} (client ${op.client}, ${op.call}..${op.return}) ` +
      (model.describe ? model.describe(op.input, op.output) : `${show(op.input)} -> ${show(op.output)}`);
    const linearized = this.bestLinearized();
    const lastOp = linearized.at(-1);
    const stateKey = model.key(best.state);
    const lines = [
      `at most ${linearized.length} of ${this.ops.length} operations could be linearized` +
        (lastOp === undefined ? '' : `, the last being ${describe(lastOp)}`),
      `model state after them: ${stateKey}`,
    ];
    const otherStates = [...best.stateKeys].filter((key) => key !== stateKey);
    if (otherStates.length > 0) lines.push(`other orders of as many operations reached: ${otherStates.join(', ')}`);
    lines.push('none of these completed operations could be placed next:');
    for (const i of best.stuck) {
      const op = this.ops[i]!;
      const possible = model.step(best.state, op.input, op.output).length > 0;
      lines.push(`  ${describe(op)}: ${possible ? 'possible here, but no order of the rest follows from it' : 'impossible from that state'}`);
    }
    return lines;
  }
}

/** Programmer errors in the history; a bad history would give a meaningless verdict. */
function assertWellFormed<I, O>(history: readonly Operation<I, O>[]): void {
  const ids = new Set<number>();
  for (const op of history) {
    if (ids.has(op.id)) throw new Error(`operation id ${op.id} appears twice`);
    ids.add(op.id);
    if (!Number.isFinite(op.call)) throw new Error(`operation ${op.id}: call time must be finite`);
    if (Number.isNaN(op.return) || op.return < op.call) {
      throw new Error(`operation ${op.id}: return time must not precede the call`);
    }
    if (op.return === Infinity && op.output !== undefined) {
      throw new Error(`operation ${op.id}: an unknown outcome (return Infinity) has no output`);
    }
    if (op.settledBy !== undefined && (op.return !== Infinity || !(op.settledBy >= op.call))) {
      throw new Error(`operation ${op.id}: settledBy is for unknown outcomes, and not before the call`);
    }
  }
}

/**
 * Call and return entries in time order, doubly linked. Entry 2i is the call of ops[i], 2i+1
 * its return; index 2n is the head. Calls sort before returns at equal times, so operations that
 * touch count as concurrent. An unknown outcome "returns" at its settledBy, or at Infinity.
 */
class EntryList {
  readonly next: Int32Array;
  readonly prev: Int32Array;
  private readonly head: number;

  constructor(ops: readonly Operation<unknown, unknown>[]) {
    const timeOf = (e: number): number => {
      const op = ops[e >> 1]!;
      return (e & 1) === 0 ? op.call : op.return === Infinity ? (op.settledBy ?? Infinity) : op.return;
    };
    const order = Array.from({ length: 2 * ops.length }, (_, e) => e);
    order.sort((a, b) => {
      const ta = timeOf(a);
      const tb = timeOf(b);
      if (ta !== tb) return ta < tb ? -1 : 1;
      return (a & 1) - (b & 1) || a - b;
    });
    this.head = 2 * ops.length;
    this.next = new Int32Array(this.head + 1);
    this.prev = new Int32Array(this.head + 1);
    let last = this.head;
    for (const e of order) {
      this.next[last] = e;
      this.prev[e] = last;
      last = e;
    }
    this.next[last] = NIL;
  }

  first(): number {
    return this.next[this.head]!;
  }

  /** Takes an operation's call and return entries out of the list. */
  lift(call: number): void {
    const { next, prev } = this;
    next[prev[call]!] = next[call]!;
    prev[next[call]!] = prev[call]!;
    const ret = call + 1;
    next[prev[ret]!] = next[ret]!;
    if (next[ret] !== NIL) prev[next[ret]!] = prev[ret]!;
  }

  /** Puts them back; only valid in the reverse order of lifting. */
  unlift(call: number): void {
    const { next, prev } = this;
    const ret = call + 1;
    next[prev[ret]!] = ret;
    if (next[ret] !== NIL) prev[next[ret]!] = ret;
    next[prev[call]!] = call;
    prev[next[call]!] = call;
  }
}

/**
 * The set of linearized operations, identified by a 96-bit Zobrist hash kept up to date in O(1)
 * per change. Storing the sets themselves (as Porcupine does) costs n/8 bytes per explored pair,
 * gigabytes at a few thousand operations; a false match among 5M pairs has odds near 2^-50.
 */
class LinearizedSet {
  private readonly lanes: Int32Array;
  h0 = 0;
  h1 = 0;
  h2 = 0;

  constructor(size: number) {
    this.lanes = new Int32Array(3 * size);
    let seed = 0x9e3779b9;
    for (let i = 0; i < this.lanes.length; i++) {
      seed = (seed + 0x6d2b79f5) | 0; // mulberry32: fixed seed, so verdicts are reproducible
      let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
      t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
      this.lanes[i] = t ^ (t >>> 14);
    }
  }

  /** Adds or removes (XOR is its own inverse). */
  toggle(op: number): void {
    this.h0 ^= this.lanes[3 * op]!;
    this.h1 ^= this.lanes[3 * op + 1]!;
    this.h2 ^= this.lanes[3 * op + 2]!;
  }
}

/**
 * The (linearized set, model state) pairs already explored: an open-addressing table of
 * (h0, h1, h2, state number) rows, 16 bytes each, at most 70% full (about 128 MB at 5M pairs).
 * Strings per pair made the search mostly garbage collection.
 */
class ExploredPairs {
  private readonly stateNumbers = new Map<string, number>();
  private rows = new Int32Array(4 * 1024);
  private size = 0;

  /** A small number for a state key, so rows hold numbers only. */
  numberOf(stateKey: string): number {
    let state = this.stateNumbers.get(stateKey);
    if (state === undefined) {
      state = this.stateNumbers.size + 1; // 0 marks an empty row
      this.stateNumbers.set(stateKey, state);
    }
    return state;
  }

  /** Adds the pair; false when it was there already. */
  add(set: LinearizedSet, state: number): boolean {
    if (!this.insert(set.h0, set.h1, set.h2, state)) return false;
    if (++this.size > 0.7 * (this.rows.length / 4)) this.grow();
    return true;
  }

  private insert(h0: number, h1: number, h2: number, state: number): boolean {
    const mask = this.rows.length / 4 - 1;
    for (let slot = (h0 ^ Math.imul(state, 0x9e3779b1)) & mask; ; slot = (slot + 1) & mask) {
      const row = 4 * slot;
      if (this.rows[row + 3] === 0) {
        this.rows[row] = h0;
        this.rows[row + 1] = h1;
        this.rows[row + 2] = h2;
        this.rows[row + 3] = state;
        return true;
      }
      if (this.rows[row] === h0 && this.rows[row + 1] === h1 && this.rows[row + 2] === h2 && this.rows[row + 3] === state) {
        return false;
      }
    }
  }

  private grow(): void {
    const old = this.rows;
    this.rows = new Int32Array(2 * old.length);
    for (let row = 0; row < old.length; row += 4) {
      if (old[row + 3] !== 0) this.insert(old[row]!, old[row + 1]!, old[row + 2]!, old[row + 3]!);
    }
  }
}

function show(value: unknown): string {
  return inspect(value, { depth: 4, breakLength: Infinity });
}
