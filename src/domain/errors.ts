/**
 * Every way a request can be refused, by reason. The gRPC layer maps each reason to one status code
 * and an ErrorInfo{reason, domain: "meterd", metadata} (src/grpc/status-details.ts); every field a
 * message mentions is also in metadata so callers never parse text.
 */
export const ErrorReason = {
  INVALID_ARGUMENT: 'INVALID_ARGUMENT',
  UNKNOWN_FEATURE: 'UNKNOWN_FEATURE',
  UNKNOWN_PLAN: 'UNKNOWN_PLAN',
  COST_TOO_LARGE: 'COST_TOO_LARGE',
  ACCOUNT_NOT_FOUND: 'ACCOUNT_NOT_FOUND',
  RESERVATION_NOT_FOUND: 'RESERVATION_NOT_FOUND',
  INSUFFICIENT_CREDITS: 'INSUFFICIENT_CREDITS',
  IDEMPOTENCY_KEY_REUSED: 'IDEMPOTENCY_KEY_REUSED',
  RESERVATION_COMMITTED: 'RESERVATION_COMMITTED',
  RESERVATION_RELEASED: 'RESERVATION_RELEASED',
  RESERVATION_EXPIRED: 'RESERVATION_EXPIRED',
  RESERVATION_NOT_COMMITTED: 'RESERVATION_NOT_COMMITTED',
  REFUND_EXCEEDS_CHARGE: 'REFUND_EXCEEDS_CHARGE',
  ADJUSTMENT_EXCEEDS_BALANCE: 'ADJUSTMENT_EXCEEDS_BALANCE',
  POOL_LIMIT_EXCEEDED: 'POOL_LIMIT_EXCEEDED',
  PARENT_IMMUTABLE: 'PARENT_IMMUTABLE',
  PARENT_NOT_FOUND: 'PARENT_NOT_FOUND',
  PARENT_IS_SPACE: 'PARENT_IS_SPACE',
  ANCHOR_IMMUTABLE: 'ANCHOR_IMMUTABLE',
  PLAN_REQUIRED: 'PLAN_REQUIRED',
  SPACE_SETTING: 'SPACE_SETTING',
  ACCOUNT_IS_SPACE: 'ACCOUNT_IS_SPACE',
  ACCOUNT_EXISTS: 'ACCOUNT_EXISTS',
  LEDGER_DISABLED: 'LEDGER_DISABLED',
  PAYMENTS_DISABLED: 'PAYMENTS_DISABLED',
  BACKEND_UNAVAILABLE: 'BACKEND_UNAVAILABLE',
  TOKEN_MISSING: 'TOKEN_MISSING',
  TOKEN_INVALID: 'TOKEN_INVALID',
  PERMISSION_DENIED: 'PERMISSION_DENIED',
  INTERNAL: 'INTERNAL',
} as const;
export type ErrorReason = (typeof ErrorReason)[keyof typeof ErrorReason];

export type ErrorMetadata = Record<string, string>;

/** An operating error: expected, reported to the caller, counted by reason. */
export class DomainError extends Error {
  override name = 'DomainError';
  constructor(
    readonly reason: ErrorReason,
    message: string,
    readonly metadata: ErrorMetadata = {},
  ) {
    super(message);
  }
}

/** Bad input: names the field and the limit it broke. Nothing was changed. */
export function invalidArgument(field: string, problem: string, limit?: string): DomainError {
  const metadata: ErrorMetadata = { field };
  if (limit !== undefined) metadata.limit = limit;
  return new DomainError(ErrorReason.INVALID_ARGUMENT, `${field}: ${problem}`, metadata);
}

export function isErrorReason(value: string): value is ErrorReason {
  return Object.hasOwn(ErrorReason, value);
}
