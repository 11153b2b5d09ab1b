import { Metadata, status, type ServiceError } from '@grpc/grpc-js';
import { DomainError, ErrorReason } from '../domain/errors.js';
import { ErrorInfo } from '../gen/google/rpc/error_details.js';
import { Status } from '../gen/google/rpc/status.js';

/** The one table from a refusal's reason to its gRPC status code (Google AIP-193 style). */
export const STATUS_BY_REASON: Record<ErrorReason, status> = {
  INVALID_ARGUMENT: status.INVALID_ARGUMENT,
  UNKNOWN_FEATURE: status.INVALID_ARGUMENT,
  UNKNOWN_PLAN: status.INVALID_ARGUMENT,
  COST_TOO_LARGE: status.INVALID_ARGUMENT,
  SPACE_SETTING: status.INVALID_ARGUMENT,
  PLAN_REQUIRED: status.INVALID_ARGUMENT,
  ACCOUNT_NOT_FOUND: status.NOT_FOUND,
  RESERVATION_NOT_FOUND: status.NOT_FOUND,
  PARENT_NOT_FOUND: status.FAILED_PRECONDITION,
  INSUFFICIENT_CREDITS: status.RESOURCE_EXHAUSTED,
  POOL_LIMIT_EXCEEDED: status.RESOURCE_EXHAUSTED,
  IDEMPOTENCY_KEY_REUSED: status.ALREADY_EXISTS,
  RESERVATION_COMMITTED: status.FAILED_PRECONDITION,
  RESERVATION_RELEASED: status.FAILED_PRECONDITION,
  RESERVATION_EXPIRED: status.FAILED_PRECONDITION,
  RESERVATION_NOT_COMMITTED: status.FAILED_PRECONDITION,
  REFUND_EXCEEDS_CHARGE: status.FAILED_PRECONDITION,
  ADJUSTMENT_EXCEEDS_BALANCE: status.FAILED_PRECONDITION,
  PARENT_IMMUTABLE: status.FAILED_PRECONDITION,
  PARENT_IS_SPACE: status.FAILED_PRECONDITION,
  ANCHOR_IMMUTABLE: status.FAILED_PRECONDITION,
  ACCOUNT_IS_SPACE: status.FAILED_PRECONDITION,
  ACCOUNT_EXISTS: status.ALREADY_EXISTS,
  LEDGER_DISABLED: status.FAILED_PRECONDITION,
  PAYMENTS_DISABLED: status.FAILED_PRECONDITION,
  BACKEND_UNAVAILABLE: status.UNAVAILABLE,
  TOKEN_MISSING: status.UNAUTHENTICATED,
  TOKEN_INVALID: status.UNAUTHENTICATED,
  PERMISSION_DENIED: status.PERMISSION_DENIED,
  INTERNAL: status.INTERNAL,
};

export const ERROR_DOMAIN = 'meterd';
const ERROR_INFO_TYPE_URL = 'type.googleapis.com/google.rpc.ErrorInfo';

/** A DomainError as google.rpc.Status{code, message, details: [ErrorInfo]} (also an operation's result on the stream). */
export function toStatus(error: DomainError): Status {
  const info = ErrorInfo.encode({ reason: error.reason, domain: ERROR_DOMAIN, metadata: error.metadata }).finish();
  return {
    code: STATUS_BY_REASON[error.reason],
    message: error.message,
    details: [{ typeUrl: ERROR_INFO_TYPE_URL, value: Buffer.from(info) }],
  };
}

/** Reads the ErrorInfo out of a google.rpc.Status. */
export function errorInfoOfStatus(decoded: Status): ErrorInfo | undefined {
  const any = decoded.details.find((d) => d.typeUrl === ERROR_INFO_TYPE_URL);
  return any ? ErrorInfo.decode(any.value) : undefined;
}

/** A DomainError as a gRPC error with google.rpc.Status{ErrorInfo} in grpc-status-details-bin. */
export function toServiceError(error: DomainError): Partial<ServiceError> {
  const code = STATUS_BY_REASON[error.reason];
  const details = Status.encode(toStatus(error)).finish();
  const metadata = new Metadata();
  metadata.set('grpc-status-details-bin', Buffer.from(details));
  return { code, details: error.message, metadata };
}

/** Reads the ErrorInfo back from a gRPC error (for clients and tests). */
export function errorInfoOf(error: { metadata?: Metadata }): ErrorInfo | undefined {
  const raw = error.metadata?.get('grpc-status-details-bin')[0];
  if (!raw || typeof raw === 'string') return undefined;
  return errorInfoOfStatus(Status.decode(raw));
}
