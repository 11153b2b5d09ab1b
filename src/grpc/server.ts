import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Server, ServerCredentials } from '@grpc/grpc-js';
import { loadSync } from '@grpc/proto-loader';
import { ReflectionService } from '@grpc/reflection';
import { HealthImplementation, type ServingStatus } from 'grpc-health-check';
import { GRPC_MESSAGE_BYTES_MAX, GRPC_RESPONSE_BYTES_MAX } from '../config/limits.js';
import type { Settings } from '../config/settings.js';
import { AdminServiceService } from '../gen/meterd/v1/admin_service.js';
import { MeteringServiceService } from '../gen/meterd/v1/metering_service.js';
import { DATA_PLANE_SERVICE } from './auth.js';
import { adminHandlers, meteringHandlers, type HandlerDependencies } from './handlers.js';
import { withResultEncodingGuard } from './stream-operations.js';
import { withTolerantDecoding } from './undecodable-request.js';

/** The .proto files, for server reflection (proto/ in the repo; dist/proto in a build). */
const PROTO_DIRECTORY = fileURLToPath(new URL('../../proto/', import.meta.url));
const ADMIN_SERVICE = 'meterd.v1.AdminService';
/** Health answers for the whole server ('') and for each service. */
const HEALTH_SERVICES = ['', DATA_PLANE_SERVICE, ADMIN_SERVICE];

export interface RunningGrpcServer {
  server: Server;
  port: number;
  /** Sets every health entry at once (NOT_SERVING until ready, and from the moment draining starts). */
  setServing(serving: boolean): void;
}

type GrpcServerSettings = Pick<Settings, 'grpcHost' | 'grpcPort' | 'grpcTls' | 'grpcMaxConcurrentStreams'>;

/** Plain, TLS, or mutual TLS (clients must present a certificate the configured CA signed). */
function serverCredentials(tls: Settings['grpcTls']): ServerCredentials {
  if (!tls) return ServerCredentials.createInsecure();
  const ca = tls.clientCaFile === '' ? null : readFileSync(tls.clientCaFile);
  return ServerCredentials.createSsl(ca, [{ cert_chain: readFileSync(tls.certFile), private_key: readFileSync(tls.keyFile) }], ca !== null);
}

/**
 * Both meterd services on one port, plus grpc.health.v1 (for Kubernetes gRPC probes) and server
 * reflection (for grpcurl); request and response sizes and concurrent streams bounded.
 */
export async function startGrpcServer(settings: GrpcServerSettings, deps: HandlerDependencies): Promise<RunningGrpcServer> {
  const credentials = serverCredentials(settings.grpcTls); // read before binding: a bad file fails startup
  const server = new Server({
    'grpc.max_receive_message_length': GRPC_MESSAGE_BYTES_MAX,
    'grpc.max_send_message_length': GRPC_RESPONSE_BYTES_MAX,
    'grpc.max_concurrent_streams': settings.grpcMaxConcurrentStreams,
    'grpc.keepalive_time_ms': 30_000,
    'grpc.keepalive_timeout_ms': 10_000,
  });
  // Bytes that do not decode are refused by the handlers (INVALID_ARGUMENT, after authentication), not by grpc-js (INTERNAL).
  server.addService(withTolerantDecoding(withResultEncodingGuard(MeteringServiceService, deps.logger)), meteringHandlers(deps));
  server.addService(withTolerantDecoding(AdminServiceService), adminHandlers(deps));
  const health = new HealthImplementation(Object.fromEntries(HEALTH_SERVICES.map((s) => [s, 'NOT_SERVING' as ServingStatus])));
  health.addToServer(server);
  const definitions = loadSync(['meterd/v1/metering_service.proto', 'meterd/v1/admin_service.proto'], {
    includeDirs: [PROTO_DIRECTORY], keepCase: true, longs: String, enums: String, defaults: true, oneofs: true,
  });
  new ReflectionService(definitions).addToServer(server);
  const boundPort = await new Promise<number>((resolve, reject) => {
    server.bindAsync(`${settings.grpcHost}:${settings.grpcPort}`, credentials, (err, bound) => (err ? reject(err) : resolve(bound)));
  });
  return {
    server,
    port: boundPort,
    setServing(serving) {
      for (const service of HEALTH_SERVICES) health.setStatus(service, serving ? 'SERVING' : 'NOT_SERVING');
    },
  };
}

export function stopGrpcServer(server: Server, graceMs: number): Promise<void> {
  return new Promise((resolve) => {
    const force = setTimeout(() => {
      server.forceShutdown();
      resolve();
    }, graceMs);
    server.tryShutdown(() => {
      clearTimeout(force);
      resolve();
    });
  });
}
