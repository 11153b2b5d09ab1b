import { expect } from 'vitest';
import { ConfigError } from '../../src/config/product-config.js';

/** Runs what must refuse a configuration; returns the ConfigError's message (which names the key). */
export function configRefusal(run: () => unknown, what = 'the config'): string {
  try {
    run();
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    return (err as Error).message;
  }
  throw new Error(`expected ${what} to be refused`);
}
