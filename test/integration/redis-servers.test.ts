// Self-test of the throwaway Redis support code.
import { existsSync } from 'node:fs';
import { Cluster, Redis } from 'ioredis';
import { describe, expect, it } from 'vitest';
import { freePortBelow, startRedisCluster, startRedisServer } from '../support/redis-servers.js';

const TIMEOUT = 60_000;

function client(port: number): Redis {
  return new Redis({ host: '127.0.0.1', port, maxRetriesPerRequest: 1 });
}

describe('redis-servers', () => {
  it('freePortBelow leaves room for the cluster bus port', async () => {
    const port = await freePortBelow(50000);
    expect(port).toBeLessThan(50000);
    expect(port).toBeGreaterThan(0);
  });

  it('startRedisServer: SET/GET, kill9 + restart keeps AOF data, stop removes the dir', { timeout: TIMEOUT }, async () => {
    const server = await startRedisServer({ appendonly: true });
    try {
      expect(server.url).toBe(`redis://127.0.0.1:${server.port}`);
      expect(existsSync(server.dir)).toBe(true);

      const before = client(server.port);
      expect(await before.set('k', 'v1')).toBe('OK');
      expect(await before.get('k')).toBe('v1');
      expect(await before.config('GET', 'maxmemory-policy')).toEqual(['maxmemory-policy', 'noeviction']);
      before.disconnect();

      await server.kill9();
      expect(existsSync(server.dir)).toBe(true);
      await server.restart();

      const after = client(server.port);
      expect(await after.get('k')).toBe('v1');
      await after.quit();
    } finally {
      await server.stop();
    }
    expect(existsSync(server.dir)).toBe(false);
  });

  it('startRedisServer without appendonly starts empty after kill9 + restart', { timeout: TIMEOUT }, async () => {
    const server = await startRedisServer();
    try {
      const c = client(server.port);
      await c.set('k', 'v');
      c.disconnect();
      await server.kill9();
      await server.restart();
      const again = client(server.port);
      expect(await again.get('k')).toBeNull();
      await again.quit();
    } finally {
      await server.stop();
    }
  });

  it('startRedisCluster: cluster client SET/GET across slots and a multi-key EVAL', { timeout: TIMEOUT }, async () => {
    const cluster = await startRedisCluster();
    const redis = new Cluster(cluster.nodes, {
      redisOptions: { maxRetriesPerRequest: 1 },
      slotsRefreshTimeout: 2000,
    });
    try {
      expect(cluster.nodes).toHaveLength(3);
      for (const node of cluster.nodes) expect(node.port).toBeLessThan(50000);

      const info = String(await redis.call('CLUSTER', 'INFO'));
      expect(info).toContain('cluster_state:ok');

      const keys = Array.from({ length: 50 }, (_, i) => `{tag${i}}:key`);
      await Promise.all(keys.map((k, i) => redis.set(k, String(i))));
      expect(await Promise.all(keys.map((k) => redis.get(k)))).toEqual(keys.map((_, i) => String(i)));

      // The keys must really be spread over all masters.
      const perNode = await Promise.all(redis.nodes('master').map((n) => n.dbsize()));
      expect(perNode).toHaveLength(3);
      for (const count of perNode) expect(count).toBeGreaterThan(0);

      const script = "redis.call('SET', KEYS[1], ARGV[1]); redis.call('SET', KEYS[2], ARGV[2]); return redis.call('MGET', KEYS[1], KEYS[2])";
      expect(await redis.eval(script, 2, '{t1}:a', '{t1}:b', 'x', 'y')).toEqual(['x', 'y']);
    } finally {
      await redis.quit();
      await cluster.stop();
    }
    for (const s of cluster.servers) expect(existsSync(s.dir)).toBe(false);
  });
});
