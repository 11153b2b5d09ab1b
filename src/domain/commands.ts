import { createHash } from 'node:crypto';
import type { FeaturePrice, Plan, ProductConfig } from '../config/product-config.js';
import {
  CREDITS_MAX, ID_CHARACTERS_DESCRIPTION, ID_LENGTH_MAX, ID_PATTERN, LABEL_KEY_LENGTH_MAX, LABEL_VALUE_LENGTH_MAX,
  LABELS_COUNT_MAX, LEDGER_PAGE_SIZE_DEFAULT, LOW_BALANCE_PERCENT_MAX, LEDGER_PAGE_SIZE_MAX, REASON_LENGTH_MAX, TTL_SECONDS_DEFAULT, TTL_SECONDS_MAX, TTL_SECONDS_MIN, UNITS_MAX,
} from '../config/limits.js';
import { DomainError, ErrorReason, invalidArgument } from './errors.js';

/**
 * Requests as they arrive (the generated proto types fit these shapes) are checked here and turned
 * into commands: every bad input is refused with the field and the limit, before anything runs.
 */

export type GrantKindName = 'PACK' | 'PROMO';

export interface ReserveCommand {
  accountId: string;
  feature: FeaturePrice;
  units?: bigint;
  credits?: bigint;
  requestId: string;
  ttlMs: number;
  userId: string;
  labelsJson: string;
  /** Same request_id with another fingerprint is a reuse, not a retry. */
  fingerprint: string;
}
export interface CommitCommand { reservationId: string; units?: bigint; credits?: bigint }
export interface ReleaseCommand { reservationId: string; reason: string }
export interface ExtendCommand { reservationId: string; ttlMs: number; additionalCredits: bigint; requestId: string }
export interface UpsertAccountCommand {
  accountId: string;
  /** Absent for a space. */
  plan?: Plan;
  billingAnchorMs?: number;
  parentId: string;
  spaceLimitCredits?: bigint;
  trialCredits: bigint;
  trialEndsAtMs: number;
  lowBalanceThreshold: bigint;
  /** 0-100: low-balance alerts also below this share of the allowance (root accounts). */
  lowBalancePercent: number;
}
export interface ChangePlanCommand { accountId: string; plan: Plan }
export interface GrantCommand {
  accountId: string; kind: GrantKindName; credits: bigint; grantId: string; expiresAtMs?: number; reason: string;
}
export interface AdjustCommand { accountId: string; delta: bigint; adjustmentId: string; reason: string; actor: string }
export interface RefundCommand { reservationId: string; credits?: bigint; refundId: string; reason: string }

export interface LedgerQuery {
  accountId: string;
  kinds: string[];
  reservationId: string;
  userId: string;
  feature: string;
  sinceMs?: number;
  untilMs?: number;
  pageSize: number;
  /** From the page token: entries with a lower sequence number. */
  beforeSeq?: bigint;
}

export interface UsageQuery { accountId: string; periodStartMs?: number }

/** Ledger event kinds, as the Lua scripts write them (README "Ledger events"). */
export const LEDGER_KINDS = [
  'account_created', 'account_settings', 'hold', 'commit', 'release', 'expire', 'extend', 'grant', 'adjust', 'refund',
  'period_reset', 'plan_upgrade', 'trial_expired', 'trial_changed', 'grant_expired', 'alert', 'refill_due',
] as const;

/** Earliest and latest timestamps meterd accepts (the Lua calendar maths covers 1970..9999). */
const TIME_MS_MIN = 0;
const TIME_MS_MAX = Date.UTC(9999, 0, 1);
/** The largest sequence number Postgres' bigint holds. */
const INT64_MAX = 2n ** 63n - 1n;

export function checkId(field: string, value: string): string {
  if (value.length === 0) throw invalidArgument(field, 'is required', `1-${ID_LENGTH_MAX} characters`);
  if (value.length > ID_LENGTH_MAX) {
    throw invalidArgument(field, `is ${value.length} characters; at most ${ID_LENGTH_MAX} allowed`, `${ID_LENGTH_MAX}`);
  }
  if (!ID_PATTERN.test(value)) {
    throw invalidArgument(field, `may contain only ${ID_CHARACTERS_DESCRIPTION}`, ID_PATTERN.source);
  }
  return value;
}

function checkOptionalId(field: string, value: string | undefined): string {
  return value === undefined || value === '' ? '' : checkId(field, value);
}

function checkAmount(field: string, value: bigint, max: bigint, min = 0n): bigint {
  if (value < min) throw invalidArgument(field, `must be at least ${min}`, `${min}..${max}`);
  if (value > max) throw invalidArgument(field, `is ${value}; at most ${max} allowed`, `${max}`);
  return value;
}

function checkPercent(field: string, value: number): number {
  if (!Number.isInteger(value) || value < 0 || value > LOW_BALANCE_PERCENT_MAX) {
    throw invalidArgument(field, `is ${value}; must be a whole percentage 0..${LOW_BALANCE_PERCENT_MAX}`, `${LOW_BALANCE_PERCENT_MAX}`);
  }
  return value;
}

function checkText(field: string, value: string | undefined): string {
  const text = value ?? '';
  if (text.length > REASON_LENGTH_MAX) {
    throw invalidArgument(field, `is ${text.length} characters; at most ${REASON_LENGTH_MAX} allowed`, `${REASON_LENGTH_MAX}`);
  }
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u001f\u007f]/.test(text)) throw invalidArgument(field, 'must not contain control characters');
  return text;
}

function checkTime(field: string, value: Date | undefined): number | undefined {
  if (value === undefined) return undefined;
  const ms = value.getTime();
  if (!Number.isSafeInteger(ms) || ms < TIME_MS_MIN || ms >= TIME_MS_MAX) {
    throw invalidArgument(field, 'must be between 1970-01-01 and 9999-01-01', '1970..9999');
  }
  return ms;
}

function checkTtlSeconds(field: string, value: number | undefined, defaultSeconds: number): number {
  const seconds = value === undefined || value === 0 ? defaultSeconds : value;
  if (seconds !== 0 && (seconds < TTL_SECONDS_MIN || seconds > TTL_SECONDS_MAX)) {
    throw invalidArgument(field, `is ${seconds}; must be ${TTL_SECONDS_MIN}..${TTL_SECONDS_MAX} seconds`, `${TTL_SECONDS_MAX}`);
  }
  return seconds * 1000;
}

function checkLabels(labels: Record<string, string> | undefined): string {
  const entries = Object.entries(labels ?? {}).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  if (entries.length > LABELS_COUNT_MAX) {
    throw invalidArgument('labels', `has ${entries.length} entries; at most ${LABELS_COUNT_MAX} allowed`, `${LABELS_COUNT_MAX}`);
  }
  for (const [key, value] of entries) {
    if (key.length === 0 || key.length > LABEL_KEY_LENGTH_MAX || !ID_PATTERN.test(key)) {
      throw invalidArgument('labels', `key "${key.slice(0, LABEL_KEY_LENGTH_MAX)}" must be 1-${LABEL_KEY_LENGTH_MAX} of ${ID_CHARACTERS_DESCRIPTION}`, `${LABEL_KEY_LENGTH_MAX}`);
    }
    if (value.length > LABEL_VALUE_LENGTH_MAX) {
      throw invalidArgument(`labels.${key}`, `is ${value.length} characters; at most ${LABEL_VALUE_LENGTH_MAX} allowed`, `${LABEL_VALUE_LENGTH_MAX}`);
    }
    checkText(`labels.${key}`, value);
  }
  return entries.length === 0 ? '' : JSON.stringify(Object.fromEntries(entries));
}

function fingerprintOf(parts: Array<string | bigint | number | undefined>): string {
  const text = parts.map((p) => (p === undefined ? '-' : String(p))).join('\u0001');
  return createHash('sha256').update(text).digest('base64url').slice(0, 22);
}

export function findFeature(product: ProductConfig, featureId: string): FeaturePrice {
  checkId('feature', featureId);
  const feature = product.features.get(featureId);
  if (!feature) {
    throw new DomainError(ErrorReason.UNKNOWN_FEATURE, `feature "${featureId}" is not in the price list`, { feature: featureId });
  }
  return feature;
}

export function findPlan(product: ProductConfig, planId: string, field = 'plan'): Plan {
  checkId(field, planId);
  const plan = product.plans.get(planId);
  if (!plan) throw new DomainError(ErrorReason.UNKNOWN_PLAN, `plan "${planId}" is not in the product config`, { plan: planId });
  return plan;
}

export function parseReserve(product: ProductConfig, request: {
  accountId: string; feature: string; units?: bigint | undefined; credits?: bigint | undefined; requestId: string;
  ttlSeconds?: number | undefined; userId: string; labels: Record<string, string>;
}): ReserveCommand {
  const accountId = checkId('account_id', request.accountId);
  const requestId = checkId('request_id', request.requestId);
  const userId = checkOptionalId('user_id', request.userId);
  const feature = findFeature(product, request.feature);
  const units = request.units === undefined ? undefined : checkAmount('units', request.units, UNITS_MAX);
  const credits = request.credits === undefined ? undefined : checkAmount('credits', request.credits, CREDITS_MAX);
  if (credits === undefined && units === undefined && feature.perUnits > 0) {
    throw invalidArgument('units', `${feature.id} is priced per ${feature.perUnits} units: give units (an estimate) or credits`);
  }
  const ttlMs = checkTtlSeconds('ttl_seconds', request.ttlSeconds, TTL_SECONDS_DEFAULT);
  const labelsJson = checkLabels(request.labels);
  const fingerprint = fingerprintOf([feature.id, units, credits, ttlMs, userId, labelsJson]);
  const command: ReserveCommand = { accountId, feature, requestId, ttlMs, userId, labelsJson, fingerprint };
  if (units !== undefined) command.units = units;
  if (credits !== undefined) command.credits = credits;
  return command;
}

export function parseCommit(request: { reservationId: string; units?: bigint | undefined; credits?: bigint | undefined }): CommitCommand {
  const command: CommitCommand = { reservationId: checkId('reservation_id', request.reservationId) };
  if (request.units !== undefined) command.units = checkAmount('units', request.units, UNITS_MAX);
  if (request.credits !== undefined) command.credits = checkAmount('credits', request.credits, CREDITS_MAX);
  return command;
}

export function parseRelease(request: { reservationId: string; reason: string }): ReleaseCommand {
  return { reservationId: checkId('reservation_id', request.reservationId), reason: checkText('reason', request.reason) };
}

export function parseExtend(request: {
  reservationId: string; ttlSeconds: number; additionalCredits: bigint; requestId: string;
}): ExtendCommand {
  const reservationId = checkId('reservation_id', request.reservationId);
  const ttlMs = checkTtlSeconds('ttl_seconds', request.ttlSeconds, 0);
  const additionalCredits = checkAmount('additional_credits', request.additionalCredits, CREDITS_MAX);
  const requestId = checkOptionalId('request_id', request.requestId);
  if (additionalCredits > 0n && requestId === '') {
    throw invalidArgument('request_id', 'is required when additional_credits > 0, so a retry never grows the hold twice');
  }
  if (additionalCredits === 0n && ttlMs === 0) {
    throw invalidArgument('ttl_seconds', 'give ttl_seconds or additional_credits: the call would change nothing');
  }
  return { reservationId, ttlMs, additionalCredits, requestId };
}

export function parseUpsertAccount(product: ProductConfig, account: {
  accountId: string; plan: string; billingAnchor?: Date | undefined; parentId: string;
  spaceLimitCredits?: bigint | undefined; trialCredits: bigint; trialEndsAt?: Date | undefined; lowBalanceThreshold: bigint;
  lowBalancePercent?: number | undefined;
} | undefined): UpsertAccountCommand {
  if (!account) throw invalidArgument('account', 'is required');
  const accountId = checkId('account.account_id', account.accountId);
  const parentId = checkOptionalId('account.parent_id', account.parentId);
  if (parentId === accountId) throw invalidArgument('account.parent_id', 'must not be the account itself');
  const command: UpsertAccountCommand = {
    accountId,
    parentId,
    trialCredits: checkAmount('account.trial_credits', account.trialCredits, CREDITS_MAX),
    trialEndsAtMs: checkTime('account.trial_ends_at', account.trialEndsAt) ?? 0,
    lowBalanceThreshold: checkAmount('account.low_balance_threshold', account.lowBalanceThreshold, CREDITS_MAX),
    lowBalancePercent: checkPercent('account.low_balance_percent', account.lowBalancePercent ?? 0),
  };
  if (parentId !== '' && (account.plan !== '' || command.trialCredits > 0n || command.lowBalancePercent > 0)) {
    throw new DomainError(ErrorReason.SPACE_SETTING, 'a space draws on its parent: it has no plan, trial or percent alert of its own', {
      field: account.plan !== '' ? 'account.plan' : command.trialCredits > 0n ? 'account.trial_credits' : 'account.low_balance_percent', account_id: accountId,
    });
  }
  if (account.plan !== '') command.plan = findPlan(product, account.plan, 'account.plan');
  const anchor = checkTime('account.billing_anchor', account.billingAnchor);
  if (anchor !== undefined) command.billingAnchorMs = anchor;
  if (account.spaceLimitCredits !== undefined) {
    if (parentId === '') throw invalidArgument('account.space_limit_credits', 'applies only to a space (an account with parent_id)');
    command.spaceLimitCredits = checkAmount('account.space_limit_credits', account.spaceLimitCredits, CREDITS_MAX);
  }
  if (command.trialCredits > 0n && command.trialEndsAtMs === 0) {
    throw invalidArgument('account.trial_ends_at', 'is required when trial_credits > 0');
  }
  return command;
}

export function parseChangePlan(product: ProductConfig, request: { accountId: string; plan: string }): ChangePlanCommand {
  return { accountId: checkId('account_id', request.accountId), plan: findPlan(product, request.plan) };
}

export function parseGrant(request: {
  accountId: string; credits: bigint; kind: GrantKindName | 'UNSPECIFIED'; grantId: string; expiresAt?: Date | undefined; reason: string;
}, nowMs: number): GrantCommand {
  const accountId = checkId('account_id', request.accountId);
  const credits = checkAmount('credits', request.credits, CREDITS_MAX, 1n);
  if (request.kind === 'UNSPECIFIED') throw invalidArgument('kind', 'must be PACK or PROMO');
  const grantId = checkId('grant_id', request.grantId);
  const command: GrantCommand = { accountId, kind: request.kind, credits, grantId, reason: checkText('reason', request.reason) };
  const expiresAtMs = checkTime('expires_at', request.expiresAt);
  if (expiresAtMs !== undefined) {
    if (request.kind === 'PACK') throw invalidArgument('expires_at', 'packs never expire; use kind PROMO for expiring credits');
    if (expiresAtMs <= nowMs) throw invalidArgument('expires_at', 'must be in the future');
    command.expiresAtMs = expiresAtMs;
  }
  return command;
}

export function parseAdjust(request: { accountId: string; delta: bigint; adjustmentId: string; reason: string; actor: string }): AdjustCommand {
  const accountId = checkId('account_id', request.accountId);
  if (request.delta === 0n) throw invalidArgument('delta', 'must not be 0');
  const magnitude = request.delta < 0n ? -request.delta : request.delta;
  checkAmount('delta', magnitude, CREDITS_MAX);
  return {
    accountId,
    delta: request.delta,
    adjustmentId: checkId('adjustment_id', request.adjustmentId),
    reason: checkText('reason', request.reason),
    actor: checkText('actor', request.actor),
  };
}

export function parseRefund(request: { reservationId: string; credits?: bigint | undefined; refundId: string; reason: string }): RefundCommand {
  const command: RefundCommand = {
    reservationId: checkId('reservation_id', request.reservationId),
    refundId: checkId('refund_id', request.refundId),
    reason: checkText('reason', request.reason),
  };
  if (request.credits !== undefined) command.credits = checkAmount('credits', request.credits, CREDITS_MAX, 1n);
  return command;
}

export function parseListLedger(request: {
  accountId: string; kinds: string[]; reservationId: string; userId: string; feature: string;
  since?: Date | undefined; until?: Date | undefined; pageSize: number; pageToken: string;
}): LedgerQuery {
  const kinds = [...new Set(request.kinds)];
  for (const kind of kinds) {
    if (!(LEDGER_KINDS as readonly string[]).includes(kind)) {
      throw invalidArgument('kinds', `"${kind.slice(0, 64)}" is not a ledger event kind (${LEDGER_KINDS.join(', ')})`);
    }
  }
  if (request.pageSize > LEDGER_PAGE_SIZE_MAX) {
    throw invalidArgument('page_size', `is ${request.pageSize}; at most ${LEDGER_PAGE_SIZE_MAX} allowed`, `${LEDGER_PAGE_SIZE_MAX}`);
  }
  const query: LedgerQuery = {
    accountId: checkId('account_id', request.accountId),
    kinds,
    reservationId: checkOptionalId('reservation_id', request.reservationId),
    userId: checkOptionalId('user_id', request.userId),
    feature: checkOptionalId('feature', request.feature),
    pageSize: request.pageSize === 0 ? LEDGER_PAGE_SIZE_DEFAULT : request.pageSize,
  };
  const since = checkTime('since', request.since);
  const until = checkTime('until', request.until);
  if (since !== undefined) query.sinceMs = since;
  if (until !== undefined) query.untilMs = until;
  if (request.pageToken !== '') {
    const decoded = /^s(\d{1,19})$/.exec(Buffer.from(request.pageToken, 'base64url').toString('utf8'));
    // 19 digits can exceed Postgres' bigint (2^63-1), which the query would fail on.
    if (!decoded || BigInt(decoded[1] as string) > INT64_MAX) throw invalidArgument('page_token', 'is not a token from a previous ListLedgerEntries response');
    query.beforeSeq = BigInt(decoded[1] as string);
  }
  return query;
}

export function ledgerPageToken(beforeSeq: bigint): string {
  return Buffer.from(`s${beforeSeq}`, 'utf8').toString('base64url');
}

export function parseUsageQuery(request: { accountId: string; periodStart?: Date | undefined }): UsageQuery {
  const query: UsageQuery = { accountId: checkId('account_id', request.accountId) };
  const periodStartMs = checkTime('period_start', request.periodStart);
  if (periodStartMs !== undefined) query.periodStartMs = periodStartMs;
  return query;
}
