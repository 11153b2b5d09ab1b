import { credentials, Metadata, type CallOptions, type ChannelCredentials, type ClientUnaryCall, type ServiceError } from '@grpc/grpc-js';
import { AdminServiceClient } from '../../src/gen/meterd/v1/admin_service.js';
import { MeteringServiceClient } from '../../src/gen/meterd/v1/metering_service.js';
import { errorInfoOf } from '../../src/grpc/status-details.js';

type Callback<Res> = (err: ServiceError | null, res: Res) => void;
/** The generated client's unary methods as `(request) => Promise<response>` (inference reads the last
 *  overload, `(request, metadata, options, callback)`). */
type Promisified<C> = {
  [K in keyof C as C[K] extends (r: never, m: Metadata, o: Partial<CallOptions>, cb: never) => ClientUnaryCall ? K : never]:
    C[K] extends (request: infer Req, m: Metadata, o: Partial<CallOptions>, cb: Callback<infer Res>) => ClientUnaryCall
      ? (request: Req) => Promise<Res>
      : never;
};

function promisify<C extends object>(client: C, methods: string[], token?: string): Promisified<C> {
  const out: Record<string, unknown> = {};
  for (const method of methods) {
    const fn = (client as Record<string, unknown>)[method] as (req: unknown, md: Metadata, cb: Callback<unknown>) => void;
    out[method] = (request: unknown) => {
      const metadata = new Metadata();
      if (token !== undefined) metadata.set('authorization', `Bearer ${token}`);
      return new Promise((resolve, reject) => fn.call(client, request, metadata, (err, res) => (err ? reject(err) : resolve(res))));
    };
  }
  return out as Promisified<C>;
}

export interface ClientOptions {
  /** Sent as `authorization: Bearer <token>` on every call. */
  token?: string;
  /** Channel credentials (TLS); insecure by default. */
  channel?: ChannelCredentials;
  /** Overrides the TLS server name checked against the certificate. */
  serverName?: string;
}

export interface TestClients {
  metering: Promisified<MeteringServiceClient>;
  admin: Promisified<AdminServiceClient>;
  close(): void;
}

export function connectClients(port: number, options: ClientOptions = {}): TestClients {
  const address = `127.0.0.1:${port}`;
  const channel = options.channel ?? credentials.createInsecure();
  const channelOptions = options.serverName ? { 'grpc.ssl_target_name_override': options.serverName } : {};
  const metering = new MeteringServiceClient(address, channel, channelOptions);
  const admin = new AdminServiceClient(address, channel, channelOptions);
  return {
    metering: promisify(metering, ['reserveCredits', 'commitReservation', 'releaseReservation', 'extendReservation', 'getBalance'], options.token),
    admin: promisify(admin, ['upsertAccount', 'getAccount', 'changePlan', 'grantCredits', 'adjustCredits', 'refundCharge', 'getUsage', 'listLedgerEntries'], options.token),
    close() {
      metering.close();
      admin.close();
    },
  };
}

/** Awaits a call expected to fail; returns its status code, message and ErrorInfo. */
export async function rejection(promise: Promise<unknown>): Promise<{
  code: number; message: string; reason: string; metadata: Record<string, string>;
}> {
  try {
    await promise;
  } catch (err) {
    const error = err as ServiceError;
    const info = errorInfoOf(error);
    return { code: error.code, message: error.details, reason: info?.reason ?? '', metadata: info?.metadata ?? {} };
  }
  throw new Error('expected the call to fail, but it succeeded');
}
