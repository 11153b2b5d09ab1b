import type { LedgerEvent } from './ledger-event.js';

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
  /** Shadow mode: the refusal this reserve would have met (nothing was held; the call went on). */
  shadowRefusal?: ShadowRefusal;
}

export interface ShadowRefusal {
  reason: string;
  message: string;
  metadata: Record<string, string>;
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
  lowBalancePercent: number;
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

/** A ledger event as AdminService lists it (the stored row, without stream and hash bookkeeping). */
export type LedgerEntryResult = Pick<LedgerEvent,
  | 'eventId' | 'accountId' | 'seq' | 'kind' | 'spaceId' | 'userId' | 'feature' | 'reservationId' | 'trial' | 'allowance'
  | 'promo' | 'pack' | 'overage' | 'held' | 'charged' | 'chargedOverage' | 'shortfall' | 'plan' | 'opId' | 'reason'
  | 'actor' | 'occurredAtMs'>;

export interface LedgerPage {
  entries: LedgerEntryResult[];
  /** Continue below this sequence number; absent on the last page. */
  nextBeforeSeq?: bigint;
}
