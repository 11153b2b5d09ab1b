import { Metadata, type handleServerStreamingCall, type ServerWritableStream } from '@grpc/grpc-js';
import { checkId } from '../domain/commands.js';
import { DomainError, ErrorReason, invalidArgument } from '../domain/errors.js';
import type { Alert, WatchAlertsRequest } from '../gen/meterd/v1/billing.js';
import type { HandlerDependencies } from './handlers.js';
import { toServiceError } from './status-details.js';
import { assertDecoded } from './undecodable-request.js';

const ADMIN_SERVICE = 'meterd.v1.AdminService';
/** Response header with the position the stream starts after (0 resolved to the newest alert's). */
export const START_POSITION_HEADER = 'meterd-after-position';
/** Positions are Postgres bigints: a larger after_position could only fail every poll. */
const POSITION_MAX = 2n ** 63n - 1n;

type AlertCall = ServerWritableStream<WatchAlertsRequest, Alert>;

/**
 * WatchAlerts: a server stream of balance alerts from Postgres (src/alerts/), until the client
 * cancels or meterd shuts down (then UNAVAILABLE: the client reconnects with after_position = the
 * last position it received). Headers go out as soon as the starting point is fixed, carrying it in
 * `meterd-after-position`, so a client knows every alert written from then on will reach it.
 */
export function watchAlertsHandler(deps: HandlerDependencies): handleServerStreamingCall<WatchAlertsRequest, Alert> {
  return (call) => {
    const cancelled = new AbortController();
    call.on('cancelled', () => cancelled.abort());
    if (call.cancelled) cancelled.abort();
    streamAlerts(deps, call, cancelled.signal).then(
      () => {
        if (cancelled.signal.aborted) return; // the client left: nobody to tell
        call.emit('error', toServiceError(new DomainError(ErrorReason.BACKEND_UNAVAILABLE,
          'meterd is shutting down: reconnect with after_position = the last position received')));
      },
      (err: unknown) => {
        if (cancelled.signal.aborted) return;
        call.emit('error', toServiceError(refusalOf(deps, call, err)));
      },
    );
  };
}

async function streamAlerts(deps: HandlerDependencies, call: AlertCall, cancelled: AbortSignal): Promise<void> {
  deps.authorize?.(ADMIN_SERVICE, call.metadata);
  assertDecoded(call.request);
  const feed = deps.alerts;
  if (!feed) throw new DomainError(ErrorReason.LEDGER_DISABLED, 'alerts need the Postgres ledger');
  const { accountId, afterPosition } = call.request;
  if (afterPosition > POSITION_MAX) throw invalidArgument('after_position', `is ${afterPosition}; at most ${POSITION_MAX}`, String(POSITION_MAX));
  const filter = { accountId: accountId === '' ? '' : checkId('account_id', accountId), afterPosition };
  const onStart = (start: bigint) => {
    const headers = new Metadata();
    headers.set(START_POSITION_HEADER, start.toString());
    call.sendMetadata(headers);
  };
  try {
    await feed.follow(filter, (alert) => write(call, alert, cancelled), cancelled, onStart);
  } catch (err) {
    if (err instanceof DomainError) throw err;
    // Postgres failed under the feed: the client resumes by position once it is back.
    deps.logger.warn({ err }, 'WatchAlerts: the alert feed failed');
    throw new DomainError(ErrorReason.BACKEND_UNAVAILABLE, 'alerts are unavailable (Postgres): reconnect with after_position = the last position received');
  }
}

/** Writes one alert; when the client reads slower than alerts come, waits for 'drain' (or a cancel). */
async function write(call: AlertCall, alert: Alert, cancelled: AbortSignal): Promise<void> {
  if (cancelled.aborted || call.write(alert)) return;
  await new Promise<void>((resolve) => {
    const done = () => {
      call.off('drain', done);
      cancelled.removeEventListener('abort', done);
      resolve();
    };
    call.on('drain', done);
    cancelled.addEventListener('abort', done);
  });
}

function refusalOf(deps: HandlerDependencies, call: AlertCall, err: unknown): DomainError {
  if (err instanceof DomainError) {
    if (err.reason === ErrorReason.TOKEN_MISSING || err.reason === ErrorReason.TOKEN_INVALID || err.reason === ErrorReason.PERMISSION_DENIED) {
      deps.logger.warn({ method: 'WatchAlerts', reason: err.reason, peer: call.getPeer() }, 'call refused: credentials');
    }
    return err;
  }
  deps.logger.error({ method: 'WatchAlerts', err }, 'unexpected error in handler');
  return new DomainError(ErrorReason.INTERNAL, 'internal error');
}
