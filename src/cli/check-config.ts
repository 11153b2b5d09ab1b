import type { Command } from 'commander';
import { ConfigError, loadProductConfig } from '../config/product-config.js';
import { loadSettings } from '../config/settings.js';
import { EXIT_INVALID_CONFIG, printError, renderRecord, toJson } from './output.js';

/**
 * `meterd check-config`: validates the environment settings and the product config exactly as startup
 * does, without connecting to Redis, Postgres or anything else; prints what meterd would run with,
 * secrets redacted. Exit 0 valid, 2 invalid (the message names the variable or key).
 */

const REDACTED = '[redacted]';
/** Settings whose whole value is secret (AUTH_* tokens and any future secret), by field name. */
const SECRET_FIELD = /token|secret|password|credential/i;

function redactSecret(value: unknown): unknown {
  if (value === undefined || value === null || value === '') return value;
  if (typeof value === 'object' && Symbol.iterator in value && typeof value !== 'string') {
    const count = [...(value as Iterable<unknown>)].length;
    return count === 0 ? [] : `${REDACTED} (${count} ${count === 1 ? 'value' : 'values'})`;
  }
  return REDACTED;
}

/** redis://user:secret@host → redis://user:[redacted]@host; anything that is not such a URL is kept. */
function redactUrlPassword(value: string): string {
  if (!/^[a-z][a-z0-9+.-]*:\/\/[^/]*@/i.test(value)) return value;
  try {
    const url = new URL(value);
    if (url.password === '') return value;
    url.password = REDACTED;
    return url.toString().replace(encodeURIComponent(REDACTED), REDACTED);
  } catch {
    return REDACTED; // looks like credentials in something URL-like we cannot parse: hide it all
  }
}

/** Every setting with secrets hidden: secret-named fields whole, passwords inside URLs, PEM bytes by size. */
export function redactSettings(value: unknown, fieldName = ''): unknown {
  if (SECRET_FIELD.test(fieldName)) return redactSecret(value);
  if (typeof value === 'string') return redactUrlPassword(value);
  if (value instanceof Uint8Array) return `${REDACTED} (${value.length} bytes)`;
  if (Array.isArray(value)) return value.map((item) => redactSettings(item, fieldName));
  if (value instanceof Set) return redactSettings([...value], fieldName);
  if (typeof value === 'object' && value !== null && !(value instanceof Date)) {
    return Object.fromEntries(Object.entries(value).map(([key, inner]) => [key, redactSettings(inner, key)]));
  }
  return value;
}

interface CheckConfigOptions { json?: boolean }

export function checkConfig(options: CheckConfigOptions): void {
  let summary: Record<string, unknown>;
  try {
    const settings = loadSettings();
    const product = loadProductConfig(settings.productConfigPath);
    summary = {
      valid: true,
      productConfig: {
        path: settings.productConfigPath,
        plans: product.plans.size,
        features: product.features.size,
        planIds: [...product.plans.keys()].join(', '),
        featureIds: [...product.features.keys()].join(', '),
      },
      settings: redactSettings(settings),
    };
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    if (options.json) process.stdout.write(`${toJson({ valid: false, error: err.message })}\n`);
    printError(err.message, 'CONFIG_INVALID');
    process.exitCode = EXIT_INVALID_CONFIG;
    return;
  }
  if (options.json) {
    process.stdout.write(`${toJson(summary)}\n`);
    return;
  }
  // Human form: a short verdict, then the same record (arrays such as cluster nodes shown as JSON).
  const flatSettings = Object.fromEntries(Object.entries(summary.settings as Record<string, unknown>)
    .map(([key, value]) => [key, typeof value === 'object' && value !== null ? JSON.stringify(value) : value]));
  const lines = ['configuration is valid', '', ...renderRecord({ productConfig: summary.productConfig, settings: flatSettings })];
  process.stdout.write(`${lines.join('\n')}\n`);
}

export function addCheckConfigCommand(program: Command): void {
  program.command('check-config')
    .summary('validate settings and product config (exit 2 if invalid)')
    .description('validate the environment settings and the product config (METERD_CONFIG) without connecting anywhere')
    .option('--json', 'print the summary as JSON')
    .addHelpText('after', `
Exit codes: 0 valid, 2 invalid (the error names the variable or the product config key).
Secrets (DATABASE_URL and REDIS_URL passwords, AUTH_* tokens) are printed as ${REDACTED}.

Examples:
  $ meterd check-config
  $ GRPC_PORT=50052 METERD_CONFIG=/etc/meterd/product.yaml meterd check-config --json
`)
    .action((options: CheckConfigOptions) => checkConfig(options));
}
