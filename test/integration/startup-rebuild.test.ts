import { randomBytes } from 'node:crypto';
import { pino } from 'pino';
import { afterAll, describe, expect, it } from 'vitest';
import { startMeterd } from '../../src/app.js';
import { loadSettings } from '../../src/config/settings.js';
import { GrantKind } from '../../src/gen/meterd/v1/types.js';
import { connectClients } from '../support/grpc-clients.js';
import { deleteKeys, dropDatabase, LOCAL_REDIS, TEST_PRODUCT, testDatabaseUrl } from '../support/meterd.js';

/** A meterd starting on an emptied Redis rebuilds the accounts its ledger knows before serving. */
describe('startup on a Redis that lost its data', () => {
  const keyPrefix = `tsr${randomBytes(5).toString('hex')}`;
  const databaseUrl = testDatabaseUrl(`meterd_${keyPrefix}`);
  const settings = loadSettings({
    REDIS_URL: LOCAL_REDIS.url, REDIS_KEY_PREFIX: keyPrefix, DATABASE_URL: databaseUrl, GRPC_HOST: '127.0.0.1', GRPC_PORT: '0',
    SHUTDOWN_GRACE_MS: '1000', RECONCILE_INTERVAL_MS: '0',
  });
  const start = () => startMeterd({ settings, product: TEST_PRODUCT, logger: pino({ level: 'silent' }), sweeper: false });

  afterAll(async () => {
    await deleteKeys(LOCAL_REDIS.url as string, `${keyPrefix}:*`);
    await dropDatabase(databaseUrl);
  });

  it('serves the same balances after Redis was emptied between two runs', async () => {
    const first = await start();
    const clients = connectClients(first.grpcPort);
    await clients.admin.upsertAccount({ account: { accountId: 'sr-acme', plan: 'starter', parentId: '', trialCredits: 0n, lowBalanceThreshold: 0n, lowBalancePercent: 0, pendingPlan: '' } });
    await clients.admin.grantCredits({ accountId: 'sr-acme', credits: 500n, kind: GrantKind.GRANT_KIND_PACK, grantId: 'p1', reason: '' });
    const hold = await clients.metering.reserveCredits({ accountId: 'sr-acme', feature: 'image_2k', requestId: 'r1', userId: '', labels: {} });
    await clients.metering.commitReservation({ reservationId: hold.reservationId });
    const before = await clients.metering.getBalance({ accountId: 'sr-acme' });
    clients.close();
    await first.stop(); // the final flush puts every event into Postgres

    await deleteKeys(LOCAL_REDIS.url as string, `${keyPrefix}:*`);
    const second = await start();
    const again = connectClients(second.grpcPort);
    try {
      expect(await again.metering.getBalance({ accountId: 'sr-acme' })).toEqual(before);
    } finally {
      again.close();
      await second.stop();
    }
  });
});
