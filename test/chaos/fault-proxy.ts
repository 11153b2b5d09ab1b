/**
 * A toxiproxy-like TCP proxy for the chaos suite (loopback only), one between each meterd and Redis
 * and each meterd and Postgres. Faults, switchable at run time and healed by heal():
 * - latency: every chunk in a direction waits `ms` ± `jitterMs` (order kept);
 * - blackhole: bytes in both directions are held back, connections stay open (a partition: the
 *   client times out). Bytes are never dropped from the middle of a stream (TCP would retransmit
 *   them): when the blackhole ends they are delivered late, or every connection is reset;
 * - reset: every open connection is reset (RST), new ones are reset on accept while `down`;
 * - cutAfterRequest: the next reply from upstream on any connection is dropped and the connection
 *   cut, so the request ran but its answer is lost (the "lost reply" case);
 * - down: new connections are reset at once (and open ones reset).
 */
import { connect, createServer, type Server, type Socket } from 'node:net';
import { listenOnLoopback } from '../support/tcp-proxy.js';

const HOST = '127.0.0.1';

export type Direction = 'upstream' | 'downstream';

export interface FaultProxy {
  readonly name: string;
  readonly host: string;
  readonly port: number;
  /** Connections accepted so far. */
  readonly connectionsAccepted: number;
  latency(ms: number, jitterMs: number, direction?: Direction | 'both'): void;
  blackhole(on: boolean): void;
  /** Ends a blackhole: 'deliver' sends what was held back (late), 'reset' resets those connections. */
  endBlackhole(how: 'deliver' | 'reset'): void;
  /** Resets every open connection (RST) now. */
  resetAll(): void;
  /** While down, new connections are reset at once; going down resets the open ones. */
  down(on: boolean): void;
  /** Drops the next upstream reply (any connection) and cuts that connection. Resolves when it happened. */
  cutAfterRequest(): Promise<void>;
  /** Every fault off (latency 0, no blackhole, up, nothing armed). */
  heal(): void;
  close(): Promise<void>;
}

interface Pair {
  client: Socket;
  upstream: Socket;
  /** Chunks held back by a blackhole, per direction, in order. */
  held: Record<Direction, Buffer[]>;
}

export async function startFaultProxy(name: string, upstream: { host: string; port: number }): Promise<FaultProxy> {
  const pairs = new Set<Pair>();
  const latencyMs: Record<Direction, { ms: number; jitterMs: number }> = {
    upstream: { ms: 0, jitterMs: 0 }, downstream: { ms: 0, jitterMs: 0 },
  };
  let blackholed = false;
  let isDown = false;
  let accepted = 0;
  let armedCut: { resolve: () => void } | null = null;

  const reset = (socket: Socket): void => {
    if (socket.destroyed) return;
    // resetAndDestroy sends an RST (Node >= 16.17); a socket not yet connected just goes away.
    try {
      socket.resetAndDestroy();
    } catch {
      socket.destroy();
    }
  };

  /**
   * Forwards chunks from `from` to `to` in order: through the direction's latency (one FIFO queue
   * drained by one timer, so chunks can never overtake each other), held back while blackholed.
   */
  const pipe = (pair: Pair, from: Socket, to: Socket, direction: Direction): void => {
    const queue: Array<{ dueMs: number; chunk: Buffer }> = [];
    let timer: NodeJS.Timeout | undefined;
    const drain = (): void => {
      timer = undefined;
      const now = Date.now();
      while (queue.length > 0 && (queue[0] as { dueMs: number }).dueMs <= now) {
        const { chunk } = queue.shift() as { chunk: Buffer };
        if (blackholed) pair.held[direction].push(chunk);
        else if (!to.destroyed) to.write(chunk);
      }
      if (queue.length > 0) timer = setTimeout(drain, (queue[0] as { dueMs: number }).dueMs - now);
    };
    from.on('data', (chunk: Buffer) => {
      if (blackholed) {
        // Behind chunks still waiting out their latency, if any: they move to `held` first.
        if (queue.length > 0) queue.push({ dueMs: (queue.at(-1) as { dueMs: number }).dueMs, chunk });
        else pair.held[direction].push(chunk);
        return;
      }
      if (direction === 'downstream' && armedCut) {
        const cut = armedCut;
        armedCut = null;
        reset(pair.client);
        reset(pair.upstream);
        cut.resolve();
        return;
      }
      const { ms, jitterMs } = latencyMs[direction];
      if (ms === 0 && jitterMs === 0 && queue.length === 0) {
        if (!to.destroyed) to.write(chunk);
        return;
      }
      const delay = Math.max(0, ms + (Math.random() * 2 - 1) * jitterMs);
      const last = queue.at(-1);
      queue.push({ dueMs: Math.max(last?.dueMs ?? 0, Date.now() + delay), chunk });
      if (timer === undefined) timer = setTimeout(drain, Math.max(0, (queue[0] as { dueMs: number }).dueMs - Date.now()));
    });
    from.once('close', () => {
      if (timer !== undefined) clearTimeout(timer);
    });
  };

  const server: Server = createServer((client) => {
    accepted++;
    client.on('error', () => {});
    if (isDown) {
      reset(client);
      return;
    }
    const upstreamSocket = connect(upstream.port, upstream.host);
    upstreamSocket.on('error', () => {});
    upstreamSocket.setNoDelay(true);
    client.setNoDelay(true);
    const pair: Pair = { client, upstream: upstreamSocket, held: { upstream: [], downstream: [] } };
    pairs.add(pair);
    pipe(pair, client, upstreamSocket, 'upstream');
    pipe(pair, upstreamSocket, client, 'downstream');
    const end = () => {
      pairs.delete(pair);
      if (!client.destroyed) client.destroy();
      if (!upstreamSocket.destroyed) upstreamSocket.destroy();
    };
    client.once('close', end);
    upstreamSocket.once('close', end);
  });

  const port = await listenOnLoopback(server, `fault proxy ${name}`);

  const endBlackhole = (how: 'deliver' | 'reset'): void => {
    blackholed = false;
    for (const pair of [...pairs]) {
      const stalled = pair.held.upstream.length + pair.held.downstream.length > 0;
      if (how === 'reset' && stalled) {
        reset(pair.client);
        reset(pair.upstream);
        continue;
      }
      for (const chunk of pair.held.upstream.splice(0)) if (!pair.upstream.destroyed) pair.upstream.write(chunk);
      for (const chunk of pair.held.downstream.splice(0)) if (!pair.client.destroyed) pair.client.write(chunk);
    }
  };

  const resetAll = (): void => {
    for (const pair of [...pairs]) {
      reset(pair.client);
      reset(pair.upstream);
    }
  };

  return {
    name,
    host: HOST,
    port,
    get connectionsAccepted() {
      return accepted;
    },
    latency(ms, jitterMs, direction = 'both') {
      for (const d of ['upstream', 'downstream'] as const) {
        if (direction === 'both' || direction === d) latencyMs[d] = { ms, jitterMs };
      }
    },
    blackhole(on) {
      if (on) blackholed = true;
      else endBlackhole('deliver');
    },
    endBlackhole,
    resetAll,
    down(on) {
      isDown = on;
      if (on) resetAll();
    },
    cutAfterRequest() {
      if (armedCut) return Promise.resolve();
      return new Promise<void>((resolve) => {
        armedCut = { resolve };
      });
    },
    heal() {
      latencyMs.upstream = { ms: 0, jitterMs: 0 };
      latencyMs.downstream = { ms: 0, jitterMs: 0 };
      if (blackholed) endBlackhole('deliver');
      isDown = false;
      const cut = armedCut;
      armedCut = null;
      cut?.resolve();
    },
    async close() {
      armedCut?.resolve();
      armedCut = null;
      resetAll();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
