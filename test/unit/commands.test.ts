import { describe, expect, it } from 'vitest';
import {
  CREDITS_MAX, ID_LENGTH_MAX, LABEL_KEY_LENGTH_MAX, LABEL_VALUE_LENGTH_MAX, LABELS_COUNT_MAX, REASON_LENGTH_MAX,
  TTL_SECONDS_DEFAULT, TTL_SECONDS_MAX, UNITS_MAX,
} from '../../src/config/limits.js';
import { parseProductConfig } from '../../src/config/product-config.js';
import {
  checkId, ledgerPageToken, parseAdjust, parseListLedger, parseChangePlan, parseCommit, parseExtend, parseGrant, parseRefund, parseRelease, parseReserve,
  parseUpsertAccount,
} from '../../src/domain/commands.js';
import { DomainError, ErrorReason } from '../../src/domain/errors.js';

const PRODUCT = parseProductConfig({
  plans: [{ id: 'free', monthly_credits: 250, price_cents: 0 }, { id: 'pro', monthly_credits: 5000, price_cents: 7900 }],
  features: [
    { id: 'content_rewrite', credits: 1 },
    { id: 'image_1k', credits: 30 },
    { id: 'chat', credits: 2, per_units: 1000, min_credits: 1 },
  ],
});

const NOW_MS = Date.UTC(2026, 0, 15, 12);
const TIME_MAX = new Date(Date.UTC(9999, 0, 1));

type ReserveRequest = Parameters<typeof parseReserve>[1];
type UpsertRequest = NonNullable<Parameters<typeof parseUpsertAccount>[1]>;

function reserveRequest(patch: Partial<ReserveRequest> = {}): ReserveRequest {
  return { accountId: 'acct-1', feature: 'content_rewrite', requestId: 'req-1', userId: 'u-1', labels: {}, ...patch };
}
function upsertRequest(patch: Partial<UpsertRequest> = {}): UpsertRequest {
  return { accountId: 'acct-1', plan: 'pro', parentId: '', trialCredits: 0n, lowBalanceThreshold: 0n, lowBalancePercent: 0, ...patch };
}

/** Runs `parse` expecting INVALID_ARGUMENT on `field`; returns the error. */
function refused(parse: () => unknown, field: string): DomainError {
  let caught: unknown;
  try {
    parse();
  } catch (err) {
    caught = err;
  }
  expect(caught, `expected a refusal on ${field}`).toBeInstanceOf(DomainError);
  const error = caught as DomainError;
  expect(error.reason).toBe(ErrorReason.INVALID_ARGUMENT);
  expect(error.metadata.field).toBe(field);
  expect(error.message.startsWith(`${field}: `), error.message).toBe(true);
  return error;
}

describe('parseReserve', () => {
  it('defaults ttl to 300 s when absent or 0', () => {
    expect(TTL_SECONDS_DEFAULT).toBe(300);
    expect(parseReserve(PRODUCT, reserveRequest()).ttlMs).toBe(300_000);
    expect(parseReserve(PRODUCT, reserveRequest({ ttlSeconds: 0 })).ttlMs).toBe(300_000);
    expect(parseReserve(PRODUCT, reserveRequest({ ttlSeconds: 1 })).ttlMs).toBe(1000);
  });

  it('turns a request into a command', () => {
    const command = parseReserve(PRODUCT, reserveRequest({ feature: 'chat', units: 1500n, labels: { model: 'gpt', b: '1' } }));
    expect(command).toMatchObject({
      accountId: 'acct-1', requestId: 'req-1', userId: 'u-1', units: 1500n, ttlMs: 300_000,
      feature: { id: 'chat', credits: 2, perUnits: 1000, minCredits: 1 },
      labelsJson: '{"b":"1","model":"gpt"}',
    });
    expect(command.credits).toBeUndefined();
    expect(parseReserve(PRODUCT, reserveRequest()).labelsJson).toBe('');
    expect(parseReserve(PRODUCT, reserveRequest({ userId: '' })).userId).toBe('');
  });

  describe('fingerprint', () => {
    const fp = (patch: Partial<ReserveRequest>) => parseReserve(PRODUCT, reserveRequest(patch)).fingerprint;
    const base: Partial<ReserveRequest> = { feature: 'chat', units: 1000n, ttlSeconds: 60, userId: 'u-1', labels: { a: '1', b: '2' } };

    it('is equal for equal requests, whatever the labels order', () => {
      expect(fp(base)).toBe(fp({ ...base }));
      expect(fp(base)).toBe(fp({ ...base, labels: { b: '2', a: '1' } }));
      expect(fp(base)).toMatch(/^[A-Za-z0-9_-]{22}$/);
    });

    it('ignores the idempotency key and the account (they address the request, they are not its parameters)', () => {
      expect(fp({ ...base, requestId: 'other' })).toBe(fp(base));
      expect(fp({ ...base, accountId: 'other' })).toBe(fp(base));
    });

    it('is equal for an absent ttl and the default ttl (the same hold)', () => {
      expect(fp({ ...base, ttlSeconds: undefined })).toBe(fp({ ...base, ttlSeconds: 300 }));
    });

    const changes: ReadonlyArray<readonly [name: string, patch: Partial<ReserveRequest>]> = [
      ['feature', { feature: 'image_1k' }],
      ['units', { units: 1001n }],
      ['units absent', { units: undefined, credits: 5n }],
      ['credits added', { credits: 5n }],
      ['units moved to credits', { units: undefined, credits: 1000n }],
      ['ttl', { ttlSeconds: 61 }],
      ['user', { userId: 'u-2' }],
      ['user absent', { userId: '' }],
      ['a label value', { labels: { a: '1', b: '3' } }],
      ['a label key', { labels: { a: '1', c: '2' } }],
      ['a label added', { labels: { a: '1', b: '2', c: '3' } }],
      ['a label removed', { labels: { a: '1' } }],
      ['no labels', { labels: {} }],
    ];
    it.each(changes)('differs when %s differs', (_name, patch) => {
      expect(fp({ ...base, ...patch })).not.toBe(fp(base));
    });
  });

  describe('limits: the max is accepted, max + 1 refused', () => {
    it('ids', () => {
      const id = 'i'.repeat(ID_LENGTH_MAX);
      const long = 'i'.repeat(ID_LENGTH_MAX + 1);
      expect(parseReserve(PRODUCT, reserveRequest({ accountId: id, requestId: id, userId: id })).accountId).toBe(id);
      const error = refused(() => parseReserve(PRODUCT, reserveRequest({ accountId: long })), 'account_id');
      expect(error.metadata.limit).toBe(String(ID_LENGTH_MAX));
      refused(() => parseReserve(PRODUCT, reserveRequest({ requestId: long })), 'request_id');
      refused(() => parseReserve(PRODUCT, reserveRequest({ userId: long })), 'user_id');
      refused(() => parseReserve(PRODUCT, reserveRequest({ feature: long })), 'feature');
    });

    it('units and credits', () => {
      expect(parseReserve(PRODUCT, reserveRequest({ feature: 'chat', units: UNITS_MAX })).units).toBe(UNITS_MAX);
      expect(parseReserve(PRODUCT, reserveRequest({ credits: CREDITS_MAX })).credits).toBe(CREDITS_MAX);
      expect(parseReserve(PRODUCT, reserveRequest({ credits: 0n })).credits).toBe(0n);
      const error = refused(() => parseReserve(PRODUCT, reserveRequest({ feature: 'chat', units: UNITS_MAX + 1n })), 'units');
      expect(error.metadata.limit).toBe(UNITS_MAX.toString());
      refused(() => parseReserve(PRODUCT, reserveRequest({ credits: CREDITS_MAX + 1n })), 'credits');
      refused(() => parseReserve(PRODUCT, reserveRequest({ credits: 2n ** 64n - 1n })), 'credits');
    });

    it('ttl_seconds', () => {
      expect(parseReserve(PRODUCT, reserveRequest({ ttlSeconds: TTL_SECONDS_MAX })).ttlMs).toBe(TTL_SECONDS_MAX * 1000);
      const error = refused(() => parseReserve(PRODUCT, reserveRequest({ ttlSeconds: TTL_SECONDS_MAX + 1 })), 'ttl_seconds');
      expect(error.metadata.limit).toBe(String(TTL_SECONDS_MAX));
    });

    it('labels', () => {
      const many = (n: number) => Object.fromEntries(Array.from({ length: n }, (_, i) => [`k${i}`, 'v']));
      expect(parseReserve(PRODUCT, reserveRequest({ labels: many(LABELS_COUNT_MAX) })).labelsJson).not.toBe('');
      refused(() => parseReserve(PRODUCT, reserveRequest({ labels: many(LABELS_COUNT_MAX + 1) })), 'labels');

      const key = 'k'.repeat(LABEL_KEY_LENGTH_MAX);
      expect(parseReserve(PRODUCT, reserveRequest({ labels: { [key]: 'v' } })).labelsJson).toContain(key);
      refused(() => parseReserve(PRODUCT, reserveRequest({ labels: { [`${key}k`]: 'v' } })), 'labels');

      const value = 'v'.repeat(LABEL_VALUE_LENGTH_MAX);
      expect(parseReserve(PRODUCT, reserveRequest({ labels: { model: value } })).labelsJson).toContain(value);
      refused(() => parseReserve(PRODUCT, reserveRequest({ labels: { model: `${value}v` } })), 'labels.model');
      expect(parseReserve(PRODUCT, reserveRequest({ labels: { model: '' } })).labelsJson).toBe('{"model":""}');
    });
  });

  it('refuses bad ids, labels and a per-units feature without an estimate', () => {
    for (const bad of ['', 'a b', 'a{b', 'a}b', 'a/b', 'caf\u00e9', 'a|b', 'a\nb']) {
      refused(() => parseReserve(PRODUCT, reserveRequest({ accountId: bad })), 'account_id');
    }
    refused(() => parseReserve(PRODUCT, reserveRequest({ requestId: '' })), 'request_id');
    refused(() => parseReserve(PRODUCT, reserveRequest({ labels: { 'a b': 'v' } })), 'labels');
    refused(() => parseReserve(PRODUCT, reserveRequest({ labels: { '': 'v' } })), 'labels');
    refused(() => parseReserve(PRODUCT, reserveRequest({ labels: { model: 'a\u0000b' } })), 'labels.model');
    refused(() => parseReserve(PRODUCT, reserveRequest({ feature: 'chat' })), 'units');
    expect(parseReserve(PRODUCT, reserveRequest({ feature: 'chat', credits: 3n })).credits).toBe(3n);
  });

  it('refuses an unknown feature with UNKNOWN_FEATURE', () => {
    expect(() => parseReserve(PRODUCT, reserveRequest({ feature: 'nope' }))).toThrow(
      expect.objectContaining({ reason: ErrorReason.UNKNOWN_FEATURE, metadata: { feature: 'nope' } }),
    );
  });
});

describe('checkId', () => {
  it('accepts every allowed character and exactly 128 of them', () => {
    expect(checkId('x', 'Az09._:-')).toBe('Az09._:-');
    expect(checkId('x', 'a'.repeat(ID_LENGTH_MAX))).toHaveLength(ID_LENGTH_MAX);
    refused(() => checkId('x', 'a'.repeat(ID_LENGTH_MAX + 1)), 'x');
  });
});

describe('parseCommit, parseRelease, parseExtend', () => {
  it('commit amounts up to the max', () => {
    expect(parseCommit({ reservationId: 'r1.x', units: UNITS_MAX, credits: CREDITS_MAX })).toEqual({
      reservationId: 'r1.x', units: UNITS_MAX, credits: CREDITS_MAX,
    });
    expect(parseCommit({ reservationId: 'r1.x' })).toEqual({ reservationId: 'r1.x' });
    refused(() => parseCommit({ reservationId: 'r1.x', units: UNITS_MAX + 1n }), 'units');
    refused(() => parseCommit({ reservationId: 'r1.x', credits: CREDITS_MAX + 1n }), 'credits');
    refused(() => parseCommit({ reservationId: '' }), 'reservation_id');
  });

  it('release reason up to 256 characters, no control characters', () => {
    expect(parseRelease({ reservationId: 'r1.x', reason: 'r'.repeat(REASON_LENGTH_MAX) }).reason).toHaveLength(REASON_LENGTH_MAX);
    const error = refused(() => parseRelease({ reservationId: 'r1.x', reason: 'r'.repeat(REASON_LENGTH_MAX + 1) }), 'reason');
    expect(error.metadata.limit).toBe(String(REASON_LENGTH_MAX));
    refused(() => parseRelease({ reservationId: 'r1.x', reason: 'a\u001fb' }), 'reason');
    refused(() => parseRelease({ reservationId: 'r1.x', reason: 'a\u007fb' }), 'reason');
    expect(parseRelease({ reservationId: 'r1.x', reason: 'caf\u00e9 \u2014 ok' }).reason).toBe('caf\u00e9 \u2014 ok');
  });

  it('extend: ttl up to the max, 0 keeps the expiry; growing needs a request id; doing nothing is refused', () => {
    const base = { reservationId: 'r1.x', ttlSeconds: 0, additionalCredits: 0n, requestId: '' };
    expect(parseExtend({ ...base, ttlSeconds: TTL_SECONDS_MAX }).ttlMs).toBe(TTL_SECONDS_MAX * 1000);
    refused(() => parseExtend({ ...base, ttlSeconds: TTL_SECONDS_MAX + 1 }), 'ttl_seconds');
    expect(parseExtend({ ...base, additionalCredits: CREDITS_MAX, requestId: 'x' })).toEqual({
      reservationId: 'r1.x', ttlMs: 0, additionalCredits: CREDITS_MAX, requestId: 'x',
    });
    refused(() => parseExtend({ ...base, additionalCredits: CREDITS_MAX + 1n, requestId: 'x' }), 'additional_credits');
    refused(() => parseExtend({ ...base, additionalCredits: 1n }), 'request_id');
    refused(() => parseExtend(base), 'ttl_seconds');
    refused(() => parseExtend({ ...base, ttlSeconds: 5, requestId: 'a b' }), 'request_id');
  });
});

describe('parseGrant, parseAdjust, parseRefund', () => {
  const grant = { accountId: 'acct-1', credits: 10n, kind: 'PACK' as const, grantId: 'g-1', reason: '' };

  it('grant credits 1..10^15, kind required, expiry only for a PROMO in the future', () => {
    expect(parseGrant({ ...grant, credits: 1n }, NOW_MS).credits).toBe(1n);
    expect(parseGrant({ ...grant, credits: CREDITS_MAX }, NOW_MS).credits).toBe(CREDITS_MAX);
    refused(() => parseGrant({ ...grant, credits: 0n }, NOW_MS), 'credits');
    refused(() => parseGrant({ ...grant, credits: CREDITS_MAX + 1n }, NOW_MS), 'credits');
    refused(() => parseGrant({ ...grant, kind: 'UNSPECIFIED' }, NOW_MS), 'kind');
    refused(() => parseGrant({ ...grant, expiresAt: new Date(NOW_MS + 1000) }, NOW_MS), 'expires_at');
    const promo = { ...grant, kind: 'PROMO' as const };
    expect(parseGrant({ ...promo, expiresAt: new Date(NOW_MS + 1) }, NOW_MS).expiresAtMs).toBe(NOW_MS + 1);
    expect(parseGrant({ ...promo, expiresAt: new Date(TIME_MAX.getTime() - 1) }, NOW_MS).expiresAtMs).toBe(TIME_MAX.getTime() - 1);
    expect(parseGrant(promo, NOW_MS).expiresAtMs).toBeUndefined();
    refused(() => parseGrant({ ...promo, expiresAt: new Date(NOW_MS) }, NOW_MS), 'expires_at');
    refused(() => parseGrant({ ...promo, expiresAt: TIME_MAX }, NOW_MS), 'expires_at');
    refused(() => parseGrant({ ...grant, reason: 'r'.repeat(REASON_LENGTH_MAX + 1) }, NOW_MS), 'reason');
  });

  it('adjust delta: ±10^15 accepted, 0 and ±(10^15 + 1) refused', () => {
    const adjust = { accountId: 'acct-1', delta: 1n, adjustmentId: 'a-1', reason: '', actor: '' };
    expect(parseAdjust({ ...adjust, delta: CREDITS_MAX }).delta).toBe(CREDITS_MAX);
    expect(parseAdjust({ ...adjust, delta: -CREDITS_MAX }).delta).toBe(-CREDITS_MAX);
    refused(() => parseAdjust({ ...adjust, delta: 0n }), 'delta');
    refused(() => parseAdjust({ ...adjust, delta: CREDITS_MAX + 1n }), 'delta');
    refused(() => parseAdjust({ ...adjust, delta: -CREDITS_MAX - 1n }), 'delta');
    refused(() => parseAdjust({ ...adjust, actor: 'a'.repeat(REASON_LENGTH_MAX + 1) }), 'actor');
    refused(() => parseAdjust({ ...adjust, adjustmentId: '' }), 'adjustment_id');
  });

  it('refund credits 1..10^15 (absent: everything)', () => {
    const refund = { reservationId: 'r1.x', refundId: 'f-1', reason: '' };
    expect(parseRefund(refund).credits).toBeUndefined();
    expect(parseRefund({ ...refund, credits: CREDITS_MAX }).credits).toBe(CREDITS_MAX);
    refused(() => parseRefund({ ...refund, credits: 0n }), 'credits');
    refused(() => parseRefund({ ...refund, credits: CREDITS_MAX + 1n }), 'credits');
    refused(() => parseRefund({ ...refund, refundId: '' }), 'refund_id');
  });
});

describe('parseUpsertAccount, parseChangePlan', () => {
  it('amounts up to 10^15', () => {
    const command = parseUpsertAccount(PRODUCT, upsertRequest({
      trialCredits: CREDITS_MAX, trialEndsAt: new Date(NOW_MS), lowBalanceThreshold: CREDITS_MAX, lowBalancePercent: 0,
    }));
    expect(command).toMatchObject({ trialCredits: CREDITS_MAX, lowBalanceThreshold: CREDITS_MAX, lowBalancePercent: 0, trialEndsAtMs: NOW_MS });
    refused(() => parseUpsertAccount(PRODUCT, upsertRequest({ trialCredits: CREDITS_MAX + 1n, trialEndsAt: new Date(NOW_MS) })), 'account.trial_credits');
    refused(() => parseUpsertAccount(PRODUCT, upsertRequest({ lowBalanceThreshold: CREDITS_MAX + 1n , lowBalancePercent: 0})), 'account.low_balance_threshold');
    const space = upsertRequest({ plan: '', parentId: 'root-1' });
    expect(parseUpsertAccount(PRODUCT, { ...space, spaceLimitCredits: CREDITS_MAX }).spaceLimitCredits).toBe(CREDITS_MAX);
    expect(parseUpsertAccount(PRODUCT, { ...space, spaceLimitCredits: 0n }).spaceLimitCredits).toBe(0n);
    refused(() => parseUpsertAccount(PRODUCT, { ...space, spaceLimitCredits: CREDITS_MAX + 1n }), 'account.space_limit_credits');
  });

  it('times from 1970 to before 9999-01-01', () => {
    expect(parseUpsertAccount(PRODUCT, upsertRequest({ billingAnchor: new Date(0) })).billingAnchorMs).toBe(0);
    expect(parseUpsertAccount(PRODUCT, upsertRequest({ billingAnchor: new Date(TIME_MAX.getTime() - 1) })).billingAnchorMs)
      .toBe(TIME_MAX.getTime() - 1);
    refused(() => parseUpsertAccount(PRODUCT, upsertRequest({ billingAnchor: TIME_MAX })), 'account.billing_anchor');
    refused(() => parseUpsertAccount(PRODUCT, upsertRequest({ billingAnchor: new Date(-1) })), 'account.billing_anchor');
    refused(() => parseUpsertAccount(PRODUCT, upsertRequest({ billingAnchor: new Date(Number.NaN) })), 'account.billing_anchor');
  });

  it('refuses what cannot be right', () => {
    refused(() => parseUpsertAccount(PRODUCT, undefined), 'account');
    refused(() => parseUpsertAccount(PRODUCT, upsertRequest({ accountId: '' })), 'account.account_id');
    refused(() => parseUpsertAccount(PRODUCT, upsertRequest({ parentId: 'acct-1' })), 'account.parent_id');
    refused(() => parseUpsertAccount(PRODUCT, upsertRequest({ parentId: 'a/b' })), 'account.parent_id');
    refused(() => parseUpsertAccount(PRODUCT, upsertRequest({ trialCredits: 1n })), 'account.trial_ends_at');
    refused(() => parseUpsertAccount(PRODUCT, upsertRequest({ spaceLimitCredits: 1n })), 'account.space_limit_credits');
    refused(() => parseUpsertAccount(PRODUCT, upsertRequest({ plan: 'a b' })), 'account.plan');
    expect(() => parseUpsertAccount(PRODUCT, upsertRequest({ plan: 'gold' }))).toThrow(
      expect.objectContaining({ reason: ErrorReason.UNKNOWN_PLAN, metadata: { plan: 'gold' } }),
    );
    expect(parseUpsertAccount(PRODUCT, upsertRequest({ plan: '', parentId: 'root-1' })).plan).toBeUndefined();
  });

  it('change plan', () => {
    expect(parseChangePlan(PRODUCT, { accountId: 'acct-1', plan: 'free' }).plan.id).toBe('free');
    refused(() => parseChangePlan(PRODUCT, { accountId: 'acct-1', plan: '' }), 'plan');
    refused(() => parseChangePlan(PRODUCT, { accountId: '', plan: 'free' }), 'account_id');
    expect(() => parseChangePlan(PRODUCT, { accountId: 'acct-1', plan: 'gold' })).toThrow(
      expect.objectContaining({ reason: ErrorReason.UNKNOWN_PLAN }),
    );
  });
});

describe('parseListLedger', () => {
  const base = { accountId: 'acme', kinds: [], reservationId: '', userId: '', feature: '', pageSize: 0, pageToken: '' };
  it('defaults the page size and round-trips its page token', () => {
    expect(parseListLedger(base).pageSize).toBe(50);
    expect(parseListLedger({ ...base, pageToken: ledgerPageToken(123n) }).beforeSeq).toBe(123n);
  });
  it.each([
    ['kinds', { kinds: ['bogus'] }],
    ['page_size', { pageSize: 501 }],
    ['page_token', { pageToken: 'not-a-token' }],
    ['user_id', { userId: 'a b' }],
  ])('refuses a bad %s, naming it', (field, patch) => {
    expect(() => parseListLedger({ ...base, ...patch })).toThrow(new RegExp(`^${field}: `));
  });
});
