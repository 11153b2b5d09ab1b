import { readFileSync } from 'node:fs';
import {
  Channel, credentials, Metadata, status,
  type CallOptions, type ChannelCredentials, type ClientUnaryCall, type ServiceError,
} from '@grpc/grpc-js';
import { GRPC_RESPONSE_BYTES_MAX } from '../config/limits.js';
import {
  AdjustCreditsRequest, AdminServiceClient, ChangePlanRequest, GetAccountRequest, GetUsageRequest, GrantCreditsRequest,
  ListLedgerEntriesRequest, RefundChargeRequest, UpsertAccountRequest,
} from '../gen/meterd/v1/admin_service.js';
import {
  CommitReservationRequest, ExtendReservationRequest, GetBalanceRequest, MeteringServiceClient, ReleaseReservationRequest,
  ReserveCreditsRequest,
} from '../gen/meterd/v1/metering_service.js';
import {
  CreateCheckoutSessionRequest, GetAutoRefillRequest, ListCreditPacksRequest, SetAutoRefillRequest, SetStripeCustomerRequest,
  WatchAlertsRequest, type Alert,
} from '../gen/meterd/v1/billing.js';
import type { DeepPartial } from '../gen/meterd/v1/types.js';
import { errorInfoOf } from '../grpc/status-details.js';

/**
 * A connection to a running meterd: both generated service clients over one channel, with the bearer
 * token and a deadline on every call, and promise-returning methods. The CLI uses it; the gateway
 * client will grow out of it.
 */

/** Every call fails with DEADLINE_EXCEEDED after this long (ConnectOptions.deadlineMs overrides it). */
export const CALL_DEADLINE_MS_DEFAULT = 5_000;
export const METERD_ADDRESS_DEFAULT = '127.0.0.1:50051';

export interface TlsFiles {
  /** PEM CA that signed the server's certificate; absent: the system's roots. */
  caFile?: string | undefined;
  /** PEM client certificate and key, both or neither (mutual TLS). */
  certFile?: string | undefined;
  keyFile?: string | undefined;
}

export interface ConnectOptions {
  /** host:port */
  address: string;
  /** Sent as `authorization: Bearer <token>` on every call. */
  token?: string | undefined;
  /** Absent: plaintext (insecure) channel. */
  tls?: TlsFiles | undefined;
  deadlineMs?: number | undefined;
}

/** A generated unary method, as overloaded by ts-proto (inference picks this, the last overload). */
type UnaryMethod<Req, Res> = (
  request: Req, metadata: Metadata, options: Partial<CallOptions>,
  callback: (error: ServiceError | null, response: Res) => void,
) => ClientUnaryCall;

/** Fills the fields a partial request leaves out with proto3 defaults (the generated fromPartial). */
interface RequestFns<Req> {
  fromPartial(object: DeepPartial<Req>): Req;
}

export type UnaryCall<Req, Res> = (request: DeepPartial<Req>) => Promise<Res>;
type Calls<Client> = {
  [K in keyof Client]: Client[K] extends UnaryMethod<infer Req, infer Res> ? UnaryCall<Req, Res> : never;
};

export class ConnectionSetupError extends Error {
  override name = 'ConnectionSetupError';
}

function readPem(path: string, what: string): Buffer {
  try {
    return readFileSync(path);
  } catch (err) {
    throw new ConnectionSetupError(`cannot read the ${what} ${path}: ${(err as Error).message}`);
  }
}

function channelCredentials(tls: TlsFiles | undefined): ChannelCredentials {
  if (!tls) return credentials.createInsecure();
  if ((tls.certFile === undefined) !== (tls.keyFile === undefined)) {
    throw new ConnectionSetupError('a TLS client certificate needs its key and the key its certificate (give both or neither)');
  }
  const ca = tls.caFile !== undefined ? readPem(tls.caFile, 'TLS CA file') : null;
  const key = tls.keyFile !== undefined ? readPem(tls.keyFile, 'TLS key file') : null;
  const cert = tls.certFile !== undefined ? readPem(tls.certFile, 'TLS certificate file') : null;
  return credentials.createSsl(ca, key, cert);
}

function bind<Req, Res>(
  client: object, method: UnaryMethod<Req, Res>, fns: RequestFns<Req>,
  metadata: () => Metadata, deadlineMs: number,
): UnaryCall<Req, Res> {
  return (request) => new Promise<Res>((resolve, reject) => {
    method.call(client, fns.fromPartial(request), metadata(), { deadline: Date.now() + deadlineMs },
      (error, response) => (error ? reject(error) : resolve(response)));
  });
}

export interface MeterdConnection {
  address: string;
  metering: Pick<Calls<MeteringServiceClient>,
    'reserveCredits' | 'commitReservation' | 'releaseReservation' | 'extendReservation' | 'getBalance'>;
  admin: Pick<Calls<AdminServiceClient>,
    'upsertAccount' | 'getAccount' | 'changePlan' | 'grantCredits' | 'adjustCredits' | 'refundCharge' | 'getUsage' | 'listLedgerEntries'
    | 'listCreditPacks' | 'createCheckoutSession' | 'setStripeCustomer' | 'setAutoRefill' | 'getAutoRefill'>;
  /**
   * WatchAlerts: calls onAlert for each alert until the stream ends, fails, or `signal` aborts (no
   * deadline); onStart gets the position the server starts after (header meterd-after-position).
   */
  watchAlerts(request: DeepPartial<WatchAlertsRequest>, onAlert: (alert: Alert) => void, signal?: AbortSignal,
    onStart?: (afterPosition: bigint) => void): Promise<void>;
  /** Raw generated clients, for streaming or per-call options the helpers do not cover. */
  clients: { metering: MeteringServiceClient; admin: AdminServiceClient };
  close(): void;
}

/**
 * A call's metadata: the bearer token, if any. Per-call metadata rather than call credentials:
 * grpc-js refuses call credentials on a plaintext channel, and a sidecar on localhost often runs
 * without TLS but with tokens.
 */
export function callMetadata(token: string | undefined): Metadata {
  const md = new Metadata();
  if (token) md.set('authorization', `Bearer ${token}`);
  return md;
}

export function connectMeterd(options: ConnectOptions): MeterdConnection {
  const creds = channelCredentials(options.tls);
  // One channel for both services (one HTTP/2 connection); responses up to a full ledger page.
  const channel = new Channel(options.address, creds, { 'grpc.max_receive_message_length': GRPC_RESPONSE_BYTES_MAX });
  const metering = new MeteringServiceClient(options.address, creds, { channelOverride: channel });
  const admin = new AdminServiceClient(options.address, creds, { channelOverride: channel });
  const metadata = (): Metadata => callMetadata(options.token);
  const deadlineMs = options.deadlineMs ?? CALL_DEADLINE_MS_DEFAULT;
  const m = <Req, Res>(method: UnaryMethod<Req, Res>, fns: RequestFns<Req>) => bind(metering, method, fns, metadata, deadlineMs);
  const a = <Req, Res>(method: UnaryMethod<Req, Res>, fns: RequestFns<Req>) => bind(admin, method, fns, metadata, deadlineMs);
  return {
    address: options.address,
    metering: {
      reserveCredits: m(metering.reserveCredits, ReserveCreditsRequest),
      commitReservation: m(metering.commitReservation, CommitReservationRequest),
      releaseReservation: m(metering.releaseReservation, ReleaseReservationRequest),
      extendReservation: m(metering.extendReservation, ExtendReservationRequest),
      getBalance: m(metering.getBalance, GetBalanceRequest),
    },
    admin: {
      upsertAccount: a(admin.upsertAccount, UpsertAccountRequest),
      getAccount: a(admin.getAccount, GetAccountRequest),
      changePlan: a(admin.changePlan, ChangePlanRequest),
      grantCredits: a(admin.grantCredits, GrantCreditsRequest),
      adjustCredits: a(admin.adjustCredits, AdjustCreditsRequest),
      refundCharge: a(admin.refundCharge, RefundChargeRequest),
      getUsage: a(admin.getUsage, GetUsageRequest),
      listLedgerEntries: a(admin.listLedgerEntries, ListLedgerEntriesRequest),
      listCreditPacks: a(admin.listCreditPacks, ListCreditPacksRequest),
      createCheckoutSession: a(admin.createCheckoutSession, CreateCheckoutSessionRequest),
      setStripeCustomer: a(admin.setStripeCustomer, SetStripeCustomerRequest),
      setAutoRefill: a(admin.setAutoRefill, SetAutoRefillRequest),
      getAutoRefill: a(admin.getAutoRefill, GetAutoRefillRequest),
    },
    watchAlerts: (request, onAlert, signal, onStart) => new Promise<void>((resolve, reject) => {
      const stream = admin.watchAlerts(WatchAlertsRequest.fromPartial(request), metadata());
      stream.on('metadata', (headers: Metadata) => {
        const position = headers.get('meterd-after-position')[0];
        if (typeof position === 'string' && /^\d+$/.test(position)) onStart?.(BigInt(position));
      });
      const abort = () => stream.cancel();
      signal?.addEventListener('abort', abort, { once: true });
      stream.on('data', onAlert);
      stream.on('end', resolve);
      stream.on('error', (err: ServiceError) => {
        signal?.removeEventListener('abort', abort);
        if (err.code === status.CANCELLED && signal?.aborted) resolve();
        else reject(err);
      });
    }),
    clients: { metering, admin },
    close() {
      metering.close();
      admin.close();
      channel.close();
    },
  };
}

export function isServiceError(err: unknown): err is ServiceError {
  return err instanceof Error && typeof (err as Partial<ServiceError>).code === 'number' && 'details' in err;
}

export interface DescribedError {
  /** Human-readable: the server's message, or what went wrong reaching it. */
  message: string;
  /** The ErrorInfo reason (e.g. INSUFFICIENT_CREDITS), else the gRPC status name (e.g. UNAVAILABLE). */
  reason: string;
  code: status;
  /** ErrorInfo metadata: every value the message mentions. */
  metadata: Record<string, string>;
}

/** A gRPC error as "what happened" and a reason, read from the ErrorInfo meterd attaches. */
export function describeServiceError(error: ServiceError, address?: string): DescribedError {
  const info = errorInfoOf(error);
  if (info) return { message: error.details, reason: info.reason, code: error.code, metadata: info.metadata };
  const reason = status[error.code] ?? `CODE_${error.code}`;
  const where = address ? ` at ${address}` : '';
  let message = error.details || reason;
  // grpc-js ends connection failures with an often empty "Resolution note:": drop it when empty.
  if (error.code === status.UNAVAILABLE) message = `cannot reach meterd${where}: ${error.details.replace(/\.?\s*Resolution note:\s*$/, '')}`;
  // grpc-js appends per-phase timings after a comma ("Deadline exceeded after 5.001s,name resolution: ..."): keep the first part.
  else if (error.code === status.DEADLINE_EXCEEDED) message = `meterd${where} did not answer in time: ${error.details.split(',')[0]}`;
  return { message, reason, code: error.code, metadata: {} };
}
