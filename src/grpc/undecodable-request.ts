import type { ServiceDefinition } from '@grpc/grpc-js';
import { invalidArgument } from '../domain/errors.js';

/**
 * What a request that is not a valid protobuf encoding decodes to. grpc-js answers a throwing
 * request decoder with INTERNAL before any handler (or authentication) runs; decoding to this marker
 * instead lets the handlers authenticate first and then refuse the bytes with INVALID_ARGUMENT, the
 * caller's mistake it is.
 */
export class UndecodableRequest {
  constructor(readonly problem: string) {}
}

/** The service with each method's request decoder returning an UndecodableRequest instead of throwing. */
export function withTolerantDecoding<S extends ServiceDefinition>(service: S): S {
  const tolerant: Record<string, unknown> = {};
  for (const [name, method] of Object.entries(service)) {
    tolerant[name] = {
      ...method,
      requestDeserialize: (bytes: Buffer): unknown => {
        try {
          return method.requestDeserialize(bytes);
        } catch (err) {
          return new UndecodableRequest(err instanceof Error ? err.message : String(err));
        }
      },
    };
  }
  return tolerant as S;
}

/** Refuses a request that did not decode (field `request`). */
export function assertDecoded(request: unknown): void {
  if (request instanceof UndecodableRequest) {
    throw invalidArgument('request', `is not a valid protobuf encoding of this method's request (${request.problem.slice(0, 100)})`);
  }
}
