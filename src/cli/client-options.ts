import { Option, type Command } from 'commander';
import {
  connectMeterd, ConnectionSetupError, describeServiceError, isServiceError, METERD_ADDRESS_DEFAULT,
  type ConnectOptions, type MeterdConnection,
} from '../client/connection.js';
import { EXIT_FAILURE, printError } from './output.js';

/** The options every client command takes (flags win over the environment). */
export interface ClientOptions {
  address: string;
  token?: string;
  tls?: boolean;
  tlsCa?: string;
  tlsCert?: string;
  tlsKey?: string;
  json?: boolean;
}

export function addClientOptions(command: Command): Command {
  return command
    .addOption(new Option('--address <host:port>', 'meterd gRPC address').env('METERD_ADDRESS').default(METERD_ADDRESS_DEFAULT))
    .addOption(new Option('--token <token>', 'bearer token sent as "authorization: Bearer <token>"').env('METERD_TOKEN'))
    .addOption(new Option('--tls', 'use TLS with the system CAs (implied by --tls-ca/--tls-cert/--tls-key)'))
    .addOption(new Option('--tls-ca <file>', 'PEM CA that signed the server certificate').env('METERD_TLS_CA_FILE'))
    .addOption(new Option('--tls-cert <file>', 'PEM client certificate (mutual TLS; needs --tls-key)').env('METERD_TLS_CERT_FILE'))
    .addOption(new Option('--tls-key <file>', 'PEM client key (mutual TLS; needs --tls-cert)').env('METERD_TLS_KEY_FILE'))
    .option('--json', 'print the answer as JSON (amounts as strings, times as ISO 8601)');
}

export function connectOptionsOf(options: ClientOptions): ConnectOptions {
  const useTls = options.tls === true || options.tlsCa !== undefined || options.tlsCert !== undefined || options.tlsKey !== undefined;
  return {
    address: options.address,
    // An empty METERD_TOKEN means no token.
    token: options.token || undefined,
    tls: useTls ? { caFile: options.tlsCa, certFile: options.tlsCert, keyFile: options.tlsKey } : undefined,
  };
}

/**
 * Runs one client command: connects, calls, closes. A refusal or an unreachable server prints
 * `error: <message> (<REASON>)` on stderr and sets exit code 1.
 */
export async function withConnection(options: ClientOptions, run: (connection: MeterdConnection) => Promise<void>): Promise<void> {
  let connection: MeterdConnection | undefined;
  // grpc-js names an IP address as the TLS server name, and Node prints DEP0123 for it on every
  // run (a sidecar is reached at 127.0.0.1): noise for a person at a terminal, not a problem.
  process.noDeprecation = true;
  try {
    connection = connectMeterd(connectOptionsOf(options));
    await run(connection);
  } catch (err) {
    if (isServiceError(err)) {
      const described = describeServiceError(err, options.address);
      printError(described.message, described.reason);
    } else if (err instanceof ConnectionSetupError) {
      printError(err.message);
    } else {
      throw err;
    }
    process.exitCode = EXIT_FAILURE;
  } finally {
    connection?.close();
  }
}
