import { Command } from 'commander';
import { addBillingCommands } from './billing-commands.js';
import { addCheckConfigCommand } from './check-config.js';
import { addClientCommands } from './client-commands.js';
import { addServerCommands } from './server-commands.js';
import { METERD_VERSION } from '../version.js';

/** The `meterd` command line: the server and its maintenance commands, and a client for a running server. */
export function buildProgram(): Command {
  const program = new Command('meterd')
    .description('gRPC metering sidecar for AI gateways: reserve, commit and release AI credits atomically in Redis')
    .version(METERD_VERSION)
    .showHelpAfterError('(add --help for usage)');
  addServerCommands(program);
  addCheckConfigCommand(program);
  addClientCommands(program);
  addBillingCommands(program);
  program.addHelpText('after', `
Server commands read their settings from environment variables (README: Configuration).
Client commands talk to a running meterd over gRPC: --address (METERD_ADDRESS, default 127.0.0.1:50051),
--token (METERD_TOKEN), --tls-ca/--tls-cert/--tls-key (METERD_TLS_CA_FILE, METERD_TLS_CERT_FILE,
METERD_TLS_KEY_FILE); --json prints machine-readable output. Errors: "error: <message> (<REASON>)", exit 1.

Examples:
  $ meterd                                   # serve (same as \`meterd serve\`)
  $ meterd check-config
  $ meterd account create acme --plan starter
  $ meterd grant acme 500 --kind pack --id welcome-pack
  $ meterd reserve acme image_2k             # prints reservation_id and request_id
  $ meterd commit <reservationId>
  $ meterd balance acme --json
`);
  return program;
}
