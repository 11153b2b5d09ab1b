/** Child processes tests start (servers, meterd): waiting for their exit, stopping them, and
 *  cleaning up after them when the test process dies. */
import type { ChildProcess } from 'node:child_process';
import { rmSync } from 'node:fs';

/**
 * What a test support module started (child processes, temp dirs), cleaned up when the test
 * process ends without its afterAll. vitest stops its fork workers with SIGTERM, which skips 'exit'
 * hooks, so the signals are hooked too (the handler then re-raises the signal so the default
 * behaviour still applies). A SIGKILLed worker cannot run hooks. The registry lives on globalThis
 * under `key` so that vitest re-importing a module per test file does not pile up listeners.
 */
export interface CleanupRegistry {
  running: Set<ChildProcess>;
  dirs: Set<string>;
}

export function exitCleanupRegistry(key: string, stop: (child: ChildProcess) => void): CleanupRegistry {
  const globals = globalThis as typeof globalThis & Record<string, CleanupRegistry | undefined>;
  const existing = globals[key];
  if (existing) return existing;
  const registry: CleanupRegistry = { running: new Set(), dirs: new Set() };
  globals[key] = registry;
  const cleanup = (): void => {
    for (const child of registry.running) stop(child);
    for (const dir of registry.dirs) rmSync(dir, { recursive: true, force: true });
  };
  process.once('exit', cleanup);
  for (const signal of ['SIGTERM', 'SIGINT', 'SIGHUP'] as const) {
    const onSignal = (): void => {
      cleanup();
      process.off(signal, onSignal);
      if (process.listenerCount(signal) === 0) process.kill(process.pid, signal);
    };
    process.on(signal, onSignal);
  }
  return registry;
}

/** Resolves when the child has exited (at once if it already has). */
export function exitOf(child: ChildProcess): Promise<void> {
  return new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) resolve();
    else child.once('exit', () => resolve());
  });
}

/** True when the child exits within `ms`, false when it is still running then. The (ref'd) timer
 *  also keeps the event loop alive while waiting for an unref'd child. */
export async function exitsWithin(child: ChildProcess, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const timedOut = new Promise<boolean>((resolve) => {
    timer = setTimeout(() => resolve(false), ms);
  });
  const exited = await Promise.race([exitOf(child).then(() => true), timedOut]);
  clearTimeout(timer);
  return exited;
}

/** Sends `signal`, waits up to `graceMs` for the exit, then SIGKILLs and waits again. */
export async function terminate(child: ChildProcess, signal: NodeJS.Signals, graceMs: number): Promise<void> {
  child.kill(signal);
  if (!(await exitsWithin(child, graceMs))) {
    child.kill('SIGKILL');
    await exitOf(child);
  }
}
