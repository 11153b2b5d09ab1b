import { loadProductConfig, ConfigError } from './config/product-config.js';
import { loadSettings } from './config/settings.js';
import { prepareDatabase, runRebuild, runRepair, runReconcile, startMeterd, UnfitRedisError } from './app.js';
import { createLogger } from './observability/logger.js';

/**
 * Composition root: settings → product config → meterd; SIGTERM/SIGINT drain, a second forces exit.
 * `main.js migrate` only prepares the database; `main.js reconcile` checks Redis against the ledger;
 * `main.js rebuild-redis` restores pools missing from Redis out of the ledger.
 */
async function main(): Promise<void> {
  let logger = createLogger(process.env.LOG_LEVEL ?? 'info');
  try {
    const settings = loadSettings();
    logger = createLogger(settings.logLevel);
    if (process.argv[2] === 'migrate') {
      // `meterd migrate`: create the database if missing, apply the migrations, exit.
      await (await prepareDatabase(settings, logger)).end();
      logger.info('database migrated');
      return;
    }
    const product = loadProductConfig(settings.productConfigPath);
    if (process.argv[2] === 'rebuild-redis' && process.argv[3] === '--account' && process.argv[4]) {
      // `meterd rebuild-redis --account <id>`: rebuild one pool from the ledger over what Redis has.
      const report = await runRepair(settings, product, logger, process.argv[4]);
      process.exit(report.outcome === 'repaired' ? 0 : 1);
    }
    if (process.argv[2] === 'rebuild-redis') {
      // `meterd rebuild-redis`: restore every pool missing from Redis out of the Postgres ledger.
      const report = await runRebuild(settings, product, logger);
      logger.info(report, 'rebuild finished');
      return;
    }
    if (process.argv[2] === 'reconcile') {
      // `meterd reconcile`: exit 0 when every pool matches its ledger, 1 on drift (logged per account).
      const report = await runReconcile(settings, product, logger);
      logger.info({ accounts: report.accounts, drifts: report.drifts.length, skippedPartitions: report.skippedPartitions }, 'reconcile finished');
      process.exit(report.drifts.length === 0 ? 0 : 1);
    }
    logger.info({ config: settings.productConfigPath, plans: product.plans.size, features: product.features.size }, 'product config loaded');
    const meterd = await startMeterd({ settings, product, logger });
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
  } catch (err) {
    if (err instanceof ConfigError || err instanceof UnfitRedisError) {
      logger.fatal({ problem: err.message }, 'cannot start');
    } else {
      logger.fatal({ err }, 'cannot start');
    }
    process.exit(1);
  }
}

void main();
