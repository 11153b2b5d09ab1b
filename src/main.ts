#!/usr/bin/env node
import { buildProgram } from './cli/program.js';
import { EXIT_FAILURE, printError } from './cli/output.js';

/**
 * The `meterd` command line (commander): `serve` (the default: the composition root, settings →
 * product config → meterd, SIGTERM/SIGINT drain), `migrate`, `reconcile`, `rebuild-redis`,
 * `check-config`, and client commands (account, grant, balance, usage, ledger, reserve, commit,
 * release) that call a running meterd over gRPC. See src/cli/.
 */
async function main(): Promise<void> {
  try {
    await buildProgram().parseAsync(process.argv);
  } catch (err) {
    // Commands report their own expected failures; this is the unexpected rest.
    printError(err instanceof Error ? err.message : String(err));
    process.exit(EXIT_FAILURE);
  }
}

void main();
