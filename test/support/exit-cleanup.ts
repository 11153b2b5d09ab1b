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
