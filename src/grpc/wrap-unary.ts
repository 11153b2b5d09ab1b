import { status, type handleUnaryCall, type sendUnaryData, type ServerUnaryCall } from '@grpc/grpc-js';
import { DomainError, ErrorReason } from '../domain/errors.js';
import type { Logger } from '../observability/logger.js';
import { toServiceError } from './status-details.js';

/** Observes every finished call (metrics hang off this in one place). */
export type CallObserver = (service: string, method: string, code: status, seconds: number, reason?: string) => void;

/**
 * The one wrapper around every handler: handlers only map proto ↔ domain and may throw.
 * A DomainError becomes its status with ErrorInfo; anything else becomes INTERNAL with a generic
 * message and a log line (the stack never reaches the caller).
 */
export function wrapUnary<Req, Res>(
  service: string,
  method: string,
  handler: (request: Req, call: ServerUnaryCall<Req, Res>) => Promise<Res>,
  logger: Logger,
  observe: CallObserver,
): handleUnaryCall<Req, Res> {
  return (call: ServerUnaryCall<Req, Res>, callback: sendUnaryData<Res>) => {
    const started = process.hrtime.bigint();
    const seconds = () => Number(process.hrtime.bigint() - started) / 1e9;
    handler(call.request, call).then(
      (response) => {
        observe(service, method, status.OK, seconds());
        callback(null, response);
      },
      (err: unknown) => {
        let domainError: DomainError;
        if (err instanceof DomainError) {
          domainError = err;
          if (err.reason === ErrorReason.BACKEND_UNAVAILABLE) logger.warn({ method, err }, 'credit store unavailable');
          else logger.debug({ method, reason: err.reason }, 'request refused');
        } else {
          logger.error({ method, err }, 'unexpected error in handler');
          domainError = new DomainError(ErrorReason.INTERNAL, 'internal error');
        }
        const serviceError = toServiceError(domainError);
        observe(service, method, serviceError.code ?? status.INTERNAL, seconds(), domainError.reason);
        callback(serviceError, null);
      },
    );
  };
}
