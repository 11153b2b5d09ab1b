import type { handleBidiStreamingCall } from '@grpc/grpc-js';
import type { OperationRequest, OperationResult } from '../gen/meterd/v1/metering_service.js';
import type { HandlerDependencies, meteringOperations } from './handlers.js';

/** StreamOperations: the high-throughput path (being built). */
export function streamOperationsHandler(
  _deps: HandlerDependencies, _operations: ReturnType<typeof meteringOperations>,
): handleBidiStreamingCall<OperationRequest, OperationResult> {
  return (call) => {
    call.end();
  };
}
