// Throwaway redis-server processes for integration tests: loopback only, no Docker,
// safe to use from several vitest workers at once (every server gets its own port and temp dir).
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, openSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { Redis } from 'ioredis';
import { exitCleanupRegistry, exitOf, terminate } from './child-processes.js';

const REDIS_SERVER = '/usr/bin/redis-server';
const HOST = '127.0.0.1';
const CLUSTER_SLOTS = 16384;
const CLUSTER_BUS_OFFSET = 10000;

export interface RedisServerHandle {
  host: string;
  port: number;
  dir: string;
  url: string;
  /** SIGTERM, wait up to 5 s for exit (then SIGKILL), remove the temp dir. */
  stop(): Promise<void>;
  /** SIGKILL and wait for exit; the dir (AOF, nodes.conf) is kept. */
  kill9(): Promise<void>;
  /** Start again on the same port and dir (stops the running process first, if any). */
  restart(): Promise<void>;
}

export interface RedisClusterHandle {
  nodes: Array<{ host: string; port: number }>;
  /** The individual servers, e.g. to kill9() one node. */
  servers: RedisServerHandle[];
  stop(): Promise<void>;
}

const registry = exitCleanupRegistry('__meterdRedisServers', (child) => child.kill('SIGKILL'));

function tryListen(port: number): Promise<number | null> {
  return new Promise((resolve) => {
    const srv = createServer();
    srv.unref();
    srv.once('error', () => resolve(null));
    srv.listen(port, HOST, () => {
      const addr = srv.address();
      const got = typeof addr === 'object' && addr !== null ? addr.port : null;
      srv.close(() => resolve(got));
    });
  });
}

export async function freePort(): Promise<number> {
  const port = await tryListen(0);
  if (port === null) throw new Error('could not bind an ephemeral port on 127.0.0.1');
  return port;
}

/** A free port p < max such that p + 10000 (the cluster bus port) is free as well. */
export async function freePortBelow(max: number): Promise<number> {
  for (let attempt = 0; attempt < 200; attempt++) {
    const port = await freePort();
    if (port < max && port + CLUSTER_BUS_OFFSET < 65536 && (await tryListen(port + CLUSTER_BUS_OFFSET)) !== null) {
      return port;
    }
  }
  throw new Error(`no free port below ${max} with a free bus port`);
}

async function logTail(dir: string): Promise<string> {
  const parts: string[] = [];
  for (const file of ['stdout.log', 'redis.log']) {
    const text = await readFile(join(dir, file), 'utf8').catch(() => '');
    if (text.trim() !== '') parts.push(`--- ${file}\n${text.trimEnd().split('\n').slice(-20).join('\n')}`);
  }
  return parts.join('\n') || '(no log output)';
}



function spawnRedis(port: number, dir: string, args: string[]): ChildProcess {
  // Startup errors (bad option) go to stdout before the logfile is opened, so keep them in a file too.
  const out = openSync(join(dir, 'stdout.log'), 'a');
  try {
    const child = spawn(
      REDIS_SERVER,
      ['--port', String(port), '--bind', HOST, '--dir', dir, '--logfile', join(dir, 'redis.log'), ...args],
      { stdio: ['ignore', out, out] },
    );
    child.unref(); // must not keep vitest alive; stop()/kill9() still wait for 'exit'
    registry.running.add(child);
    child.once('exit', () => registry.running.delete(child));
    return child;
  } finally {
    closeSync(out);
  }
}

type StartResult = { ok: true } | { ok: false; reason: string; portInUse: boolean };

/** Poll PING every 50 ms for up to 10 s; give up early if the process dies. */
async function waitForPing(child: ChildProcess, port: number, dir: string): Promise<StartResult> {
  let exited = false;
  void exitOf(child).then(() => (exited = true));
  const deadline = Date.now() + 10_000;
  let lastError = '';
  while (Date.now() < deadline) {
    if (exited) {
      const tail = await logTail(dir);
      return { ok: false, reason: `exited with ${child.exitCode ?? child.signalCode}`, portInUse: tail.includes('Address already in use') };
    }
    const client = new Redis({
      host: HOST,
      port,
      lazyConnect: true,
      retryStrategy: () => null,
      maxRetriesPerRequest: 0,
      connectTimeout: 1000,
    });
    client.on('error', () => {}); // failures are expected while the server boots
    try {
      await client.connect();
      if ((await client.ping()) === 'PONG') return { ok: true };
    } catch (err) {
      lastError = err instanceof Error ? err.message : String(err); // e.g. ECONNREFUSED, LOADING
    } finally {
      client.disconnect();
    }
    await sleep(50);
  }
  return { ok: false, reason: `no PONG within 10 s (last error: ${lastError})`, portInUse: false };
}

interface InternalOptions {
  extraArgs: (dir: string) => string[];
  pickPort: () => Promise<number>;
}

async function launch({ extraArgs, pickPort }: InternalOptions): Promise<RedisServerHandle> {
  const dir = await mkdtemp(join(tmpdir(), 'meterd-redis-'));
  registry.dirs.add(dir);
  const removeDir = async (): Promise<void> => {
    await rm(dir, { recursive: true, force: true });
    registry.dirs.delete(dir);
  };
  let port = 0;
  let child: ChildProcess | null = null;

  const startOnce = async (): Promise<StartResult> => {
    await mkdir(dir, { recursive: true }); // stop() removed it; restart() may still be used after that
    registry.dirs.add(dir);
    const proc = spawnRedis(port, dir, extraArgs(dir));
    child = proc;
    const res = await waitForPing(proc, port, dir);
    if (!res.ok) await terminate(proc, 'SIGKILL', 1000);
    return res;
  };
  const fail = async (res: StartResult & { ok: false }): Promise<never> => {
    const tail = await logTail(dir);
    await removeDir();
    throw new Error(`redis-server on ${HOST}:${port} failed to start: ${res.reason}\n${tail}`);
  };

  // Another worker may grab the port between freePort() and redis' bind(): retry on a new port.
  for (let attempt = 1; ; attempt++) {
    if (attempt > 1) await rm(dir, { recursive: true, force: true }); // drop stale logs / nodes.conf
    port = await pickPort();
    const res = await startOnce();
    if (res.ok) break;
    if (!res.portInUse || attempt >= 5) await fail(res);
  }

  const stopChild = async (signal: NodeJS.Signals): Promise<void> => {
    const current: ChildProcess | null = child;
    child = null;
    if (current) await terminate(current, signal, 5000);
  };

  return {
    host: HOST,
    port,
    dir,
    url: `redis://${HOST}:${port}`,
    async stop() {
      await stopChild('SIGTERM');
      await removeDir();
    },
    async kill9() {
      await stopChild('SIGKILL');
    },
    async restart() {
      await stopChild('SIGTERM');
      const res = await startOnce();
      if (!res.ok) throw new Error(`redis-server restart on ${HOST}:${port} failed: ${res.reason}\n${await logTail(dir)}`);
    },
  };
}

function baseArgs(appendonly: boolean): string[] {
  return [
    '--save', '', // no RDB snapshots
    '--appendonly', appendonly ? 'yes' : 'no',
    '--daemonize', 'no',
    '--maxmemory-policy', 'noeviction',
  ];
}

export async function startRedisServer(options: { appendonly?: boolean; extraArgs?: string[] } = {}): Promise<RedisServerHandle> {
  return launch({
    pickPort: freePort,
    extraArgs: () => [...baseArgs(options.appendonly ?? false), ...(options.extraArgs ?? [])],
  });
}

/** Parse CLUSTER SLOTS ([start, end, ...nodes][]) into the number of covered slots. */
function coveredSlots(reply: unknown): number {
  if (!Array.isArray(reply)) return 0;
  let total = 0;
  for (const range of reply) {
    if (Array.isArray(range) && typeof range[0] === 'number' && typeof range[1] === 'number') total += range[1] - range[0] + 1;
  }
  return total;
}

/**
 * N masters, no replicas. The cluster is formed by hand (no redis-cli): each node gets an
 * even share of the slots and a distinct config epoch, then the nodes MEET each other.
 */
export async function startRedisCluster(options: { masters?: number } = {}): Promise<RedisClusterHandle> {
  const masters = options.masters ?? 3;
  const servers: RedisServerHandle[] = [];
  const clients: Redis[] = [];
  const stop = async (): Promise<void> => {
    await Promise.all(servers.map((s) => s.stop()));
  };
  try {
    // Sequential so that our own nodes do not race each other for the same free port.
    for (let i = 0; i < masters; i++) {
      servers.push(
        await launch({
          // Bus port = port + 10000, so stay below 50000 and check the bus port too.
          pickPort: () => freePortBelow(50000),
          extraArgs: (dir) => [
            ...baseArgs(false),
            '--cluster-enabled', 'yes',
            '--cluster-config-file', join(dir, 'nodes.conf'),
            '--cluster-node-timeout', '2000',
          ],
        }),
      );
    }
    for (const s of servers) {
      const client = new Redis({ host: s.host, port: s.port, maxRetriesPerRequest: 1 });
      client.on('error', () => {});
      clients.push(client);
    }

    await Promise.all(
      clients.map(async (client, i) => {
        const first = Math.floor((CLUSTER_SLOTS * i) / masters);
        const last = Math.floor((CLUSTER_SLOTS * (i + 1)) / masters) - 1;
        await client.call('CLUSTER', 'ADDSLOTSRANGE', first, last);
        // Distinct epochs up front (as redis-cli does) avoid a slow epoch-collision resolution.
        await client.call('CLUSTER', 'SET-CONFIG-EPOCH', i + 1);
      }),
    );
    // Every node MEETs every later node: a full mesh up front instead of waiting for gossip.
    await Promise.all(
      clients.flatMap((c, i) => servers.slice(i + 1).map((s) => c.call('CLUSTER', 'MEET', HOST, s.port))),
    );

    // Ready when every node says ok, knows every other node and sees all slots assigned.
    const deadline = Date.now() + 20_000;
    for (;;) {
      const states = await Promise.all(
        clients.map(async (c, i) => {
          const info = String(await c.call('CLUSTER', 'INFO'));
          const state = /cluster_state:(\w+)/.exec(info)?.[1] ?? '?';
          const known = Number(/cluster_known_nodes:(\d+)/.exec(info)?.[1] ?? 0);
          const slots = coveredSlots(await c.call('CLUSTER', 'SLOTS'));
          return { ok: state === 'ok' && known === masters && slots === CLUSTER_SLOTS, text: `${servers[i]!.port}: state=${state} known=${known} slots=${slots}` };
        }),
      );
      if (states.every((s) => s.ok)) break;
      if (Date.now() > deadline) {
        throw new Error(`redis cluster did not become ready within 20 s (${states.map((s) => s.text).join(', ')})`);
      }
      await sleep(100);
    }
  } catch (err) {
    await stop();
    throw err;
  } finally {
    for (const c of clients) c.disconnect();
  }
  return { nodes: servers.map(({ host, port }) => ({ host, port })), servers, stop };
}
