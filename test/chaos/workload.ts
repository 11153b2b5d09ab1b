/**
 * The chaos workload: W concurrent workers drive meterd through the real gateway client
 * (src/client: MeterdClient over unary RPCs and over StreamOperations, withCredits, the admin
 * calls) the way gateways and billing systems do: reserves, commits below / at / above the hold,
 * releases, extensions (TTL and growth), holds left to expire, pack grants, plan changes, refunds,
 * balance reads, and requests sent again (retries of unknown outcomes with the same ids, duplicates
 * of finished ones, and a reused id with other parameters). One hot account takes a large share;
 * the rest is spread over accounts on plans with and without overage, some of them spaces.
 * Every call is recorded in the History. All choices come from the run's seed.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { withCredits, type MeterdClient } from '../../src/client/index.js';
import { GrantKind, type Balance, type Reservation } from '../../src/gen/meterd/v1/types.js';
import type { ChaosCluster, MeterdSlot } from './cluster.js';
import { balanceOut, type History, type HistoryOp, type OpInput, type OpOutput, type Outcome } from './history.js';
import { Rng } from './rng.js';

export interface AccountSpec {
  id: string;
  /** The pool it draws from: itself, or its parent for a space. */
  pool: string;
  /** Roots only. */
  plan: string;
  parent: string;
  hot: boolean;
}

export const PLAN_IDS = ['small', 'medium', 'large', 'huge'] as const;

/** One hot account (plan huge, with overage), `spread` roots over the other plans, two spaces. */
export function chaosAccounts(spread: number): AccountSpec[] {
  const accounts: AccountSpec[] = [{ id: 'hot-0', pool: 'hot-0', plan: 'huge', parent: '', hot: true }];
  for (let i = 0; i < spread; i++) {
    const id = `acct-${i}`;
    accounts.push({ id, pool: id, plan: PLAN_IDS[i % 3] as string, parent: '', hot: false });
  }
  for (const [i, parent] of [[0, 'acct-0'], [1, 'acct-1']] as const) {
    if (accounts.some((a) => a.id === parent)) accounts.push({ id: `space-${i}`, pool: parent, plan: '', parent, hot: false });
  }
  return accounts;
}

export interface WorkloadOptions {
  workers: number;
  /** Share of operations on the hot account. */
  hotShare: number;
  log: (line: string) => void;
}

interface OpenHold {
  reservationId: string;
  account: AccountSpec;
  held: number;
  ttlSeconds: number;
}

interface Committed {
  reservationId: string;
  charged: number;
}

const RESERVE_TTL_LONG_SECONDS = 300;
/**
 * Refunds and repeated grants pick from this many recent ones per pool: a reservation or grant that
 * may be named again must stay in the linearizability model's state until then, so an unbounded
 * pick would make long runs' states (and the check) grow without bound.
 */
const RECENT_PER_POOL_MAX = 200;

function remember<T>(list: T[], item: T): T[] {
  list.push(item);
  if (list.length > RECENT_PER_POOL_MAX) list.splice(0, list.length - RECENT_PER_POOL_MAX);
  return list;
}
const UNKNOWN_RETRIES_MAX = 3;

export class Workload {
  readonly roots: AccountSpec[];
  private stopping = false;
  private loops: Array<Promise<void>> = [];
  /** Per pool: committed reservations, for refunds. */
  private readonly committed = new Map<string, Committed[]>();
  /** Inputs that finished, to send again as duplicates. */
  private readonly finished: Array<{ pool: string; input: OpInput }> = [];
  private readonly grants = new Map<string, Array<{ grantId: string; credits: number }>>();
  readonly counts = new Map<string, number>();
  /** Operations started by each worker; a background extension is a client of its own. */
  private backgroundClient = 1_000_000;

  constructor(
    private readonly cluster: ChaosCluster,
    private readonly history: History,
    private readonly seed: number,
    readonly accounts: AccountSpec[],
    private readonly options: WorkloadOptions,
  ) {
    this.roots = accounts.filter((a) => a.parent === '');
  }

  /** Creates the accounts (billing anchor 10 days back: no period ends during a run, whatever a meterd's clock). */
  async setup(): Promise<void> {
    const anchor = new Date(Date.now() - 10 * 24 * 3600 * 1000);
    for (const a of [...this.roots, ...this.accounts.filter((x) => x.parent !== '')]) {
      for (let attempt = 1; ; attempt++) {
        const slot = this.cluster.upSlots()[0];
        try {
          if (!slot?.unary) throw new Error('no meterd up');
          await slot.unary.admin.upsertAccount({
            account: a.parent === ''
              ? { accountId: a.id, plan: a.plan, billingAnchor: anchor }
              : { accountId: a.id, parentId: a.parent },
          });
          break;
        } catch (err) {
          if (attempt >= 10) throw err;
          await sleep(300);
        }
      }
    }
  }

  start(): void {
    this.stopping = false;
    for (let w = 0; w < this.options.workers; w++) this.loops.push(this.worker(w));
  }

  async stop(): Promise<void> {
    this.stopping = true;
    await Promise.all(this.loops);
    this.loops = [];
  }

  private bump(what: string): void {
    this.counts.set(what, (this.counts.get(what) ?? 0) + 1);
  }

  // ───────────────────────────── one call, recorded ─────────────────────────────

  private async pickSlot(rng: Rng): Promise<MeterdSlot> {
    for (;;) {
      const up = this.cluster.upSlots();
      if (up.length > 0) return rng.pick(up);
      await sleep(50);
    }
  }

  /**
   * Sends one operation, recorded; an unknown outcome is sent again with the same ids (each attempt
   * is its own history entry) on a meterd picked anew, up to UNKNOWN_RETRIES_MAX times.
   */
  private async send<T>(
    rng: Rng, client: number, pool: string, input: OpInput,
    call: (slot: MeterdSlot, useStream: boolean) => Promise<T>, output: (value: T) => OpOutput, path: 'data' | 'admin',
  ): Promise<{ outcome: Outcome; value?: T; op: HistoryOp }> {
    for (let attempt = 0; ; attempt++) {
      const slot = await this.pickSlot(rng);
      const useStream = path === 'data' && rng.chance(0.5);
      const op = this.history.invoke(client, pool, input, slot.index, path === 'admin' ? 'admin' : useStream ? 'stream' : 'unary');
      try {
        const value = await call(slot, useStream);
        this.history.ok(op, output(value));
        return { outcome: 'ok', value, op };
      } catch (err) {
        const outcome = this.history.failed(op, err);
        if (outcome === 'fail' || attempt >= UNKNOWN_RETRIES_MAX || this.stopping) return { outcome, op };
        this.bump('retried unknown');
        await sleep(rng.int(100, 600));
      }
    }
  }

  private client(slot: MeterdSlot, stream: boolean): MeterdClient {
    const c = stream ? slot.stream : slot.unary;
    if (!c) throw Object.assign(new Error('meterd slot is down'), { code: 14, details: 'slot down' });
    return c;
  }

  private reserve(rng: Rng, w: number, account: AccountSpec, input: Extract<OpInput, { kind: 'reserve' }>) {
    return this.send(rng, w, account.pool, input, (slot, stream) => this.client(slot, stream).reserve({
      accountId: input.account, feature: 'work', credits: input.credits, requestId: input.requestId, ttlSeconds: input.ttlSeconds,
      // The seat is part of the request's fingerprint: derived from the request id, so a resend by any worker matches.
      userId: `u${input.requestId.length % 4}`,
    }), reservationOut, 'data');
  }

  private commit(rng: Rng, w: number, pool: string, input: Extract<OpInput, { kind: 'commit' }>) {
    return this.send(rng, w, pool, input, (slot, stream) => this.client(slot, stream).commit({
      reservationId: input.reservationId, credits: input.credits,
    }), (r) => ({
      ok: true, kind: 'commit', charged: Number(r.chargedCredits), overage: Number(r.overageCredits), shortfall: Number(r.shortfallCredits),
      released: Number(r.releasedCredits), replayed: r.replayed, balance: balanceOut(r.balance),
    }), 'data');
  }

  private release(rng: Rng, w: number, pool: string, input: Extract<OpInput, { kind: 'release' }>) {
    return this.send(rng, w, pool, input, (slot, stream) => this.client(slot, stream).release({
      reservationId: input.reservationId, reason: 'model call failed',
    }), (r) => ({ ok: true, kind: 'release', released: Number(r.releasedCredits), replayed: r.replayed, balance: balanceOut(r.balance) }), 'data');
  }

  private extend(rng: Rng, w: number, pool: string, input: Extract<OpInput, { kind: 'extend' }>) {
    return this.send(rng, w, pool, input, (slot, stream) => this.client(slot, stream).extend({
      reservationId: input.reservationId, ttlSeconds: input.ttlSeconds, additionalCredits: input.additional, requestId: input.requestId,
    }), extendOut, 'data');
  }

  /** Any finished input sent again, as a gateway retrying late would. */
  private resend(rng: Rng, w: number, pool: string, input: OpInput) {
    switch (input.kind) {
      case 'reserve': return this.reserve(rng, w, this.accountById(input.account), input);
      case 'commit': return this.commit(rng, w, pool, input);
      case 'release': return this.release(rng, w, pool, input);
      case 'extend': return this.extend(rng, w, pool, input);
      case 'grant': return this.grant(rng, w, pool, input);
      case 'refund': return this.refund(rng, w, pool, input);
      default: return this.balance(rng, w, this.accountById(input.account));
    }
  }

  private grant(rng: Rng, w: number, pool: string, input: Extract<OpInput, { kind: 'grant' }>) {
    return this.send(rng, w, pool, input, (slot) => this.client(slot, false).admin.grantCredits({
      accountId: input.account, credits: BigInt(input.credits), kind: GrantKind.GRANT_KIND_PACK, grantId: input.grantId, reason: 'chaos',
    }), (b: Balance) => ({ ok: true, kind: 'grant', balance: balanceOut(b) }), 'admin');
  }

  private refund(rng: Rng, w: number, pool: string, input: Extract<OpInput, { kind: 'refund' }>) {
    return this.send(rng, w, pool, input, (slot) => this.client(slot, false).admin.refundCharge({
      reservationId: input.reservationId, credits: input.credits === undefined ? undefined : BigInt(input.credits), refundId: input.refundId, reason: 'chaos',
    }), (b: Balance) => ({ ok: true, kind: 'refund', balance: balanceOut(b) }), 'admin');
  }

  private balance(rng: Rng, w: number, account: AccountSpec) {
    const input: OpInput = { kind: 'balance', account: account.id };
    return this.send(rng, w, account.pool, input, (slot, stream) => this.client(slot, stream).getBalance(account.id),
      (b) => ({ ok: true, kind: 'balance', balance: balanceOut(b) }), 'data');
  }

  private accountById(id: string): AccountSpec {
    const a = this.accounts.find((x) => x.id === id);
    if (!a) throw new Error(`no account ${id}`);
    return a;
  }

  // ───────────────────────────── the workers ─────────────────────────────

  private pickAccount(rng: Rng): AccountSpec {
    const hot = this.accounts.filter((a) => a.hot);
    if (hot.length > 0 && rng.chance(this.options.hotShare)) return rng.pick(hot);
    return rng.pick(this.accounts.filter((a) => !a.hot));
  }

  private async worker(w: number): Promise<void> {
    const rng = Rng.fork(this.seed, `worker-${w}`);
    let n = 0;
    while (!this.stopping) {
      n++;
      const account = this.pickAccount(rng);
      const action = rng.weighted({ flow: 45, withCredits: 8, grant: 5, changePlan: 2, refund: 6, balance: 8, duplicate: 7, reusedId: 1 });
      this.bump(action);
      try {
        switch (action) {
          case 'flow': await this.flow(rng, w, account, `${this.seed}-w${w}-${n}`); break;
          case 'withCredits': await this.withCreditsFlow(rng, w, account, `${this.seed}-w${w}-${n}`); break;
          case 'grant': await this.grantFlow(rng, w, account, `${this.seed}-w${w}-${n}`); break;
          case 'changePlan': await this.changePlanFlow(rng, w, account); break;
          case 'refund': await this.refundFlow(rng, w, account, `${this.seed}-w${w}-${n}`); break;
          case 'balance': await this.balance(rng, w, account); break;
          case 'duplicate': await this.duplicateFlow(rng, w); break;
          case 'reusedId': await this.reusedIdFlow(rng, w, account, `${this.seed}-w${w}-${n}`); break;
        }
      } catch (err) {
        this.options.log(`worker ${w}: ${action} threw ${err instanceof Error ? err.stack ?? err.message : String(err)}`);
        this.bump('worker errors');
        await sleep(100);
      }
      await sleep(rng.int(0, 15));
    }
  }

  private remember(pool: string, input: OpInput): void {
    this.finished.push({ pool, input });
    if (this.finished.length > 500) this.finished.splice(0, 100);
  }

  /** reserve → maybe extend → commit (less, equal, more, default) / release / let expire. */
  private async flow(rng: Rng, w: number, account: AccountSpec, tag: string): Promise<void> {
    const short = rng.chance(0.15);
    const ttlSeconds = short ? rng.int(1, 3) : RESERVE_TTL_LONG_SECONDS;
    const credits = account.hot ? rng.int(1, 120) : rng.int(1, 60);
    const input = { kind: 'reserve' as const, account: account.id, requestId: `r-${tag}`, credits, ttlSeconds };
    const reserved = await this.reserve(rng, w, account, input);
    if (reserved.outcome !== 'ok' || !reserved.value) return;
    this.remember(account.pool, input);
    const hold: OpenHold = { reservationId: reserved.value.reservationId, account, held: Number(reserved.value.heldCredits), ttlSeconds };
    await sleep(rng.int(0, 40));
    if (rng.chance(0.25)) {
      const additional = rng.chance(0.6) ? rng.int(1, 30) : 0;
      const ext = { kind: 'extend' as const, reservationId: hold.reservationId, ttlSeconds: rng.chance(0.5) || additional === 0 ? rng.int(1, 300) : 0, additional, requestId: additional > 0 ? `x-${tag}` : '' };
      const extended = await this.extend(rng, w, account.pool, ext);
      if (extended.outcome === 'ok' && extended.value) {
        hold.held = Number(extended.value.heldCredits);
        this.remember(account.pool, ext);
      }
    }
    if (short && rng.chance(0.4)) {
      this.bump('left to expire');
      return;
    }
    if (rng.chance(0.72)) {
      const mode = rng.weighted({ default: 1, less: 2, equal: 1, more: 2 });
      const credits = mode === 'default' ? undefined : mode === 'less' ? rng.int(0, Math.max(0, hold.held - 1)) : mode === 'equal' ? hold.held : hold.held + rng.int(1, 80);
      const c = { kind: 'commit' as const, reservationId: hold.reservationId, credits };
      const done = await this.commit(rng, w, account.pool, c);
      if (done.outcome === 'ok' && done.value) {
        this.remember(account.pool, c);
        const charged = Number(done.value.chargedCredits);
        if (charged > 0) remember(this.committedOf(account.pool), { reservationId: hold.reservationId, charged });
      }
    } else {
      const r = { kind: 'release' as const, reservationId: hold.reservationId };
      const done = await this.release(rng, w, account.pool, r);
      if (done.outcome === 'ok') this.remember(account.pool, r);
    }
  }

  private committedOf(pool: string): Committed[] {
    let list = this.committed.get(pool);
    if (!list) this.committed.set(pool, (list = []));
    return list;
  }

  /** withCredits around a fake model call, through a client that records each call it makes. */
  private async withCreditsFlow(rng: Rng, w: number, account: AccountSpec, tag: string): Promise<void> {
    const slot = await this.pickSlot(rng);
    const recording = this.recordingClient(w, account, slot, rng.chance(0.5));
    const credits = rng.int(1, 40);
    const fails = rng.chance(0.2);
    const spend = rng.int(0, 60);
    const runMs = rng.chance(0.3) ? rng.int(1_100, 2_500) : rng.int(0, 50);
    try {
      await withCredits(recording, { account: account.id, feature: 'work', credits, ttlSeconds: 2, requestId: `wc-${tag}`, user: `u${w % 4}` },
        async () => {
          await sleep(runMs); // the model call; the hold is extended every second meanwhile
          if (fails) throw new Error('model call failed');
          return { credits: spend };
        });
    } catch {
      // refusals and the failed model call are recorded per operation
    }
  }

  /** A MeterdClient whose data-plane calls are recorded (withCredits calls it like any client). */
  private recordingClient(w: number, account: AccountSpec, slot: MeterdSlot, stream: boolean): MeterdClient {
    const base = this.client(slot, stream);
    const pool = account.pool;
    const path = stream ? 'stream' : 'unary';
    const record = async <T>(client: number, input: OpInput, call: () => Promise<T>, output: (v: T) => OpOutput): Promise<T> => {
      const op = this.history.invoke(client, pool, input, slot.index, path);
      try {
        const value = await call();
        this.history.ok(op, output(value));
        return value;
      } catch (err) {
        this.history.failed(op, err);
        throw err;
      }
    };
    const recorded: Pick<MeterdClient, 'reserve' | 'commit' | 'release' | 'extend'> = {
      reserve: (req) => record(w, {
        kind: 'reserve', account: req.accountId, requestId: req.requestId ?? '', credits: Number(req.credits ?? 0), ttlSeconds: req.ttlSeconds ?? 300,
      }, () => base.reserve(req), reservationOut),
      commit: (req) => record(w, {
        kind: 'commit', reservationId: req.reservationId, credits: req.credits === undefined ? undefined : Number(req.credits),
      }, () => base.commit(req), (r) => ({
        ok: true, kind: 'commit', charged: Number(r.chargedCredits), overage: Number(r.overageCredits), shortfall: Number(r.shortfallCredits),
        released: Number(r.releasedCredits), replayed: r.replayed, balance: balanceOut(r.balance),
      })),
      release: (req) => record(w, { kind: 'release', reservationId: req.reservationId }, () => base.release(req),
        (r) => ({ ok: true, kind: 'release', released: Number(r.releasedCredits), replayed: r.replayed, balance: balanceOut(r.balance) })),
      // Background extensions run beside the worker's own calls: each is a client of its own.
      extend: (req) => {
        this.bump('withCredits extensions');
        return record(this.backgroundClient++, {
          kind: 'extend', reservationId: req.reservationId, ttlSeconds: req.ttlSeconds ?? 0, additional: Number(req.additionalCredits ?? 0), requestId: req.requestId ?? '',
        }, () => base.extend(req), extendOut);
      },
    };
    return { ...base, ...recorded, address: base.address, admin: base.admin, connection: base.connection, getBalance: base.getBalance, close: () => {} };
  }

  private async grantFlow(rng: Rng, w: number, account: AccountSpec, tag: string): Promise<void> {
    const pool = account.pool;
    const earlier = this.grants.get(pool) ?? [];
    if (earlier.length > 0 && rng.chance(0.2)) {
      const g = rng.pick(earlier);
      await this.grant(rng, w, pool, { kind: 'grant', account: pool, grantId: g.grantId, credits: g.credits });
      return;
    }
    const credits = account.hot ? rng.int(100, 800) : rng.int(20, 300);
    const input = { kind: 'grant' as const, account: account.id, grantId: `g-${tag}`, credits };
    const res = await this.grant(rng, w, pool, input);
    if (res.outcome === 'ok') {
      this.grants.set(pool, remember(earlier, { grantId: input.grantId, credits }));
      this.remember(pool, input);
    }
  }

  private async changePlanFlow(rng: Rng, w: number, account: AccountSpec): Promise<void> {
    const root = this.accountById(account.pool);
    const plan = root.hot ? rng.pick(['large', 'huge']) : rng.pick(PLAN_IDS);
    const input = { kind: 'changePlan' as const, account: root.id, plan };
    await this.send(rng, w, root.pool, input, (slot) => this.client(slot, false).admin.changePlan({ accountId: root.id, plan }),
      (a) => ({ ok: true, kind: 'changePlan', plan: a.plan, pendingPlan: a.pendingPlan }), 'admin');
  }

  private async refundFlow(rng: Rng, w: number, account: AccountSpec, tag: string): Promise<void> {
    const list = this.committedOf(account.pool);
    if (list.length === 0) return;
    const c = rng.pick(list);
    const credits = rng.chance(0.4) ? undefined : rng.int(1, c.charged);
    const input = { kind: 'refund' as const, reservationId: c.reservationId, refundId: `f-${tag}`, credits };
    const res = await this.refund(rng, w, account.pool, input);
    if (res.outcome === 'ok') this.remember(account.pool, input);
  }

  /** A finished request sent again verbatim: the same answer, nothing changed twice. */
  private async duplicateFlow(rng: Rng, w: number): Promise<void> {
    if (this.finished.length === 0) return;
    const { pool, input } = rng.pick(this.finished);
    this.bump(`duplicate ${input.kind}`);
    await this.resend(rng, w, pool, input);
  }

  /** A request id used again with other parameters: IDEMPOTENCY_KEY_REUSED, nothing held. */
  private async reusedIdFlow(rng: Rng, w: number, account: AccountSpec, tag: string): Promise<void> {
    const earlier = this.finished.filter((f) => f.input.kind === 'reserve');
    if (earlier.length === 0) {
      await this.flow(rng, w, account, tag);
      return;
    }
    const { input } = rng.pick(earlier);
    if (input.kind !== 'reserve') return;
    await this.reserve(rng, w, this.accountById(input.account), { ...input, credits: input.credits + 1 });
  }
}

function extendOut(r: Reservation): OpOutput {
  return {
    ok: true, kind: 'extend', held: Number(r.heldCredits), expiresAtMs: r.expiresAt?.getTime() ?? 0, replayed: r.replayed, balance: balanceOut(r.balance),
  };
}

function reservationOut(r: Reservation): OpOutput {
  return {
    ok: true, kind: 'reserve', reservationId: r.reservationId, held: Number(r.heldCredits), expiresAtMs: r.expiresAt?.getTime() ?? 0,
    replayed: r.replayed, balance: balanceOut(r.balance),
  };
}
