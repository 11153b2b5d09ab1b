import { status, type handleBidiStreamingCall } from '@grpc/grpc-js';
import { DomainError, ErrorReason } from '../domain/errors.js';
import { OperationResult, type OperationRequest, type MeteringServiceService } from '../gen/meterd/v1/metering_service.js';
import type { Logger } from '../observability/logger.js';
import { DATA_PLANE_SERVICE } from './auth.js';
import type { HandlerDependencies, meteringOperations } from './handlers.js';
import { toServiceError, toStatus } from './status-details.js';
import { assertDecoded } from './undecodable-request.js';
import { refusalOf } from './wrap-unary.js';

/**
 * StreamOperations, the high-throughput path: a gateway keeps one stream open and sends operations
 * tagged with its own op_id; each runs through exactly the operation the unary RPC runs (validation,
 * engine, refusals), and its result goes back by op_id as soon as it is ready, in any order. What
 * saves the CPU is what a stream does not do per operation: no new HTTP/2 stream, headers, call
 * object or metadata; and the operations a tick gathers reach Redis together (the store's batcher).
 * Metrics count each operation as the unary method it stands for (grpc_type "bidi_op").
 */

/** Operations of one stream running at once; more are refused with RESOURCE_EXHAUSTED (the client should wait). */
export const STREAM_OPERATIONS_IN_FLIGHT_MAX = 4_096;

const METHOD_OF = {
  reserve: 'ReserveCredits', commit: 'CommitReservation', release: 'ReleaseReservation', extend: 'ExtendReservation',
} as const;

type Operations = ReturnType<typeof meteringOperations>;

async function runOperation(operations: Operations, request: OperationRequest): Promise<OperationResult['result']> {
  const operation = request.operation;
  switch (operation?.$case) {
    case 'reserve': return { $case: 'reservation', value: await operations.reserveCredits(operation.value) };
    case 'commit': return { $case: 'commit', value: await operations.commitReservation(operation.value) };
    case 'release': return { $case: 'release', value: await operations.releaseReservation(operation.value) };
    case 'extend': return { $case: 'reservation', value: await operations.extendReservation(operation.value) };
    default:
      throw new DomainError(ErrorReason.INVALID_ARGUMENT, 'operation: set one of reserve, commit, release, extend', { field: 'operation' });
  }
}

function methodOf(request: OperationRequest): string {
  return request.operation ? METHOD_OF[request.operation.$case] : 'Unknown';
}

export function streamOperationsHandler(deps: HandlerDependencies, operations: Operations): handleBidiStreamingCall<OperationRequest, OperationResult> {
  const { logger, observe } = deps;
  return (call) => {
    try {
      deps.authorize?.(DATA_PLANE_SERVICE, call.metadata);
    } catch (err) {
      const refusal = refusalOf(err, 'StreamOperations', logger, () => call.getPeer());
      observe(DATA_PLANE_SERVICE, 'StreamOperations', toServiceError(refusal).code ?? status.INTERNAL, 0, refusal.reason);
      call.emit('error', toServiceError(refusal));
      return;
    }
    let inFlight = 0;
    let inputEnded = false;
    let closed = false;
    const endIfDone = () => {
      if (inputEnded && inFlight === 0 && !closed) {
        closed = true;
        call.end();
      }
    };
    // Slow readers: stop reading new operations until the results already written are taken.
    let paused = false;
    const send = (result: OperationResult) => {
      if (closed || call.cancelled) return;
      if (!call.write(result) && !paused) {
        paused = true;
        call.pause();
        call.once('drain', () => {
          paused = false;
          call.resume();
        });
      }
    };
    call.on('data', (request: OperationRequest) => {
      if (closed) return; // refused or gone: run nothing more
      try {
        assertDecoded(request);
      } catch (err) {
        // Bytes that are no OperationRequest have no op_id to answer by: the stream ends with the refusal.
        const refusal = refusalOf(err, 'StreamOperations', logger, () => call.getPeer());
        observe(DATA_PLANE_SERVICE, 'StreamOperations', toServiceError(refusal).code ?? status.INTERNAL, 0, refusal.reason);
        closed = true;
        call.emit('error', toServiceError(refusal));
        return;
      }
      const method = methodOf(request);
      if (inFlight >= STREAM_OPERATIONS_IN_FLIGHT_MAX) {
        const refusal = new DomainError(ErrorReason.INVALID_ARGUMENT, `more than ${STREAM_OPERATIONS_IN_FLIGHT_MAX} operations in flight on this stream; wait for results`, {
          field: 'op_id', limit: String(STREAM_OPERATIONS_IN_FLIGHT_MAX),
        });
        send({ opId: request.opId, result: { $case: 'error', value: { ...toStatus(refusal), code: status.RESOURCE_EXHAUSTED } } });
        return;
      }
      inFlight += 1;
      deps.started?.(DATA_PLANE_SERVICE, method);
      const startedAt = process.hrtime.bigint();
      const seconds = () => Number(process.hrtime.bigint() - startedAt) / 1e9;
      runOperation(operations, request).then(
        (result) => {
          observe(DATA_PLANE_SERVICE, method, status.OK, seconds());
          send({ opId: request.opId, result });
        },
        (err: unknown) => {
          const refusal = refusalOf(err, method, logger, () => call.getPeer());
          const error = toStatus(refusal);
          observe(DATA_PLANE_SERVICE, method, error.code, seconds(), refusal.reason);
          send({ opId: request.opId, result: { $case: 'error', value: error } });
        },
      ).finally(() => {
        inFlight -= 1;
        endIfDone();
      });
    });
    call.on('end', () => {
      inputEnded = true;
      endIfDone();
    });
    call.on('error', () => {
      closed = true;
    });
  };
}

/**
 * The metering service with StreamOperations' result encoder answering a result it cannot encode (a
 * bug, e.g. a negative amount where the reply has a uint64) with that operation's INTERNAL error:
 * a failing write would otherwise end the stream for every operation on it. Free when encoding works.
 */
export function withResultEncodingGuard(service: typeof MeteringServiceService, logger: Logger): typeof MeteringServiceService {
  const method = service.streamOperations;
  return {
    ...service,
    streamOperations: {
      ...method,
      responseSerialize: (result: OperationResult): Buffer => {
        try {
          return method.responseSerialize(result);
        } catch (err) {
          const internal = refusalOf(err, 'StreamOperations', logger, () => 'unknown'); // logs it, answers INTERNAL
          return Buffer.from(OperationResult.encode({ opId: result.opId, result: { $case: 'error', value: toStatus(internal) } }).finish());
        }
      },
    },
  };
}
