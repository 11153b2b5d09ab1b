/**
 * meterd's gateway client (package entry point `meterd/client`): typed calls with deadlines and safe
 * retries, MeterdError for refusals, withCredits around a model call, and an optional
 * high-throughput mode over one StreamOperations stream.
 */
export { createMeterdClient } from './meterd-client.js';
export type {
  CallOptions, CommitInput, ExtendInput, MeterdClient, MeterdClientOptions, ReleaseInput, ReserveInput,
} from './meterd-client.js';
export { MeterdError } from './errors.js';
export { RETRY_POLICY_DEFAULT, type RetryPolicy } from './retry.js';
export { STREAM_IN_FLIGHT_MAX } from './transport.js';
export { EXTEND_AT_TTL_FRACTION, EXTEND_INTERVAL_MS_MIN, realTimers, withCredits } from './with-credits.js';
export type { Cost, CreditsOutcome, ExtensionTimers, Hold, WithCreditsOptions } from './with-credits.js';
export { CALL_DEADLINE_MS_DEFAULT, METERD_ADDRESS_DEFAULT, type TlsFiles } from './connection.js';
export { status } from '@grpc/grpc-js';
export type { CommitReservationResponse, ReleaseReservationResponse } from '../gen/meterd/v1/metering_service.js';
export type { Balance, Reservation } from '../gen/meterd/v1/types.js';
