import { credentials, Metadata, type CallOptions, type ClientUnaryCall, type ServiceError } from '@grpc/grpc-js';
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

function promisify<C extends object>(client: C, methods: string[]): Promisified<C> {
  const out: Record<string, unknown> = {};
  for (const method of methods) {
    const fn = (client as Record<string, unknown>)[method] as (req: unknown, md: Metadata, cb: Callback<unknown>) => void;
    out[method] = (request: unknown) =>
      new Promise((resolve, reject) => fn.call(client, request, new Metadata(), (err, res) => (err ? reject(err) : resolve(res))));
  }
  return out as Promisified<C>;
}

export interface TestClients {
  metering: Promisified<MeteringServiceClient>;
  admin: Promisified<AdminServiceClient>;
  close(): void;
}

export function connectClients(port: number): TestClients {
  const address = `127.0.0.1:${port}`;
  const metering = new MeteringServiceClient(address, credentials.createInsecure());
  const admin = new AdminServiceClient(address, credentials.createInsecure());
  return {
    metering: promisify(metering, ['reserveCredits', 'commitReservation', 'releaseReservation', 'extendReservation', 'getBalance']),
    admin: promisify(admin, ['upsertAccount', 'getAccount', 'changePlan', 'grantCredits', 'adjustCredits', 'refundCharge', 'getUsage', 'listLedgerEntries']),
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
