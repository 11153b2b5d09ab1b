import { startRedisCluster } from '../support/redis-servers.js';
import { defineEngineSuite } from './engine-suite.js';

defineEngineSuite('3-master Redis Cluster', async () => {
  const cluster = await startRedisCluster({ masters: 3 });
  return { redis: { clusterNodes: cluster.nodes }, stop: () => cluster.stop() };
});
