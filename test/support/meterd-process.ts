// meterd as a real OS process (`tsx src/main.ts`), as a gateway sidecar runs it, for tests that
// kill it: the same harness as concurrency.test.ts, plus SIGKILL and a look at its process group.
import { spawn, type ChildProcess } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { status, type ServiceError } from '@grpc/grpc-js';
import { connectClients } from './grpc-clients.js';
import { freePort } from './redis-servers.js';
import { exitCleanupRegistry, exitOf, exitsWithin } from './child-processes.js';

const REPO_ROOT = fileURLToPath(new URL('../../', import.meta.url));
const TSX = join(REPO_ROOT, 'node_modules/.bin/tsx');
const READY_WITHIN_MS = 30_000;
const STOP_GRACE_MS = 5_000;
const OUTPUT_TAIL_CHARS = 8_000;

export interface MeterdProcess {
  child: ChildProcess;
  port: number;
  /** The last few KB of its stdout and stderr, for failure messages. */
  output(): string;
  exited(): boolean;
}

// Last resort if the test process ends without afterAll: each meterd leads its own process group
// (tsx runs meterd in a child node process), which a signal to the test process would not reach.
const registry = exitCleanupRegistry('__meterdProcesses', (child) => killGroup(child, 'SIGKILL'));

/** A product config file for spawned processes, in a temp dir removed by remove() (or when the test process ends). */
export async function writeProductConfig(yaml: string): Promise<{ path: string; remove(): Promise<void> }> {
  const dir = await mkdtemp(join(tmpdir(), 'meterd-process-'));
  registry.dirs.add(dir);
  const path = join(dir, 'product.yaml');
  await writeFile(path, yaml);
  return {
    path,
    async remove() {
      await rm(dir, { recursive: true, force: true });
      registry.dirs.delete(dir);
    },
  };
}

function killGroup(child: ChildProcess, signal: NodeJS.Signals): void {
  if (child.pid === undefined) return;
  try {
    process.kill(-child.pid, signal);
  } catch {
    // ESRCH: the group is gone already
  }
}


function forget(p: MeterdProcess): void {
  p.child.stdout?.destroy();
  p.child.stderr?.destroy();
  registry.running.delete(p.child);
}

/** SIGTERM (meterd drains), SIGKILL to the whole group after the grace period or when leftovers remain. */
export async function stopMeterdProcess(p: MeterdProcess): Promise<void> {
  if (!p.exited()) p.child.kill('SIGTERM'); // tsx relays it to meterd
  const inTime = await exitsWithin(p.child, STOP_GRACE_MS);
  killGroup(p.child, 'SIGKILL'); // a no-op when everything exited; otherwise nothing survives
  if (!inTime) await exitOf(p.child);
  forget(p);
}

/** kill -9 of meterd and tsx together (the whole process group), waiting until it is gone. */
export async function kill9MeterdProcess(p: MeterdProcess): Promise<void> {
  const exited = exitOf(p.child);
  killGroup(p.child, 'SIGKILL');
  await exited;
  // The group leader is reaped; wait (briefly) for the node process tsx started as well.
  const deadline = Date.now() + 5_000;
  while (p.child.pid !== undefined && processGroupPids(p.child.pid).length > 0 && Date.now() < deadline) await sleep(10);
  forget(p);
}

/** Pids of a process group (Linux /proc): tsx's and the node process that runs meterd. */
export function processGroupPids(pgid: number): number[] {
  const pids: number[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = readFileSync(`/proc/${name}/stat`, 'utf8');
      // pid (comm) state ppid pgrp ...; comm may contain spaces and parentheses, so split after the last ')'.
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      if (Number(fields[2]) === pgid && fields[0] !== 'Z') pids.push(Number(name));
    } catch {
      // the process ended meanwhile
    }
  }
  return pids;
}

function isServiceError(err: unknown): err is ServiceError {
  return typeof err === 'object' && err !== null && typeof (err as Partial<ServiceError>).code === 'number';
}

/** Ready once it answers: NOT_FOUND for an unknown account means gRPC and Redis both work. */
async function waitUntilServing(p: MeterdProcess, probeAccountId: string): Promise<void> {
  const deadline = Date.now() + READY_WITHIN_MS;
  let last = 'no answer yet';
  while (Date.now() < deadline) {
    if (p.exited()) throw new Error(`meterd on port ${p.port} exited (${p.child.exitCode ?? p.child.signalCode}):\n${p.output()}`);
    const probe = connectClients(p.port); // a fresh channel: no reconnect backoff carried over
    try {
      await probe.metering.getBalance({ accountId: probeAccountId });
      throw new Error(`probe account ${probeAccountId} unexpectedly exists`);
    } catch (err) {
      if (!isServiceError(err)) throw err;
      if (err.code === status.NOT_FOUND) return;
      if (err.code !== status.UNAVAILABLE) throw new Error(`meterd on port ${p.port} answered ${err.code} ${err.details}`);
      last = err.details;
    } finally {
      probe.close();
    }
    await sleep(200);
  }
  throw new Error(`meterd on port ${p.port} did not serve within ${READY_WITHIN_MS} ms (last: ${last}):\n${p.output()}`);
}

function spawnMeterd(port: number, env: Record<string, string>): MeterdProcess {
  const child = spawn(TSX, ['src/main.ts'], {
    cwd: REPO_ROOT,
    // A clean environment: nothing from the test runner (e.g. REDIS_CLUSTER_NODES) leaks in.
    env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: process.env.HOME ?? tmpdir(), TMPDIR: tmpdir(), ...env, GRPC_HOST: '127.0.0.1', GRPC_PORT: String(port), HTTP_HOST: '127.0.0.1', HTTP_PORT: env.HTTP_PORT ?? '0' },
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: true, // its own process group, so the node process tsx starts can be killed with it
  });
  registry.running.add(child);
  let output = '';
  const keep = (chunk: Buffer) => {
    output = (output + chunk.toString('utf8')).slice(-OUTPUT_TAIL_CHARS);
  };
  child.stdout?.on('data', keep);
  child.stderr?.on('data', keep);
  return { child, port, output: () => output || '(no output)', exited: () => child.exitCode !== null || child.signalCode !== null };
}

/**
 * Spawns meterd on a free port and waits until it serves; a port lost to a race gets a new one.
 * Every process spawned (also failed attempts) is pushed to `started`, for afterAll to stop.
 */
export async function startMeterdProcess(env: Record<string, string>, probeAccountId: string, started: MeterdProcess[]): Promise<MeterdProcess> {
  for (let attempt = 1; ; attempt++) {
    const p = spawnMeterd(await freePort(), env);
    started.push(p);
    try {
      await waitUntilServing(p, probeAccountId);
      return p;
    } catch (err) {
      await stopMeterdProcess(p);
      const portLost = /EADDRINUSE|address already in use|No address added/i.test(p.output());
      if (!portLost || attempt >= 3) throw err;
    }
  }
}
