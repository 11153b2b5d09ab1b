import type { Command } from 'commander';
import type { ProductConfig } from '../config/product-config.js';
import type { Settings } from '../config/settings.js';
import type { Logger } from '../observability/logger.js';

/**
 * Commands that run meterd itself or work on its Redis and Postgres directly: serve (the default),
 * migrate, reconcile, rebuild-redis. They log JSON lines (pino) like the server does. The server
 * modules (Redis, Postgres, gRPC server) are imported only here, when such a command runs, so client
 * commands start fast.
 */

interface ServerModules {
  app: typeof import('../app.js');
  settingsModule: typeof import('../config/settings.js');
  productModule: typeof import('../config/product-config.js');
  loggerModule: typeof import('../observability/logger.js');
}

async function loadServerModules(): Promise<ServerModules> {
  const [app, settingsModule, productModule, loggerModule] = await Promise.all([
    import('../app.js'), import('../config/settings.js'), import('../config/product-config.js'), import('../observability/logger.js'),
  ]);
  return { app, settingsModule, productModule, loggerModule };
}

interface ServerContext {
  settings: Readonly<Settings>;
  logger: Logger;
  /** Reads and validates METERD_CONFIG (not every command needs it). */
  loadProduct(): ProductConfig;
  app: ServerModules['app'];
}

/**
 * Settings → logger → the command; a bad setting, a bad product config or an unfit Redis is logged
 * as fatal 'cannot start' with the problem, any other failure with the error; both exit 1.
 */
async function runServerCommand(command: (context: ServerContext) => Promise<void>): Promise<void> {
  const { app, settingsModule, productModule, loggerModule } = await loadServerModules();
  let logger = loggerModule.createLogger(process.env.LOG_LEVEL ?? 'info');
  try {
    const settings = settingsModule.loadSettings();
    logger = loggerModule.createLogger(settings.logLevel);
    await command({ settings, logger, loadProduct: () => productModule.loadProductConfig(settings.productConfigPath), app });
  } catch (err) {
    if (err instanceof productModule.ConfigError || err instanceof app.UnfitRedisError) {
      logger.fatal({ problem: err.message }, 'cannot start');
    } else {
      logger.fatal({ err }, 'cannot start');
    }
    process.exit(1);
  }
}

/** Serves until SIGTERM/SIGINT, then drains (in-flight calls finish); a second signal exits at once. */
async function serve({ settings, logger, loadProduct, app }: ServerContext): Promise<void> {
  const product = loadProduct();
  logger.info({ config: settings.productConfigPath, plans: product.plans.size, features: product.features.size }, 'product config loaded');
  const meterd = await app.startMeterd({ settings, product, logger });
  let stopping = false;
  const shutdown = (signal: string) => {
    if (stopping) {
      logger.warn({ signal }, 'second signal: exiting now');
      process.exit(1);
    }
    stopping = true;
    logger.info({ signal }, 'draining');
    meterd.stop().then(
      () => process.exit(0),
      (err: unknown) => {
        logger.error({ err }, 'shutdown failed');
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', () => shutdown('SIGTERM'));
  process.on('SIGINT', () => shutdown('SIGINT'));
}

export function addServerCommands(program: Command): void {
  program.command('serve', { isDefault: true })
    .summary('run the gRPC server (default)')
    .description('run the gRPC server (the default command): settings from the environment, drains on SIGTERM/SIGINT')
    .addHelpText('after', `
Settings come from environment variables (see the README's Configuration table); check them first
with \`meterd check-config\`. A second SIGTERM/SIGINT while draining exits at once.

Examples:
  $ meterd
  $ GRPC_PORT=50052 METERD_CONFIG=/etc/meterd/product.yaml meterd serve
`)
    // As the default command, serve receives any word commander did not recognise as a command.
    .allowExcessArguments(true)
    .action((_options: unknown, command: Command) => {
      const [unknown] = command.args;
      if (unknown !== undefined) program.error(`error: unknown command '${unknown}' (see meterd --help)`);
      return runServerCommand(serve);
    });

  program.command('migrate')
    .summary('create/migrate the Postgres database')
    .description('create the database if missing and apply the migrations, then exit')
    .addHelpText('after', '\nExamples:\n  $ DATABASE_URL=postgres://postgres@db:5432/meterd meterd migrate\n')
    .action(() => runServerCommand(async ({ settings, logger, app }) => {
      await (await app.prepareDatabase(settings, logger)).end();
      logger.info('database migrated');
    }));

  program.command('reconcile')
    .summary('check Redis against the ledger (exit 1 on drift)')
    .description('check every pool in Redis against the Postgres ledger once; exit 1 on drift (each drift logged)')
    .addHelpText('after', '\nExit codes: 0 every pool matches its ledger, 1 drift (or a failure).\n\nExamples:\n  $ meterd reconcile\n')
    .action(() => runServerCommand(async ({ settings, logger, loadProduct, app }) => {
      const report = await app.runReconcile(settings, loadProduct(), logger);
      logger.info({ accounts: report.accounts, drifts: report.drifts.length, skippedPartitions: report.skippedPartitions }, 'reconcile finished');
      process.exit(report.drifts.length === 0 ? 0 : 1);
    }));

  program.command('rebuild-redis')
    .summary('restore Redis pools from the ledger')
    .description('restore every pool missing from Redis out of the Postgres ledger, or with --account rebuild one pool over what Redis has (Postgres wins)')
    .option('--account <accountId>', 'repair this one pool; exit 1 unless it was repaired')
    .addHelpText('after', `
Exit codes with --account: 0 repaired, 1 not found in the ledger, Postgres behind Redis, or a failure.

Examples:
  $ meterd rebuild-redis
  $ meterd rebuild-redis --account acme
`)
    .action((options: { account?: string }) => runServerCommand(async ({ settings, logger, loadProduct, app }) => {
      const product = loadProduct();
      if (options.account !== undefined) {
        const report = await app.runRepair(settings, product, logger, options.account);
        process.exit(report.outcome === 'repaired' ? 0 : 1);
      }
      const report = await app.runRebuild(settings, product, logger);
      logger.info(report, 'rebuild finished');
    }));
}
