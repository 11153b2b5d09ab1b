import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { credentials, loadPackageDefinition, type Client, type ServiceError } from '@grpc/grpc-js';
import { loadSync } from '@grpc/proto-loader';
import { protoPath as healthProtoPath } from 'grpc-health-check';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GrantKind } from '../../src/gen/meterd/v1/types.js';
import { terminate } from '../support/child-processes.js';
import { rejection } from '../support/grpc-clients.js';
import { deleteKeys, dropDatabase, LOCAL_REDIS, startTestMeterd, type TestMeterd } from '../support/meterd.js';
import { sample } from '../support/prometheus-text.js';
import { startPostgresServer } from '../support/postgres-server.js';
import { freePort } from '../support/redis-servers.js';

type HealthClient = Client & {
  check(request: { service: string }, callback: (err: ServiceError | null, response: { status: string }) => void): void;
  watch(request: { service: string }): NodeJS.EventEmitter & { cancel(): void };
};

function healthClient(port: number): HealthClient {
  const definition = loadSync(healthProtoPath, { keepCase: true, enums: String, defaults: true });
  const grpc = loadPackageDefinition(definition) as unknown as { grpc: { health: { v1: { Health: new (a: string, c: unknown) => HealthClient } } } };
  return new grpc.grpc.health.v1.Health(`127.0.0.1:${port}`, credentials.createInsecure());
}

const REFLECTION_PROTO = join(process.cwd(), 'node_modules/@grpc/reflection/build/proto/grpc/reflection/v1/reflection.proto');

/** Lists the services the server describes through gRPC server reflection (what grpcurl does first). */
async function reflectedServices(port: number): Promise<string[]> {
  const definition = loadSync(REFLECTION_PROTO, { keepCase: true, defaults: true, oneofs: true });
  type Stream = NodeJS.EventEmitter & { write(m: unknown): void; end(): void };
  const grpc = loadPackageDefinition(definition) as unknown as {
    grpc: { reflection: { v1: { ServerReflection: new (a: string, c: unknown) => Client & { ServerReflectionInfo(): Stream } } } };
  };
  const client = new grpc.grpc.reflection.v1.ServerReflection(`127.0.0.1:${port}`, credentials.createInsecure());
  try {
    return await new Promise<string[]>((resolve, reject) => {
      const stream = client.ServerReflectionInfo();
      stream.on('data', (response: { list_services_response?: { service: Array<{ name: string }> } }) => {
        resolve((response.list_services_response?.service ?? []).map((s) => s.name).sort());
        stream.end();
      });
      stream.on('error', reject);
      stream.write({ list_services: '' });
    });
  } finally {
    client.close();
  }
}

/**
 * Observability: /metrics moves as the API is used (and passes promtool's lint and a real
 * Prometheus scrape), /healthz and /readyz answer, the gRPC health service and reflection work,
 * and health flips to NOT_SERVING the moment a shutdown starts.
 */
describe('metrics, health and reflection', () => {
  let t: TestMeterd;
  const http = (path: string) => fetch(`http://127.0.0.1:${t.meterd.httpPort}${path}`);
  const scrape = async () => (await http('/metrics')).text();

  beforeAll(async () => {
    t = await startTestMeterd({ postgres: true, sweeper: false, env: { METRICS_ACCOUNT_IDS: 'obs-a,obs-missing' } });
  });
  afterAll(async () => {
    await t?.stop();
  });

  it('counts calls, reservations, credits, denials, replays and flushes as the API is used', async () => {
    const { admin, metering } = t.clients;
    const before = await scrape();
    expect(sample(before, 'meterd_reservations_total', { result: 'held' })).toBe(0);
    expect(sample(before, 'meterd_build_info', { version: '0.1.0' })).toBe(1);
    expect(sample(before, 'process_resident_memory_bytes')).toBeGreaterThan(0);

    await admin.upsertAccount({ account: { accountId: 'obs-a', plan: 'jobs_free', parentId: '', trialCredits: 0n, lowBalanceThreshold: 0n, lowBalancePercent: 0, pendingPlan: '' } });
    await admin.grantCredits({ accountId: 'obs-a', credits: 20n, kind: GrantKind.GRANT_KIND_PACK, grantId: 'g1', reason: '' });
    const held = await metering.reserveCredits({ accountId: 'obs-a', feature: 'talent_search', requestId: 'q1', userId: '', labels: {} });
    await metering.reserveCredits({ accountId: 'obs-a', feature: 'talent_search', requestId: 'q1', userId: '', labels: {} }); // replay
    await metering.commitReservation({ reservationId: held.reservationId, credits: 15n });
    const second = await metering.reserveCredits({ accountId: 'obs-a', feature: 'meeting_assistant', requestId: 'q2', userId: '', labels: {} });
    await metering.releaseReservation({ reservationId: second.reservationId, reason: 'model failed' });
    expect((await rejection(metering.reserveCredits({ accountId: 'obs-a', feature: 'talent_search', requestId: 'q3', userId: '', labels: {} }))).reason)
      .toBe('INSUFFICIENT_CREDITS');
    expect((await rejection(metering.getBalance({ accountId: 'bad id' }))).code).toBe(3);
    await t.meterd.flusher!.drain();

    const after = await scrape();
    const rpc = (method: string, code: string) => sample(after, 'grpc_server_handled_total', { grpc_service: 'meterd.v1.MeteringService', grpc_method: method, grpc_code: code });
    expect(rpc('ReserveCredits', 'OK')).toBe(3);
    expect(rpc('ReserveCredits', 'RESOURCE_EXHAUSTED')).toBe(1);
    expect(rpc('GetBalance', 'INVALID_ARGUMENT')).toBe(1);
    expect(sample(after, 'grpc_server_started_total', { grpc_method: 'CommitReservation' })).toBe(1);
    expect(sample(after, 'grpc_server_handling_seconds_count', { grpc_method: 'ReserveCredits' })).toBe(4);
    expect(sample(after, 'meterd_reservations_total', { result: 'held' })).toBe(2);
    expect(sample(after, 'meterd_reservations_total', { result: 'replayed' })).toBe(1);
    expect(sample(after, 'meterd_reservations_total', { result: 'refused' })).toBe(1);
    expect(sample(after, 'meterd_denials_total', { reason: 'INSUFFICIENT_CREDITS' })).toBe(1);
    expect(sample(after, 'meterd_idempotent_replays_total', { method: 'ReserveCredits' })).toBe(1);
    expect(sample(after, 'meterd_settlements_total', { kind: 'commit' })).toBe(1);
    expect(sample(after, 'meterd_settlements_total', { kind: 'release' })).toBe(1);
    expect(sample(after, 'meterd_credits_total', { movement: 'held' })).toBe(23); // 20 + 3
    expect(sample(after, 'meterd_credits_total', { movement: 'charged' })).toBe(15);
    expect(sample(after, 'meterd_credits_total', { movement: 'released' })).toBe(8); // 5 left of the first hold + 3
    expect(sample(after, 'meterd_redis_script_duration_seconds_count', { script: 'reserveCredits', outcome: 'ok' })).toBe(3);
    expect(sample(after, 'meterd_redis_script_duration_seconds_count', { script: 'reserveCredits', outcome: 'refused' })).toBe(1);
    expect(sample(after, 'meterd_flush_events_total')).toBeGreaterThanOrEqual(7);
    expect(sample(after, 'meterd_flush_lag_seconds_count')).toBe(sample(after, 'meterd_flush_events_total'));
    expect(sample(after, 'meterd_flush_last_success_timestamp_seconds')).toBeGreaterThan(0);
    // The opt-in per-account gauge: the listed account only, one that does not exist is skipped.
    expect(sample(after, 'meterd_account_available_credits', { account_id: 'obs-a' })).toBe(8); // 3 monthly + 20 - 15
    expect(after).not.toContain('obs-missing');
    expect(after).not.toMatch(/account_id="(?!obs-a")/);
  });

  it('passes promtool check metrics (names, units, help) for every metric of its own', async () => {
    const text = await scrape();
    const lint = spawnSync('promtool', ['check', 'metrics'], { input: text, encoding: 'utf8' });
    expect(lint.error).toBeUndefined();
    // prom-client's own nodejs_active_*_total gauges break the _total rule; not ours to rename.
    const problems = `${lint.stdout}${lint.stderr}`.split('\n').filter((line) => line.trim() !== '' && !/^nodejs_active_\w+_total /.test(line));
    expect(problems).toEqual([]);
  });

  it('is scraped by a real Prometheus', { timeout: 60_000 }, async () => {
    const dir = mkdtempSync(join(tmpdir(), 'meterd-prom-'));
    const port = await freePort();
    writeFileSync(join(dir, 'prometheus.yml'), [
      'global: { scrape_interval: 1s }',
      'scrape_configs:',
      `  - job_name: meterd`,
      `    static_configs: [{ targets: ['127.0.0.1:${t.meterd.httpPort}'] }]`,
    ].join('\n'));
    const prometheus = spawn('prometheus', [`--config.file=${join(dir, 'prometheus.yml')}`, `--storage.tsdb.path=${join(dir, 'data')}`,
      `--web.listen-address=127.0.0.1:${port}`], { stdio: 'ignore' });
    try {
      let result: Array<{ value: [number, string] }> = [];
      for (let attempt = 0; attempt < 100 && result.length === 0; attempt++) {
        await sleep(300);
        const answer = await fetch(`http://127.0.0.1:${port}/api/v1/query?query=${encodeURIComponent('up{job="meterd"} * on() group_left meterd_build_info')}`)
          .then((r) => r.json() as Promise<{ data?: { result: Array<{ value: [number, string] }> } }>).catch(() => undefined);
        result = answer?.data?.result ?? [];
      }
      expect(result.map((r) => r.value[1])).toEqual(['1']);
    } finally {
      await terminate(prometheus, 'SIGTERM', 5_000);
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('answers /healthz, /readyz, the gRPC health service and reflection', async () => {
    expect((await http('/healthz')).status).toBe(200);
    const ready = await http('/readyz');
    expect(ready.status).toBe(200);
    expect(await ready.json()).toEqual({ ready: true, degraded: false, draining: false, alarms: [], checks: { redis: 'ok', postgres: 'ok' } });
    expect((await http('/nothing')).status).toBe(404);
    expect((await fetch(`http://127.0.0.1:${t.meterd.httpPort}/metrics`, { method: 'POST' })).status).toBe(405);

    const health = healthClient(t.meterd.grpcPort);
    try {
      for (const service of ['', 'meterd.v1.MeteringService', 'meterd.v1.AdminService']) {
        const answer = await new Promise<{ status: string }>((resolve, reject) => health.check({ service }, (err, res) => (err ? reject(err) : resolve(res))));
        expect(answer.status, service).toBe('SERVING');
      }
    } finally {
      health.close();
    }
    expect(await reflectedServices(t.meterd.grpcPort)).toEqual(expect.arrayContaining(['meterd.v1.AdminService', 'meterd.v1.MeteringService']));
  });
});

describe('graceful shutdown', () => {
  it('flips health to NOT_SERVING and /readyz to 503 (draining) the moment stop begins; the final flush runs', async () => {
    const t = await startTestMeterd({ postgres: true, sweeper: false });
    const health = healthClient(t.meterd.grpcPort);
    const statuses: string[] = [];
    const watch = health.watch({ service: '' });
    watch.on('data', (r: { status: string }) => statuses.push(r.status));
    watch.on('error', () => {});
    try {
      for (let i = 0; i < 50 && statuses.length === 0; i++) await sleep(20);
      expect(statuses).toEqual(['SERVING']);
      await t.clients.admin.upsertAccount({ account: { accountId: 'sd-a', plan: 'free', parentId: '', trialCredits: 0n, lowBalanceThreshold: 0n, lowBalancePercent: 0, pendingPlan: '' } });

      const stopping = t.meterd.stop();
      const readyz = await fetch(`http://127.0.0.1:${t.meterd.httpPort}/readyz`);
      expect(readyz.status).toBe(503);
      expect(await readyz.json()).toMatchObject({ ready: false, draining: true });
      for (let i = 0; i < 50 && statuses.length < 2; i++) await sleep(20);
      expect(statuses).toEqual(['SERVING', 'NOT_SERVING']);
      watch.cancel();
      await stopping;
      // The final flush wrote the account's creation to Postgres.
      const db = new pg.Client({ connectionString: t.databaseUrl });
      await db.connect();
      const rows = await db.query("SELECT count(*) AS n FROM ledger_events WHERE account_id = 'sd-a'");
      await db.end();
      expect(Number(rows.rows[0]?.n)).toBeGreaterThan(0);
    } finally {
      health.close();
      t.clients.close();
      await deleteKeys(LOCAL_REDIS.url as string, `${t.keyPrefix}:*`);
      await dropDatabase(t.databaseUrl);
    }
  });
});

describe('readiness when Postgres is down', () => {
  it('stays ready (degraded) while only the ledger waits, and turns unready once the backlog alarm is raised', { timeout: 60_000 }, async () => {
    const pgServer = await startPostgresServer();
    const t = await startTestMeterd({ postgres: true, databaseServerUrl: pgServer.url, env: { FLUSH_BACKLOG_ALARM_EVENTS: '5' } });
    const readyz = async () => {
      const response = await fetch(`http://127.0.0.1:${t.meterd.httpPort}/readyz`);
      return { status: response.status, body: await response.json() as Record<string, unknown> };
    };
    try {
      await pgServer.shutdown('immediate');
      const degraded = await readyz();
      expect(degraded.status).toBe(200);
      expect(degraded.body).toMatchObject({ ready: true, degraded: true, alarms: [], checks: { redis: 'ok' } });
      expect((degraded.body.checks as Record<string, string>).postgres).not.toBe('ok');

      // Reserves go on; the events wait in Redis until the backlog passes its bound.
      await t.clients.admin.upsertAccount({ account: { accountId: 'rd-a', plan: 'free', parentId: '', trialCredits: 0n, lowBalanceThreshold: 0n, lowBalancePercent: 0, pendingPlan: '' } });
      for (let i = 0; i < 5; i++) {
        const hold = await t.clients.metering.reserveCredits({ accountId: 'rd-a', feature: 'content_rewrite', requestId: `rd${i}`, userId: '', labels: {} });
        await t.clients.metering.commitReservation({ reservationId: hold.reservationId });
      }
      expect((await t.meterd.flusher!.checkBacklog()).alarm).toBe(true);
      const alarmed = await readyz();
      expect(alarmed.status).toBe(503);
      expect(alarmed.body).toMatchObject({ ready: false, alarms: ['ledger_backlog'] });

      await pgServer.restart();
      await t.meterd.flusher!.drain();
      expect((await t.meterd.flusher!.checkBacklog()).alarm).toBe(false);
      expect((await readyz()).body).toMatchObject({ ready: true, degraded: false });
    } finally {
      await t.stop().catch(() => {});
      await pgServer.stop();
    }
  });
});
