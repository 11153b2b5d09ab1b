import { status, type handleUnaryCall, type sendUnaryData, type ServerUnaryCall } from '@grpc/grpc-js';
import { DomainError, ErrorReason } from '../domain/errors.js';
import type { Logger } from '../observability/logger.js';
import type { Authorizer } from './auth.js';
import { toServiceError } from './status-details.js';
import { assertDecoded } from './undecodable-request.js';

/** Observes every finished call (metrics hang off this in one place). */
export type CallObserver = (service: string, method: string, code: status, seconds: number, reason?: string) => void;

export interface CallHooks {
  logger: Logger;
  observe: CallObserver;
  /** Sees every call as it starts. */
  started?: (service: string, method: string) => void;
  /** Refuses calls without a valid credential for this service (absent: authentication off). */
  authorize?: Authorizer | null;
}

/**
 * What a failed call answers: a DomainError as itself (logged by kind: outages and credential
 * refusals at warn, ordinary refusals at debug), anything else as INTERNAL with a log line (the
 * stack never reaches the caller). Shared by the unary wrapper and the operation stream.
 */
export function refusalOf(err: unknown, method: string, logger: Logger, peer: () => string): DomainError {
  if (!(err instanceof DomainError)) {
    logger.error({ method, err }, 'unexpected error in handler');
    return new DomainError(ErrorReason.INTERNAL, 'internal error');
  }
  if (err.reason === ErrorReason.BACKEND_UNAVAILABLE) logger.warn({ method, err }, 'credit store unavailable');
  else if (err.reason === ErrorReason.TOKEN_INVALID || err.reason === ErrorReason.PERMISSION_DENIED) {
    logger.warn({ method, reason: err.reason, peer: peer() }, 'call refused: credentials');
  } else logger.debug({ method, reason: err.reason }, 'request refused');
  return err;
}

/**
 * The one wrapper around every handler: handlers only map proto ↔ domain and may throw.
 * Authentication runs first; a DomainError becomes its status with ErrorInfo; anything else becomes
 * INTERNAL with a generic message and a log line (the stack never reaches the caller).
 */
export function wrapUnary<Req, Res>(
  service: string,
  method: string,
  handler: (request: Req, call: ServerUnaryCall<Req, Res>) => Promise<Res>,
  hooks: CallHooks,
): handleUnaryCall<Req, Res> {
  const { logger, observe, started, authorize } = hooks;
  return (call: ServerUnaryCall<Req, Res>, callback: sendUnaryData<Res>) => {
    const startedAt = process.hrtime.bigint();
    const seconds = () => Number(process.hrtime.bigint() - startedAt) / 1e9;
    started?.(service, method);
    const run = async () => {
      authorize?.(service, call.metadata);
      assertDecoded(call.request);
      return handler(call.request, call);
    };
    run().then(
      (response) => {
        const elapsed = seconds();
        observe(service, method, status.OK, elapsed);
        if (logger.isLevelEnabled('debug')) logger.debug({ method, code: 'OK', ms: elapsed * 1000 }, 'call');
        callback(null, response);
      },
      (err: unknown) => {
        const domainError = refusalOf(err, method, logger, () => call.getPeer());
        const serviceError = toServiceError(domainError);
        observe(service, method, serviceError.code ?? status.INTERNAL, seconds(), domainError.reason);
        callback(serviceError, null);
      },
    );
  };
}
