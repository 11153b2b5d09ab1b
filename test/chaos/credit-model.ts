/**
 * The reference model of the credit engine for the linearizability check: one pool (a root account
 * and its spaces, which have no cap here), for the features the chaos workload uses — plan
 * allowance with upgrades (a new allowance epoch) and pending downgrades, packs, overage room,
 * holds with the buckets they came from, commits below / at / above the hold (shortfall), releases,
 * extensions (TTL, growth, idempotent on their request id), expiry, refunds in reverse burn order,
 * idempotent reserves (per account and request id) and grants, balance reads. No trial, promos,
 * adjustments or period roll-over (accounts are anchored so that no period ends during a run).
 * It follows the rules of README "The rules" and the property test's model
 * (test/integration/engine-model.property.test.ts), immutably: step() returns new states.
 *
 * Time: a hold expires when a script touches its pool past its expiry (every operation does) or
 * the sweeper gets to it. Both run on meterd's clock, which may be skewed, and the sweeper runs
 * when it likes; so a hold whose expiry is within SKEW of an operation's window may or may not have
 * expired by then (both are explored, expiring holds in expiry order), one clearly past its expiry
 * before the operation began must have, and one clearly in the future must not have.
 */
import type { ProductConfig } from '../../src/config/product-config.js';
import type { BalanceOut, OpInput, OpOutput } from './history.js';
import type { Model } from './linearizability.js';
import { notHeldReason, splitPortions, sumPortions, type HoldState } from '../support/model-portions.js';

type Bucket = 'allow' | 'pack' | 'ovg';
/** Held or charged credits from one bucket; tag = allowance epoch for 'allow'. */
interface Portion { b: Bucket; tag: number; n: number }

interface HoldS {
  st: HoldState;
  account: string;
  held: number;
  portions: Portion[];
  /** Expiry (meterd's clock, ms): known exactly from a reply, or only a lower bound (unknown outcome). */
  expMin: number;
  expMax: number;
  /** The reserve's parameters (credits/ttl): the same request id with others is refused. */
  fp: string;
  /** Growth request id → credits. */
  exts: Record<string, number>;
  charged: number;
  overage: number;
  shortfall: number;
  released: number;
  cportions: Portion[];
  refunded: number;
  refunds: Record<string, number>;
  /** No later operation names it: dropped from the state as soon as it is settled. */
  orphan: boolean;
}

export interface PoolState {
  plan: string;
  pending: string;
  allowTotal: number;
  allow: number;
  ae: number;
  ovgLimit: number;
  ovg: number;
  pack: number;
  held: number;
  holds: Record<string, HoldS>;
  /** account/requestId → reservation id (or a placeholder '?account/requestId' while unknown). */
  reqs: Record<string, string>;
  grants: Record<string, number>;
}

/** What the checker sees of one operation: the request, its times (wall clock), and what may be forgotten after it. */
export interface ModelInput {
  op: OpInput;
  wallCall: number;
  wallReturn: number;
  /**
   * What no later operation names, dropped from the state after this one (keeps states small):
   * 'r:<reservation id>' (once settled) and 'g:<grant id>'.
   */
  forget: string[];
}

type Expected =
  | { ok: true; out: OpOutput }
  | { ok: false; reason: string };

class Impossible extends Error {}

export function creditModel(product: ProductConfig, initialPlan: string, skewMs: number): Model<PoolState, ModelInput, OpOutput> {
  const planOf = (id: string) => {
    const plan = product.plans.get(id);
    if (!plan) throw new Error(`unknown plan ${id}`);
    return { monthly: Number(plan.monthlyCredits), overageLimit: Number(plan.overageLimit) };
  };

  const available = (s: PoolState) => s.allow + s.pack + Math.max(0, s.ovgLimit - s.ovg);
  const view = (s: PoolState): BalanceOut => ({ available: available(s), held: s.held, allowance: s.allow, pack: s.pack, overageUsed: s.ovg });

  // States are immutable once returned. A clone shares the holds, reqs and grants maps with its
  // origin and copies one only on its first write (the map's owner is the state that copied it), so
  // a step costs what it changes; the key of an unchanged map is computed once and cached.
  const ownerOf = new WeakMap<object, PoolState>();
  const clone = (s: PoolState): PoolState => ({ ...s });
  const holdsOf = (s: PoolState): Record<string, HoldS> => {
    if (ownerOf.get(s.holds) !== s) {
      s.holds = { ...s.holds };
      ownerOf.set(s.holds, s);
    }
    return s.holds;
  };
  const reqsOf = (s: PoolState): Record<string, string> => {
    if (ownerOf.get(s.reqs) !== s) {
      s.reqs = { ...s.reqs };
      ownerOf.set(s.reqs, s);
    }
    return s.reqs;
  };
  const grantsOf = (s: PoolState): Record<string, number> => {
    if (ownerOf.get(s.grants) !== s) {
      s.grants = { ...s.grants };
      ownerOf.set(s.grants, s);
    }
    return s.grants;
  };
  const editHold = (s: PoolState, id: string): HoldS => {
    const h = s.holds[id];
    if (!h) throw new Error(`no hold ${id}`);
    const copy: HoldS = { ...h, portions: [...h.portions], cportions: [...h.cportions], exts: { ...h.exts }, refunds: { ...h.refunds } };
    holdsOf(s)[id] = copy;
    return copy;
  };

  const dropHold = (s: PoolState, id: string): void => {
    delete holdsOf(s)[id];
    for (const [k, v] of Object.entries(s.reqs)) if (v === id) delete reqsOf(s)[k];
  };

  /** Burn order: allowance, packs, overage room. */
  const take = (s: PoolState, amount: number): { portions: Portion[]; left: number } => {
    const portions: Portion[] = [];
    let left = amount;
    const from = (b: Bucket, tag: number, have: number): number => {
      const n = Math.min(left, have);
      if (n <= 0) return 0;
      portions.push({ b, tag, n });
      left -= n;
      return n;
    };
    s.allow -= from('allow', s.ae, s.allow);
    s.pack -= from('pack', 0, s.pack);
    s.ovg += from('ovg', 0, Math.max(0, s.ovgLimit - s.ovg));
    return { portions, left };
  };

  const giveBack = (s: PoolState, portions: Portion[], asRefund: boolean): void => {
    for (const p of portions) {
      if (p.b === 'allow' && p.tag === s.ae) s.allow += p.n;
      else if (p.b === 'pack') s.pack += p.n;
      else if (p.b === 'ovg') s.ovg -= p.n;
      else if (asRefund) s.pack += p.n;
      // else: allowance of an earlier epoch (before an upgrade) is gone
    }
  };

  const settle = (s: PoolState, id: string, st: 'R' | 'E'): void => {
    const h = editHold(s, id);
    giveBack(s, h.portions, false);
    s.held -= h.held;
    h.st = st;
    h.released = h.held;
    if (h.orphan) dropHold(s, id);
  };


  /** The states after lazy expiry before an operation: the holds that must expire, then every prefix of those that may. */
  const expiries = (s: PoolState, input: ModelInput): PoolState[] => {
    const must: string[] = [];
    const may: Array<[string, number]> = [];
    for (const [id, h] of Object.entries(s.holds)) {
      if (h.st !== 'H') continue;
      if (h.expMax < input.wallCall - skewMs) must.push(id);
      else if (h.expMin <= input.wallReturn + skewMs) may.push([id, h.expMin]);
    }
    if (must.length === 0 && may.length === 0) return [s];
    const base = clone(s);
    for (const id of must.sort((a, b) => (s.holds[a]!.expMax - s.holds[b]!.expMax) || (a < b ? -1 : 1))) settle(base, id, 'E');
    const out = [base];
    may.sort((a, b) => a[1] - b[1] || (a[0] < b[0] ? -1 : 1));
    let current = base;
    for (const [id] of may) {
      current = clone(current);
      settle(current, id, 'E');
      out.push(current);
    }
    return out;
  };

  /**
   * Runs one operation on a (cloned, mutable) state. `out` is the observed output (undefined when
   * unknown): it supplies what the model cannot know (a new reservation id, the expiry meterd set).
   */
  const exec = (s: PoolState, input: ModelInput, out: OpOutput | undefined): Expected => {
    const op = input.op;
    switch (op.kind) {
      case 'reserve': {
        const key = `${op.account}/${op.requestId}`;
        const fp = `${op.credits}/${op.ttlSeconds}`;
        const bound = s.reqs[key];
        if (bound !== undefined) {
          let h = s.holds[bound];
          if (!h) throw new Impossible(`request ${key} bound to a forgotten reservation`);
          if (h.fp !== fp) return { ok: false, reason: 'IDEMPOTENCY_KEY_REUSED' };
          let id = bound;
          if (out?.ok && out.kind === 'reserve') {
            if (bound.startsWith('?')) {
              // The unknown reserve's id, learnt now.
              if (s.holds[out.reservationId]) throw new Impossible('reservation id reused');
              id = out.reservationId;
              holdsOf(s)[id] = h;
              delete holdsOf(s)[bound];
              reqsOf(s)[key] = id;
            }
            h = editHold(s, id);
            if (h.expMin !== h.expMax && out.expiresAtMs >= h.expMin) {
              h.expMin = out.expiresAtMs;
              h.expMax = out.expiresAtMs;
            }
          }
          return { ok: true, out: { ok: true, kind: 'reserve', reservationId: id, held: h.held, expiresAtMs: h.expMax, replayed: true, balance: view(s) } };
        }
        if (op.credits > available(s)) return { ok: false, reason: 'INSUFFICIENT_CREDITS' };
        const { portions } = take(s, op.credits);
        s.held += op.credits;
        const known = out?.ok === true && out.kind === 'reserve';
        const id = known ? out.reservationId : `?${key}`;
        if (s.holds[id]) throw new Impossible('reservation id reused');
        const exp = known ? out.expiresAtMs : input.wallCall + op.ttlSeconds * 1000;
        holdsOf(s)[id] = {
          st: 'H', account: op.account, held: op.credits, portions, expMin: exp, expMax: known ? exp : Infinity, fp, exts: {},
          charged: 0, overage: 0, shortfall: 0, released: 0, cportions: [], refunded: 0, refunds: {}, orphan: false,
        };
        reqsOf(s)[key] = id;
        return { ok: true, out: { ok: true, kind: 'reserve', reservationId: id, held: op.credits, expiresAtMs: exp, replayed: false, balance: view(s) } };
      }
      case 'commit': {
        const h0 = s.holds[op.reservationId];
        if (!h0) return { ok: false, reason: 'RESERVATION_NOT_FOUND' };
        if (h0.st === 'C') {
          return { ok: true, out: { ok: true, kind: 'commit', charged: h0.charged, overage: h0.overage, shortfall: h0.shortfall, released: h0.released, replayed: true, balance: view(s) } };
        }
        if (h0.st !== 'H') return { ok: false, reason: notHeldReason(h0.st) };
        const h = editHold(s, op.reservationId);
        const cost = op.credits ?? h.held;
        const [charged, back] = splitPortions(h.portions, cost);
        giveBack(s, back, false);
        let shortfall = 0;
        if (cost > h.held) {
          const more = take(s, cost - h.held);
          charged.push(...more.portions);
          shortfall = more.left;
        }
        s.held -= h.held;
        h.st = 'C';
        h.charged = sumPortions(charged);
        h.overage = sumPortions(charged, 'ovg');
        h.shortfall = shortfall;
        h.released = sumPortions(back);
        h.cportions = charged;
        return { ok: true, out: { ok: true, kind: 'commit', charged: h.charged, overage: h.overage, shortfall, released: h.released, replayed: false, balance: view(s) } };
      }
      case 'release': {
        const h = s.holds[op.reservationId];
        if (!h) return { ok: false, reason: 'RESERVATION_NOT_FOUND' };
        if (h.st === 'R') return { ok: true, out: { ok: true, kind: 'release', released: h.released, replayed: true, balance: view(s) } };
        if (h.st !== 'H') return { ok: false, reason: notHeldReason(h.st) };
        settle(s, op.reservationId, 'R');
        return { ok: true, out: { ok: true, kind: 'release', released: h.held, replayed: false, balance: view(s) } };
      }
      case 'extend': {
        const h0 = s.holds[op.reservationId];
        if (!h0) return { ok: false, reason: 'RESERVATION_NOT_FOUND' };
        if (h0.st !== 'H') return { ok: false, reason: notHeldReason(h0.st) };
        const earlier = op.additional > 0 ? h0.exts[op.requestId] : undefined;
        if (earlier !== undefined && earlier !== op.additional) return { ok: false, reason: 'IDEMPOTENCY_KEY_REUSED' };
        const h = editHold(s, op.reservationId);
        const replayed = earlier !== undefined;
        if (op.additional > 0 && !replayed) {
          if (op.additional > available(s)) return { ok: false, reason: 'INSUFFICIENT_CREDITS' };
          h.portions.push(...take(s, op.additional).portions);
          h.held += op.additional;
          s.held += op.additional;
          h.exts[op.requestId] = op.additional;
        }
        if (op.ttlSeconds > 0 && !replayed) {
          if (out?.ok && out.kind === 'extend') {
            h.expMin = out.expiresAtMs;
            h.expMax = out.expiresAtMs;
          } else {
            h.expMin = Math.min(h.expMin, input.wallCall + op.ttlSeconds * 1000);
            h.expMax = Infinity;
          }
        }
        return { ok: true, out: { ok: true, kind: 'extend', held: h.held, expiresAtMs: h.expMax, replayed, balance: view(s) } };
      }
      case 'grant': {
        const seen = s.grants[op.grantId];
        if (seen !== undefined && seen !== op.credits) return { ok: false, reason: 'IDEMPOTENCY_KEY_REUSED' };
        if (seen === undefined) {
          s.pack += op.credits;
          grantsOf(s)[op.grantId] = op.credits;
        }
        return { ok: true, out: { ok: true, kind: 'grant', balance: view(s) } };
      }
      case 'changePlan': {
        if (op.plan === s.plan) {
          s.pending = '';
        } else if (planOf(op.plan).monthly > s.allowTotal) {
          const plan = planOf(op.plan);
          s.plan = op.plan;
          s.pending = '';
          s.allowTotal = plan.monthly;
          s.allow = plan.monthly;
          s.ovgLimit = plan.overageLimit;
          s.ae += 1;
        } else {
          s.pending = op.plan;
        }
        return { ok: true, out: { ok: true, kind: 'changePlan', plan: s.plan, pendingPlan: s.pending } };
      }
      case 'refund': {
        const h0 = s.holds[op.reservationId];
        if (!h0) return { ok: false, reason: 'RESERVATION_NOT_FOUND' };
        if (h0.st !== 'C') return { ok: false, reason: 'RESERVATION_NOT_COMMITTED' };
        const earlier = h0.refunds[op.refundId];
        if (earlier !== undefined) {
          if (op.credits === undefined || op.credits === earlier) return { ok: true, out: { ok: true, kind: 'refund', balance: view(s) } };
          return { ok: false, reason: 'IDEMPOTENCY_KEY_REUSED' };
        }
        const refundable = h0.charged - h0.refunded;
        const amount = op.credits ?? refundable;
        if (amount > refundable || amount === 0) return { ok: false, reason: 'REFUND_EXCEEDS_CHARGE' };
        const h = editHold(s, op.reservationId);
        const back: Portion[] = [];
        let left = amount;
        for (let i = h.cportions.length - 1; i >= 0; i--) {
          const p = h.cportions[i] as Portion;
          const n = Math.min(left, p.n);
          if (n > 0) {
            back.push({ ...p, n });
            h.cportions[i] = { ...p, n: p.n - n };
            left -= n;
          }
        }
        h.cportions = h.cportions.filter((p) => p.n > 0);
        giveBack(s, back, true);
        h.refunded += amount;
        h.refunds[op.refundId] = amount;
        return { ok: true, out: { ok: true, kind: 'refund', balance: view(s) } };
      }
      case 'balance':
        return { ok: true, out: { ok: true, kind: 'balance', balance: view(s) } };
    }
  };

  const sameBalance = (a: BalanceOut | undefined, b: BalanceOut | undefined) => a === undefined || b === undefined
    || (a.available === b.available && a.held === b.held && a.allowance === b.allowance && a.pack === b.pack && a.overageUsed === b.overageUsed);

  /**
   * Does the observed output match the expected one? The client retries UNAVAILABLE by itself with
   * the same ids, so one recorded operation may have run, lost its reply, and been answered by its
   * replay: `replayed` true where the model ran it fresh is fine, but then the balance in the reply
   * was read at the replay, later than the operation took effect, and is not compared.
   */
  const matches = (expected: Expected, out: OpOutput): boolean => {
    if (!expected.ok) return !out.ok && out.reason === expected.reason;
    const e = expected.out;
    if (!out.ok || !e.ok || out.kind !== e.kind) return false;
    const replayOk = (o: boolean, x: boolean) => o === x || (o && !x);
    const balanceOk = (o: { replayed: boolean; balance: BalanceOut | undefined }, x: { replayed: boolean; balance: BalanceOut | undefined }) =>
      (o.replayed && !x.replayed) || sameBalance(o.balance, x.balance);
    switch (e.kind) {
      case 'reserve':
        return out.kind === 'reserve' && out.reservationId === e.reservationId && out.held === e.held && replayOk(out.replayed, e.replayed)
          && (e.expiresAtMs === Infinity || out.expiresAtMs === e.expiresAtMs) && balanceOk(out, e);
      case 'commit':
        return out.kind === 'commit' && out.charged === e.charged && out.overage === e.overage && out.shortfall === e.shortfall
          && out.released === e.released && replayOk(out.replayed, e.replayed) && balanceOk(out, e);
      case 'release':
        return out.kind === 'release' && out.released === e.released && replayOk(out.replayed, e.replayed) && balanceOk(out, e);
      case 'extend':
        return out.kind === 'extend' && out.held === e.held && replayOk(out.replayed, e.replayed) && balanceOk(out, e);
      case 'changePlan':
        return out.kind === 'changePlan' && out.plan === e.plan && out.pendingPlan === e.pendingPlan;
      default:
        return 'balance' in out && sameBalance(out.balance, e.balance);
    }
  };

  const forget = (s: PoolState, ids: string[]): PoolState => {
    let copy: PoolState | undefined;
    for (const name of ids) {
      if (name.startsWith('g:')) {
        const grantId = name.slice(2);
        if (s.grants[grantId] === undefined) continue;
        copy ??= clone(s);
        delete grantsOf(copy)[grantId];
        continue;
      }
      const id = name.slice(2);
      const h = s.holds[id];
      if (!h) continue;
      copy ??= clone(s);
      if (h.st === 'H') holdsOf(copy)[id] = { ...h, orphan: true };
      else dropHold(copy, id);
    }
    return copy ?? s;
  };

  // Keys of maps no longer written (the step that made them has returned), and of holds (copied on write).
  const keyCache = new WeakMap<object, string>();
  const cachedKey = (of: object, compute: () => string): string => {
    let k = keyCache.get(of);
    if (k === undefined) {
      k = compute();
      keyCache.set(of, k);
    }
    return k;
  };
  const portionsKey = (ps: Portion[]) => ps.map((p) => `${p.b}${p.tag}:${p.n}`).join(',');
  const holdKey = (id: string, h: HoldS) => cachedKey(h, () => `${id}|${h.st}|${h.held}|${portionsKey(h.portions)}|${h.expMin}|${h.expMax}|${h.fp}|`
    + `${Object.entries(h.exts).sort().join(',')}|${h.charged}/${h.overage}/${h.shortfall}/${h.released}|${portionsKey(h.cportions)}|${h.refunded}|`
    + `${Object.entries(h.refunds).sort().join(',')}|${h.orphan ? 'o' : ''}`);

  return {
    init() {
      const plan = planOf(initialPlan);
      return {
        plan: initialPlan, pending: '', allowTotal: plan.monthly, allow: plan.monthly, ae: 1, ovgLimit: plan.overageLimit, ovg: 0,
        pack: 0, held: 0, holds: {}, reqs: {}, grants: {},
      };
    },
    step(state, input, output) {
      const next: PoolState[] = [];
      for (const before of expiries(state, input)) {
        try {
          const s = clone(before);
          const expected = exec(s, input, output);
          if (output === undefined) {
            // Unknown: it happened (with whatever result) or it did not.
            next.push(forget(before, input.forget));
            if (expected.ok) next.push(forget(s, input.forget));
          } else if (matches(expected, output)) {
            next.push(forget(expected.ok ? s : before, input.forget));
          }
        } catch (err) {
          if (!(err instanceof Impossible)) throw err;
        }
      }
      return next;
    },
    key(s) {
      const holds = cachedKey(s.holds, () => Object.keys(s.holds).sort().map((id) => holdKey(id, s.holds[id] as HoldS)).join(';'));
      const reqs = cachedKey(s.reqs, () => Object.entries(s.reqs).sort().join(','));
      const grants = cachedKey(s.grants, () => Object.entries(s.grants).sort().join(','));
      return `${s.plan}|${s.pending}|${s.allowTotal}|${s.allow}|${s.ae}|${s.ovgLimit}|${s.ovg}|${s.pack}|${s.held}#${holds}#${reqs}#${grants}`;
    },
    describe(input, output) {
      return `${JSON.stringify(input.op)} @${input.wallCall}..${input.wallReturn} → ${output === undefined ? 'unknown' : JSON.stringify(output)}`;
    },
  };
}
