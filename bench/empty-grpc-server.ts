/**
 * The gRPC ceiling: a grpc-js server with meterd's server options (src/grpc/server.ts) and one unary
 * method that answers an empty message at once. Run as a child process by bench/run.ts:
 *
 *   node --import tsx bench/empty-grpc-server.ts <port>
 *
 * Prints "listening <port>" when bound; exits on SIGTERM.
 */
import { Server, ServerCredentials, type ServiceDefinition } from '@grpc/grpc-js';
import { GRPC_MESSAGE_BYTES_MAX, GRPC_RESPONSE_BYTES_MAX } from '../src/config/limits.js';

/** Bytes in, bytes out: no protobuf work at all, so this is grpc-js + HTTP/2 alone. */
export const EMPTY_SERVICE: ServiceDefinition = {
  call: {
    path: '/bench.Empty/Call',
    requestStream: false,
    responseStream: false,
    requestSerialize: (b: Buffer) => b,
    requestDeserialize: (b: Buffer) => b,
    responseSerialize: (b: Buffer) => b,
    responseDeserialize: (b: Buffer) => b,
  },
};

const EMPTY = Buffer.alloc(0);

if (import.meta.url === `file://${process.argv[1]}`) {
  const port = Number(process.argv[2] ?? 0);
  const server = new Server({
    'grpc.max_receive_message_length': GRPC_MESSAGE_BYTES_MAX,
    'grpc.max_send_message_length': GRPC_RESPONSE_BYTES_MAX,
    'grpc.max_concurrent_streams': Number(process.env.GRPC_MAX_CONCURRENT_STREAMS ?? 1000),
    'grpc.keepalive_time_ms': 30_000,
    'grpc.keepalive_timeout_ms': 10_000,
  });
  server.addService(EMPTY_SERVICE, { call: (_call: unknown, callback: (e: null, r: Buffer) => void) => callback(null, EMPTY) });
  server.bindAsync(`127.0.0.1:${port}`, ServerCredentials.createInsecure(), (err, bound) => {
    if (err) {
      console.error(err.message);
      process.exit(1);
    }
    console.log(`listening ${bound}`);
  });
  const stop = () => server.tryShutdown(() => process.exit(0));
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}
