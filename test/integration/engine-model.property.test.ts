import { randomBytes } from 'node:crypto';
import fc from 'fast-check';
import { Redis } from 'ioredis';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, it } from 'vitest';
import { PARTITION_COUNT } from '../../src/config/limits.js';
import { parseProductConfig, type ProductConfig } from '../../src/config/product-config.js';
import { ManualClock } from '../../src/domain/clock.js';
import {
  parseChangePlan, parseCommit, parseExtend, parseGrant, parseRelease, parseReserve, parseUpsertAccount, type GrantKindName,
} from '../../src/domain/commands.js';
import { DomainError } from '../../src/domain/errors.js';
import { periodBounds } from '../../src/domain/periods.js';
import type { BalanceResult, ReservationResult, ReservationStateName } from '../../src/domain/types.js';
import { ExpirySweeper } from '../../src/redis/expiry-sweeper.js';
import { homePartition, partitionPrefix } from '../../src/redis/keys.js';
import { RedisCreditStore } from '../../src/redis/redis-credit-store.js';
import { deleteKeys, LOCAL_REDIS, TEST_EPOCH_MS, TEST_PRODUCT } from '../support/meterd.js';
import { notHeldReason, splitPortions, sumPortions, type HoldState } from '../support/model-portions.js';

/**
 * Model-based property test of the credit engine: random sequences of reserve / commit / release /
 * extend / clock advances / grants / plan changes / sweeps / retries run against the real Lua engine
 * (through RedisCreditStore, on the machine's Redis) and against a small reference model written
 * here from the engine's rules. After every step the test checks:
 *  - the outcome (ok, or which refusal) and every amount in the reply equal the model's;
 *  - the pool's stored state (read raw, without the lazy upkeep a script call would do) equals the
 *    model's — so an untouched account and the sweeper's partial upkeep are checked too — and no
 *    stored amount is negative; `held` is the sum of the model's open holds;
 *  - conservation per account: granted − vanished = buckets + held + charged − overage used.
 *
 * A failure names the step, the field, the engine's and the model's values, and prints the trace of
 * the shrunk sequence. Reproduce it with FC_SEED=<seed> (and FC_PATH=<path> to jump to the shrunk
 * case); FC_RUNS sets the number of runs, FC_STATS=1 prints how often each path was taken.
 *
 * What the model assumes (true within one run of at most ~45 steps on a fresh key prefix):
 *  - request, grant and extension ids are remembered for the whole run (their Redis TTLs are in real
 *    time, days long, while the run takes milliseconds however far the ManualClock moves);
 *  - no pool has more than LAZY_EXPIRY_BATCH_MAX (32) holds due at once, so one touch expires them all;
 *  - accounts are roots (no spaces), without adjustments or refunds; promos always have an expiry.
 */

const REDIS_URL = LOCAL_REDIS.url ?? 'redis://127.0.0.1:6379';
const SECOND_MS = 1000;
const HOUR_MS = 3600 * SECOND_MS;
const DAY_MS = 24 * HOUR_MS;
const STEPS_MAX = 40;
const NUM_RUNS = Number(process.env.FC_RUNS ?? 200);

/** With FC_STATS=1: how often each outcome and model event happened (to tune the generators). */
const stats = new Map<string, number>();
function count(event: string): void {
  if (process.env.FC_STATS) stats.set(event, (stats.get(event) ?? 0) + 1);
}

// ---------------------------------------------------------------------------------------------
// Product: the plans and features the model uses.
// ---------------------------------------------------------------------------------------------

/**
 * TEST_PRODUCT plus one plan with Metered's allowance and no overage: no two TEST_PRODUCT plans have
 * the same monthly credits, and a change between such plans is not an upgrade (it waits).
 */
const PRODUCT: ProductConfig = parseProductConfig({
  plans: [
    ...[...TEST_PRODUCT.plans.values()].map((p) => ({
      id: p.id, monthly_credits: Number(p.monthlyCredits), price_cents: p.priceCents, overage_limit: Number(p.overageLimit),
    })),
    { id: 'metered_flat', monthly_credits: Number(TEST_PRODUCT.plans.get('metered')?.monthlyCredits), price_cents: 900 },
  ],
  features: [...TEST_PRODUCT.features.values()].map((f) => (f.perUnits > 0
    ? { id: f.id, credits: f.credits, per_units: f.perUnits, min_credits: f.minCredits }
    : { id: f.id, credits: f.credits })),
});

const PLAN_IDS = ['free', 'starter', 'metered', 'metered_flat', 'jobs_pro', 'jobs_free'] as const;
type PlanId = (typeof PLAN_IDS)[number];

function planOf(id: string): { monthly: number; overageLimit: number } {
  const plan = PRODUCT.plans.get(id);
  if (!plan) throw new Error(`plan ${id} is not in the test product`);
  return { monthly: Number(plan.monthlyCredits), overageLimit: Number(plan.overageLimit) };
}

/** Reserves with explicit credits use a 1-credit feature; the others use a flat-priced one. */
const CREDITS_FEATURE = 'content_rewrite';
const FLAT_FEATURE = 'image_1k';
const FLAT_FEATURE_CREDITS = (() => {
  const feature = PRODUCT.features.get(FLAT_FEATURE);
  if (!feature || feature.perUnits !== 0) throw new Error(`${FLAT_FEATURE} must be a flat price`);
  return feature.credits;
})();

// ---------------------------------------------------------------------------------------------
// The reference model.
// ---------------------------------------------------------------------------------------------

type Bucket = 'trial' | 'allow' | 'promo' | 'pack' | 'ovg';
/** Where held credits came from; tag = allowance epoch, grant id, or period start (overage). */
interface Portion { b: Bucket; tag: string; n: number }
interface PromoGrant { id: string; expiresAt: number; left: number }

interface Pool {
  id: string;
  anchor: number;
  plan: string;
  nextPlan: string;
  ps: number;
  pe: number;
  allowTotal: number;
  allow: number;
  /** Allowance epoch: a new period or an upgrade starts a new one; older held allowance is gone. */
  ae: number;
  ovgLimit: number;
  ovg: number;
  trial: number;
  trialEnd: number;
  pack: number;
  promos: PromoGrant[];
  held: number;
  // Flows, for conservation.
  granted: number;
  vanished: number;
  /** Overage used in earlier periods (reset at roll-over, still part of what was charged). */
  overageRetired: number;
  charged: number;
}

const STATE_NAMES: Record<HoldState, ReservationStateName> = { H: 'HELD', C: 'COMMITTED', R: 'RELEASED', E: 'EXPIRED' };

interface ReserveRequest { account: number; requestId: string; credits: number | undefined; ttlSeconds: number }
interface ExtendRequest { hold: Hold; ttlSeconds: number; additional: number; requestId: string }
interface GrantRequest { account: number; kind: GrantKindName; credits: number; grantId: string; expiresAt: number | undefined }

interface Hold {
  label: string;
  id: string;
  pool: Pool;
  request: ReserveRequest;
  held: number;
  portions: Portion[];
  exp: number;
  state: HoldState;
  charged: number;
  overage: number;
  shortfall: number;
  released: number;
  /** Extension request id → the credits it added (a reuse with another amount is refused). */
  extensions: Map<string, number>;
  lastExtensionId: string;
}

interface BalanceView {
  available: number;
  held: number;
  allowanceRemaining: number;
  allowanceTotal: number;
  trialCredits: number;
  trialEndsAtMs: number;
  packCredits: number;
  grantCredits: number;
  overageUsed: number;
  overageLimit: number;
  periodStartMs: number;
  periodEndMs: number;
  plan: string;
  pendingPlan: string;
}

type Refusal = { ok: false; reason: string; available?: number };
type Expect<T> = ({ ok: true } & T) | Refusal;
const refused = (reason: string, available?: number): Refusal =>
  available === undefined ? { ok: false, reason } : { ok: false, reason, available };

interface HoldExpect { hold: Hold; replayed: boolean; balance: BalanceView }
interface CommitExpect {
  charged: number; overage: number; shortfall: number; released: number; replayed: boolean; balance: BalanceView;
}
interface ReleaseExpect { released: number; replayed: boolean; balance: BalanceView }

class Model {
  readonly holds: Hold[] = [];
  readonly requests: ReserveRequest[] = [];
  readonly grants: GrantRequest[] = [];
  private readonly bindings = new Map<string, Hold>();
  private readonly grantOps = new Map<string, string>();

  constructor(readonly pools: Pool[], public now: number) {}

  promoTotal(p: Pool): number {
    return p.promos.reduce((total, g) => total + g.left, 0);
  }

  available(p: Pool): number {
    const trial = p.trialEnd > this.now ? p.trial : 0;
    return trial + p.allow + this.promoTotal(p) + p.pack + Math.max(0, p.ovgLimit - p.ovg);
  }

  view(p: Pool): BalanceView {
    return {
      available: this.available(p),
      held: p.held,
      allowanceRemaining: p.allow,
      allowanceTotal: p.allowTotal,
      trialCredits: p.trialEnd > this.now ? p.trial : 0,
      trialEndsAtMs: p.trialEnd,
      packCredits: p.pack,
      grantCredits: this.promoTotal(p),
      overageUsed: p.ovg,
      overageLimit: p.ovgLimit,
      periodStartMs: p.ps,
      periodEndMs: p.pe,
      plan: p.plan,
      pendingPlan: p.nextPlan,
    };
  }

  // --- lazy upkeep: what every script does first to the pool it opens ---

  private startAllowance(p: Pool, planId: string): void {
    const plan = planOf(planId);
    p.vanished += p.allow;
    p.granted += plan.monthly;
    p.plan = planId;
    p.nextPlan = '';
    p.allowTotal = plan.monthly;
    p.allow = plan.monthly;
    p.ovgLimit = plan.overageLimit;
    p.ae += 1;
  }

  rollPeriod(p: Pool): void {
    if (this.now < p.pe) return;
    count(p.nextPlan !== '' ? 'model: roll-over to a pending plan' : 'model: roll-over');
    const { startMs, endMs } = periodBounds(p.anchor, this.now);
    this.startAllowance(p, p.nextPlan !== '' ? p.nextPlan : p.plan);
    p.overageRetired += p.ovg;
    p.ovg = 0;
    p.ps = startMs;
    p.pe = endMs;
  }

  private expireTrial(p: Pool): void {
    if (p.trial > 0 && p.trialEnd <= this.now) {
      count('model: trial ended with credits left');
      p.vanished += p.trial;
      p.trial = 0;
    }
  }

  private expirePromos(p: Pool): void {
    for (const g of p.promos.filter((g) => g.expiresAt <= this.now)) {
      count(g.left > 0 ? 'model: promo expired with credits left' : 'model: promo expired empty');
      p.vanished += g.left;
    }
    p.promos = p.promos.filter((g) => g.expiresAt > this.now);
  }

  touch(p: Pool): void {
    this.rollPeriod(p);
    this.expireTrial(p);
    this.expirePromos(p);
    for (const h of this.dueHolds().filter((h) => h.pool === p)) this.settle(h, 'E');
  }

  private dueHolds(): Hold[] {
    return this.holds.filter((h) => h.state === 'H' && h.exp <= this.now).sort((a, b) => a.exp - b.exp);
  }

  // --- moving credits ---

  /** Burn order: trial and allowance (soonest to end first), promos by soonest expiry, packs, overage room. */
  private take(p: Pool, amount: number): { portions: Portion[]; left: number } {
    const portions: Portion[] = [];
    let left = amount;
    const take = (b: Bucket, tag: string, have: number): number => {
      const n = Math.min(left, have);
      if (n <= 0) return 0;
      portions.push({ b, tag, n });
      left -= n;
      return n;
    };
    const takeTrial = () => {
      if (p.trialEnd > this.now) p.trial -= take('trial', '', p.trial);
    };
    const takeAllowance = () => {
      p.allow -= take('allow', String(p.ae), p.allow);
    };
    if (p.trialEnd <= p.pe) {
      takeTrial();
      takeAllowance();
    } else {
      takeAllowance();
      takeTrial();
    }
    const promos = [...p.promos].sort((a, b) => a.expiresAt - b.expiresAt || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
    for (const g of promos) g.left -= take('promo', g.id, g.left);
    p.pack -= take('pack', '', p.pack);
    const overage = take('ovg', String(p.ps), Math.max(0, p.ovgLimit - p.ovg));
    p.ovg += overage;
    return { portions, left };
  }

  /** Held credits go back to their bucket when it is still live; otherwise they vanish. */
  private giveBack(p: Pool, portions: Portion[]): void {
    for (const x of portions) {
      // A promo grant is live until upkeep removes it (the sweeper does not: see sweep()).
      const grant = x.b === 'promo' ? p.promos.find((g) => g.id === x.tag) : undefined;
      let returned = true;
      if (x.b === 'trial' && p.trialEnd > this.now) p.trial += x.n;
      else if (x.b === 'allow' && x.tag === String(p.ae)) p.allow += x.n;
      else if (grant) grant.left += x.n;
      else if (x.b === 'pack') p.pack += x.n;
      else if (x.b === 'ovg' && x.tag === String(p.ps)) p.ovg -= x.n;
      else returned = false;
      if (!returned) p.vanished += x.n;
      count(`model: ${x.b} portion back → ${returned ? 'returned' : 'vanished'}`);
    }
  }

  private settle(h: Hold, state: 'R' | 'E'): void {
    this.giveBack(h.pool, h.portions);
    h.pool.held -= h.held;
    h.state = state;
    h.released = h.held;
  }

  /** A reservation opened by id: its pool's upkeep, then the hold itself expires when due. */
  private openHold(h: Hold): void {
    this.touch(h.pool);
    if (h.state === 'H' && h.exp <= this.now) this.settle(h, 'E');
  }

  // --- operations ---

  reserve(req: ReserveRequest, newId: string, label: string): Expect<HoldExpect> {
    const p = this.pool(req.account);
    this.touch(p);
    const key = `${p.id}/${req.requestId}`;
    const bound = this.bindings.get(key);
    if (bound) {
      if (bound.request.credits !== req.credits || bound.request.ttlSeconds !== req.ttlSeconds) {
        return refused('IDEMPOTENCY_KEY_REUSED');
      }
      count(`model: reserve replayed (${bound.state})`);
      return { ok: true, hold: bound, replayed: true, balance: this.view(p) };
    }
    const cost = req.credits ?? FLAT_FEATURE_CREDITS;
    const available = this.available(p);
    if (cost > available) return refused('INSUFFICIENT_CREDITS', available);
    const { portions } = this.take(p, cost);
    count(`model: reserve took ${[...new Set(portions.map((x) => x.b))].join('+') || 'nothing'}`);
    p.held += cost;
    const hold: Hold = {
      label, id: newId, pool: p, request: req, held: cost, portions, exp: this.now + req.ttlSeconds * SECOND_MS,
      state: 'H', charged: 0, overage: 0, shortfall: 0, released: 0, extensions: new Map(), lastExtensionId: '',
    };
    this.holds.push(hold);
    this.bindings.set(key, hold);
    return { ok: true, hold, replayed: false, balance: this.view(p) };
  }

  commit(h: Hold, credits: number | undefined): Expect<CommitExpect> {
    const p = h.pool;
    this.openHold(h);
    if (h.state === 'C') {
      return {
        ok: true, charged: h.charged, overage: h.overage, shortfall: h.shortfall, released: h.released, replayed: true,
        balance: this.view(p),
      };
    }
    if (h.state !== 'H') return refused(notHeldReason(h.state));
    const cost = credits ?? h.held;
    const [charged, back] = splitPortions(h.portions, cost);
    this.giveBack(p, back);
    let shortfall = 0;
    if (cost > h.held) {
      const more = this.take(p, cost - h.held);
      charged.push(...more.portions);
      shortfall = more.left;
      count(shortfall > 0 ? 'model: commit above hold with shortfall' : 'model: commit above hold, all taken');
    }
    p.held -= h.held;
    h.state = 'C';
    h.charged = sumPortions(charged);
    h.overage = sumPortions(charged, 'ovg');
    if (h.overage > 0) count('model: commit charged overage');
    h.shortfall = shortfall;
    h.released = sumPortions(back);
    p.charged += h.charged;
    return {
      ok: true, charged: h.charged, overage: h.overage, shortfall, released: h.released, replayed: false, balance: this.view(p),
    };
  }

  release(h: Hold): Expect<ReleaseExpect> {
    this.openHold(h);
    if (h.state === 'R') return { ok: true, released: h.released, replayed: true, balance: this.view(h.pool) };
    if (h.state !== 'H') return refused(notHeldReason(h.state));
    this.settle(h, 'R');
    return { ok: true, released: h.released, replayed: false, balance: this.view(h.pool) };
  }

  extend(h: Hold, ttlMs: number, additional: number, requestId: string): Expect<HoldExpect> {
    if (additional === 0 && ttlMs === 0) return refused('INVALID_ARGUMENT'); // parseExtend; nothing runs
    const p = h.pool;
    this.openHold(h);
    if (h.state !== 'H') return refused(notHeldReason(h.state));
    let replayed = false;
    const earlier = h.extensions.get(requestId);
    if (additional > 0 && earlier !== undefined && earlier !== additional) return refused('IDEMPOTENCY_KEY_REUSED');
    if (additional > 0 && earlier !== undefined) {
      count('model: extend replayed');
      replayed = true;
    } else if (additional > 0) {
      const available = this.available(p);
      if (additional > available) return refused('INSUFFICIENT_CREDITS', available);
      h.portions.push(...this.take(p, additional).portions);
      h.held += additional;
      p.held += additional;
      h.extensions.set(requestId, additional);
    }
    if (ttlMs > 0 && !replayed) h.exp = this.now + ttlMs;
    return { ok: true, hold: h, replayed, balance: this.view(p) };
  }

  grant(req: GrantRequest): Expect<{ balance: BalanceView }> {
    if (req.expiresAt !== undefined && req.expiresAt <= this.now) return refused('INVALID_ARGUMENT'); // parseGrant
    const p = this.pool(req.account);
    this.touch(p);
    const fingerprint = `${req.kind}/${req.credits}/${req.expiresAt ?? ''}`;
    const key = `${p.id}/${req.grantId}`;
    const seen = this.grantOps.get(key);
    if (seen !== undefined && seen !== fingerprint) return refused('IDEMPOTENCY_KEY_REUSED');
    if (seen === undefined) {
      if (req.kind === 'PACK') {
        p.pack += req.credits;
      } else {
        if (req.expiresAt === undefined) throw new Error('the model gives every promo an expiry');
        p.promos.push({ id: req.grantId, expiresAt: req.expiresAt, left: req.credits });
      }
      p.granted += req.credits;
      this.grantOps.set(key, fingerprint);
    }
    return { ok: true, balance: this.view(p) };
  }

  changePlan(account: number, planId: string): Expect<{ plan: string; pendingPlan: string }> {
    const p = this.pool(account);
    this.touch(p);
    if (planId === p.plan) p.nextPlan = '';
    else if (planOf(planId).monthly > p.allowTotal) {
      count('model: upgrade');
      this.startAllowance(p, planId);
    } else {
      count('model: downgrade pending');
      p.nextPlan = planId;
    }
    return { ok: true, plan: p.plan, pendingPlan: p.nextPlan };
  }

  /** The sweeper: every due hold, with only a roll-over of its pool first (no promo/trial upkeep). */
  sweep(): number {
    const due = this.dueHolds();
    count(`model: sweep expired ${due.length > 0 ? 'some' : 'none'}`);
    for (const h of due) {
      this.rollPeriod(h.pool);
      this.settle(h, 'E');
    }
    return due.length;
  }

  balance(account: number): BalanceView {
    const p = this.pool(account);
    this.touch(p);
    return this.view(p);
  }

  pool(account: number): Pool {
    const p = this.pools[account % this.pools.length];
    if (!p) throw new Error('no pool');
    return p;
  }
}

// ---------------------------------------------------------------------------------------------
// Generated scenarios and operations.
// ---------------------------------------------------------------------------------------------

interface AccountSpec { plan: PlanId; anchor: number; trial: { credits: number; endsInMs: number } | undefined }
/** The first account's partition (often the first or last); the second shares it or not. */
interface Scenario { accounts: AccountSpec[]; partition: number; samePartition: boolean }

type Op =
  | { kind: 'reserve'; account: number; credits: number | 'image_1k' | 'available' | 'available+1'; ttlSeconds: number }
  | { kind: 'retryReserve'; pick: number; variant: 'same' | 'otherCredits' | 'otherTtl' }
  | { kind: 'commit'; pick: number; open: boolean; mode: 'default' | 'less' | 'equal' | 'more'; amount: number }
  | { kind: 'release'; pick: number; open: boolean }
  | { kind: 'extend'; pick: number; open: boolean; ttlSeconds: number; additional: number; reuseRequestId: boolean }
  | { kind: 'retryExtend'; pick: number }
  | { kind: 'advance'; ms: number }
  | { kind: 'advanceTo'; target: 'periodEnd' | 'holdExpiry' | 'promoExpiry' | 'trialEnd'; pick: number; offsetMs: number }
  | { kind: 'grant'; account: number; grantKind: GrantKindName; credits: number; expiry: { days: number } | { seconds: number } }
  | { kind: 'retryGrant'; pick: number; change: boolean }
  | { kind: 'changePlan'; account: number; plan: PlanId }
  | { kind: 'sweep' }
  | { kind: 'balance'; account: number };

const accountIndex = fc.nat({ max: 1 });
const pick = fc.nat({ max: 999 });
const mostlyOpen = fc.nat({ max: 9 }).map((n) => n < 8);
const ttlSeconds = fc.integer({ min: 10, max: 600 });

const accountSpecArb: fc.Arbitrary<AccountSpec> = fc.record({
  // Metered (the only plan with overage) most often; the small plans run out, Starter rarely does.
  plan: fc.constantFrom<PlanId>('metered', 'metered', 'metered', 'metered_flat', 'free', 'free', 'jobs_free', 'jobs_pro', 'starter'),
  anchor: fc.oneof(
    fc.constant(TEST_EPOCH_MS),
    fc.integer({ min: 0, max: 60 * DAY_MS }).map((back) => TEST_EPOCH_MS - back),
    fc.integer({ min: 1, max: 40 * DAY_MS }).map((ahead) => TEST_EPOCH_MS + ahead),
    // Month-end anchors: periods clamp to short months and come back to the 29th-31st.
    fc.constantFrom(Date.UTC(2025, 9, 31, 23, 30), Date.UTC(2024, 0, 30, 6, 0), Date.UTC(2025, 11, 29, 12, 0)),
  ),
  trial: fc.option(
    fc.record({ credits: fc.integer({ min: 1, max: 100 }), endsInMs: fc.integer({ min: HOUR_MS, max: 50 * DAY_MS }) }),
    { nil: undefined, freq: 3 },
  ),
});

const scenarioArb: fc.Arbitrary<Scenario> = fc.record({
  accounts: fc.array(accountSpecArb, { minLength: 1, maxLength: 2 }),
  partition: fc.oneof(fc.constantFrom(0, PARTITION_COUNT - 1), fc.nat({ max: PARTITION_COUNT - 1 })),
  samePartition: fc.boolean(),
});

const opArb: fc.Arbitrary<Op> = fc.oneof(
  {
    weight: 8,
    arbitrary: fc.record({
      kind: fc.constant('reserve' as const),
      account: accountIndex,
      credits: fc.oneof(
        { weight: 12, arbitrary: fc.integer({ min: 0, max: 120 }) },
        { weight: 2, arbitrary: fc.constant('image_1k' as const) },
        // Exactly what is available (fits), and one more (refused).
        { weight: 1, arbitrary: fc.constantFrom('available' as const, 'available+1' as const) },
      ),
      ttlSeconds,
    }),
  },
  {
    weight: 2,
    arbitrary: fc.record({
      kind: fc.constant('retryReserve' as const), pick, variant: fc.constantFrom('same' as const, 'otherCredits' as const, 'otherTtl' as const),
    }),
  },
  {
    weight: 6,
    arbitrary: fc.record({
      kind: fc.constant('commit' as const), pick, open: mostlyOpen,
      mode: fc.constantFrom('default' as const, 'less' as const, 'equal' as const, 'more' as const),
      amount: fc.integer({ min: 0, max: 150 }),
    }),
  },
  { weight: 3, arbitrary: fc.record({ kind: fc.constant('release' as const), pick, open: mostlyOpen }) },
  {
    weight: 4,
    arbitrary: fc.record({
      kind: fc.constant('extend' as const), pick, open: mostlyOpen,
      ttlSeconds: fc.oneof({ weight: 1, arbitrary: fc.constant(0) }, { weight: 2, arbitrary: ttlSeconds }),
      additional: fc.oneof({ weight: 1, arbitrary: fc.constant(0) }, { weight: 2, arbitrary: fc.integer({ min: 1, max: 60 }) }),
      reuseRequestId: fc.boolean(),
    }),
  },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('retryExtend' as const), pick }) },
  {
    weight: 5,
    arbitrary: fc.record({
      kind: fc.constant('advance' as const),
      ms: fc.oneof(
        { weight: 3, arbitrary: fc.integer({ min: 1, max: 120 }).map((s) => s * SECOND_MS) },
        { weight: 3, arbitrary: fc.integer({ min: 60, max: 3600 }).map((s) => s * SECOND_MS) },
        { weight: 2, arbitrary: fc.integer({ min: 1, max: 72 }).map((h) => h * HOUR_MS) },
        { weight: 2, arbitrary: fc.integer({ min: 1, max: 40 * DAY_MS }) },
      ),
    }),
  },
  {
    weight: 4,
    arbitrary: fc.record({
      kind: fc.constant('advanceTo' as const),
      target: fc.constantFrom('periodEnd' as const, 'holdExpiry' as const, 'promoExpiry' as const, 'trialEnd' as const),
      pick, offsetMs: fc.constantFrom(-1, 0, 1),
    }),
  },
  {
    weight: 4,
    arbitrary: fc.record({
      kind: fc.constant('grant' as const), account: accountIndex,
      grantKind: fc.constantFrom('PACK' as const, 'PROMO' as const, 'PROMO' as const),
      credits: fc.integer({ min: 1, max: 200 }),
      // Whole days from the start (so grants often share an expiry), or seconds from now (often
      // within a hold's lifetime, so held promo credits outlive their grant).
      expiry: fc.oneof(
        fc.record({ days: fc.integer({ min: 1, max: 70 }) }),
        fc.record({ seconds: fc.integer({ min: 30, max: 900 }) }),
        fc.record({ seconds: fc.integer({ min: 60, max: 45 * 86_400 }) }),
      ),
    }),
  },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('retryGrant' as const), pick, change: fc.boolean() }) },
  { weight: 3, arbitrary: fc.record({ kind: fc.constant('changePlan' as const), account: accountIndex, plan: fc.constantFrom(...PLAN_IDS) }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('sweep' as const) }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('balance' as const), account: accountIndex }) },
);

// ---------------------------------------------------------------------------------------------
// Running one sequence against the engine and the model.
// ---------------------------------------------------------------------------------------------

type Attempt<T> = { ok: true; value: T } | { ok: false; reason: string; metadata: Record<string, string> };

async function attempt<T>(call: () => Promise<T>): Promise<Attempt<T>> {
  try {
    return { ok: true, value: await call() };
  } catch (err) {
    if (err instanceof DomainError) return { ok: false, reason: err.reason, metadata: err.metadata };
    throw err;
  }
}

class Mismatch extends Error {
  override name = 'Mismatch';
}

/** The pool as stored in Redis, read without running any script (so without lazy upkeep). */
interface StoredPool {
  fields: Record<string, string>;
  promos: Array<[string, number]>;
  promoAmounts: Record<string, string>;
  holds: Array<[string, number]>;
}

function pairs(flat: string[]): Array<[string, number]> {
  const out: Array<[string, number]> = [];
  for (let i = 0; i + 1 < flat.length; i += 2) out.push([flat[i] as string, Number(flat[i + 1])]);
  return out;
}

function asRecord(value: unknown): Record<string, string> {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new Error('expected a hash');
  return value as Record<string, string>;
}

function asList(value: unknown): string[] {
  if (!Array.isArray(value)) throw new Error('expected a list');
  return value.map(String);
}

let keyPrefixRoot = '';
let runSeq = 0;

function accountIds(scenario: Scenario): [string, string] {
  let first = '';
  for (let i = 0; first === ''; i++) if (homePartition(`acct-${i}`) === scenario.partition) first = `acct-${i}`;
  for (let i = 0; ; i++) {
    const second = `acct-${scenario.partition}-${i}`;
    if ((homePartition(second) === scenario.partition) === scenario.samePartition) return [first, second];
  }
}

class Run {
  private readonly trace: string[] = [];
  private step = 0;
  private seq = 0;
  private readonly extendsSent: ExtendRequest[] = [];
  /** What the engine said each first commit charged, per pool (for conservation). */
  private readonly reportedCharged = new Map<string, number>();

  private constructor(
    private readonly redis: Redis,
    private readonly keyPrefix: string,
    private readonly store: RedisCreditStore,
    private readonly clock: ManualClock,
    private readonly sweeper: ExpirySweeper,
    private readonly model: Model,
  ) {}

  static async start(redis: Redis, scenario: Scenario): Promise<Run> {
    const keyPrefix = `${keyPrefixRoot}-${++runSeq}`;
    const clock = new ManualClock(TEST_EPOCH_MS);
    const store = new RedisCreditStore(redis, { keyPrefix, product: PRODUCT, clock });
    const sweeper = new ExpirySweeper(store, 1000, pino({ level: 'silent' }));
    const ids = accountIds(scenario);
    const pools: Pool[] = [];
    for (const [i, spec] of scenario.accounts.entries()) {
      const accountId = ids[i] as string;
      const trialEnd = spec.trial ? TEST_EPOCH_MS + spec.trial.endsInMs : 0;
      const account = await store.upsertAccount(parseUpsertAccount(PRODUCT, {
        accountId, plan: spec.plan, billingAnchor: new Date(spec.anchor), parentId: '',
        trialCredits: BigInt(spec.trial?.credits ?? 0), trialEndsAt: spec.trial ? new Date(trialEnd) : undefined,
        lowBalanceThreshold: 0n, lowBalancePercent: 0,
      }));
      if (account.plan !== spec.plan || account.billingAnchorMs !== spec.anchor || account.trialEndsAtMs !== trialEnd) {
        throw new Mismatch(`account ${accountId} was not created as asked: ${JSON.stringify(account, (_, v: unknown) => (typeof v === 'bigint' ? String(v) : v))}`);
      }
      const plan = planOf(spec.plan);
      const { startMs, endMs } = periodBounds(spec.anchor, TEST_EPOCH_MS);
      const trial = spec.trial?.credits ?? 0;
      pools.push({
        id: accountId, anchor: spec.anchor, plan: spec.plan, nextPlan: '', ps: startMs, pe: endMs,
        allowTotal: plan.monthly, allow: plan.monthly, ae: 1, ovgLimit: plan.overageLimit, ovg: 0,
        trial, trialEnd, pack: 0, promos: [], held: 0,
        granted: plan.monthly + trial, vanished: 0, overageRetired: 0, charged: 0,
      });
    }
    const run = new Run(redis, keyPrefix, store, clock, sweeper, new Model(pools, TEST_EPOCH_MS));
    run.trace.push(`accounts: ${scenario.accounts.map((s, i) => `#${i} ${ids[i]} ${s.plan} anchor ${new Date(s.anchor).toISOString()}${s.trial ? ` trial ${s.trial.credits} until +${s.trial.endsInMs}ms` : ''}`).join('; ')}`);
    await run.checkStored();
    return run;
  }

  private fail(problem: string): never {
    throw new Mismatch(`step ${this.step}: ${problem}\n--- trace (t = ms since ${new Date(TEST_EPOCH_MS).toISOString()}) ---\n${this.trace.join('\n')}`);
  }

  private eq(what: string, engine: bigint | number | string | boolean | undefined, model: number | string | boolean): void {
    const value = typeof engine === 'bigint' ? Number(engine) : engine;
    if (value !== model) this.fail(`${what}: engine ${String(engine)}, model ${String(model)}`);
  }

  private note(text: string): void {
    this.trace.push(`#${this.step} t=${this.clock.nowMs() - TEST_EPOCH_MS} ${text}`);
  }

  /** Outcome equality; returns true when both succeeded. */
  private sameOutcome<T, U>(what: string, got: Attempt<T>, want: Expect<U>): got is { ok: true; value: T } {
    const gotText = got.ok ? 'ok' : `${got.reason}${got.metadata.available !== undefined ? ` (available ${got.metadata.available})` : ''}`;
    const wantText = want.ok ? 'ok' : `${want.reason}${want.available !== undefined ? ` (available ${want.available})` : ''}`;
    this.note(`${what} → ${gotText}${gotText === wantText ? '' : ` [model: ${wantText}]`}`);
    count(`${what.split(' ')[0]} → ${want.ok ? 'ok' : want.reason}`);
    if (got.ok !== want.ok || (!got.ok && !want.ok && got.reason !== want.reason)) {
      this.fail(`${what}: engine ${gotText}, model ${wantText}`);
    }
    if (!got.ok && !want.ok && want.available !== undefined) this.eq(`${what}: available in the refusal`, got.metadata.available, String(want.available));
    return got.ok;
  }

  private noNegative(what: string, value: unknown): void {
    if (typeof value === 'bigint' && value < 0n) this.fail(`${what} is negative: ${value}`);
    if (typeof value === 'object' && value !== null) {
      for (const [key, inner] of Object.entries(value)) this.noNegative(`${what}.${key}`, inner);
    }
  }

  private sameBalance(what: string, engine: BalanceResult, model: BalanceView, poolId: string): void {
    this.noNegative(what, engine);
    this.eq(`${what}.poolAccountId`, engine.poolAccountId, poolId);
    for (const key of Object.keys(model) as Array<keyof BalanceView>) this.eq(`${what}.${key}`, engine[key], model[key]);
  }

  private sameReservation(what: string, engine: ReservationResult, want: HoldExpect): void {
    this.noNegative(what, engine);
    const h = want.hold;
    this.eq(`${what}.reservationId`, engine.reservationId, h.id);
    this.eq(`${what}.heldCredits`, engine.heldCredits, h.held);
    this.eq(`${what}.expiresAtMs`, engine.expiresAtMs, h.exp);
    this.eq(`${what}.state`, engine.state, STATE_NAMES[h.state]);
    this.eq(`${what}.requestId`, engine.requestId, h.request.requestId);
    this.eq(`${what}.feature`, engine.feature, h.request.credits === undefined ? FLAT_FEATURE : CREDITS_FEATURE);
    this.eq(`${what}.replayed`, engine.replayed, want.replayed);
    this.sameBalance(`${what}.balance`, engine.balance, want.balance, h.pool.id);
  }

  /** After a sweep or a touch, `held` (checked = the model's open holds) counts no hold past its TTL. */
  private noOverdueHolds(pools: Pool[]): void {
    const overdue = this.model.holds.filter((h) => pools.includes(h.pool) && h.state === 'H' && h.exp <= this.clock.nowMs());
    if (overdue.length > 0) this.fail(`model: holds past their TTL still open: ${overdue.map((h) => h.label).join(', ')}`);
  }

  private pickHold(pick: number, open: boolean): Hold | undefined {
    const candidates = open ? this.model.holds.filter((h) => h.state === 'H') : this.model.holds;
    if (candidates.length === 0) return open ? this.pickHold(pick, false) : undefined;
    return candidates[pick % candidates.length];
  }

  private moveClockTo(target: number): void {
    if (target <= this.clock.nowMs()) return;
    this.clock.set(target);
    this.model.now = target;
  }

  async apply(op: Op): Promise<void> {
    this.step++;
    const model = this.model;
    switch (op.kind) {
      case 'reserve': {
        const account = op.account % model.pools.length;
        let credits: number | undefined;
        if (op.credits === 'available' || op.credits === 'available+1') {
          // What the reserve will see: the pool after its upkeep (which the reserve does anyway).
          const pool = model.pool(account);
          model.touch(pool);
          credits = model.available(pool) + (op.credits === 'available' ? 0 : 1);
        } else {
          credits = op.credits === 'image_1k' ? undefined : op.credits;
        }
        const req: ReserveRequest = { account, requestId: `rq${++this.seq}`, credits, ttlSeconds: op.ttlSeconds };
        model.requests.push(req);
        await this.reserve(req);
        break;
      }
      case 'retryReserve': {
        const earlier = model.requests[op.pick % Math.max(1, model.requests.length)];
        if (!earlier) return this.note('retryReserve: no reserve yet');
        const req = { ...earlier };
        if (op.variant === 'otherCredits') req.credits = earlier.credits === undefined ? 5 : earlier.credits + 1;
        if (op.variant === 'otherTtl') req.ttlSeconds = earlier.ttlSeconds < 600 ? earlier.ttlSeconds + 1 : 599;
        await this.reserve(req, `retry-reserve(${op.variant})`);
        break;
      }
      case 'commit': {
        const h = this.pickHold(op.pick, op.open);
        if (!h) return this.note('commit: no reservation yet');
        const credits = op.mode === 'default' ? undefined
          : op.mode === 'equal' ? h.held
            : op.mode === 'less' ? (h.held === 0 ? 0 : op.amount % h.held)
              : h.held + 1 + op.amount;
        const what = `commit ${h.label}[${h.state} held ${h.held}] ${credits === undefined ? 'default' : `credits ${credits}`}`;
        const got = await attempt(() => this.store.commit(parseCommit({ reservationId: h.id, credits: credits === undefined ? undefined : BigInt(credits) })));
        const want = model.commit(h, credits);
        if (this.sameOutcome(what, got, want) && want.ok) {
          const c = got.value;
          this.noNegative(what, c);
          if (!c.replayed) this.reportedCharged.set(h.pool.id, (this.reportedCharged.get(h.pool.id) ?? 0) + Number(c.chargedCredits));
          this.eq(`${what}: chargedCredits`, c.chargedCredits, want.charged);
          this.eq(`${what}: overageCredits`, c.overageCredits, want.overage);
          this.eq(`${what}: shortfallCredits`, c.shortfallCredits, want.shortfall);
          this.eq(`${what}: releasedCredits`, c.releasedCredits, want.released);
          this.eq(`${what}: replayed`, c.replayed, want.replayed);
          this.sameBalance(`${what}: balance`, c.balance, want.balance, h.pool.id);
        }
        break;
      }
      case 'release': {
        const h = this.pickHold(op.pick, op.open);
        if (!h) return this.note('release: no reservation yet');
        const what = `release ${h.label}[${h.state} held ${h.held}]`;
        const got = await attempt(() => this.store.release(parseRelease({ reservationId: h.id, reason: 'model test' })));
        const want = model.release(h);
        if (this.sameOutcome(what, got, want) && want.ok) {
          this.noNegative(what, got.value);
          this.eq(`${what}: releasedCredits`, got.value.releasedCredits, want.released);
          this.eq(`${what}: replayed`, got.value.replayed, want.replayed);
          this.sameBalance(`${what}: balance`, got.value.balance, want.balance, h.pool.id);
        }
        break;
      }
      case 'extend': {
        const h = this.pickHold(op.pick, op.open);
        if (!h) return this.note('extend: no reservation yet');
        const requestId = op.additional > 0 ? (op.reuseRequestId && h.lastExtensionId !== '' ? h.lastExtensionId : `x${++this.seq}`) : '';
        if (op.additional > 0) h.lastExtensionId = requestId;
        const req: ExtendRequest = { hold: h, ttlSeconds: op.ttlSeconds, additional: op.additional, requestId };
        this.extendsSent.push(req);
        await this.extend(req, 'extend');
        break;
      }
      case 'retryExtend': {
        // Mostly one of the last few (a client retrying), sometimes any earlier one.
        const recent = op.pick % 2 === 0 ? this.extendsSent.slice(-3) : this.extendsSent;
        const earlier = recent[Math.floor(op.pick / 2) % Math.max(1, recent.length)];
        if (!earlier) return this.note('retryExtend: no extend yet');
        await this.extend(earlier, 'retry-extend');
        break;
      }
      case 'advance':
        this.moveClockTo(this.clock.nowMs() + op.ms);
        this.note(`advance ${op.ms}ms`);
        break;
      case 'advanceTo': {
        const now = this.clock.nowMs();
        let target: number | undefined;
        if (op.target === 'periodEnd') {
          const p = model.pool(op.pick);
          target = periodBounds(p.anchor, now).endMs;
        } else if (op.target === 'trialEnd') {
          target = model.pool(op.pick).trialEnd || undefined;
        } else if (op.target === 'holdExpiry') {
          const open = model.holds.filter((h) => h.state === 'H' && h.exp > now);
          target = open[op.pick % Math.max(1, open.length)]?.exp;
        } else {
          const grants = model.pools.flatMap((p) => p.promos).filter((g) => g.expiresAt > now);
          target = grants[op.pick % Math.max(1, grants.length)]?.expiresAt;
        }
        if (target !== undefined) this.moveClockTo(target + op.offsetMs);
        this.note(`advance to ${op.target}${op.offsetMs === 0 ? '' : op.offsetMs > 0 ? ' + 1ms' : ' - 1ms'} (${target === undefined ? 'none' : `t=${target - TEST_EPOCH_MS}`})`);
        break;
      }
      case 'grant': {
        const now = this.clock.nowMs();
        const expiresAt = op.grantKind === 'PACK' ? undefined
          : 'days' in op.expiry ? Math.max(TEST_EPOCH_MS + op.expiry.days * DAY_MS, now + SECOND_MS)
            : now + op.expiry.seconds * SECOND_MS;
        const req: GrantRequest = { account: op.account % model.pools.length, kind: op.grantKind, credits: op.credits, grantId: `g${++this.seq}`, expiresAt };
        model.grants.push(req);
        await this.grant(req, 'grant');
        break;
      }
      case 'retryGrant': {
        const earlier = model.grants[op.pick % Math.max(1, model.grants.length)];
        if (!earlier) return this.note('retryGrant: no grant yet');
        await this.grant(op.change ? { ...earlier, credits: earlier.credits + 1 } : earlier, `retry-grant${op.change ? '(other-credits)' : ''}`);
        break;
      }
      case 'changePlan': {
        const p = model.pool(op.account);
        const what = `changePlan ${p.id} ${p.plan}${p.nextPlan ? `(→${p.nextPlan})` : ''} → ${op.plan}`;
        const got = await attempt(() => this.store.changePlan(parseChangePlan(PRODUCT, { accountId: p.id, plan: op.plan })));
        const want = model.changePlan(op.account, op.plan);
        if (this.sameOutcome(what, got, want) && want.ok) {
          this.eq(`${what}: plan`, got.value.plan, want.plan);
          this.eq(`${what}: pendingPlan`, got.value.pendingPlan, want.pendingPlan);
        }
        break;
      }
      case 'sweep': {
        const expired = await this.sweeper.sweepOnce();
        const want = model.sweep();
        this.note(`sweep → ${expired} expired${expired === want ? '' : ` [model: ${want}]`}`);
        this.eq('sweep: holds expired', expired, want);
        this.noOverdueHolds(model.pools);
        break;
      }
      case 'balance': {
        const p = model.pool(op.account);
        const got = await this.store.getBalance(p.id);
        const want = model.balance(op.account);
        this.note(`balance ${p.id} → available ${got.available} held ${got.held}`);
        this.sameBalance(`balance ${p.id}`, got, want, p.id);
        this.noOverdueHolds([p]);
        break;
      }
    }
    await this.checkStored();
  }

  private async reserve(req: ReserveRequest, how = 'reserve'): Promise<void> {
    const p = this.model.pool(req.account);
    const cmd = parseReserve(PRODUCT, {
      accountId: p.id, feature: req.credits === undefined ? FLAT_FEATURE : CREDITS_FEATURE,
      credits: req.credits === undefined ? undefined : BigInt(req.credits), requestId: req.requestId,
      ttlSeconds: req.ttlSeconds, userId: '', labels: {},
    });
    const got = await attempt(() => this.store.reserve(cmd));
    const label = `h${this.model.holds.length}`;
    const want = this.model.reserve(req, got.ok ? got.value.reservationId : '(none)', label);
    const what = `${how} ${p.id} ${req.requestId} ${req.credits === undefined ? FLAT_FEATURE : `${req.credits}cr`} ttl ${req.ttlSeconds}s`;
    if (this.sameOutcome(`${what}${want.ok ? ` = ${want.hold.label}` : ''}`, got, want) && want.ok) this.sameReservation(what, got.value, want);
  }

  private async extend(req: ExtendRequest, how: string): Promise<void> {
    const h = req.hold;
    const what = `${how} ${h.label}[${h.state} held ${h.held}] ttl ${req.ttlSeconds}s +${req.additional}${req.requestId ? ` id ${req.requestId}` : ''}`;
    const got = await attempt(async () => this.store.extend(parseExtend({
      reservationId: h.id, ttlSeconds: req.ttlSeconds, additionalCredits: BigInt(req.additional), requestId: req.requestId,
    })));
    const want = this.model.extend(h, req.ttlSeconds * SECOND_MS, req.additional, req.requestId);
    if (this.sameOutcome(what, got, want) && want.ok) this.sameReservation(what, got.value, want);
  }

  private async grant(req: GrantRequest, how: string): Promise<void> {
    const p = this.model.pool(req.account);
    const what = `${how} ${req.kind} ${req.grantId} ${req.credits}cr to ${p.id}${req.expiresAt === undefined ? '' : ` expiring t=${req.expiresAt - TEST_EPOCH_MS}`}`;
    const got = await attempt(async () => this.store.grant(parseGrant({
      accountId: p.id, credits: BigInt(req.credits), kind: req.kind, grantId: req.grantId,
      expiresAt: req.expiresAt === undefined ? undefined : new Date(req.expiresAt), reason: 'model test',
    }, this.clock.nowMs())));
    const want = this.model.grant(req);
    if (this.sameOutcome(what, got, want) && want.ok) this.sameBalance(`${what}: balance`, got.value, want.balance, p.id);
  }

  private async readStored(accountId: string): Promise<StoredPool> {
    const key = `${partitionPrefix(this.keyPrefix, homePartition(accountId))}a/${accountId}`;
    const results = await this.redis.pipeline()
      .hgetall(key)
      .zrange(`${key}/promo`, '0', '-1', 'WITHSCORES')
      .hgetall(`${key}/promoamt`)
      .zrange(`${key}/holds`, '0', '-1', 'WITHSCORES')
      .exec();
    if (!results) throw new Error('pipeline aborted');
    const values = results.map(([err, value]) => {
      if (err) throw err;
      return value;
    });
    return {
      fields: asRecord(values[0]),
      promos: pairs(asList(values[1])),
      promoAmounts: asRecord(values[2]),
      holds: pairs(asList(values[3])),
    };
  }

  /** Stored state = model state for every pool (no upkeep), nothing negative, and conservation. */
  private async checkStored(): Promise<void> {
    for (const p of this.model.pools) {
      const stored = await this.readStored(p.id);
      const what = `stored ${p.id}`;
      const field = (name: string): number => {
        const value = Number(stored.fields[name] ?? '0');
        if (!Number.isSafeInteger(value) || value < 0) this.fail(`${what}.${name} is ${stored.fields[name]}: not a whole number ≥ 0`);
        return value;
      };
      this.eq(`${what}.plan`, stored.fields.plan, p.plan);
      this.eq(`${what}.next_plan`, stored.fields.next_plan ?? '', p.nextPlan);
      this.eq(`${what}.ps`, field('ps'), p.ps);
      this.eq(`${what}.pe`, field('pe'), p.pe);
      this.eq(`${what}.allow_total`, field('allow_total'), p.allowTotal);
      this.eq(`${what}.allow`, field('allow'), p.allow);
      this.eq(`${what}.ae`, field('ae'), p.ae);
      this.eq(`${what}.ovg_limit`, field('ovg_limit'), p.ovgLimit);
      this.eq(`${what}.ovg`, field('ovg'), p.ovg);
      this.eq(`${what}.trial`, field('trial'), p.trial);
      this.eq(`${what}.pack`, field('pack'), p.pack);
      this.eq(`${what}.promo`, field('promo'), this.model.promoTotal(p));
      this.eq(`${what}.held`, field('held'), p.held);
      const grants = [...p.promos].sort((a, b) => a.expiresAt - b.expiresAt || (a.id < b.id ? -1 : 1));
      this.eq(`${what} promo grants`, stored.promos.map(([id, exp]) => `${id}@${exp}`).join(','), grants.map((g) => `${g.id}@${g.expiresAt}`).join(','));
      for (const g of grants) {
        const left = Number(stored.promoAmounts[g.id]);
        if (!(left >= 0)) this.fail(`${what} promo ${g.id} amount is ${stored.promoAmounts[g.id]}`);
        this.eq(`${what} promo ${g.id} left`, left, g.left);
      }
      const open = this.model.holds.filter((h) => h.pool === p && h.state === 'H');
      const openHeld = open.reduce((total, h) => total + h.held, 0);
      if (openHeld !== p.held) this.fail(`model: held ${p.held} ≠ sum of its open holds ${openHeld}`);
      const byId = (a: [string, number], b: [string, number]) => (a[0] < b[0] ? -1 : 1);
      this.eq(`${what} open holds`, [...stored.holds].sort(byId).map(([id, exp]) => `${id}@${exp}`).join(','),
        open.map((h): [string, number] => [h.id, h.exp]).sort(byId).map(([id, exp]) => `${id}@${exp}`).join(','));
      // Conservation: what was granted and did not vanish is in a bucket, held, or charged (charged
      // includes overage, which was never granted).
      const buckets = field('trial') + field('allow') + field('promo') + field('pack');
      const charged = this.reportedCharged.get(p.id) ?? 0;
      if (charged !== p.charged) this.fail(`${p.id}: the engine charged ${charged} in all, the model ${p.charged}`);
      const inPool = buckets + field('held') + charged - (field('ovg') + p.overageRetired);
      if (p.granted - p.vanished !== inPool) {
        this.fail(`conservation ${p.id}: granted ${p.granted} − vanished ${p.vanished} ≠ buckets ${buckets} + held ${field('held')} + charged ${charged} − overage used ${field('ovg')} − earlier periods' overage ${p.overageRetired}`);
      }
    }
  }

  /** Ends a sequence: a sweep, then every account touched, all still equal to the model. */
  async finish(): Promise<void> {
    await this.apply({ kind: 'sweep' });
    for (let i = 0; i < this.model.pools.length; i++) await this.apply({ kind: 'balance', account: i });
  }
}

describe('credit engine vs. reference model (property)', () => {
  let redis: Redis;

  beforeAll(async () => {
    keyPrefixRoot = `tm${randomBytes(6).toString('hex')}`;
    redis = new Redis(REDIS_URL, { protocol: 2 });
    // Loads the script library once (every run's store shares this connection).
    await new RedisCreditStore(redis, { keyPrefix: keyPrefixRoot, product: PRODUCT, clock: new ManualClock(TEST_EPOCH_MS) }).loadScripts();
  });

  afterAll(async () => {
    if (process.env.FC_STATS) console.log([...stats].sort().map(([k, v]) => `${k}: ${v}`).join('\n'));
    redis?.disconnect();
    if (keyPrefixRoot) await deleteKeys(REDIS_URL, `${keyPrefixRoot}-*`);
  });

  it('keeps every balance, hold and stored bucket equal to the reference model, and conserves credits, '
    + 'over random reserve/commit/release/extend/expiry/sweep/grant/plan-change/retry sequences', async () => {
    const seed = process.env.FC_SEED === undefined ? undefined : Number(process.env.FC_SEED);
    await fc.assert(
      fc.asyncProperty(scenarioArb, fc.array(opArb, { minLength: 1, maxLength: STEPS_MAX, size: 'max' }), async (scenario, ops) => {
        const run = await Run.start(redis, scenario);
        for (const op of ops) await run.apply(op);
        await run.finish();
      }),
      {
        numRuns: NUM_RUNS,
        ...(seed === undefined ? {} : { seed }),
        ...(process.env.FC_PATH === undefined ? {} : { path: process.env.FC_PATH }),
      },
    );
  }, 300_000);
});
