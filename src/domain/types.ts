/** What the credit engine answers, in domain terms (amounts in whole credits, times in ms). */

export type ReservationStateName = 'HELD' | 'COMMITTED' | 'RELEASED' | 'EXPIRED';

export interface BalanceResult {
  accountId: string;
  poolAccountId: string;
  plan: string;
  pendingPlan: string;
  available: bigint;
  held: bigint;
  allowanceRemaining: bigint;
  allowanceTotal: bigint;
  trialCredits: bigint;
  trialEndsAtMs: number;
  packCredits: bigint;
  grantCredits: bigint;
  overageUsed: bigint;
  overageLimit: bigint;
  periodStartMs: number;
  periodEndMs: number;
  lowBalance: boolean;
  spaceLimitRemaining?: bigint;
}

export interface ReservationResult {
  reservationId: string;
  accountId: string;
  feature: string;
  heldCredits: bigint;
  expiresAtMs: number;
  state: ReservationStateName;
  userId: string;
  requestId: string;
  replayed: boolean;
  balance: BalanceResult;
}

export interface CommitResult {
  reservationId: string;
  chargedCredits: bigint;
  overageCredits: bigint;
  shortfallCredits: bigint;
  releasedCredits: bigint;
  replayed: boolean;
  balance: BalanceResult;
}

export interface ReleaseResult {
  reservationId: string;
  releasedCredits: bigint;
  replayed: boolean;
  balance: BalanceResult;
}

export interface AccountResult {
  accountId: string;
  plan: string;
  billingAnchorMs: number;
  parentId: string;
  spaceLimitCredits?: bigint;
  trialCredits: bigint;
  trialEndsAtMs: number;
  lowBalanceThreshold: bigint;
  pendingPlan: string;
  createdAtMs: number;
}

export interface UsageCount {
  operations: bigint;
  credits: bigint;
}

export interface UsageResult {
  accountId: string;
  periodStartMs: number;
  periodEndMs: number;
  total: UsageCount;
  byFeature: Map<string, UsageCount>;
  byUser: Map<string, UsageCount>;
  bySpace: Map<string, UsageCount>;
}

export interface SweepResult {
  expired: number;
  credits: bigint;
  more: boolean;
}

export interface LedgerEntryResult {
  eventId: string;
  accountId: string;
  seq: bigint;
  kind: string;
  spaceId: string;
  userId: string;
  feature: string;
  reservationId: string;
  trial: bigint;
  allowance: bigint;
  promo: bigint;
  pack: bigint;
  overage: bigint;
  held: bigint;
  charged: bigint;
  chargedOverage: bigint;
  shortfall: bigint;
  plan: string;
  opId: string;
  reason: string;
  actor: string;
  occurredAtMs: number;
}

export interface LedgerPage {
  entries: LedgerEntryResult[];
  /** Continue below this sequence number; absent on the last page. */
  nextBeforeSeq?: bigint;
}
