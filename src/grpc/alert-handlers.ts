import type { handleServerStreamingCall } from '@grpc/grpc-js';
import { DomainError, ErrorReason } from '../domain/errors.js';
import type { Alert, WatchAlertsRequest } from '../gen/meterd/v1/billing.js';
import type { HandlerDependencies } from './handlers.js';
import { toServiceError } from './status-details.js';

/** WatchAlerts: a server stream of balance alerts from Postgres (see src/alerts/). */
export function watchAlertsHandler(deps: HandlerDependencies): handleServerStreamingCall<WatchAlertsRequest, Alert> {
  return (call) => {
    if (!deps.alerts) {
      call.emit('error', toServiceError(new DomainError(ErrorReason.LEDGER_DISABLED, 'alerts need the Postgres ledger')));
      return;
    }
    call.emit('error', toServiceError(new DomainError(ErrorReason.INTERNAL, 'WatchAlerts is not implemented yet')));
  };
}
