import { status } from '@grpc/grpc-js';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { homePartition } from '../../src/redis/keys.js';
import type {
  AdjustCreditsRequest, ChangePlanRequest, GetAccountRequest, GetUsageRequest, GrantCreditsRequest, RefundChargeRequest,
} from '../../src/gen/meterd/v1/admin_service.js';
import type {
  CommitReservationRequest, ExtendReservationRequest, GetBalanceRequest, ReleaseReservationRequest, ReserveCreditsRequest,
} from '../../src/gen/meterd/v1/metering_service.js';
import { GrantKind, type Account } from '../../src/gen/meterd/v1/types.js';
import { rejection, type TestClients } from '../support/grpc-clients.js';
import { LOCAL_REDIS, startTestMeterd, TEST_EPOCH_MS, type TestMeterd } from '../support/meterd.js';

/**
 * A table of bad inputs sent through the real gRPC server. Every row names the RPC, the request,
 * the expected status code, ErrorInfo reason and the field named; after every row nothing changed:
 * the API views (GetBalance, GetUsage, GetAccount) of the accounts involved are deep-equal to
 * before, and so is every key of this test's Redis prefix (account hashes, ledger streams, ...).
 */

const DAY_MS = 86_400_000;
const ANCHOR = new Date(TEST_EPOCH_MS - 10 * DAY_MS);
const HEX24 = 'a1b2c3d4e5f6a7b8c9d0e1f2';
const E15 = 10n ** 15n;

/** The fixture accounts and reservations every row may name (filled in beforeAll). */
interface Fixture {
  root: string;
  space: string;
  /** A held reservation on root (ttl 1 day; the test clock never moves). */
  held: string;
  /** A committed reservation on root. */
  committed: string;
  /** Another root, in a partition that is neither root's nor space's home. */
  otherRoot: string;
  /** Another root whose home partition is the space's home partition (where the space's stub lives). */
  rootBesideSpace: string;
  /** A fresh id whose home partition differs from each of `avoid`'s (so a space there needs a stub). */
  fresh(base: string, avoid?: string[]): string;
}

interface Expected {
  code: status;
  reason: string;
  /** ErrorInfo metadata `field`; the message starts with "<field>: ". */
  field?: string;
  /** When no field applies: how the message starts. */
  message?: string;
  /** ErrorInfo metadata entries that must be present. */
  metadata?: Record<string, string>;
  /** The one change a refusal may make: a reserve refused for credits records an `exhausted` alert. */
  recordsExhaustedAlert?: boolean;
}

interface Prepared {
  /** Accounts to snapshot besides root and space (e.g. a new id the request names). */
  subjects: string[];
  send(clients: TestClients): Promise<unknown>;
}

interface Row {
  rpc: string;
  name: string;
  prepare(f: Fixture): Prepared;
  expected: Expected;
}

const invalid = (field: string): Expected => ({ code: status.INVALID_ARGUMENT, reason: 'INVALID_ARGUMENT', field });

type Patch<T> = (f: Fixture) => Partial<T>;

// One builder per RPC: a valid base request, overridden by the row's patch.
function reserve(name: string, patch: Patch<ReserveCreditsRequest>, expected: Expected): Row {
  return {
    rpc: 'ReserveCredits', name, expected,
    prepare: (f) => {
      const request: ReserveCreditsRequest = {
        accountId: f.root, feature: 'content_rewrite', requestId: f.fresh('req'), ttlSeconds: 600, userId: 'u-1', labels: {},
        ...patch(f),
      };
      return { subjects: [request.accountId], send: (c) => c.metering.reserveCredits(request) };
    },
  };
}
function commit(name: string, patch: Patch<CommitReservationRequest>, expected: Expected): Row {
  return {
    rpc: 'CommitReservation', name, expected,
    prepare: (f) => {
      const request: CommitReservationRequest = { reservationId: f.held, ...patch(f) };
      return { subjects: [], send: (c) => c.metering.commitReservation(request) };
    },
  };
}
function release(name: string, patch: Patch<ReleaseReservationRequest>, expected: Expected): Row {
  return {
    rpc: 'ReleaseReservation', name, expected,
    prepare: (f) => {
      const request: ReleaseReservationRequest = { reservationId: f.held, reason: 'upstream 503', ...patch(f) };
      return { subjects: [], send: (c) => c.metering.releaseReservation(request) };
    },
  };
}
function extend(name: string, patch: Patch<ExtendReservationRequest>, expected: Expected): Row {
  return {
    rpc: 'ExtendReservation', name, expected,
    prepare: (f) => {
      const request: ExtendReservationRequest = {
        reservationId: f.held, ttlSeconds: 600, additionalCredits: 0n, requestId: '', ...patch(f),
      };
      return { subjects: [], send: (c) => c.metering.extendReservation(request) };
    },
  };
}
function getBalance(name: string, patch: Patch<GetBalanceRequest>, expected: Expected): Row {
  return {
    rpc: 'GetBalance', name, expected,
    prepare: (f) => {
      const request: GetBalanceRequest = { accountId: f.root, ...patch(f) };
      return { subjects: [request.accountId], send: (c) => c.metering.getBalance(request) };
    },
  };
}
function upsert(name: string, patch: Patch<Account>, expected: Expected): Row {
  return {
    rpc: 'UpsertAccount', name, expected,
    prepare: (f) => {
      const account: Account = {
        accountId: f.root, plan: 'pro', billingAnchor: ANCHOR, parentId: '', trialCredits: 0n,
        lowBalanceThreshold: 0n, lowBalancePercent: 0, pendingPlan: '', ...patch(f),
      };
      return { subjects: [account.accountId], send: (c) => c.admin.upsertAccount({ account }) };
    },
  };
}
function getAccount(name: string, patch: Patch<GetAccountRequest>, expected: Expected): Row {
  return {
    rpc: 'GetAccount', name, expected,
    prepare: (f) => {
      const request: GetAccountRequest = { accountId: f.root, ...patch(f) };
      return { subjects: [request.accountId], send: (c) => c.admin.getAccount(request) };
    },
  };
}
function changePlan(name: string, patch: Patch<ChangePlanRequest>, expected: Expected): Row {
  return {
    rpc: 'ChangePlan', name, expected,
    prepare: (f) => {
      const request: ChangePlanRequest = { accountId: f.root, plan: 'starter', ...patch(f) };
      return { subjects: [request.accountId], send: (c) => c.admin.changePlan(request) };
    },
  };
}
function grant(name: string, patch: Patch<GrantCreditsRequest>, expected: Expected): Row {
  return {
    rpc: 'GrantCredits', name, expected,
    prepare: (f) => {
      const request: GrantCreditsRequest = {
        accountId: f.root, credits: 10n, kind: GrantKind.GRANT_KIND_PACK, grantId: f.fresh('grant'), reason: 'stripe', ...patch(f),
      };
      return { subjects: [request.accountId], send: (c) => c.admin.grantCredits(request) };
    },
  };
}
function adjust(name: string, patch: Patch<AdjustCreditsRequest>, expected: Expected): Row {
  return {
    rpc: 'AdjustCredits', name, expected,
    prepare: (f) => {
      const request: AdjustCreditsRequest = {
        accountId: f.root, delta: 5n, adjustmentId: f.fresh('adj'), reason: 'goodwill', actor: 'support-1', ...patch(f),
      };
      return { subjects: [request.accountId], send: (c) => c.admin.adjustCredits(request) };
    },
  };
}
function refund(name: string, patch: Patch<RefundChargeRequest>, expected: Expected): Row {
  return {
    rpc: 'RefundCharge', name, expected,
    prepare: (f) => {
      const request: RefundChargeRequest = { reservationId: f.committed, refundId: f.fresh('refund'), reason: 'bad answer', ...patch(f) };
      return { subjects: [], send: (c) => c.admin.refundCharge(request) };
    },
  };
}
function getUsage(name: string, patch: Patch<GetUsageRequest>, expected: Expected): Row {
  return {
    rpc: 'GetUsage', name, expected,
    prepare: (f) => {
      const request: GetUsageRequest = { accountId: f.root, ...patch(f) };
      return { subjects: [request.accountId], send: (c) => c.admin.getUsage(request) };
    },
  };
}

/** Ids that break the id rule: length 1-128 of letters, digits and . _ : - */
const BAD_IDS: ReadonlyArray<readonly [label: string, value: string]> = [
  ['empty', ''],
  ['129 characters', 'a'.repeat(129)],
  ['a space', 'a b'],
  ['a {', 'a{b'],
  ['a }', 'a}b'],
  ['a /', 'a/b'],
  ['unicode', 'caf\u00e9'],
  ['a |', 'a|b'],
  ['a control character', 'a\u0000b'],
];
/** For optional ids ('' means none). */
const BAD_NONEMPTY_IDS = BAD_IDS.filter(([label]) => label !== 'empty');

/** Amounts above the 10^15 limit, up to the largest uint64. */
const TOO_LARGE: ReadonlyArray<readonly [label: string, value: bigint]> = [
  ['10^15 + 1', E15 + 1n],
  ['2^53', 2n ** 53n],
  ['2^64 - 1', 2n ** 64n - 1n],
];

const UNKNOWN_RESERVATION = `r1.${'0'.repeat(24)}`;
const NOT_ISSUED: ReadonlyArray<readonly [label: string, value: string]> = [
  ['not issued by meterd ("abc")', 'abc'],
  ['partition out of range (r999.)', `r999.${HEX24}`],
  ['partition out of range (r64.)', `r64.${HEX24}`],
  ['23 hex digits', `r1.${HEX24.slice(1)}`],
  ['upper-case hex', `r1.${HEX24.toUpperCase()}`],
];

const ACCOUNT_ID_RPCS: ReadonlyArray<(name: string, accountId: string) => Row> = [
  (name, accountId) => getBalance(name, () => ({ accountId }), invalid('account_id')),
  (name, accountId) => reserve(name, () => ({ accountId }), invalid('account_id')),
  (name, accountId) => getAccount(name, () => ({ accountId }), invalid('account_id')),
  (name, accountId) => changePlan(name, () => ({ accountId }), invalid('account_id')),
  (name, accountId) => grant(name, () => ({ accountId }), invalid('account_id')),
  (name, accountId) => adjust(name, () => ({ accountId }), invalid('account_id')),
  (name, accountId) => getUsage(name, () => ({ accountId }), invalid('account_id')),
  (name, accountId) => upsert(name, () => ({ accountId }), invalid('account.account_id')),
];

const RESERVATION_ID_RPCS: ReadonlyArray<(name: string, reservationId: string, expected: Expected) => Row> = [
  (name, reservationId, expected) => commit(name, () => ({ reservationId }), expected),
  (name, reservationId, expected) => release(name, () => ({ reservationId }), expected),
  (name, reservationId, expected) => extend(name, () => ({ reservationId }), expected),
  (name, reservationId, expected) => refund(name, () => ({ reservationId }), expected),
];

const ROWS: Row[] = [
  // --- ids ---
  ...ACCOUNT_ID_RPCS.flatMap((rpc) => BAD_IDS.map(([label, value]) => rpc(`account_id ${label}`, value))),
  ...BAD_IDS.map(([label, value]) => reserve(`request_id ${label}`, () => ({ requestId: value }), invalid('request_id'))),
  ...BAD_NONEMPTY_IDS.map(([label, value]) =>
    extend(`request_id ${label}`, () => ({ additionalCredits: 1n, requestId: value }), invalid('request_id'))),
  ...BAD_NONEMPTY_IDS.map(([label, value]) => reserve(`user_id ${label}`, () => ({ userId: value }), invalid('user_id'))),
  ...BAD_IDS.map(([label, value]) => reserve(`feature ${label}`, () => ({ feature: value }), invalid('feature'))),
  ...RESERVATION_ID_RPCS.flatMap((rpc) => BAD_IDS.map(([label, value]) => rpc(`reservation_id ${label}`, value, invalid('reservation_id')))),
  ...BAD_IDS.map(([label, value]) => grant(`grant_id ${label}`, () => ({ grantId: value }), invalid('grant_id'))),
  ...BAD_IDS.map(([label, value]) => adjust(`adjustment_id ${label}`, () => ({ adjustmentId: value }), invalid('adjustment_id'))),
  ...BAD_IDS.map(([label, value]) => refund(`refund_id ${label}`, () => ({ refundId: value }), invalid('refund_id'))),
  ...BAD_NONEMPTY_IDS.map(([label, value]) =>
    upsert(`parent_id ${label}`, (f) => ({ accountId: f.fresh('new-space'), plan: '', billingAnchor: undefined, parentId: value }), invalid('account.parent_id'))),
  ...BAD_IDS.map(([label, value]) => changePlan(`plan ${label}`, () => ({ plan: value }), invalid('plan'))),
  ...BAD_NONEMPTY_IDS.map(([label, value]) => upsert(`plan ${label}`, () => ({ plan: value }), invalid('account.plan'))),

  // --- reservation ids meterd did not issue, and one it does not know ---
  ...RESERVATION_ID_RPCS.flatMap((rpc) => NOT_ISSUED.map(([label, value]) => rpc(`reservation_id ${label}`, value, invalid('reservation_id')))),
  ...RESERVATION_ID_RPCS.map((rpc) => rpc('reservation_id unknown (r1. + 24 zeros)', UNKNOWN_RESERVATION, {
    code: status.NOT_FOUND, reason: 'RESERVATION_NOT_FOUND', message: `reservation "${UNKNOWN_RESERVATION}"`,
    metadata: { reservation_id: UNKNOWN_RESERVATION },
  })),

  // --- amounts above 10^15 (and 2^53, 2^64 - 1) ---
  ...TOO_LARGE.flatMap(([label, value]) => [
    reserve(`units ${label}`, () => ({ feature: 'chat', units: value }), invalid('units')),
    reserve(`credits ${label}`, () => ({ credits: value }), invalid('credits')),
    commit(`units ${label}`, () => ({ units: value }), invalid('units')),
    commit(`credits ${label}`, () => ({ credits: value }), invalid('credits')),
    extend(`additional_credits ${label}`, (f) => ({ additionalCredits: value, requestId: f.fresh('ext') }), invalid('additional_credits')),
    grant(`credits ${label}`, () => ({ credits: value }), invalid('credits')),
    refund(`credits ${label}`, () => ({ credits: value }), invalid('credits')),
    upsert(`trial_credits ${label}`, () => ({ trialCredits: value, trialEndsAt: new Date(TEST_EPOCH_MS + DAY_MS) }), invalid('account.trial_credits')),
    upsert(`low_balance_threshold ${label}`, () => ({ lowBalanceThreshold: value , lowBalancePercent: 0}), invalid('account.low_balance_threshold')),
    upsert(`space_limit_credits ${label}`, (f) => ({
      accountId: f.space, plan: '', billingAnchor: undefined, parentId: f.root, spaceLimitCredits: value,
    }), invalid('account.space_limit_credits')),
  ]),
  ...([
    ['10^15 + 1', E15 + 1n], ['-(10^15 + 1)', -(E15 + 1n)], ['2^53', 2n ** 53n], ['-(2^53)', -(2n ** 53n)],
    ['2^63 - 1', 2n ** 63n - 1n], ['-(2^63)', -(2n ** 63n)],
  ] as const).map(([label, value]) => adjust(`delta ${label}`, () => ({ delta: value }), invalid('delta'))),

  // --- time to live ---
  reserve('ttl_seconds 86401', () => ({ ttlSeconds: 86_401 }), invalid('ttl_seconds')),
  reserve('ttl_seconds 2^32 - 1', () => ({ ttlSeconds: 2 ** 32 - 1 }), invalid('ttl_seconds')),
  extend('ttl_seconds 86401', () => ({ ttlSeconds: 86_401 }), invalid('ttl_seconds')),

  // --- labels ---
  reserve('labels with 17 entries', () => ({
    labels: Object.fromEntries(Array.from({ length: 17 }, (_, i) => [`k${i}`, 'v'])),
  }), invalid('labels')),
  reserve('a label key of 65 characters', () => ({ labels: { ['k'.repeat(65)]: 'v' } }), invalid('labels')),
  reserve('an empty label key', () => ({ labels: { '': 'v' } }), invalid('labels')),
  reserve('a label key with a space', () => ({ labels: { 'a b': 'v' } }), invalid('labels')),
  reserve('a label key with a /', () => ({ labels: { 'a/b': 'v' } }), invalid('labels')),
  reserve('a label key with a {', () => ({ labels: { 'a{b': 'v' } }), invalid('labels')),
  reserve('a label value of 257 characters', () => ({ labels: { model: 'v'.repeat(257) } }), invalid('labels.model')),
  reserve('a label value with a newline', () => ({ labels: { model: 'gpt\n4' } }), invalid('labels.model')),
  reserve('a label value with DEL (0x7f)', () => ({ labels: { model: 'gpt\u007f4' } }), invalid('labels.model')),

  // --- free text ---
  release('reason of 257 characters', () => ({ reason: 'r'.repeat(257) }), invalid('reason')),
  release('reason with a control character', () => ({ reason: 'timeout\u0007' }), invalid('reason')),
  grant('reason of 257 characters', () => ({ reason: 'r'.repeat(257) }), invalid('reason')),
  adjust('reason of 257 characters', () => ({ reason: 'r'.repeat(257) }), invalid('reason')),
  adjust('actor of 257 characters', () => ({ actor: 'a'.repeat(257) }), invalid('actor')),
  adjust('actor with a tab', () => ({ actor: 'support\t1' }), invalid('actor')),
  refund('reason of 257 characters', () => ({ reason: 'r'.repeat(257) }), invalid('reason')),

  // --- price list and plans ---
  reserve('unknown feature', () => ({ feature: 'no_such_feature' }), {
    code: status.INVALID_ARGUMENT, reason: 'UNKNOWN_FEATURE', message: 'feature "no_such_feature"', metadata: { feature: 'no_such_feature' },
  }),
  reserve('a per-units feature (chat) with neither units nor credits', () => ({ feature: 'chat' }), invalid('units')),
  upsert('unknown plan', (f) => ({ accountId: f.fresh('new-root'), plan: 'platinum' }), {
    code: status.INVALID_ARGUMENT, reason: 'UNKNOWN_PLAN', message: 'plan "platinum"', metadata: { plan: 'platinum' },
  }),
  changePlan('unknown plan', () => ({ plan: 'platinum' }), {
    code: status.INVALID_ARGUMENT, reason: 'UNKNOWN_PLAN', message: 'plan "platinum"', metadata: { plan: 'platinum' },
  }),

  // --- grants and adjustments ---
  grant('kind UNSPECIFIED', () => ({ kind: GrantKind.GRANT_KIND_UNSPECIFIED }), invalid('kind')),
  grant('credits 0', () => ({ credits: 0n }), invalid('credits')),
  grant('a PACK with expires_at', () => ({ kind: GrantKind.GRANT_KIND_PACK, expiresAt: new Date(TEST_EPOCH_MS + DAY_MS) }), invalid('expires_at')),
  grant('a PROMO with expires_at in the past', () => ({ kind: GrantKind.GRANT_KIND_PROMO, expiresAt: new Date(TEST_EPOCH_MS - 1000) }), invalid('expires_at')),
  grant('a PROMO expiring right now', () => ({ kind: GrantKind.GRANT_KIND_PROMO, expiresAt: new Date(TEST_EPOCH_MS) }), invalid('expires_at')),
  grant('a PROMO expiring after 9999-01-01', () => ({
    kind: GrantKind.GRANT_KIND_PROMO, expiresAt: new Date(Date.UTC(9999, 0, 1)),
  }), invalid('expires_at')),
  adjust('delta 0', () => ({ delta: 0n }), invalid('delta')),
  adjust('removing more than the account has', () => ({ delta: -E15 }), {
    code: status.FAILED_PRECONDITION, reason: 'ADJUSTMENT_EXCEEDS_BALANCE', metadata: { required: E15.toString() },
  }),

  // --- reservations ---
  extend('additional_credits > 0 without request_id', () => ({ additionalCredits: 5n, requestId: '' }), invalid('request_id')),
  extend('nothing to do (ttl_seconds 0, additional_credits 0)', () => ({ ttlSeconds: 0, additionalCredits: 0n }), invalid('ttl_seconds')),
  reserve('a hold larger than the pool', () => ({ credits: E15 }), {
    code: status.RESOURCE_EXHAUSTED, reason: 'INSUFFICIENT_CREDITS', metadata: { required: E15.toString() }, recordsExhaustedAlert: true,
  }),
  extend('growing a hold beyond the pool', (f) => ({ additionalCredits: E15, requestId: f.fresh('ext') }), {
    code: status.RESOURCE_EXHAUSTED, reason: 'INSUFFICIENT_CREDITS', metadata: { required: E15.toString() },
  }),
  reserve('a request_id reused with other parameters', () => ({ requestId: 'held-req', feature: 'image_2k' }), {
    code: status.ALREADY_EXISTS, reason: 'IDEMPOTENCY_KEY_REUSED', metadata: { request_id: 'held-req' },
  }),
  release('a committed reservation', (f) => ({ reservationId: f.committed }), {
    code: status.FAILED_PRECONDITION, reason: 'RESERVATION_COMMITTED',
  }),
  extend('a committed reservation', (f) => ({ reservationId: f.committed }), {
    code: status.FAILED_PRECONDITION, reason: 'RESERVATION_COMMITTED',
  }),
  refund('a reservation still held', (f) => ({ reservationId: f.held }), {
    code: status.FAILED_PRECONDITION, reason: 'RESERVATION_NOT_COMMITTED',
  }),
  refund('more than was charged', () => ({ credits: 11n }), {
    code: status.FAILED_PRECONDITION, reason: 'REFUND_EXCEEDS_CHARGE', metadata: { requested: '11', refundable: '10' },
  }),

  // --- unknown account ---
  ...[getBalance, getAccount, getUsage, reserve, changePlan, grant, adjust].map((rpc) =>
    rpc('unknown account', () => ({ accountId: 'no-such-account' }), {
      code: status.NOT_FOUND, reason: 'ACCOUNT_NOT_FOUND', message: 'account "no-such-account"', metadata: { account_id: 'no-such-account' },
    })),

  // --- accounts ---
  {
    rpc: 'UpsertAccount', name: 'no account at all', expected: invalid('account'),
    prepare: () => ({ subjects: [], send: (c) => c.admin.upsertAccount({}) }),
  },
  upsert('trial_credits without trial_ends_at', () => ({ trialCredits: 100n }), invalid('account.trial_ends_at')),
  upsert('trial_ends_at before 1970', () => ({ trialCredits: 100n, trialEndsAt: new Date(-1000) }), invalid('account.trial_ends_at')),
  upsert('billing_anchor after 9999-01-01', (f) => ({ accountId: f.fresh('new-root'), billingAnchor: new Date(Date.UTC(9999, 6, 1)) }), invalid('account.billing_anchor')),
  upsert('space_limit_credits without a parent', () => ({ spaceLimitCredits: 100n }), invalid('account.space_limit_credits')),
  upsert('parent_id equal to account_id', (f) => ({ parentId: f.root }), invalid('account.parent_id')),
  upsert('a root without a plan', (f) => ({ accountId: f.fresh('new-root'), plan: '' }), {
    code: status.INVALID_ARGUMENT, reason: 'PLAN_REQUIRED', message: 'a root account needs a plan',
  }),
  upsert('billing_anchor changed on an existing account', () => ({ billingAnchor: new Date(ANCHOR.getTime() + DAY_MS) }), {
    code: status.FAILED_PRECONDITION, reason: 'ANCHOR_IMMUTABLE', metadata: { billing_anchor: String(ANCHOR.getTime()) },
  }),
  upsert('a plan on an existing space', (f) => ({ accountId: f.space, parentId: f.root, billingAnchor: undefined, plan: 'pro' }), {
    code: status.INVALID_ARGUMENT, reason: 'SPACE_SETTING',
  }),
  upsert('another parent for an existing space', (f) => ({
    accountId: f.space, parentId: f.otherRoot, billingAnchor: undefined, plan: '',
  }), { code: status.FAILED_PRECONDITION, reason: 'PARENT_IMMUTABLE' }),
  upsert("another parent for an existing space, in the space's home partition", (f) => ({
    accountId: f.space, parentId: f.rootBesideSpace, billingAnchor: undefined, plan: '',
  }), { code: status.FAILED_PRECONDITION, reason: 'PARENT_IMMUTABLE' }),
  upsert('a parent for an existing root', (f) => ({ parentId: f.otherRoot, plan: '', billingAnchor: undefined }), {
    code: status.FAILED_PRECONDITION, reason: 'PARENT_IMMUTABLE',
  }),
  upsert('a parent that does not exist', (f) => {
    const parentId = f.fresh('ghost-parent');
    return { accountId: f.fresh('new-space', [parentId]), parentId, plan: '', billingAnchor: undefined };
  }, { code: status.FAILED_PRECONDITION, reason: 'PARENT_NOT_FOUND', message: 'parent account "ghost-parent' }),
  upsert('a space as parent', (f) => ({ accountId: f.fresh('new-space', [f.space]), parentId: f.space, plan: '', billingAnchor: undefined }), {
    code: status.FAILED_PRECONDITION, reason: 'PARENT_IS_SPACE',
  }),
  upsert('a new space with a plan of its own', (f) => ({
    accountId: f.fresh('new-space', [f.root]), parentId: f.root, plan: 'pro', billingAnchor: undefined,
  }), { code: status.INVALID_ARGUMENT, reason: 'SPACE_SETTING' }),
  upsert('a new space with a trial of its own', (f) => ({
    accountId: f.fresh('new-space', [f.root]), parentId: f.root, plan: '', billingAnchor: undefined,
    trialCredits: 100n, trialEndsAt: new Date(TEST_EPOCH_MS + DAY_MS),
  }), { code: status.INVALID_ARGUMENT, reason: 'SPACE_SETTING' }),
  upsert('a plan on an existing space, without naming its parent', (f) => ({ accountId: f.space, billingAnchor: undefined, plan: 'pro' }), {
    code: status.INVALID_ARGUMENT, reason: 'SPACE_SETTING',
  }),
  changePlan('a space', (f) => ({ accountId: f.space }), {
    code: status.FAILED_PRECONDITION, reason: 'ACCOUNT_IS_SPACE',
  }),
];

/** What a caller can see of an account: each view or how it was refused. */
async function apiView(clients: TestClients, accountId: string): Promise<unknown[]> {
  const settle = (p: Promise<unknown>) => p.then((value) => ({ value }), (err: unknown) => rejection(Promise.reject(err)));
  return Promise.all([
    settle(clients.metering.getBalance({ accountId })),
    settle(clients.admin.getUsage({ accountId })),
    settle(clients.admin.getAccount({ accountId })),
  ]);
}

/** Every key under the prefix with its full content (no TTLs: they tick on their own). */
async function redisState(redis: Redis, keyPrefix: string): Promise<Record<string, unknown>> {
  const keys: string[] = [];
  let cursor = '0';
  do {
    const [next, batch] = await redis.scan(cursor, 'MATCH', `${keyPrefix}:*`, 'COUNT', 1000);
    keys.push(...batch);
    cursor = next;
  } while (cursor !== '0');
  const state: Record<string, unknown> = {};
  for (const key of keys.sort()) {
    const type = await redis.type(key);
    if (type === 'hash') state[key] = await redis.hgetall(key);
    else if (type === 'string') state[key] = await redis.get(key);
    else if (type === 'zset') state[key] = await redis.zrange(key, '0', '-1', 'WITHSCORES');
    else if (type === 'stream') state[key] = await redis.xrange(key, '-', '+');
    else if (type === 'set') state[key] = (await redis.smembers(key)).sort();
    else if (type === 'list') state[key] = await redis.lrange(key, 0, -1);
    else state[key] = { type };
  }
  return state;
}

/** Keys added, removed or changed between two Redis states ("+ key", "- key", "~ key"). */
function redisChanges(before: Record<string, unknown>, after: Record<string, unknown>): string[] {
  const changes: string[] = [];
  for (const key of Object.keys(after)) {
    if (!(key in before)) changes.push(`+ ${key} ${JSON.stringify(after[key])}`);
    else if (JSON.stringify(after[key]) !== JSON.stringify(before[key])) changes.push(`~ ${key} ${JSON.stringify(after[key])}`);
  }
  for (const key of Object.keys(before)) if (!(key in after)) changes.push(`- ${key}`);
  return changes;
}

describe('bad input through gRPC: refused with the field and the limit, nothing changed', () => {
  let t: TestMeterd;
  let redis: Redis;
  let fixture: Fixture;
  let seq = 0;

  beforeAll(async () => {
    t = await startTestMeterd();
    redis = new Redis(LOCAL_REDIS.url ?? 'redis://127.0.0.1:6379', { protocol: 2 });
    const fresh = (base: string, avoid: string[] = []): string => {
      for (;;) {
        const id = `${base}-${++seq}`;
        if (!avoid.some((other) => homePartition(other) === homePartition(id))) return id;
      }
    };
    const root = fresh('bi-root');
    // A space whose home partition is not its parent's, so it lives behind a stub like most spaces.
    const space = fresh('bi-space', [root]);
    const otherRoot = fresh('bi-other-root', [root, space]);
    let rootBesideSpace = fresh('bi-root-beside');
    while (homePartition(rootBesideSpace) !== homePartition(space)) rootBesideSpace = fresh('bi-root-beside');
    const { admin, metering } = t.clients;
    for (const id of [otherRoot, rootBesideSpace]) {
      await admin.upsertAccount({
        account: { accountId: id, plan: 'free', parentId: '', trialCredits: 0n, lowBalanceThreshold: 0n, lowBalancePercent: 0, pendingPlan: '' },
      });
    }
    await admin.upsertAccount({
      account: { accountId: root, plan: 'pro', billingAnchor: ANCHOR, parentId: '', trialCredits: 0n, lowBalanceThreshold: 10n, lowBalancePercent: 0, pendingPlan: '' },
    });
    await admin.upsertAccount({
      account: { accountId: space, plan: '', parentId: root, spaceLimitCredits: 500n, trialCredits: 0n, lowBalanceThreshold: 0n, lowBalancePercent: 0, pendingPlan: '' },
    });
    await admin.grantCredits({ accountId: root, credits: 1000n, kind: GrantKind.GRANT_KIND_PACK, grantId: 'bi-pack', reason: 'setup' });
    const held = await metering.reserveCredits({
      accountId: root, feature: 'content_rewrite', requestId: 'held-req', ttlSeconds: 86_400, userId: 'u-1', labels: { model: 'm' },
    });
    const toCommit = await metering.reserveCredits({
      accountId: root, feature: 'section_generate', requestId: 'committed-req', ttlSeconds: 86_400, userId: 'u-1', labels: {},
    });
    await metering.commitReservation({ reservationId: toCommit.reservationId });
    const spaceHold = await metering.reserveCredits({
      accountId: space, feature: 'image_1k', requestId: 'space-req', userId: 'u-2', labels: {},
    });
    await metering.commitReservation({ reservationId: spaceHold.reservationId });
    fixture = { root, space, otherRoot, rootBesideSpace, held: held.reservationId, committed: toCommit.reservationId, fresh };
  });

  afterAll(async () => {
    redis?.disconnect();
    await t?.stop();
  });

  /** Sends a row's request and returns the refusal and the state around it. */
  async function refuse(row: Row) {
    const prepared = row.prepare(fixture);
    const accounts = [...new Set([fixture.root, fixture.space, ...prepared.subjects])];
    const viewsBefore = await Promise.all(accounts.map((id) => apiView(t.clients, id)));
    const redisBefore = await redisState(redis, t.keyPrefix);
    const refusal = await rejection(prepared.send(t.clients));
    const redisAfter = await redisState(redis, t.keyPrefix);
    const viewsAfter = await Promise.all(accounts.map((id) => apiView(t.clients, id)));
    return { refusal, viewsBefore, viewsAfter, redisBefore, redisAfter };
  }

  const names = new Set<string>();
  for (const row of ROWS) {
    const name = `${row.rpc}: ${row.name}`;
    if (names.has(name)) throw new Error(`duplicate row ${name}`);
    names.add(name);

    const checkRefusal = async () => {
      const { refusal, viewsBefore, viewsAfter, redisBefore, redisAfter } = await refuse(row);
      const { expected } = row;
      expect({ code: refusal.code, reason: refusal.reason }).toEqual({ code: expected.code, reason: expected.reason });
      if (expected.field !== undefined) {
        expect(refusal.metadata.field).toBe(expected.field);
        expect(refusal.message.startsWith(`${expected.field}: `), refusal.message).toBe(true);
      }
      if (expected.message !== undefined) expect(refusal.message.startsWith(expected.message), refusal.message).toBe(true);
      if (expected.metadata !== undefined) expect(refusal.metadata).toMatchObject(expected.metadata);
      expect(viewsAfter).toEqual(viewsBefore);
      if (expected.recordsExhaustedAlert) {
        // Only the alert: the pool's alert state and sequence number, and one `alert` ledger entry.
        const changes = redisChanges(redisBefore, redisAfter);
        expect(changes.map((c) => c.split(' ').slice(0, 2).join(' '))).toEqual(
          expect.arrayContaining([expect.stringMatching(/^~ .*:a\/[^/]+$/), expect.stringMatching(/^~ .*:ledger$/)]));
        expect(changes).toHaveLength(2);
        const pool = Object.keys(redisAfter).find((key) => key.endsWith(`:a/${fixture.root}`)) as string;
        const fieldsChanged = Object.entries(redisAfter[pool] as Record<string, string>)
          .filter(([field, value]) => (redisBefore[pool] as Record<string, string>)[field] !== value).map(([field]) => field).sort();
        expect(fieldsChanged).toEqual(['al', 'alv', 'lsid', 'seq']); // the alert's ledger event
        const ledger = Object.keys(redisAfter).find((key) => key.endsWith(':ledger') && JSON.stringify(redisAfter[key]) !== JSON.stringify(redisBefore[key])) as string;
        const added = (redisAfter[ledger] as Array<[string, string[]]>).slice((redisBefore[ledger] as unknown[]).length);
        expect(added.map(([, fields]) => fields[fields.indexOf('kind') + 1])).toEqual(['alert']);
        return;
      }
      expect(redisChanges(redisBefore, redisAfter)).toEqual([]);
    };
    it(name, checkRefusal);
  }

  it('a refused new space leaves no trace: the id can still become a space of another parent', async () => {
    const spaceId = fixture.fresh('new-space', [fixture.root, fixture.otherRoot]);
    const account = (parentId: string, plan: string): Account => ({
      accountId: spaceId, plan, parentId, trialCredits: 0n, lowBalanceThreshold: 0n, lowBalancePercent: 0, pendingPlan: '',
    });
    expect((await rejection(t.clients.admin.upsertAccount({ account: account(fixture.root, 'pro') }))).reason).toBe('SPACE_SETTING');
    const created = await t.clients.admin.upsertAccount({ account: account(fixture.otherRoot, '') });
    expect(created.parentId).toBe(fixture.otherRoot);
  });

  it('an oversized message (70 KB label) is refused by grpc-js with RESOURCE_EXHAUSTED; the server keeps serving', async () => {
    const before = await apiView(t.clients, fixture.root);
    const redisBefore = await redisState(redis, t.keyPrefix);
    const refused = await rejection(t.clients.metering.reserveCredits({
      accountId: fixture.root, feature: 'content_rewrite', requestId: fixture.fresh('req'), userId: '',
      labels: { model: 'x'.repeat(70_000) },
    }));
    expect(refused.code).toBe(status.RESOURCE_EXHAUSTED);
    expect(refused.reason).toBe('');
    expect(redisChanges(redisBefore, await redisState(redis, t.keyPrefix))).toEqual([]);
    expect(await apiView(t.clients, fixture.root)).toEqual(before);
    const balance = await t.clients.metering.getBalance({ accountId: fixture.root });
    expect(balance.accountId).toBe(fixture.root);
  });
});
