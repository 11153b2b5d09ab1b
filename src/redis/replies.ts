import type {
  AccountResult, BalanceResult, CommitResult, ReleaseResult, ReservationResult, ReservationStateName, SweepResult,
  UsageCount, UsageResult,
} from '../domain/types.js';

/**
 * Script replies are JSON objects whose amounts are decimal strings (exact, unlike Lua numbers).
 * These decoders turn them into domain results and fail loudly on a shape they do not expect:
 * that is a programmer error, not something to guess about.
 */
export type Reply = Record<string, unknown>;

export class ReplyShapeError extends Error {
  override name = 'ReplyShapeError';
}

function text(reply: Reply, field: string): string {
  const value = reply[field];
  if (typeof value !== 'string') throw new ReplyShapeError(`script reply field ${field} is ${JSON.stringify(value)}`);
  return value;
}

function amount(reply: Reply, field: string): bigint {
  const value = text(reply, field);
  if (!/^-?\d+$/.test(value)) throw new ReplyShapeError(`script reply field ${field} is not an integer: ${value}`);
  return BigInt(value);
}

function optionalAmount(reply: Reply, field: string): bigint | undefined {
  return reply[field] === undefined ? undefined : amount(reply, field);
}

function millis(reply: Reply, field: string): number {
  const value = Number(amount(reply, field));
  if (!Number.isSafeInteger(value)) throw new ReplyShapeError(`script reply field ${field} is not a time`);
  return value;
}

function flag(reply: Reply, field: string): boolean {
  const value = reply[field];
  if (typeof value !== 'boolean') throw new ReplyShapeError(`script reply field ${field} is not a boolean`);
  return value;
}

function nested(reply: Reply, field: string): Reply {
  const value = reply[field];
  if (typeof value !== 'object' || value === null) throw new ReplyShapeError(`script reply field ${field} is missing`);
  return value as Reply;
}

const STATES: Record<string, ReservationStateName> = { H: 'HELD', C: 'COMMITTED', R: 'RELEASED', E: 'EXPIRED' };

export function decodeBalance(reply: Reply): BalanceResult {
  const balance: BalanceResult = {
    accountId: text(reply, 'account_id'),
    poolAccountId: text(reply, 'pool_account_id'),
    plan: text(reply, 'plan'),
    pendingPlan: text(reply, 'pending_plan'),
    available: amount(reply, 'available'),
    held: amount(reply, 'held'),
    allowanceRemaining: amount(reply, 'allowance_remaining'),
    allowanceTotal: amount(reply, 'allowance_total'),
    trialCredits: amount(reply, 'trial_credits'),
    trialEndsAtMs: millis(reply, 'trial_ends_at'),
    packCredits: amount(reply, 'pack_credits'),
    grantCredits: amount(reply, 'grant_credits'),
    overageUsed: amount(reply, 'overage_used'),
    overageLimit: amount(reply, 'overage_limit'),
    periodStartMs: millis(reply, 'period_start'),
    periodEndMs: millis(reply, 'period_end'),
    lowBalance: flag(reply, 'low_balance'),
  };
  const room = optionalAmount(reply, 'space_limit_remaining');
  if (room !== undefined) balance.spaceLimitRemaining = room;
  return balance;
}

export function decodeReservation(reply: Reply): ReservationResult {
  const state = STATES[text(reply, 'state')];
  if (!state) throw new ReplyShapeError(`unknown reservation state ${String(reply.state)}`);
  return {
    reservationId: text(reply, 'reservation_id'),
    accountId: text(reply, 'account_id'),
    feature: text(reply, 'feature'),
    heldCredits: amount(reply, 'held_credits'),
    expiresAtMs: millis(reply, 'expires_at'),
    state,
    userId: text(reply, 'user_id'),
    requestId: text(reply, 'request_id'),
    replayed: flag(reply, 'replayed'),
    balance: decodeBalance(nested(reply, 'balance')),
  };
}

export function decodeCommit(reply: Reply): CommitResult {
  return {
    reservationId: text(reply, 'reservation_id'),
    chargedCredits: amount(reply, 'charged'),
    overageCredits: amount(reply, 'overage'),
    shortfallCredits: amount(reply, 'shortfall'),
    releasedCredits: amount(reply, 'released'),
    replayed: flag(reply, 'replayed'),
    balance: decodeBalance(nested(reply, 'balance')),
  };
}

export function decodeRelease(reply: Reply): ReleaseResult {
  return {
    reservationId: text(reply, 'reservation_id'),
    releasedCredits: amount(reply, 'released'),
    replayed: flag(reply, 'replayed'),
    balance: decodeBalance(nested(reply, 'balance')),
  };
}

export function decodeAccount(reply: Reply): AccountResult {
  const account: AccountResult = {
    accountId: text(reply, 'account_id'),
    plan: text(reply, 'plan'),
    billingAnchorMs: millis(reply, 'billing_anchor'),
    parentId: text(reply, 'parent_id'),
    trialCredits: amount(reply, 'trial_credits'),
    trialEndsAtMs: millis(reply, 'trial_ends_at'),
    lowBalanceThreshold: amount(reply, 'low_balance_threshold'),
    lowBalancePercent: Number(amount(reply, 'low_balance_percent')),
    pendingPlan: text(reply, 'pending_plan'),
    createdAtMs: millis(reply, 'created_at'),
  };
  const cap = optionalAmount(reply, 'space_limit_credits');
  if (cap !== undefined) account.spaceLimitCredits = cap;
  return account;
}

/** Usage counters arrive as a flat [field, value, ...] list (cjson sends an empty one as {}). */
export function decodeUsage(reply: Reply): UsageResult {
  const flat = Array.isArray(reply.counters) ? (reply.counters as unknown[]) : [];
  const usage: UsageResult = {
    accountId: text(reply, 'account_id'),
    periodStartMs: millis(reply, 'period_start'),
    periodEndMs: millis(reply, 'period_end'),
    total: { operations: 0n, credits: 0n },
    byFeature: new Map(),
    byUser: new Map(),
    bySpace: new Map(),
  };
  const groups: Record<string, Map<string, UsageCount>> = { f: usage.byFeature, u: usage.byUser, s: usage.bySpace };
  for (let i = 0; i + 1 < flat.length; i += 2) {
    const field = String(flat[i]);
    const value = BigInt(String(flat[i + 1]));
    if (field === 'ops') usage.total.operations = value;
    else if (field === 'credits') usage.total.credits = value;
    else {
      const match = /^([fus])([oc])\/(.+)$/.exec(field);
      const group = match ? groups[match[1] as string] : undefined;
      if (!match || !group) continue;
      const name = match[3] as string;
      const count = group.get(name) ?? { operations: 0n, credits: 0n };
      if (match[2] === 'o') count.operations = value;
      else count.credits = value;
      group.set(name, count);
    }
  }
  return usage;
}

export function decodeSweep(reply: Reply): SweepResult {
  return { expired: Number(reply.expired ?? 0), credits: amount(reply, 'credits'), more: flag(reply, 'more') };
}
