/**
 * "The design a team would build instead": balances and holds in Postgres, one transaction per step.
 *
 *   accounts(id, balance, held)      holds(id, account_id, amount)
 *   reserve = BEGIN; UPDATE accounts SET held = held + x WHERE id = $1 AND balance - held >= x;
 *             INSERT INTO holds … RETURNING id; COMMIT
 *   commit  = BEGIN; DELETE FROM holds WHERE id = $1 RETURNING account_id, amount;
 *             UPDATE accounts SET balance = balance - amount, held = held - amount; COMMIT
 *   release = the same with only held - amount.
 *
 * Each statement is its own round trip through a pg Pool (node-postgres), as application code
 * usually does it. bench/run.ts runs it at the same concurrency as meterd's unary part.
 */
import pg from 'pg';
import { inTransaction } from '../src/postgres/transaction.js';

export interface PostgresDesign {
  pool: pg.Pool;
  reserve(accountId: string, amount: number): Promise<string>;
  commit(holdId: string): Promise<void>;
  release(holdId: string): Promise<void>;
  end(): Promise<void>;
}

export class InsufficientCredits extends Error {}

/** Creates the tables in `databaseUrl` (an empty database) with `accounts` rows named `${idPrefix}${i}`. */
export async function setUpPostgresDesign(databaseUrl: string, options: { poolSize: number; accounts: number; idPrefix: string; balance: bigint }): Promise<PostgresDesign> {
  const pool = new pg.Pool({ connectionString: databaseUrl, max: options.poolSize });
  pool.on('error', () => {});
  await pool.query(`
    CREATE TABLE IF NOT EXISTS accounts (id text PRIMARY KEY, balance bigint NOT NULL, held bigint NOT NULL DEFAULT 0) WITH (fillfactor = 90);
    CREATE TABLE IF NOT EXISTS holds (id bigserial PRIMARY KEY, account_id text NOT NULL REFERENCES accounts(id), amount bigint NOT NULL, created_at timestamptz NOT NULL DEFAULT now());`);
  await pool.query(`INSERT INTO accounts (id, balance) SELECT $1 || g, $2 FROM generate_series(0, $3 - 1) g ON CONFLICT (id) DO NOTHING`,
    [options.idPrefix, options.balance.toString(), options.accounts]);
  await pool.query('VACUUM ANALYZE accounts');

  const transaction = <T>(work: (client: pg.PoolClient) => Promise<T>): Promise<T> => inTransaction(pool, work);

  const settle = (holdId: string, spend: boolean) => transaction(async (client) => {
    const hold = await client.query<{ account_id: string; amount: string }>('DELETE FROM holds WHERE id = $1 RETURNING account_id, amount', [holdId]);
    const row = hold.rows[0];
    if (!row) throw new Error(`no hold ${holdId}`);
    await client.query(spend
      ? 'UPDATE accounts SET balance = balance - $2, held = held - $2 WHERE id = $1'
      : 'UPDATE accounts SET held = held - $2 WHERE id = $1', [row.account_id, row.amount]);
  });

  return {
    pool,
    reserve: (accountId, amount) => transaction(async (client) => {
      const debit = await client.query('UPDATE accounts SET held = held + $2 WHERE id = $1 AND balance - held >= $2', [accountId, amount]);
      if (debit.rowCount !== 1) throw new InsufficientCredits(accountId);
      const hold = await client.query<{ id: string }>('INSERT INTO holds (account_id, amount) VALUES ($1, $2) RETURNING id', [accountId, amount]);
      return (hold.rows[0] as { id: string }).id;
    }),
    commit: (holdId) => settle(holdId, true),
    release: (holdId) => settle(holdId, false),
    end: () => pool.end(),
  };
}
