import { status, type ServiceError } from '@grpc/grpc-js';
import { ErrorInfo } from '../gen/google/rpc/error_details.js';
import type { Status } from '../gen/google/rpc/status.js';
import { errorInfoOf } from '../grpc/status-details.js';
import { describeServiceError } from './connection.js';

const ERROR_INFO_TYPE_URL = 'type.googleapis.com/google.rpc.ErrorInfo';

/** Reads an ErrorInfo metadata value as a bigint (credits are uint64 and may exceed 2^53). */
function bigintField(metadata: Record<string, string>, key: string): bigint | undefined {
  const value = metadata[key];
  return value !== undefined && /^-?\d+$/.test(value) ? BigInt(value) : undefined;
}

/**
 * Every refusal and transport failure the gateway client reports: the gRPC code, the ErrorInfo
 * reason (or the status name when meterd sent none, e.g. UNAVAILABLE from the network), the
 * server's message and the ErrorInfo metadata, with typed getters for the fields callers act on.
 */
export class MeterdError extends Error {
  override name = 'MeterdError';
  constructor(
    /** gRPC status code (e.g. status.RESOURCE_EXHAUSTED). */
    readonly code: status,
    /** ErrorInfo reason, e.g. INSUFFICIENT_CREDITS; the status name when there is no ErrorInfo. */
    readonly reason: string,
    message: string,
    readonly metadata: Readonly<Record<string, string>> = {},
    /** The reserve's request_id, so a caller may retry later with the same id (never charges twice). */
    readonly requestId?: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }

  /** Only UNAVAILABLE is worth retrying (with the same ids); everything else will fail the same way. */
  get retryable(): boolean {
    return this.code === status.UNAVAILABLE;
  }

  /** INSUFFICIENT_CREDITS: the credits the hold needed. */
  get required(): bigint | undefined {
    return bigintField(this.metadata, 'required');
  }

  /** INSUFFICIENT_CREDITS: what a new hold could use. */
  get available(): bigint | undefined {
    return bigintField(this.metadata, 'available');
  }

  /** INSUFFICIENT_CREDITS: what other holds had taken. */
  get held(): bigint | undefined {
    return bigintField(this.metadata, 'held');
  }

  /** INSUFFICIENT_CREDITS: when the allowance resets (ISO time), if the account has periods. */
  get periodEnd(): string | undefined {
    return this.metadata.period_end;
  }

  /** INVALID_ARGUMENT: the field that broke a limit. */
  get field(): string | undefined {
    return this.metadata.field;
  }

  /** A grpc-js error of a unary call, with meterd's ErrorInfo when it sent one. */
  static fromServiceError(error: ServiceError, address?: string, requestId?: string): MeterdError {
    const described = describeServiceError(error, address);
    const info = errorInfoOf(error);
    return new MeterdError(error.code, described.reason, described.message, info?.metadata ?? {}, requestId, { cause: error });
  }

  /** The google.rpc.Status a StreamOperations result carries: the refusal the unary RPC would give. */
  static fromStatus(rpcStatus: Status, requestId?: string): MeterdError {
    const any = rpcStatus.details.find((d) => d.typeUrl === ERROR_INFO_TYPE_URL);
    const info = any ? ErrorInfo.decode(any.value) : undefined;
    const reason = info?.reason ?? status[rpcStatus.code] ?? `CODE_${rpcStatus.code}`;
    return new MeterdError(rpcStatus.code, reason, rpcStatus.message || reason, info?.metadata ?? {}, requestId);
  }

  /** Anything thrown on the way (a MeterdError passes through). */
  static from(error: unknown, address?: string, requestId?: string): MeterdError {
    if (error instanceof MeterdError) return error;
    if (isGrpcError(error)) return MeterdError.fromServiceError(error, address, requestId);
    const message = error instanceof Error ? error.message : String(error);
    return new MeterdError(status.UNKNOWN, 'UNKNOWN', message, {}, requestId, { cause: error });
  }
}

function isGrpcError(err: unknown): err is ServiceError {
  return err instanceof Error && typeof (err as Partial<ServiceError>).code === 'number';
}
