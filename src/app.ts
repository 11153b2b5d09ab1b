import type { ProductConfig } from './config/product-config.js';
import type { Settings } from './config/settings.js';
import { systemClock, type Clock } from './domain/clock.js';
import { startGrpcServer, stopGrpcServer } from './grpc/server.js';
import type { CallObserver } from './grpc/wrap-unary.js';
import type { Logger } from './observability/logger.js';
import { ExpirySweeper } from './redis/expiry-sweeper.js';
import { RedisCreditStore } from './redis/redis-credit-store.js';
import { checkRedisFitness, connectRedis } from './redis/redis-connection.js';

export interface Meterd {
  grpcPort: number;
  store: RedisCreditStore;
  sweeper: ExpirySweeper;
  stop(): Promise<void>;
}

export class UnfitRedisError extends Error {
  override name = 'UnfitRedisError';
}

/**
 * Wires meterd together: Redis (checked fit for money) → credit store → gRPC services, plus the
 * expiry sweeper. main.ts runs it from the environment; tests run it in-process with their own clock.
 */
export async function startMeterd(options: {
  settings: Readonly<Settings>;
  product: ProductConfig;
  logger: Logger;
  clock?: Clock;
  sweeper?: boolean;
  /** Sees every finished gRPC call (the benchmark measures server-side handling time with it). */
  observeCall?: CallObserver;
}): Promise<Meterd> {
  const { settings, product, logger } = options;
  const clock = options.clock ?? systemClock;
  const redisLogger = logger.child({ component: 'redis' });
  const redis = await connectRedis(settings, (err) => redisLogger.warn({ err: err.message }, 'redis connection error'));
  try {
    const fitness = await checkRedisFitness(redis);
    for (const advice of fitness.advice) logger.warn({ advice }, 'redis durability advice');
    if (fitness.problems.length > 0) {
      if (!settings.redisAllowEviction) throw new UnfitRedisError(fitness.problems.join('; '));
      for (const problem of fitness.problems) logger.warn({ problem }, 'redis unfit for money (REDIS_ALLOW_EVICTION=true)');
    }
  } catch (err) {
    redis.disconnect();
    throw err;
  }
  const store = new RedisCreditStore(redis, { keyPrefix: settings.redisKeyPrefix, product, clock });
  await store.loadScripts();
  const sweeper = new ExpirySweeper(store, settings.sweepIntervalMs, logger.child({ component: 'sweeper' }));
  const grpc = await startGrpcServer(settings.grpcHost, settings.grpcPort, {
    store, product, clock, logger: logger.child({ component: 'grpc' }), observe: options.observeCall ?? (() => {}),
  });
  if (options.sweeper ?? true) sweeper.start();
  logger.info({ grpcPort: grpc.port, keyPrefix: settings.redisKeyPrefix }, 'meterd serving');
  return {
    grpcPort: grpc.port,
    store,
    sweeper,
    async stop() {
      await stopGrpcServer(grpc.server, settings.shutdownGraceMs);
      await sweeper.stop();
      await redis.quit().catch(() => redis.disconnect());
    },
  };
}
