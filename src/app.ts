import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import type pg from 'pg';
import type { ProductConfig } from './config/product-config.js';
import type { Settings } from './config/settings.js';
import { systemClock, type Clock } from './domain/clock.js';
import { tokenAuthorizer } from './grpc/auth.js';
import { startGrpcServer, stopGrpcServer } from './grpc/server.js';
import { sendJson, startHttpServer } from './observability/http-server.js';
import { MeterdMetrics } from './observability/metrics.js';
import { Readiness } from './observability/readiness.js';
import { startAlerts } from './alerts/index.js';
import { METERD_VERSION } from './version.js';
import type { CallObserver } from './grpc/wrap-unary.js';
import type { Logger } from './observability/logger.js';
import { createDatabasePool } from './postgres/database.js';
import { LedgerFlusher } from './postgres/flusher.js';
import { PostgresLedgerReader } from './postgres/ledger-reader.js';
import { ensureDatabase, migrate } from './postgres/migrator.js';
import { poolsToRepair, reconcile, type ReconcileReport } from './postgres/reconciler.js';
import { rebuildRedis, repairPool, type RebuildReport, type RepairReport } from './postgres/rebuild.js';
import { DomainError, ErrorReason } from './domain/errors.js';
import { ExpirySweeper } from './redis/expiry-sweeper.js';
import { LedgerStreams } from './redis/ledger-streams.js';
import { RedisCreditStore } from './redis/redis-credit-store.js';
import { checkRedisFitness, connectRedis } from './redis/redis-connection.js';

export interface Meterd {
  grpcPort: number;
  /** /metrics, /healthz, /readyz. */
  httpPort: number;
  store: RedisCreditStore;
  sweeper: ExpirySweeper;
  metrics: MeterdMetrics;
  /** Absent when started with ledger: false. Lane 0 of `flushers` (tests drive it by hand). */
  flusher?: LedgerFlusher;
  /** Every flush lane (FLUSH_LANES). */
  flushers: LedgerFlusher[];
  /** Flushes until the streams are empty, every lane side by side; returns the events written. */
  drainLedger(): Promise<number>;
  database?: pg.Pool;
  /** One background check now: reconcile, then repair what Redis lost (as RECONCILE_REPAIR says). */
  reconcileNow(): Promise<ReconcileOutcome>;
  stop(): Promise<void>;
}

export interface ReconcileOutcome {
  report: ReconcileReport;
  repairs: RepairReport[];
}

export class UnfitRedisError extends Error {
  override name = 'UnfitRedisError';
}

/** Creates the database if missing and applies the migrations (also `meterd migrate`). */
export async function prepareDatabase(settings: Readonly<Settings>, logger: Logger): Promise<pg.Pool> {
  await ensureDatabase(settings.databaseUrl);
  const database = createDatabasePool(settings, (err) => logger.warn({ err: err.message }, 'postgres connection error'));
  try {
    const applied = await migrate(database);
    if (applied.length > 0) logger.info({ applied }, 'migrations applied');
  } catch (err) {
    await database.end();
    throw err;
  }
  return database;
}

/**
 * Wires meterd together: Redis (checked fit for money) → credit store → gRPC services, the expiry
 * sweeper, and the ledger flusher into Postgres. main.ts runs it from the environment; tests run it
 * in-process with their own clock (and without Postgres when they only test the engine).
 */
export async function startMeterd(options: {
  settings: Readonly<Settings>;
  product: ProductConfig;
  logger: Logger;
  clock?: Clock;
  sweeper?: boolean;
  /** Flush the ledger to Postgres (default true). */
  ledger?: boolean;
  /** Start the flusher's background loop (default true; tests may drive flushOnce themselves). */
  flushLoop?: boolean;
  /** Sees every finished gRPC call (the benchmark measures server-side handling time with it). */
  observeCall?: CallObserver;
}): Promise<Meterd> {
  const { settings, product, logger } = options;
  const clock = options.clock ?? systemClock;
  const metrics = new MeterdMetrics({ version: METERD_VERSION });
  const redisLogger = logger.child({ component: 'redis' });
  const redis = await connectRedis(settings, (err) => redisLogger.warn({ err: err.message }, 'redis connection error'));
  let database: pg.Pool | undefined;
  try {
    const fitness = await checkRedisFitness(redis);
    for (const advice of fitness.advice) logger.warn({ advice }, 'redis durability advice');
    if (fitness.problems.length > 0) {
      if (!settings.redisAllowEviction) throw new UnfitRedisError(fitness.problems.join('; '));
      for (const problem of fitness.problems) logger.warn({ problem }, 'redis unfit for money (REDIS_ALLOW_EVICTION=true)');
    }
    if (options.ledger ?? true) database = await prepareDatabase(settings, logger);
  } catch (err) {
    redis.disconnect();
    throw err;
  }
  const store = new RedisCreditStore(redis, {
    keyPrefix: settings.redisKeyPrefix, product, clock, observe: metrics.scriptFinished, shadowMode: settings.shadowMode,
  });
  await store.loadScripts();
  const sweeper = new ExpirySweeper(store, settings.sweepIntervalMs, logger.child({ component: 'sweeper' }),
    metrics.expired, () => metrics.error('sweep_failed'));
  if (database) await rebuildIfRedisLost(database, store, product, clock, logger);
  // Balance alerts: WatchAlerts' feed, and webhook deliveries when ALERT_WEBHOOK_URLS is set.
  const alerts = database ? await startAlerts({ settings, database, logger, onDeliveryOutcome: metrics.alertDelivered }) : undefined;
  // FLUSH_LANES flushers, each its own consumer in the group: their transactions run side by side
  // (Postgres' per-row work is what bounds one). Lane 0 also does the housekeeping.
  const flushers: LedgerFlusher[] = [];
  if (database) {
    const streams = new LedgerStreams(redis, settings.redisKeyPrefix);
    await streams.ensureGroups();
    const processConsumer = `${hostname()}-${process.pid}-${randomBytes(3).toString('hex')}`;
    for (let lane = 0; lane < settings.flushLanes; lane++) flushers.push(new LedgerFlusher(streams, (partition, group) => store.trimLedger(partition, group), database, {
      consumer: `${processConsumer}-${lane}`,
      housekeeping: lane === 0,
      batchEventsMax: settings.flushBatchEventsMax,
      intervalMs: settings.flushIntervalMs,
      reclaimIdleMs: settings.flushReclaimIdleMs,
      backlogAlarmEvents: settings.flushBacklogAlarmEvents,
      observer: {
        ...metrics.flush,
        flushed: (events, nowMs) => {
          metrics.flush.flushed(events, nowMs);
          // Alerts just written: deliver them now rather than at the next poll.
          if (events.some((e) => e.kind === 'alert')) alerts?.nudge();
        },
      },
    }, logger.child({ component: 'flusher', lane })));
  }
  const flusher = flushers[0];
  // Money in (Stripe): checkout, the webhook route, the grant relay, auto-refill, overage reports.
  // Imported only when configured: the Stripe SDK alone is ~17 MB of resident memory.
  const payments = database && settings.stripe.secretKey !== ''
    ? await (await import('./payments/index.js')).startPayments({ settings, product, store, database, logger, observer: metrics.payments, clock }).catch(async (err: unknown) => {
      await alerts?.stop();
      throw err;
    })
    : null;
  const authorize = tokenAuthorizer(settings.dataPlaneTokens, settings.adminTokens);
  if (!authorize) logger.warn('authentication is off: set AUTH_DATA_PLANE_TOKENS and AUTH_ADMIN_TOKENS before exposing the gRPC port');
  if (settings.shadowMode) logger.warn('shadow mode: reserve refusals are counted and reported, never enforced');
  const observeCall = options.observeCall;
  const grpc = await startGrpcServer(settings, {
    store: metrics.instrument(store), product, clock, logger: logger.child({ component: 'grpc' }), authorize,
    started: metrics.callStarted,
    observe: observeCall ? (...call) => { metrics.callFinished(...call); observeCall(...call); } : metrics.callFinished,
    ...(database ? { ledger: new PostgresLedgerReader(database) } : {}),
    ...(alerts ? { alerts: alerts.feed } : {}),
    ...(payments ? { payments: payments.payments } : {}),
  }).catch(async (err: unknown) => {
    await payments?.stop();
    await alerts?.stop();
    await database?.end();
    redis.disconnect();
    throw err;
  });
  metrics.watchBalances(settings.metricsAccountIds, store);
  const db = database;
  const readiness = new Readiness({
    required: { redis: () => redis.ping() },
    optional: db ? { postgres: () => db.query('SELECT 1') } : {},
  }, (ready) => {
    grpc.setServing(ready);
    metrics.setReady(ready);
    logger.info({ ready }, ready ? 'ready' : 'not ready');
  }, () => (flusher?.backlog.alarm ? ['ledger_backlog'] : []));
  const http = await startHttpServer(settings.httpHost, settings.httpPort, {
    'GET /metrics': async (_request, response) => {
      const text = await metrics.registry.metrics();
      response.writeHead(200, { 'content-type': metrics.registry.contentType });
      response.end(text);
    },
    'GET /healthz': (_request, response) => sendJson(response, 200, { status: 'alive' }),
    'GET /readyz': async (_request, response) => {
      const report = await readiness.check();
      sendJson(response, report.ready ? 200 : 503, report);
    },
    ...payments?.routes,
  }, logger.child({ component: 'http' })).catch(async (err: unknown) => {
    grpc.server.forceShutdown();
    await payments?.stop();
    await alerts?.stop();
    await database?.end();
    redis.disconnect();
    throw err;
  });
  await readiness.check();
  readiness.start();
  if (options.sweeper ?? true) sweeper.start();
  if (options.flushLoop ?? true) for (const lane of flushers) lane.start();
  // The background check: drift is logged per account (reconcile logs it); it never stops serving.
  // Pools that lost events in Redis are rebuilt from the ledger unless RECONCILE_REPAIR=false.
  const reconcileLogger = logger.child({ component: 'reconcile' });
  const reconcileNow = async (): Promise<ReconcileOutcome> => {
    if (!database) throw new Error('reconcile needs the ledger (Postgres)');
    const report = await reconcile(database, (p, ids, max) => store.snapshotLedger(p, ids, max), reconcileLogger);
    const repairs: RepairReport[] = [];
    if (settings.reconcileRepair) {
      for (const accountId of poolsToRepair(report)) repairs.push(await repairPool(database, product, clock.nowMs(), accountId, store, reconcileLogger));
    }
    return { report, repairs };
  };
  let reconcileTimer: NodeJS.Timeout | undefined;
  if (database && settings.reconcileIntervalMs > 0 && (options.flushLoop ?? true)) {
    reconcileTimer = setInterval(() => {
      reconcileNow().then(
        (outcome) => metrics.reconciled(outcome, Date.now()),
        (err: unknown) => {
          metrics.reconciled('failed', Date.now());
          reconcileLogger.warn({ err }, 'reconcile failed; trying again next interval');
        },
      );
    }, settings.reconcileIntervalMs);
    reconcileTimer.unref();
  }
  logger.info({
    grpcPort: grpc.port, httpPort: http.port, keyPrefix: settings.redisKeyPrefix, ledger: database !== undefined,
    tls: settings.grpcTls ? (settings.grpcTls.clientCaFile ? 'mutual' : 'server') : 'off', auth: authorize !== null, shadowMode: settings.shadowMode,
  }, 'meterd serving');
  const meterd: Meterd = {
    grpcPort: grpc.port,
    httpPort: http.port,
    store,
    sweeper,
    metrics,
    reconcileNow,
    flushers,
    drainLedger: async () => (await Promise.all(flushers.map((lane) => lane.drain()))).reduce((sum, n) => sum + n, 0),
    /**
     * Graceful shutdown: health flips to NOT_SERVING at once (load balancers stop sending), calls in
     * flight finish within SHUTDOWN_GRACE_MS, a final flush writes what waits, connections close.
     */
    async stop() {
      readiness.startDraining();
      readiness.stop();
      if (reconcileTimer) clearInterval(reconcileTimer);
      await alerts?.stop(); // ends WatchAlerts streams, which would otherwise hold the server for the whole grace
      await stopGrpcServer(grpc.server, settings.shutdownGraceMs);
      await sweeper.stop();
      await Promise.all(flushers.map((lane) => lane.stop()));
      await payments?.stop();
      await http.close();
      await database?.end();
      await redis.quit().catch(() => redis.disconnect());
    },
  };
  if (flusher) meterd.flusher = flusher;
  if (database) meterd.database = database;
  return meterd;
}

/**
 * At startup: when Postgres knows accounts that Redis does not (Redis was emptied or lost its data),
 * rebuild them from the ledger before serving.
 */
async function rebuildIfRedisLost(database: pg.Pool, store: RedisCreditStore, product: ProductConfig, clock: Clock, logger: Logger): Promise<void> {
  const known = (await database.query<{ account_id: string }>("SELECT account_id FROM accounts WHERE parent_id = '' LIMIT 1")).rows[0];
  if (!known) return;
  try {
    await store.getAccount(known.account_id);
  } catch (err) {
    if (!(err instanceof DomainError) || err.reason !== ErrorReason.ACCOUNT_NOT_FOUND) throw err;
    logger.warn({ accountId: known.account_id }, 'Redis lacks accounts the ledger has: rebuilding Redis from Postgres');
    await rebuildRedis(database, product, clock.nowMs(), (pool) => store.restorePool(pool), logger);
  }
}

/** Runs a one-off command (reconcile, rebuild-redis) with a credit store and the database, then closes both. */
async function withStoreAndDatabase<T>(
  settings: Readonly<Settings>, product: ProductConfig, logger: Logger,
  command: (store: RedisCreditStore, database: pg.Pool) => Promise<T>,
): Promise<T> {
  const redis = await connectRedis(settings, (err) => logger.warn({ err: err.message }, 'redis connection error'));
  const database = await prepareDatabase(settings, logger).catch((err: unknown) => {
    redis.disconnect();
    throw err;
  });
  try {
    const store = new RedisCreditStore(redis, { keyPrefix: settings.redisKeyPrefix, product, clock: systemClock });
    await store.loadScripts();
    return await command(store, database);
  } finally {
    await database.end();
    await redis.quit().catch(() => redis.disconnect());
  }
}

/** `meterd reconcile`: one check of every pool against the ledger, without serving. */
export function runReconcile(settings: Readonly<Settings>, product: ProductConfig, logger: Logger): Promise<ReconcileReport> {
  return withStoreAndDatabase(settings, product, logger,
    (store, database) => reconcile(database, (p, ids, max) => store.snapshotLedger(p, ids, max), logger));
}

/** `meterd rebuild-redis --account <id>`: rebuilds one pool from the ledger over what Redis has (Postgres wins). */
export function runRepair(settings: Readonly<Settings>, product: ProductConfig, logger: Logger, accountId: string): Promise<RepairReport> {
  return withStoreAndDatabase(settings, product, logger,
    (store, database) => repairPool(database, product, Date.now(), accountId, store, logger));
}

/** `meterd rebuild-redis`: restores every pool missing from Redis out of the Postgres ledger. */
export function runRebuild(settings: Readonly<Settings>, product: ProductConfig, logger: Logger): Promise<RebuildReport> {
  return withStoreAndDatabase(settings, product, logger,
    (store, database) => rebuildRedis(database, product, Date.now(), (pool) => store.restorePool(pool), logger));
}
