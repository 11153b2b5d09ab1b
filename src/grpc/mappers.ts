import type { AccountResult, BalanceResult, LedgerEntryResult, ReservationResult, UsageCount, UsageResult } from '../domain/types.js';
import { GrantKind, ReservationState, type Account, type Balance, type LedgerEntry, type Reservation, type Usage } from '../gen/meterd/v1/types.js';
import type { GrantKindName } from '../domain/commands.js';

/** Domain results → proto messages, and the few proto enums → domain names. Nothing else. */

const time = (ms: number): Date | undefined => (ms > 0 ? new Date(ms) : undefined);

export function toBalance(b: BalanceResult): Balance {
  return {
    accountId: b.accountId,
    plan: b.plan,
    available: b.available,
    held: b.held,
    allowanceRemaining: b.allowanceRemaining,
    allowanceTotal: b.allowanceTotal,
    trialCredits: b.trialCredits,
    packCredits: b.packCredits,
    grantCredits: b.grantCredits,
    overageUsed: b.overageUsed,
    overageLimit: b.overageLimit,
    periodStart: time(b.periodStartMs),
    periodEnd: time(b.periodEndMs),
    lowBalance: b.lowBalance,
    poolAccountId: b.poolAccountId,
    spaceLimitRemaining: b.spaceLimitRemaining,
    trialEndsAt: time(b.trialEndsAtMs),
    pendingPlan: b.pendingPlan,
    overageNotice: b.overageUsed > 0n
      ? `You have used ${b.overageUsed} credits beyond your plan limit this period. These will be billed separately.`
      : '',
  };
}

const STATE: Record<ReservationResult['state'], ReservationState> = {
  HELD: ReservationState.RESERVATION_STATE_HELD,
  COMMITTED: ReservationState.RESERVATION_STATE_COMMITTED,
  RELEASED: ReservationState.RESERVATION_STATE_RELEASED,
  EXPIRED: ReservationState.RESERVATION_STATE_EXPIRED,
};

export function toReservation(r: ReservationResult): Reservation {
  return {
    reservationId: r.reservationId,
    accountId: r.accountId,
    feature: r.feature,
    heldCredits: r.heldCredits,
    expiresAt: time(r.expiresAtMs),
    state: STATE[r.state],
    balance: toBalance(r.balance),
    userId: r.userId,
    requestId: r.requestId,
    replayed: r.replayed,
    shadowRefusal: r.shadowRefusal,
  };
}

export function toAccount(a: AccountResult): Account {
  return {
    accountId: a.accountId,
    plan: a.plan,
    billingAnchor: time(a.billingAnchorMs),
    parentId: a.parentId,
    spaceLimitCredits: a.spaceLimitCredits,
    trialCredits: a.trialCredits,
    trialEndsAt: time(a.trialEndsAtMs),
    lowBalanceThreshold: a.lowBalanceThreshold,
    lowBalancePercent: a.lowBalancePercent,
    pendingPlan: a.pendingPlan,
    createdAt: time(a.createdAtMs),
  };
}

const byName = <K extends string>(key: K, map: Map<string, UsageCount>) =>
  [...map.entries()].sort(([a], [b]) => (a < b ? -1 : 1)).map(([name, c]) => ({ [key]: name, operations: c.operations, credits: c.credits }) as Record<K, string> & UsageCount);

export function toUsage(u: UsageResult): Usage {
  return {
    accountId: u.accountId,
    periodStart: time(u.periodStartMs),
    periodEnd: time(u.periodEndMs),
    operations: u.total.operations,
    credits: u.total.credits,
    features: byName('feature', u.byFeature),
    users: byName('userId', u.byUser),
    spaces: byName('spaceId', u.bySpace),
  };
}

export function grantKindName(kind: GrantKind): GrantKindName | 'UNSPECIFIED' {
  if (kind === GrantKind.GRANT_KIND_PACK) return 'PACK';
  if (kind === GrantKind.GRANT_KIND_PROMO) return 'PROMO';
  return 'UNSPECIFIED';
}

export function toLedgerEntry(e: LedgerEntryResult): LedgerEntry {
  const { occurredAtMs, ...rest } = e;
  return { ...rest, occurredAt: time(occurredAtMs) };
}
