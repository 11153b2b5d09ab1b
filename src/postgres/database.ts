import pg from 'pg';
import type { Settings } from '../config/settings.js';

/** The Postgres pool, every option explicit; amounts come back as text (int8 → string) and stay exact. */
export function createDatabasePool(settings: Pick<Settings, 'databaseUrl' | 'databasePoolMax' | 'databaseStatementTimeoutMs'>, onError: (err: Error) => void): pg.Pool {
  const pool = new pg.Pool({
    connectionString: settings.databaseUrl,
    max: settings.databasePoolMax,
    connectionTimeoutMillis: 5_000,
    idleTimeoutMillis: 30_000,
    statement_timeout: settings.databaseStatementTimeoutMs,
    query_timeout: settings.databaseStatementTimeoutMs + 1_000,
    application_name: 'meterd',
  });
  pool.on('error', onError);
  return pool;
}
