import { Server, ServerCredentials } from '@grpc/grpc-js';
import { GRPC_MESSAGE_BYTES_MAX, GRPC_RESPONSE_BYTES_MAX } from '../config/limits.js';
import { AdminServiceService } from '../gen/meterd/v1/admin_service.js';
import { MeteringServiceService } from '../gen/meterd/v1/metering_service.js';
import { adminHandlers, meteringHandlers, type HandlerDependencies } from './handlers.js';

export interface RunningGrpcServer {
  server: Server;
  port: number;
}

/** Both services on one port; request and response sizes bounded. */
export async function startGrpcServer(host: string, port: number, deps: HandlerDependencies): Promise<RunningGrpcServer> {
  const server = new Server({
    'grpc.max_receive_message_length': GRPC_MESSAGE_BYTES_MAX,
    'grpc.max_send_message_length': GRPC_RESPONSE_BYTES_MAX,
    'grpc.keepalive_time_ms': 30_000,
    'grpc.keepalive_timeout_ms': 10_000,
  });
  server.addService(MeteringServiceService, meteringHandlers(deps));
  server.addService(AdminServiceService, adminHandlers(deps));
  const boundPort = await new Promise<number>((resolve, reject) => {
    server.bindAsync(`${host}:${port}`, ServerCredentials.createInsecure(), (err, bound) => (err ? reject(err) : resolve(bound)));
  });
  return { server, port: boundPort };
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
