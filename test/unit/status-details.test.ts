import { Metadata, status } from '@grpc/grpc-js';
import { describe, expect, it } from 'vitest';
import { DomainError, ErrorReason, invalidArgument, isErrorReason } from '../../src/domain/errors.js';
import { Status } from '../../src/gen/google/rpc/status.js';
import { ERROR_DOMAIN, errorInfoOf, STATUS_BY_REASON, toServiceError } from '../../src/grpc/status-details.js';

const REASONS = Object.values(ErrorReason);
const CODES = new Set<number>(Object.values(status).filter((v): v is number => typeof v === 'number'));

describe('STATUS_BY_REASON', () => {
  it('maps every ErrorReason (and nothing else) to a gRPC error code', () => {
    expect(Object.keys(STATUS_BY_REASON).sort()).toEqual([...REASONS].sort());
    for (const reason of REASONS) {
      const code = STATUS_BY_REASON[reason];
      expect(CODES.has(code), reason).toBe(true);
      expect(code, reason).not.toBe(status.OK);
    }
  });

  it('names every reason by itself', () => {
    for (const [key, value] of Object.entries(ErrorReason)) expect(value).toBe(key);
    for (const reason of REASONS) expect(isErrorReason(reason)).toBe(true);
    expect(isErrorReason('NOPE')).toBe(false);
    expect(isErrorReason('toString')).toBe(false);
  });

  it('only BACKEND_UNAVAILABLE maps to UNAVAILABLE (the one a client should retry as is)', () => {
    expect(REASONS.filter((reason) => STATUS_BY_REASON[reason] === status.UNAVAILABLE)).toEqual(['BACKEND_UNAVAILABLE']);
  });

  it('uses the documented codes for the main refusals', () => {
    expect(STATUS_BY_REASON.INVALID_ARGUMENT).toBe(status.INVALID_ARGUMENT);
    expect(STATUS_BY_REASON.UNKNOWN_FEATURE).toBe(status.INVALID_ARGUMENT);
    expect(STATUS_BY_REASON.ACCOUNT_NOT_FOUND).toBe(status.NOT_FOUND);
    expect(STATUS_BY_REASON.RESERVATION_NOT_FOUND).toBe(status.NOT_FOUND);
    expect(STATUS_BY_REASON.INSUFFICIENT_CREDITS).toBe(status.RESOURCE_EXHAUSTED);
    expect(STATUS_BY_REASON.IDEMPOTENCY_KEY_REUSED).toBe(status.ALREADY_EXISTS);
    expect(STATUS_BY_REASON.PARENT_NOT_FOUND).toBe(status.FAILED_PRECONDITION);
    expect(STATUS_BY_REASON.INTERNAL).toBe(status.INTERNAL);
  });
});

describe('toServiceError / errorInfoOf', () => {
  it.each(REASONS)('round-trips %s with its domain and metadata', (reason) => {
    const metadata = { field: 'account_id', limit: '128', account_id: 'acct-1', unicode: 'caf\u00e9 \u2014 \u{1f600}' };
    const error = new DomainError(reason, `${reason}: something`, metadata);
    const serviceError = toServiceError(error);
    expect(serviceError.code).toBe(STATUS_BY_REASON[reason]);
    expect(serviceError.details).toBe(`${reason}: something`);
    expect(errorInfoOf(serviceError)).toEqual({ reason, domain: ERROR_DOMAIN, metadata });
  });

  it('carries a google.rpc.Status whose code and message match the call status', () => {
    const serviceError = toServiceError(invalidArgument('ttl_seconds', 'is 86401; must be 1..86400 seconds', '86400'));
    const raw = serviceError.metadata?.get('grpc-status-details-bin')[0];
    expect(Buffer.isBuffer(raw)).toBe(true);
    const decoded = Status.decode(raw as Buffer);
    expect(decoded.code).toBe(status.INVALID_ARGUMENT);
    expect(decoded.message).toBe('ttl_seconds: is 86401; must be 1..86400 seconds');
    expect(decoded.details.map((d) => d.typeUrl)).toEqual(['type.googleapis.com/google.rpc.ErrorInfo']);
    expect(errorInfoOf(serviceError)).toEqual({
      reason: 'INVALID_ARGUMENT', domain: 'meterd', metadata: { field: 'ttl_seconds', limit: '86400' },
    });
  });

  it('round-trips empty metadata', () => {
    expect(errorInfoOf(toServiceError(new DomainError(ErrorReason.INTERNAL, 'internal error')))).toEqual({
      reason: 'INTERNAL', domain: 'meterd', metadata: {},
    });
  });

  it('returns undefined when there is no ErrorInfo', () => {
    expect(errorInfoOf({})).toBeUndefined();
    expect(errorInfoOf({ metadata: new Metadata() })).toBeUndefined();
    const onlyStatus = new Metadata();
    onlyStatus.set('grpc-status-details-bin', Buffer.from(Status.encode({ code: 5, message: 'x', details: [] }).finish()));
    expect(errorInfoOf({ metadata: onlyStatus })).toBeUndefined();
  });
});

describe('invalidArgument', () => {
  it('names the field first, and the limit when given', () => {
    const error = invalidArgument('labels', 'has 17 entries; at most 16 allowed', '16');
    expect(error).toBeInstanceOf(DomainError);
    expect(error.reason).toBe('INVALID_ARGUMENT');
    expect(error.message).toBe('labels: has 17 entries; at most 16 allowed');
    expect(error.metadata).toEqual({ field: 'labels', limit: '16' });
    expect(invalidArgument('kind', 'must be PACK or PROMO').metadata).toEqual({ field: 'kind' });
  });
});
