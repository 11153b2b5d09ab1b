import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import pg from 'pg';
import { pino, type Logger } from 'pino';
import { startMeterd, type Meterd } from '../../src/app.js';
import { EXAMPLE_PRODUCT_CONFIG_PATH, loadProductConfig, parseProductConfig, type ProductConfig } from '../../src/config/product-config.js';
import { loadSettings } from '../../src/config/settings.js';
import { ManualClock } from '../../src/domain/clock.js';
import { ensureDatabase, migrate } from '../../src/postgres/migrator.js';
import { connectClients, type TestClients } from './grpc-clients.js';

/** Where the engine suites run: the machine's Redis, or a Redis Cluster a test started. */
export interface RedisTarget {
  url?: string;
  clusterNodes?: Array<{ host: string; port: number }>;
}

export const LOCAL_REDIS: RedisTarget = { url: process.env.TEST_REDIS_URL ?? 'redis://127.0.0.1:6379' };

/** A fixed start time, so period arithmetic in tests is predictable: 2026-01-15 12:00 UTC. */
export const TEST_EPOCH_MS = Date.UTC(2026, 0, 15, 12, 0, 0);

/** The seed docs' site builder (Free 250 / Starter 1,000 / Pro 5,000) plus overage and per-token pricing. */
export const TEST_PRODUCT: ProductConfig = parseProductConfig({
  plans: [
    { id: 'free', monthly_credits: 250, price_cents: 0 },
    { id: 'starter', monthly_credits: 1000, price_cents: 4900 },
    { id: 'pro', monthly_credits: 5000, price_cents: 7900, overage_limit: 2000 },
    { id: 'jobs_free', monthly_credits: 3, price_cents: 0 },
    { id: 'jobs_pro', monthly_credits: 150, price_cents: 2900 },
    { id: 'metered', monthly_credits: 100, price_cents: 1000, overage_limit: 50 },
  ],
  features: [
    { id: 'content_rewrite', credits: 1 },
    { id: 'section_generate', credits: 10 },
    { id: 'image_1k', credits: 30 },
    { id: 'image_2k', credits: 60 },
    { id: 'avatar_select', credits: 0 },
    { id: 'chat', credits: 2, per_units: 1000, min_credits: 1 },
    { id: 'candidate_evaluation', credits: 1 },
    { id: 'meeting_assistant', credits: 3 },
    { id: 'talent_search', credits: 20 },
  ],
});

export interface TestMeterd {
  meterd: Meterd;
  clients: TestClients;
  clock: ManualClock;
  keyPrefix: string;
  /** This run's own database (created only with postgres: true). */
  databaseUrl: string;
  stop(): Promise<void>;
}

/** An in-process meterd on a free port with its own key prefix and a hand-driven clock. */
export async function startTestMeterd(options: {
  target?: RedisTarget;
  product?: ProductConfig;
  clockMs?: number;
  sweeper?: boolean;
  /** Flush the ledger into a Postgres database of this run's own (dropped at stop). */
  postgres?: boolean;
  /** With postgres: run the flusher's loop (default false: tests call flusher.drain()). */
  flushLoop?: boolean;
  /** With postgres: the server to create this run's database on (default: testDatabaseUrl's). */
  databaseServerUrl?: string;
  /** More settings as environment variables (e.g. FLUSH_INTERVAL_MS); they win over the defaults here. */
  env?: Record<string, string>;
  /** Where meterd logs (default: silent, or TEST_LOG_LEVEL to stdout). */
  logger?: Logger;
} = {}): Promise<TestMeterd> {
  const target = options.target ?? LOCAL_REDIS;
  const keyPrefix = `t${randomBytes(6).toString('hex')}`;
  const databaseUrl = testDatabaseUrl(`meterd_${keyPrefix}`, options.databaseServerUrl);
  const settings = loadSettings({
    DATABASE_URL: databaseUrl,
    REDIS_URL: target.url ?? 'redis://127.0.0.1:6379',
    REDIS_CLUSTER_NODES: (target.clusterNodes ?? []).map((n) => `${n.host}:${n.port}`).join(','),
    REDIS_KEY_PREFIX: keyPrefix,
    GRPC_HOST: '127.0.0.1',
    GRPC_PORT: '0',
    HTTP_HOST: '127.0.0.1',
    HTTP_PORT: '0',
    SHUTDOWN_GRACE_MS: '1000',
    ...options.env,
  });
  const clock = new ManualClock(options.clockMs ?? TEST_EPOCH_MS);
  const logger = options.logger ?? pino({ level: process.env.TEST_LOG_LEVEL ?? 'silent' });
  const meterd = await startMeterd({
    settings, product: options.product ?? TEST_PRODUCT, logger, clock, sweeper: options.sweeper ?? false,
    ledger: options.postgres ?? false, flushLoop: options.flushLoop ?? false,
  });
  const clients = connectClients(meterd.grpcPort);
  return {
    meterd, clients, clock, keyPrefix, databaseUrl,
    async stop() {
      clients.close();
      await meterd.stop();
      if (!target.clusterNodes?.length) await deleteKeys(target.url ?? 'redis://127.0.0.1:6379', `${keyPrefix}:*`);
      if (options.postgres) await dropDatabase(databaseUrl);
    },
  };
}

export { EXAMPLE_PRODUCT_CONFIG_PATH, loadProductConfig };

/** Removes a test's keys from a shared Redis. */
export async function deleteKeys(url: string, pattern: string): Promise<void> {
  const redis = new Redis(url, { protocol: 2 });
  try {
    let cursor = '0';
    do {
      const [next, keys] = await redis.scan(cursor, 'MATCH', pattern, 'COUNT', 1000);
      if (keys.length > 0) await redis.unlink(...keys);
      cursor = next;
    } while (cursor !== '0');
  } finally {
    redis.disconnect();
  }
}

/**
 * The machine's Postgres (TEST_DATABASE_URL overrides the server), or `server` (a test's own, e.g.
 * from postgres-server.ts), with a database name of a test's own.
 */
export function testDatabaseUrl(database: string, server?: string): string {
  const url = new URL(server ?? process.env.TEST_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres');
  url.pathname = `/${database}`;
  return url.toString();
}

/**
 * A fresh database with meterd's schema and a pool on it, for tests that drive the Postgres side
 * alone; `drop` ends the pool and drops the database.
 */
export async function migratedTestDatabase(prefix: string, max: number): Promise<{ db: pg.Pool; drop: () => Promise<void> }> {
  const databaseUrl = testDatabaseUrl(`${prefix}_${randomBytes(4).toString('hex')}`);
  await ensureDatabase(databaseUrl);
  const db = new pg.Pool({ connectionString: databaseUrl, max });
  db.on('error', () => {}); // a connection ended by DROP DATABASE at teardown is not a test failure
  await migrate(db);
  return { db, drop: async () => {
    await db.end();
    await dropDatabase(databaseUrl);
  } };
}

export async function dropDatabase(databaseUrl: string): Promise<void> {
  const url = new URL(databaseUrl);
  const database = url.pathname.slice(1);
  url.pathname = '/postgres';
  const client = new pg.Client({ connectionString: url.toString() });
  client.on('error', () => {});
  await client.connect();
  try {
    await client.query(`DROP DATABASE IF EXISTS "${database}" WITH (FORCE)`);
  } finally {
    await client.end();
  }
}
