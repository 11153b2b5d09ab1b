import { z } from 'zod';
import { EXAMPLE_PRODUCT_CONFIG_PATH, ConfigError } from './product-config.js';

/**
 * Every environment variable meterd reads, validated once at startup into one frozen object.
 * The README's configuration table lists each with its default and why it exists.
 */
/** A whole number written in decimal digits (no '', no hex, no exponent), within bounds. */
const integer = (min: number, max: number, fallback: number) =>
  z
    .string()
    .regex(/^\d+$/, 'must be a whole number in decimal digits')
    .transform(Number)
    .pipe(z.number().int().min(min).max(max))
    .default(fallback);

const settingsSchema = z.object({
  REDIS_URL: z.string().regex(/^rediss?:\/\/\S+$/, 'must be a redis:// or rediss:// URL').default('redis://127.0.0.1:6379'),
  /** Comma-separated host:port seeds; when set, meterd talks to a Redis Cluster instead of REDIS_URL. */
  REDIS_CLUSTER_NODES: z.string().default(''),
  REDIS_KEY_PREFIX: z.string().regex(/^[A-Za-z0-9._:-]{1,64}$/, 'use 1-64 of letters, digits and . _ : -').default('meterd'),
  REDIS_COMMAND_TIMEOUT_MS: integer(10, 60_000, 1_000),
  /** Accept a Redis whose maxmemory-policy may evict keys (balances could vanish): for experiments only. */
  REDIS_ALLOW_EVICTION: z.enum(['true', 'false']).default('false'),
  GRPC_HOST: z.string().default('0.0.0.0'),
  GRPC_PORT: integer(0, 65_535, 50_051),
  METERD_CONFIG: z.string().default(EXAMPLE_PRODUCT_CONFIG_PATH),
  SWEEP_INTERVAL_MS: integer(50, 60_000, 1_000),
  SHUTDOWN_GRACE_MS: integer(0, 600_000, 10_000),
  DATABASE_URL: z.string().regex(/^postgres(ql)?:\/\/\S+$/, 'must be a postgres:// URL').default('postgres://postgres@127.0.0.1:5432/meterd'),
  DATABASE_POOL_MAX: integer(1, 100, 5),
  DATABASE_STATEMENT_TIMEOUT_MS: integer(100, 600_000, 10_000),
  FLUSH_INTERVAL_MS: integer(10, 60_000, 100),
  FLUSH_BATCH_EVENTS_MAX: integer(1, 10_000, 1_000),
  FLUSH_RECLAIM_IDLE_MS: integer(1_000, 3_600_000, 30_000),
  FLUSH_BACKLOG_ALARM_EVENTS: integer(0, 1_000_000_000, 1_000_000),
  RECONCILE_INTERVAL_MS: integer(0, 86_400_000, 300_000),
  /** The background check rebuilds a pool from Postgres when Redis lost events of it; 'false' only reports. */
  RECONCILE_REPAIR: z.enum(['true', 'false']).default('true'),
  LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
});

export interface Settings {
  redisUrl: string;
  redisClusterNodes: Array<{ host: string; port: number }>;
  redisKeyPrefix: string;
  redisCommandTimeoutMs: number;
  redisAllowEviction: boolean;
  grpcHost: string;
  grpcPort: number;
  productConfigPath: string;
  sweepIntervalMs: number;
  shutdownGraceMs: number;
  databaseUrl: string;
  databasePoolMax: number;
  databaseStatementTimeoutMs: number;
  flushIntervalMs: number;
  flushBatchEventsMax: number;
  flushReclaimIdleMs: number;
  flushBacklogAlarmEvents: number;
  /** 0 turns the background reconciliation off. */
  reconcileIntervalMs: number;
  reconcileRepair: boolean;
  logLevel: string;
}

function parseNodes(text: string): Array<{ host: string; port: number }> {
  if (text.trim() === '') return [];
  return text.split(',').map((entry) => {
    const match = /^\s*([^:\s]+):(\d{1,5})\s*$/.exec(entry);
    const port = Number(match?.[2]);
    if (!match || port < 1 || port > 65_535) throw new ConfigError(`REDIS_CLUSTER_NODES: "${entry}" is not host:port (port 1-65535)`);
    return { host: match[1] as string, port };
  });
}

export function loadSettings(env: NodeJS.ProcessEnv = process.env): Readonly<Settings> {
  const result = settingsSchema.safeParse(env);
  if (!result.success) {
    const lines = result.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ');
    throw new ConfigError(`environment: ${lines}`);
  }
  const s = result.data;
  return Object.freeze({
    redisUrl: s.REDIS_URL,
    redisClusterNodes: parseNodes(s.REDIS_CLUSTER_NODES),
    redisKeyPrefix: s.REDIS_KEY_PREFIX,
    redisCommandTimeoutMs: s.REDIS_COMMAND_TIMEOUT_MS,
    redisAllowEviction: s.REDIS_ALLOW_EVICTION === 'true',
    grpcHost: s.GRPC_HOST,
    grpcPort: s.GRPC_PORT,
    productConfigPath: s.METERD_CONFIG,
    sweepIntervalMs: s.SWEEP_INTERVAL_MS,
    shutdownGraceMs: s.SHUTDOWN_GRACE_MS,
    databaseUrl: s.DATABASE_URL,
    databasePoolMax: s.DATABASE_POOL_MAX,
    databaseStatementTimeoutMs: s.DATABASE_STATEMENT_TIMEOUT_MS,
    flushIntervalMs: s.FLUSH_INTERVAL_MS,
    flushBatchEventsMax: s.FLUSH_BATCH_EVENTS_MAX,
    flushReclaimIdleMs: s.FLUSH_RECLAIM_IDLE_MS,
    flushBacklogAlarmEvents: s.FLUSH_BACKLOG_ALARM_EVENTS,
    reconcileIntervalMs: s.RECONCILE_INTERVAL_MS,
    reconcileRepair: s.RECONCILE_REPAIR === 'true',
    logLevel: s.LOG_LEVEL,
  });
}
