// Throwaway PostgreSQL servers for integration tests that need to stop and restart Postgres:
// initdb into a temp dir, run the installed binaries on a free loopback port with trust auth,
// as the `postgres` OS user when the tests run as root (Postgres refuses to run as root).
// Safe to use from several vitest workers at once (own port, own temp dir, own socket dir).
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { chownSync, closeSync, existsSync, openSync, readdirSync, readFileSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import pg from 'pg';
import { freePort } from './redis-servers.js';
import { exitCleanupRegistry, exitOf, terminate } from './child-processes.js';

const HOST = '127.0.0.1';
const READY_WITHIN_MS = 20_000;
const STOP_WITHIN_MS = 15_000;

export type ShutdownMode = 'smart' | 'fast' | 'immediate';
const SHUTDOWN_SIGNAL: Record<ShutdownMode, NodeJS.Signals> = { smart: 'SIGTERM', fast: 'SIGINT', immediate: 'SIGQUIT' };

export interface PostgresServerHandle {
  host: string;
  port: number;
  /** The temp dir: data/ (the cluster), the Unix socket and postgres.log. */
  dir: string;
  /** postgres://postgres@127.0.0.1:<port>/postgres (trust auth). */
  url: string;
  /** The running postmaster's pid, or undefined while it is down. */
  pid(): number | undefined;
  /** Shuts the server down (default fast: SIGINT, like `pg_ctl stop -m fast`) and waits for it to exit; the data stays. */
  shutdown(mode?: ShutdownMode): Promise<void>;
  /** Starts it again on the same port and data dir (after shutdown). */
  restart(): Promise<void>;
  /** Fast shutdown (SIGKILL after 15 s) and removal of the temp dir. */
  stop(): Promise<void>;
}

// SIGQUIT: an immediate shutdown, which stops the backends and removes the shared memory.
const registry = exitCleanupRegistry('__meterdPostgresServers', (child) => child.kill('SIGQUIT'));

/** The newest installed PostgreSQL's bin dir (TEST_POSTGRES_BIN overrides it). */
export function postgresBinDir(): string {
  const override = process.env.TEST_POSTGRES_BIN;
  if (override) return override;
  const root = '/usr/lib/postgresql';
  const versions = existsSync(root)
    ? readdirSync(root).filter((v) => existsSync(join(root, v, 'bin', 'postgres'))).sort((a, b) => Number(b) - Number(a))
    : [];
  if (versions.length === 0) throw new Error(`no PostgreSQL binaries under ${root}/*/bin (set TEST_POSTGRES_BIN)`);
  return join(root, versions[0] as string, 'bin');
}

/** Postgres refuses to run as root: as root, run it as the `postgres` OS user. */
function runAs(): { uid: number; gid: number } | undefined {
  if (process.getuid?.() !== 0) return undefined;
  const line = readFileSync('/etc/passwd', 'utf8').split('\n').find((l) => l.startsWith('postgres:'));
  const [, , uid, gid] = line?.split(':') ?? [];
  if (uid === undefined || gid === undefined) throw new Error('running as root, but there is no `postgres` OS user to run PostgreSQL as');
  return { uid: Number(uid), gid: Number(gid) };
}


async function logTail(dir: string): Promise<string> {
  const text = await readFile(join(dir, 'postgres.log'), 'utf8').catch(() => '');
  return text.trimEnd().split('\n').slice(-20).join('\n') || '(no log output)';
}

export async function startPostgresServer(options: { extraArgs?: string[] } = {}): Promise<PostgresServerHandle> {
  const bin = postgresBinDir();
  const user = runAs();
  const dir = await mkdtemp(join(tmpdir(), 'meterd-pg-'));
  registry.dirs.add(dir);
  const data = join(dir, 'data');
  const env = { PATH: process.env.PATH ?? '/usr/bin:/bin', LC_ALL: 'C', LANG: 'C' };
  const removeDir = async (): Promise<void> => {
    await rm(dir, { recursive: true, force: true });
    registry.dirs.delete(dir);
  };
  try {
    if (user) chownSync(dir, user.uid, user.gid);
    // --no-sync: nothing here has to survive the machine; the server's own crash safety is unchanged.
    const init = spawnSync(join(bin, 'initdb'), ['-D', data, '-A', 'trust', '-U', 'postgres', '-E', 'UTF8', '--no-locale', '--no-sync', '--no-instructions'],
      { cwd: dir, env, encoding: 'utf8', ...user });
    if (init.status !== 0) throw new Error(`initdb failed (${init.status ?? init.signal}): ${init.stderr || init.stdout}`);
  } catch (err) {
    await removeDir();
    throw err;
  }

  let port = 0;
  let child: ChildProcess | undefined;

  const startOnce = async (): Promise<{ ok: true } | { ok: false; reason: string; portInUse: boolean }> => {
    const out = openSync(join(dir, 'postgres.log'), 'a');
    let proc: ChildProcess;
    try {
      proc = spawn(join(bin, 'postgres'), [
        '-D', data, '-p', String(port), '-k', dir,
        '-c', 'listen_addresses=127.0.0.1',
        '-c', 'max_connections=40',
        '-c', 'shared_buffers=16MB',
        '-c', 'fsync=off', // the OS never crashes under a test; a stopped or killed server still recovers
        ...(options.extraArgs ?? []),
      ], { cwd: dir, env, stdio: ['ignore', out, out], ...user });
    } finally {
      closeSync(out);
    }
    proc.unref(); // must not keep vitest alive; shutdown() still waits for 'exit'
    registry.running.add(proc);
    proc.once('exit', () => registry.running.delete(proc));
    child = proc;
    let exited = false;
    void exitOf(proc).then(() => (exited = true));
    const deadline = Date.now() + READY_WITHIN_MS;
    let lastError = 'no answer yet';
    while (Date.now() < deadline) {
      if (exited) {
        const tail = await logTail(dir);
        child = undefined;
        return { ok: false, reason: `exited with ${proc.exitCode ?? proc.signalCode}\n${tail}`, portInUse: /could not bind|Address already in use/i.test(tail) };
      }
      const client = new pg.Client({ host: HOST, port, user: 'postgres', database: 'postgres', connectionTimeoutMillis: 1_000 });
      client.on('error', () => {});
      try {
        await client.connect();
        await client.query('SELECT 1');
        return { ok: true };
      } catch (err) {
        lastError = err instanceof Error ? err.message : String(err); // ECONNREFUSED, "the database system is starting up"
      } finally {
        await client.end().catch(() => {});
      }
      await sleep(50);
    }
    await shutdownChild('immediate');
    return { ok: false, reason: `not ready within ${READY_WITHIN_MS} ms (last error: ${lastError})\n${await logTail(dir)}`, portInUse: false };
  };

  const shutdownChild = async (mode: ShutdownMode): Promise<void> => {
    const current = child;
    child = undefined;
    if (!current) return;
    // After a SIGKILL its backends notice the postmaster is gone and exit.
    await terminate(current, SHUTDOWN_SIGNAL[mode], STOP_WITHIN_MS);
  };

  // Another worker may take the port between freePort() and the bind: retry on a new one.
  for (let attempt = 1; ; attempt++) {
    port = await freePort();
    const res = await startOnce();
    if (res.ok) break;
    if (!res.portInUse || attempt >= 5) {
      await removeDir();
      throw new Error(`postgres on ${HOST}:${port} failed to start: ${res.reason}`);
    }
  }

  return {
    host: HOST,
    port,
    dir,
    url: `postgres://postgres@${HOST}:${port}/postgres`,
    pid: () => child?.pid,
    shutdown: (mode = 'fast') => shutdownChild(mode),
    async restart() {
      await shutdownChild('fast');
      const res = await startOnce();
      if (!res.ok) throw new Error(`postgres restart on ${HOST}:${port} failed: ${res.reason}`);
    },
    async stop() {
      await shutdownChild('fast');
      await removeDir();
    },
  };
}
