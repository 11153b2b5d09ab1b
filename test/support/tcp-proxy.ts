// A tiny TCP proxy for fault injection between meterd and Redis (loopback only).
// It forwards bytes both ways unchanged, and can be told to swallow the next reply from Redis that
// contains a marker (e.g. a request id): that chunk is dropped and the connection is cut, so the
// command has run in Redis but the client never sees the answer — the "lost reply" case.
import { connect, createServer, type Server, type Socket } from 'node:net';

const HOST = '127.0.0.1';

export interface TcpProxy {
  host: string;
  port: number;
  /** redis://127.0.0.1:<port>, for REDIS_URL / RedisTarget.url. */
  url: string;
  /** Client connections accepted so far (a reconnect shows up as one more). */
  readonly connectionsAccepted: number;
  /**
   * Arms the proxy: the next chunk from the upstream server containing `marker` is not forwarded,
   * and both sockets of that connection are destroyed. Resolves once that has happened, with the
   * dropped chunk (preceded by the few bytes of the previous chunk the marker may have started in).
   * Only one marker can be armed at a time.
   */
  swallowNextReplyContaining(marker: string): Promise<Buffer>;
  /** Forgets an armed marker that did not match (its promise rejects). */
  disarm(): void;
  /** Destroys every open connection and stops listening. */
  close(): Promise<void>;
}

interface Armed {
  marker: Buffer;
  resolve: (chunk: Buffer) => void;
  reject: (err: Error) => void;
}

/** Starts `server` on a free loopback port; returns the port. */
export async function listenOnLoopback(server: Server, what: string): Promise<number> {
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, HOST, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const address = server.address();
  if (typeof address !== 'object' || address === null) throw new Error(`${what}: no listening address`);
  return address.port;
}

export async function startTcpProxy(upstream: { host: string; port: number }): Promise<TcpProxy> {
  const sockets = new Set<Socket>();
  let armed: Armed | null = null;
  let accepted = 0;

  const track = (socket: Socket): void => {
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
    socket.on('error', () => {}); // resets are expected: we cut connections on purpose
  };

  const server: Server = createServer((client) => {
    accepted++;
    track(client);
    const redis = connect(upstream.port, upstream.host);
    track(redis);
    // The end of the previous upstream chunk, so a marker split across two chunks is still found.
    let tail = Buffer.alloc(0);

    client.on('data', (chunk: Buffer) => {
      if (!redis.write(chunk)) {
        client.pause();
        redis.once('drain', () => client.resume());
      }
    });
    redis.on('data', (chunk: Buffer) => {
      const current = armed;
      if (current) {
        const window = tail.length > 0 ? Buffer.concat([tail, chunk]) : chunk;
        if (window.includes(current.marker)) {
          armed = null;
          client.destroy();
          redis.destroy();
          current.resolve(window);
          return;
        }
        const keep = current.marker.length - 1;
        tail = Buffer.from(window.subarray(Math.max(0, window.length - keep)));
      } else {
        tail = Buffer.alloc(0);
      }
      if (!client.write(chunk)) {
        redis.pause();
        client.once('drain', () => redis.resume());
      }
    });
    client.once('close', () => redis.destroy());
    redis.once('close', () => client.destroy());
  });

  const port = await listenOnLoopback(server, 'tcp proxy');

  const disarm = (): void => {
    const current = armed;
    armed = null;
    current?.reject(new Error(`tcp proxy: marker "${current.marker.toString()}" was never seen`));
  };

  return {
    host: HOST,
    port,
    url: `redis://${HOST}:${port}`,
    get connectionsAccepted() {
      return accepted;
    },
    swallowNextReplyContaining(marker: string): Promise<Buffer> {
      if (marker === '') throw new Error('tcp proxy: empty marker');
      if (armed) throw new Error(`tcp proxy: already armed with "${armed.marker.toString()}"`);
      const swallowed = new Promise<Buffer>((resolve, reject) => {
        armed = { marker: Buffer.from(marker, 'utf8'), resolve, reject };
      });
      swallowed.catch(() => {}); // a caller that never awaits it must not see an unhandled rejection
      return swallowed;
    },
    disarm,
    async close() {
      disarm();
      for (const socket of sockets) socket.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
