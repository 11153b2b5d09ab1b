import { describe, it, expect } from 'vitest';
import fc from 'fast-check';
import {
  checkLinearizable,
  partitionBy,
  type Model,
  type Operation,
} from '../chaos/linearizability.js';

// A register holding a number, initially 0.
type RegisterInput = { kind: 'read' } | { kind: 'write'; value: number };
type RegisterOutput = number | 'ok';

const register: Model<number, RegisterInput, RegisterOutput> = {
  init: () => 0,
  step(state, input, output) {
    if (input.kind === 'write') return output === undefined || output === 'ok' ? [input.value] : [];
    return output === undefined || output === state ? [state] : [];
  },
  key: (state) => String(state),
  describe: (input, output) =>
    input.kind === 'write' ? `write(${input.value})` : `read() -> ${output === undefined ? '?' : output}`,
};

/** The same register, telling the search that reads change nothing. */
const readOnlyRegister: Model<number, RegisterInput, RegisterOutput> = {
  ...register,
  readOnly: (input) => input.kind === 'read',
};

// One account with at most one hold, which may expire (return to available) at any moment.
interface Account {
  available: number;
  held: number;
}
type AccountInput = { kind: 'reserve'; amount: number } | { kind: 'commit' } | { kind: 'balance' };
type AccountOutput = 'ok' | 'insufficient' | 'gone' | number;

function applyToAccount(s: Account, input: AccountInput): [AccountOutput, Account] {
  switch (input.kind) {
    case 'reserve':
      if (s.held > 0 || s.available < input.amount) return ['insufficient', s];
      return ['ok', { available: s.available - input.amount, held: input.amount }];
    case 'commit':
      return s.held > 0 ? ['ok', { available: s.available, held: 0 }] : ['gone', s];
    case 'balance':
      return [s.available, s];
  }
}

const expire = (s: Account): Account => ({ available: s.available + s.held, held: 0 });

const account: Model<Account, AccountInput, AccountOutput> = {
  init: () => ({ available: 10, held: 0 }),
  step(state, input, output) {
    const before = state.held > 0 ? [state, expire(state)] : [state];
    const after = new Map<string, Account>();
    for (const s of before) {
      const [actual, next] = applyToAccount(s, input);
      if (output === undefined || output === actual) after.set(account.key(next), next);
    }
    return [...after.values()];
  },
  key: (s) => `${s.available}/${s.held}`,
};

// A counter whose adds may be lost (at-most-once delivery): an add leaves it at s + n or at s.
type CounterInput = { kind: 'add'; n: number } | { kind: 'get' };
type CounterOutput = 'ok' | number;

const lossyCounter: Model<number, CounterInput, CounterOutput> = {
  init: () => 0,
  step(state, input, output) {
    if (input.kind === 'add') return output === undefined || output === 'ok' ? [state + input.n, state] : [];
    return output === undefined || output === state ? [state] : [];
  },
  key: (state) => String(state),
};

/** Builds operations from [client, input, call, return, output] rows; ids are row numbers. */
function history<I, O>(rows: ReadonlyArray<readonly [number, I, number, number, O | undefined]>): Operation<I, O>[] {
  return rows.map(([client, input, call, ret, output], id) => ({ id, client, input, call, return: ret, output }));
}

const read = { kind: 'read' } as const;
const write = (value: number) => ({ kind: 'write', value }) as const;

describe('checkLinearizable on a register', () => {
  it('accepts an empty history and a sequential one', () => {
    expect(checkLinearizable(register, [])).toEqual({ result: 'ok' });
    const h = history<RegisterInput, RegisterOutput>([
      [0, write(1), 0, 1, 'ok'],
      [0, read, 2, 3, 1],
      [1, write(2), 4, 5, 'ok'],
      [0, read, 6, 7, 2],
    ]);
    expect(checkLinearizable(register, h)).toEqual({ result: 'ok' });
  });

  it('accepts a read overlapping a write whether it sees the old or the new value', () => {
    for (const seen of [0, 1]) {
      const h = history<RegisterInput, RegisterOutput>([
        [0, write(1), 0, 10, 'ok'],
        [1, read, 5, 15, seen],
      ]);
      expect(checkLinearizable(register, h)).toEqual({ result: 'ok' });
    }
  });

  it('rejects a stale read after a write completed, though an order ignoring real time exists', () => {
    const h = history<RegisterInput, RegisterOutput>([
      [0, write(1), 0, 10, 'ok'],
      [1, read, 11, 12, 0],
    ]);
    const result = checkLinearizable(register, h);
    expect(result.result).toBe('illegal');
    // Swapping the two is fine once they overlap, even by touching at one instant.
    const touching = history<RegisterInput, RegisterOutput>([
      [0, write(1), 0, 10, 'ok'],
      [1, read, 10, 12, 0],
    ]);
    expect(checkLinearizable(register, touching)).toEqual({ result: 'ok' });
  });

  it('rejects a value flipping back after both concurrent writes completed', () => {
    const h = history<RegisterInput, RegisterOutput>([
      [0, write(1), 0, 10, 'ok'],
      [1, write(2), 0, 10, 'ok'],
      [0, read, 11, 12, 1],
      [1, read, 13, 14, 2],
    ]);
    expect(checkLinearizable(register, h).result).toBe('illegal');
  });

  it('reports the longest linearized prefix, the stuck operations and the model state', () => {
    const h = history<RegisterInput, RegisterOutput>([
      [0, write(1), 0, 1, 'ok'],
      [1, read, 2, 3, 1],
      [0, write(2), 4, 5, 'ok'],
      [1, read, 6, 7, 1],
    ]);
    const result = checkLinearizable(register, h);
    if (result.result !== 'illegal') throw new Error(`expected illegal, got ${result.result}`);
    expect(result.longestLinearized.map((op) => op.id)).toEqual([0, 1, 2]);
    expect(result.stuckAt.map((op) => op.id)).toEqual([3]);
    expect(result.explanation).toContain('#3 (client 1, 6..7) read() -> 1: impossible from that state');
    expect(result.explanation).toContain('model state after them: 2');
  });
});

describe('checkLinearizable with unknown outcomes', () => {
  it('accepts an unknown write that a later read shows took effect', () => {
    const h = history<RegisterInput, RegisterOutput>([
      [0, write(1), 0, Infinity, undefined],
      [1, read, 5, 6, 1],
    ]);
    expect(checkLinearizable(register, h)).toEqual({ result: 'ok' });
  });

  it('accepts an unknown write that is never observed', () => {
    const h = history<RegisterInput, RegisterOutput>([
      [0, write(1), 0, Infinity, undefined],
      [1, read, 5, 6, 0],
      [1, read, 7, 8, 0],
    ]);
    expect(checkLinearizable(register, h)).toEqual({ result: 'ok' });
  });

  it('rejects a read explained only by an unknown write called after the read returned', () => {
    const h = history<RegisterInput, RegisterOutput>([
      [1, read, 0, 1, 1],
      [0, write(1), 2, Infinity, undefined],
    ]);
    expect(checkLinearizable(register, h).result).toBe('illegal');
  });

  it('rejects a read of a value no operation could have written', () => {
    const h = history<RegisterInput, RegisterOutput>([
      [0, write(1), 0, Infinity, undefined],
      [1, read, 5, 6, 2],
    ]);
    expect(checkLinearizable(register, h).result).toBe('illegal');
  });

  it('rejects an unknown write taking effect after its settledBy time', () => {
    const rows = [
      [0, write(1), 0, Infinity, undefined],
      [1, read, 11, 12, 0],
      [1, read, 20, 21, 1],
    ] as const;
    expect(checkLinearizable(register, history<RegisterInput, RegisterOutput>(rows)).result).toBe('ok');
    const settled = history<RegisterInput, RegisterOutput>(rows);
    settled[0]!.settledBy = 10;
    const result = checkLinearizable(register, settled);
    expect(result.result).toBe('illegal');
    if (result.result === 'illegal') expect(result.longestLinearized.map((op) => op.id)).toEqual([1]);
  });

  it('accepts an unknown write that took effect before its settledBy time, or never', () => {
    for (const seen of [0, 1]) {
      const h = history<RegisterInput, RegisterOutput>([
        [0, write(1), 0, Infinity, undefined],
        [1, read, 20, 21, seen],
      ]);
      h[0]!.settledBy = 10;
      expect(checkLinearizable(register, h)).toEqual({ result: 'ok' });
    }
  });

  it('applies an unknown operation at most once', () => {
    const h = history<RegisterInput, RegisterOutput>([
      [0, write(1), 0, Infinity, undefined],
      [1, read, 1, 2, 1],
      [2, write(0), 3, 4, 'ok'],
      [1, read, 5, 6, 1],
    ]);
    expect(checkLinearizable(register, h).result).toBe('illegal');
  });
});

describe('checkLinearizable on a nondeterministic account model', () => {
  const reserve = (amount: number) => ({ kind: 'reserve', amount }) as const;
  const commit = { kind: 'commit' } as const;
  const balance = { kind: 'balance' } as const;

  it('accepts a hold that was committed before it could expire', () => {
    const h = history<AccountInput, AccountOutput>([
      [0, reserve(4), 0, 1, 'ok'],
      [1, balance, 2, 3, 6],
      [0, commit, 4, 5, 'ok'],
      [1, balance, 6, 7, 6],
    ]);
    expect(checkLinearizable(account, h)).toEqual({ result: 'ok' });
  });

  it('accepts a hold seen to expire, then a commit that finds it gone', () => {
    const h = history<AccountInput, AccountOutput>([
      [0, reserve(4), 0, 1, 'ok'],
      [1, balance, 2, 3, 10],
      [0, commit, 4, 5, 'gone'],
    ]);
    expect(checkLinearizable(account, h)).toEqual({ result: 'ok' });
  });

  it('rejects a commit of a hold already seen to expire', () => {
    const h = history<AccountInput, AccountOutput>([
      [0, reserve(4), 0, 1, 'ok'],
      [1, balance, 2, 3, 10],
      [0, commit, 4, 5, 'ok'],
    ]);
    const result = checkLinearizable(account, h);
    expect(result.result).toBe('illegal');
    if (result.result === 'illegal') expect(result.explanation).toContain('model state after them: 10/0');
  });

  it('accepts a commit racing the expiry of its hold either way', () => {
    for (const outcome of ['ok', 'gone'] as const) {
      const h = history<AccountInput, AccountOutput>([
        [0, reserve(4), 0, 1, 'ok'],
        [0, commit, 2, 3, outcome],
        [1, balance, 4, 5, outcome === 'ok' ? 6 : 10],
      ]);
      expect(checkLinearizable(account, h)).toEqual({ result: 'ok' });
    }
  });
});

describe('checkLinearizable on a lossy counter', () => {
  const add = (n: number) => ({ kind: 'add', n }) as const;
  const get = { kind: 'get' } as const;

  it('tries every state a nondeterministic step allows, not only the first', () => {
    const h = history<CounterInput, CounterOutput>([
      [0, add(1), 0, 1, 'ok'],
      [0, add(2), 2, 3, 'ok'],
      [0, get, 4, 5, 2],
    ]);
    expect(checkLinearizable(lossyCounter, h)).toEqual({ result: 'ok' });
  });

  it('rejects a total no subset of the adds makes', () => {
    const h = history<CounterInput, CounterOutput>([
      [0, add(1), 0, 1, 'ok'],
      [1, add(2), 0, 1, 'ok'],
      [0, get, 4, 5, 4],
    ]);
    expect(checkLinearizable(lossyCounter, h).result).toBe('illegal');
  });
});

/** When a recorded operation was called and returned around its linearization time. */
interface Timing {
  unknown: boolean;
  before: number;
  after: number;
  settles: boolean;
}

interface RegisterStep extends Timing {
  input: RegisterInput;
  tookEffect: boolean;
}

describe('checkLinearizable property: recorded sequential executions', () => {
  /** Gives each operation the first client free at its call, as a real harness would. */
  function assignClients(ops: { call: number; return: number }[]): number[] {
    const busyUntil: number[] = [];
    return ops.map((op) => {
      let client = busyUntil.findIndex((until) => until < op.call);
      if (client === -1) client = busyUntil.length;
      busyUntil[client] = op.return;
      return client;
    });
  }

  /**
   * Places the executed `steps` at linearization times 10, 20, ... and widens each into an
   * interval around its time (`before`, `after`). Unknown ones return at Infinity.
   */
  function record<I, O>(
    steps: (Timing & { input: I; output: O; tookEffect: boolean })[],
  ): Operation<I, O>[] {
    const timed = steps.map((s, i) => ({
      ...s,
      call: 10 * (i + 1) - s.before,
      return: s.unknown || !s.tookEffect ? Infinity : 10 * (i + 1) + s.after,
    }));
    const clients = assignClients(timed);
    return timed.map((s, id) => {
      const op: Operation<I, O> = {
        id,
        client: clients[id]!,
        input: s.input,
        call: s.call,
        return: s.return,
        output: s.return === Infinity ? undefined : s.output,
      };
      // An unknown outcome may settle any time after its linearization time.
      if (s.return === Infinity && s.settles) op.settledBy = 10 * (id + 1) + s.after;
      return op;
    });
  }

  /** True about one time in ten. */
  const rarely = fc.nat(9).map((n) => n === 0);
  const timing = { unknown: rarely, before: fc.nat(40), after: fc.nat(40), settles: fc.boolean() };
  const registerSteps: fc.Arbitrary<RegisterStep[]> = fc.array(
    fc.record({
      input: fc.oneof(fc.constant(read), fc.nat(4).map(write)),
      tookEffect: rarely.map((no) => !no),
      ...timing,
    }),
    { minLength: 1, maxLength: 40 },
  );

  /** Executes on the register; an operation that did not take effect leaves no trace. */
  function runRegister(steps: RegisterStep[]) {
    let value = 0;
    return steps.map((s) => {
      const output: RegisterOutput = s.input.kind === 'write' ? 'ok' : value;
      if (s.input.kind === 'write' && s.tookEffect) value = s.input.value;
      return { ...s, output, tookEffect: s.tookEffect || s.input.kind === 'read' };
    });
  }

  it('accepts every recorded register execution', () => {
    fc.assert(
      fc.property(registerSteps, (steps) => {
        const h = record(runRegister(steps));
        expect(checkLinearizable(register, h)).toEqual({ result: 'ok' });
        expect(checkLinearizable(readOnlyRegister, h)).toEqual({ result: 'ok' });
      }),
      { numRuns: 300 },
    );
  });

  it('rejects a recorded register execution with one read changed to a value never written', () => {
    fc.assert(
      fc.property(registerSteps, fc.nat(), (steps, pick) => {
        const h = record(runRegister(steps));
        const reads = h.filter((op) => op.input.kind === 'read' && op.return !== Infinity);
        fc.pre(reads.length > 0);
        reads[pick % reads.length]!.output = 99;
        expect(checkLinearizable(register, h).result).toBe('illegal');
        expect(checkLinearizable(readOnlyRegister, h).result).toBe('illegal');
      }),
      { numRuns: 300 },
    );
  });

  it('accepts every recorded account execution, holds expiring at random moments', () => {
    const accountSteps = fc.array(
      fc.record({
        input: fc.oneof(
          fc.integer({ min: 1, max: 6 }).map((amount) => ({ kind: 'reserve', amount }) as AccountInput),
          fc.constant<AccountInput>({ kind: 'commit' }),
          fc.constant<AccountInput>({ kind: 'balance' }),
        ),
        expireFirst: fc.boolean(),
        ...timing,
      }),
      { minLength: 1, maxLength: 40 },
    );
    fc.assert(
      fc.property(accountSteps, (steps) => {
        let s = account.init();
        const executed = steps.map((step) => {
          if (step.expireFirst) s = expire(s);
          const [output, next] = applyToAccount(s, step.input);
          s = next;
          return { ...step, output, tookEffect: true };
        });
        expect(checkLinearizable(account, record(executed))).toEqual({ result: 'ok' });
      }),
      { numRuns: 300 },
    );
  });
});

/**
 * Tries every subset of the unknown operations (each must then take effect by its settledBy, if
 * any) and every order of the chosen operations that respects real time.
 */
function bruteForce<S, I, O>(model: Model<S, I, O>, ops: Operation<I, O>[]): boolean {
  const search = (state: S, left: Operation<I, O>[]): boolean =>
    left.length === 0 ||
    left.some(
      (op) =>
        !left.some((other) => other.return < op.call) &&
        model.step(state, op.input, op.output).some((after) => search(after, left.filter((o) => o !== op))),
    );
  const unknown = ops.filter((op) => op.return === Infinity);
  const known = ops.filter((op) => op.return !== Infinity);
  for (let subset = 0; subset < 2 ** unknown.length; subset++) {
    const chosen = unknown
      .filter((_, i) => (subset >> i) & 1)
      .map((op) => ({ ...op, return: op.settledBy ?? Infinity }));
    if (search(model.init(), [...known, ...chosen])) return true;
  }
  return false;
}

describe('checkLinearizable property: agrees with brute force on small random histories', () => {
  function randomHistory<I, O>(input: fc.Arbitrary<I>, output: fc.Arbitrary<O>) {
    const op = fc.record({
      input,
      output,
      call: fc.nat(20),
      length: fc.oneof(fc.nat(10), fc.constant(Infinity)),
      settledAfter: fc.option(fc.nat(15)),
    });
    return fc.array(op, { maxLength: 7 }).map((rows) =>
      rows.map((row, id): Operation<I, O> => {
        const unknown = row.length === Infinity;
        const op: Operation<I, O> = {
          id,
          client: id,
          input: row.input,
          call: row.call,
          return: row.call + row.length,
          output: unknown ? undefined : row.output,
        };
        if (unknown && row.settledAfter !== null) op.settledBy = row.call + row.settledAfter;
        return op;
      }),
    );
  }

  it('on a register, with and without read-only reads', () => {
    const h = randomHistory<RegisterInput, RegisterOutput>(
      fc.oneof(fc.constant(read), fc.nat(2).map(write)),
      fc.oneof(fc.constant<RegisterOutput>('ok'), fc.nat(2)),
    );
    fc.assert(
      fc.property(h, (ops) => {
        const expected = bruteForce(register, ops) ? 'ok' : 'illegal';
        expect(checkLinearizable(register, ops).result).toBe(expected);
        expect(checkLinearizable(readOnlyRegister, ops).result).toBe(expected);
      }),
      { numRuns: 1000 },
    );
  });

  it('on the nondeterministic account', () => {
    const h = randomHistory<AccountInput, AccountOutput>(
      fc.oneof(
        fc.integer({ min: 1, max: 6 }).map((amount): AccountInput => ({ kind: 'reserve', amount })),
        fc.constant<AccountInput>({ kind: 'commit' }),
        fc.constant<AccountInput>({ kind: 'balance' }),
      ),
      fc.oneof(fc.constantFrom<AccountOutput>('ok', 'insufficient', 'gone'), fc.integer({ min: 4, max: 10 })),
    );
    fc.assert(
      fc.property(h, (ops) => {
        const expected = bruteForce(account, ops) ? 'ok' : 'illegal';
        expect(checkLinearizable(account, ops).result).toBe(expected);
      }),
      { numRuns: 500 },
    );
  });

  it('on a lossy counter', () => {
    const h = randomHistory<CounterInput, CounterOutput>(
      fc.oneof(fc.integer({ min: 1, max: 3 }).map((n): CounterInput => ({ kind: 'add', n })), fc.constant<CounterInput>({ kind: 'get' })),
      fc.oneof(fc.constant<CounterOutput>('ok'), fc.nat(6)),
    );
    fc.assert(
      fc.property(h, (ops) => {
        const expected = bruteForce(lossyCounter, ops) ? 'ok' : 'illegal';
        expect(checkLinearizable(lossyCounter, ops).result).toBe(expected);
      }),
      { numRuns: 500 },
    );
  });
});

describe('checkLinearizable budget and scale', () => {
  /** `writers` concurrent writes of 1..writers, then a read of a value none wrote. */
  function pathological(writers: number): Operation<RegisterInput, RegisterOutput>[] {
    const rows: [number, RegisterInput, number, number, RegisterOutput | undefined][] = [];
    for (let w = 1; w <= writers; w++) rows.push([w, write(w), 0, 100, 'ok']);
    rows.push([0, read, 101, 102, -1]);
    return history(rows);
  }

  it('answers unknown when maxSteps runs out, and illegal with enough budget', () => {
    const h = pathological(10);
    const starved = checkLinearizable(register, h, { maxSteps: 50 });
    expect(starved.result).toBe('unknown');
    if (starved.result === 'unknown') expect(starved.reason).toContain('50 steps (maxSteps)');
    expect(checkLinearizable(register, h).result).toBe('illegal');
  });

  it('answers unknown when timeoutMs has passed at a clock check', () => {
    expect(checkLinearizable(register, pathological(14), { timeoutMs: 0 }).result).toBe('unknown');
  });

  it('checks a 3000-operation history from 16 clients', () => {
    const rows: [number, RegisterInput, number, number, RegisterOutput | undefined][] = [];
    let value = 0;
    for (let i = 0; i < 3000; i++) {
      const client = i % 16;
      const t = 10 * i;
      // Each client's operation spans its 16-slot turn, so 16 are in flight at once.
      const input = i % 3 === 0 ? write(i) : read;
      const output = input.kind === 'write' ? 'ok' : value;
      if (input.kind === 'write') value = input.value;
      rows.push([client, input, t - 75, t + 75, output]);
    }
    expect(checkLinearizable(register, history(rows))).toEqual({ result: 'ok' });
  });

  it('refuses malformed histories', () => {
    const dup = history<RegisterInput, RegisterOutput>([
      [0, read, 0, 1, 0],
      [1, read, 0, 1, 0],
    ]).map((op) => ({ ...op, id: 7 }));
    expect(() => checkLinearizable(register, dup)).toThrow('appears twice');
    expect(() => checkLinearizable(register, history([[0, read, 5, 1, 0]]))).toThrow('must not precede');
    expect(() => checkLinearizable(register, history([[0, read, 0, Infinity, 0]]))).toThrow('no output');
    const early = history<RegisterInput, RegisterOutput>([[0, read, 5, Infinity, undefined]]);
    early[0]!.settledBy = 4;
    expect(() => checkLinearizable(register, early)).toThrow('settledBy');
    const lying: Model<number, RegisterInput, RegisterOutput> = { ...register, readOnly: () => true };
    expect(() => checkLinearizable(lying, history([[0, write(1), 0, 1, 'ok']]))).toThrow('readOnly');
  });
});

describe('partitionBy', () => {
  it('splits a history by key, keeping each part in order', () => {
    const h = history<RegisterInput, RegisterOutput>([
      [0, write(1), 0, 1, 'ok'],
      [1, write(2), 0, 1, 'ok'],
      [0, read, 2, 3, 1],
    ]);
    const parts = partitionBy(h, (op) => `client-${op.client}`);
    expect([...parts.keys()]).toEqual(['client-0', 'client-1']);
    expect(parts.get('client-0')!.map((op) => op.id)).toEqual([0, 2]);
  });
});
