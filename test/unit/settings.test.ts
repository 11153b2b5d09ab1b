import { describe, expect, it } from 'vitest';
import { EXAMPLE_PRODUCT_CONFIG_PATH } from '../../src/config/product-config.js';
import { loadSettings } from '../../src/config/settings.js';
import { configRefusal } from '../support/config-refusal.js';

const refusal = (env: NodeJS.ProcessEnv): string => configRefusal(() => loadSettings(env), JSON.stringify(env));

describe('loadSettings', () => {
  it('defaults every variable', () => {
    expect(loadSettings({})).toEqual({
      redisUrl: 'redis://127.0.0.1:6379',
      redisClusterNodes: [],
      redisKeyPrefix: 'meterd',
      redisCommandTimeoutMs: 1000,
      redisAllowEviction: false,
      grpcHost: '0.0.0.0',
      grpcPort: 50051,
      productConfigPath: EXAMPLE_PRODUCT_CONFIG_PATH,
      sweepIntervalMs: 1000,
      shutdownGraceMs: 10_000,
      databaseUrl: 'postgres://postgres@127.0.0.1:5432/meterd',
      databasePoolMax: 5,
      databaseStatementTimeoutMs: 10_000,
      flushIntervalMs: 100,
      flushBatchEventsMax: 1000,
      flushReclaimIdleMs: 30_000,
      flushBacklogAlarmEvents: 1_000_000,
      flushLanes: 2,
      reconcileIntervalMs: 300_000,
      reconcileRepair: true,
      logLevel: 'info',
      httpHost: '0.0.0.0',
      httpPort: 9464,
      dataPlaneTokens: [],
      adminTokens: [],
      grpcTls: null,
      grpcMaxConcurrentStreams: 1000,
      shadowMode: false,
      metricsAccountIds: [],
      stripe: {
        secretKey: '', webhookSecret: '', apiUrl: 'https://api.stripe.com', timeoutMs: 10_000, maxNetworkRetries: 2,
        meterEventName: 'meterd_overage_credits',
      },
      outboxPollIntervalMs: 1000,
      refillAttemptsMax: 4,
      refillRetryBaseMs: 60_000,
      overageReportIntervalMs: 60_000,
      alerts: { webhookUrls: [], webhookSecret: '', deliveryAttemptsMax: 12, retryBaseMs: 1000, deliveryTimeoutMs: 5000 },
    });
    expect(EXAMPLE_PRODUCT_CONFIG_PATH).toMatch(/src\/config\/product\.example\.yaml$/);
  });

  it('returns a frozen object', () => {
    expect(Object.isFrozen(loadSettings({}))).toBe(true);
  });

  it('reads set variables and ignores unrelated ones', () => {
    const settings = loadSettings({
      REDIS_URL: 'redis://redis.internal:6380/2',
      REDIS_CLUSTER_NODES: 'a:7000, b:7001',
      REDIS_KEY_PREFIX: 'm:prod-1',
      REDIS_COMMAND_TIMEOUT_MS: '10',
      REDIS_ALLOW_EVICTION: 'true',
      GRPC_HOST: '127.0.0.1',
      GRPC_PORT: '65535',
      METERD_CONFIG: '/etc/meterd/product.yaml',
      SWEEP_INTERVAL_MS: '50',
      SHUTDOWN_GRACE_MS: '600000',
      DATABASE_URL: 'postgresql://meterd:secret@db.internal:5433/ledger',
      DATABASE_POOL_MAX: '20',
      DATABASE_STATEMENT_TIMEOUT_MS: '2000',
      FLUSH_INTERVAL_MS: '50',
      FLUSH_BATCH_EVENTS_MAX: '5000',
      FLUSH_RECLAIM_IDLE_MS: '60000',
      LOG_LEVEL: 'silent',
      HTTP_HOST: '127.0.0.1',
      HTTP_PORT: '0',
      AUTH_DATA_PLANE_TOKENS: 'gateway-token-0123456789, gateway-token-rotated-1',
      AUTH_ADMIN_TOKENS: 'admin-token-0123456789abc',
      GRPC_TLS_CERT_FILE: '/tls/tls.crt',
      GRPC_TLS_KEY_FILE: '/tls/tls.key',
      GRPC_TLS_CLIENT_CA_FILE: '/tls/ca.crt',
      GRPC_MAX_CONCURRENT_STREAMS: '64',
      SHADOW_MODE: 'true',
      METRICS_ACCOUNT_IDS: 'acct-1,acct-2,acct-1',
      STRIPE_SECRET_KEY: 'sk_test_123',
      STRIPE_WEBHOOK_SECRET: 'whsec_123',
      STRIPE_API_URL: 'http://127.0.0.1:12111/',
      STRIPE_TIMEOUT_MS: '2000',
      STRIPE_MAX_NETWORK_RETRIES: '0',
      STRIPE_METER_EVENT_NAME: 'ovg',
      OUTBOX_POLL_INTERVAL_MS: '50',
      REFILL_ATTEMPTS_MAX: '2',
      REFILL_RETRY_BASE_MS: '100',
      OVERAGE_REPORT_INTERVAL_MS: '0',
      ALERT_WEBHOOK_URLS: 'https://hooks.example.com/a, http://127.0.0.1:9000/b',
      ALERT_WEBHOOK_SECRET: 'alert-secret-0123456789',
      ALERT_DELIVERY_ATTEMPTS_MAX: '3',
      ALERT_RETRY_BASE_MS: '10',
      ALERT_DELIVERY_TIMEOUT_MS: '100',
      PATH: '/usr/bin',
    });
    expect(settings).toEqual({
      redisUrl: 'redis://redis.internal:6380/2',
      redisClusterNodes: [{ host: 'a', port: 7000 }, { host: 'b', port: 7001 }],
      redisKeyPrefix: 'm:prod-1',
      redisCommandTimeoutMs: 10,
      redisAllowEviction: true,
      grpcHost: '127.0.0.1',
      grpcPort: 65535,
      productConfigPath: '/etc/meterd/product.yaml',
      sweepIntervalMs: 50,
      shutdownGraceMs: 600_000,
      databaseUrl: 'postgresql://meterd:secret@db.internal:5433/ledger',
      databasePoolMax: 20,
      databaseStatementTimeoutMs: 2000,
      flushIntervalMs: 50,
      flushBatchEventsMax: 5000,
      flushReclaimIdleMs: 60_000,
      flushBacklogAlarmEvents: 1_000_000,
      flushLanes: 2,
      reconcileIntervalMs: 300_000,
      reconcileRepair: true,
      logLevel: 'silent',
      httpHost: '127.0.0.1',
      httpPort: 0,
      dataPlaneTokens: ['gateway-token-0123456789', 'gateway-token-rotated-1'],
      adminTokens: ['admin-token-0123456789abc'],
      grpcTls: { certFile: '/tls/tls.crt', keyFile: '/tls/tls.key', clientCaFile: '/tls/ca.crt' },
      grpcMaxConcurrentStreams: 64,
      shadowMode: true,
      metricsAccountIds: ['acct-1', 'acct-2'],
      stripe: { secretKey: 'sk_test_123', webhookSecret: 'whsec_123', apiUrl: 'http://127.0.0.1:12111', timeoutMs: 2000, maxNetworkRetries: 0, meterEventName: 'ovg' },
      outboxPollIntervalMs: 50,
      refillAttemptsMax: 2,
      refillRetryBaseMs: 100,
      overageReportIntervalMs: 0,
      alerts: {
        webhookUrls: ['https://hooks.example.com/a', 'http://127.0.0.1:9000/b'], webhookSecret: 'alert-secret-0123456789',
        deliveryAttemptsMax: 3, retryBaseMs: 10, deliveryTimeoutMs: 100,
      },
    });
  });

  it('accepts the limits of each range', () => {
    expect(loadSettings({ GRPC_PORT: '0' }).grpcPort).toBe(0);
    expect(loadSettings({ REDIS_COMMAND_TIMEOUT_MS: '60000' }).redisCommandTimeoutMs).toBe(60_000);
    expect(loadSettings({ SWEEP_INTERVAL_MS: '60000' }).sweepIntervalMs).toBe(60_000);
    expect(loadSettings({ SHUTDOWN_GRACE_MS: '0' }).shutdownGraceMs).toBe(0);
    expect(loadSettings({ REDIS_KEY_PREFIX: 'p'.repeat(64) }).redisKeyPrefix).toHaveLength(64);
  });

  const bad: ReadonlyArray<readonly [variable: string, value: string]> = [
    ['REDIS_URL', 'not a url'],
    ['DATABASE_URL', 'mysql://x/y'],
    ['FLUSH_BATCH_EVENTS_MAX', '0'],
    ['FLUSH_RECLAIM_IDLE_MS', '999'],
    ['REDIS_URL', ''],
    ['REDIS_KEY_PREFIX', ''],
    ['REDIS_KEY_PREFIX', 'has space'],
    ['REDIS_KEY_PREFIX', '{p1}'],
    ['REDIS_KEY_PREFIX', 'p'.repeat(65)],
    ['REDIS_COMMAND_TIMEOUT_MS', '9'],
    ['REDIS_COMMAND_TIMEOUT_MS', '60001'],
    ['REDIS_COMMAND_TIMEOUT_MS', 'fast'],
    ['REDIS_ALLOW_EVICTION', 'yes'],
    ['REDIS_ALLOW_EVICTION', 'TRUE'],
    ['GRPC_PORT', '65536'],
    ['GRPC_PORT', '-1'],
    ['GRPC_PORT', '80.5'],
    ['GRPC_PORT', 'http'],
    ['SWEEP_INTERVAL_MS', '49'],
    ['SWEEP_INTERVAL_MS', '60001'],
    ['SHUTDOWN_GRACE_MS', '-1'],
    ['SHUTDOWN_GRACE_MS', '600001'],
    ['LOG_LEVEL', 'verbose'],
    ['LOG_LEVEL', 'INFO'],
    ['REDIS_CLUSTER_NODES', 'redis-1'],
    ['REDIS_CLUSTER_NODES', 'a:7000,,b:7001'],
    ['REDIS_CLUSTER_NODES', 'a:port'],
    ['HTTP_PORT', '65536'],
    ['AUTH_DATA_PLANE_TOKENS', 'short'],
    ['AUTH_ADMIN_TOKENS', 'has a space in it 0123456789'],
    ['AUTH_ADMIN_TOKENS', Array.from({ length: 17 }, (_, i) => `admin-token-${i}-0123456789`).join(',')],
    ['GRPC_TLS_CERT_FILE', '/tls/only-a-cert.crt'],
    ['GRPC_MAX_CONCURRENT_STREAMS', '0'],
    ['SHADOW_MODE', 'on'],
    ['METRICS_ACCOUNT_IDS', 'ok,not ok'],
    ['STRIPE_API_URL', 'ftp://stripe'],

    ['METRICS_ACCOUNT_IDS', Array.from({ length: 101 }, (_, i) => `a${i}`).join(',')],
  ];

  it.each(bad)('refuses %s=%j, naming the variable', (variable, value) => {
    const message = refusal({ [variable]: value });
    expect(message).toMatch(new RegExp(`(^|: )${variable}( and [A-Z_]+)?: `));
  });

  it('refuses settings that only make sense together', () => {
    expect(refusal({ STRIPE_SECRET_KEY: 'sk_test_1' })).toMatch(/^STRIPE_WEBHOOK_SECRET: required/);
    expect(refusal({ ALERT_WEBHOOK_URLS: 'https://a.example/x' })).toMatch(/^ALERT_WEBHOOK_SECRET: at least 16/);
    expect(refusal({ ALERT_WEBHOOK_URLS: 'not-a-url', ALERT_WEBHOOK_SECRET: 'alert-secret-0123456789' })).toMatch(/^ALERT_WEBHOOK_URLS: "not-a-url"/);
  });

  it('never echoes a token it refuses', () => {
    expect(refusal({ AUTH_ADMIN_TOKENS: 'good-token-0123456789,secret x' })).not.toContain('secret');
  });

  it('names every bad variable at once', () => {
    const message = refusal({ GRPC_PORT: '99999', LOG_LEVEL: 'loud' });
    expect(message).toMatch(/^environment: /);
    expect(message).toContain('GRPC_PORT: ');
    expect(message).toContain('LOG_LEVEL: ');
  });

  // Numbers must be plain decimal digits: an empty variable must not quietly become 0 (port 0 = a
  // random port, grace 0 = no drain), nor hex or exponent forms another number.
  it('refuses an empty GRPC_PORT', () => {
    expect(refusal({ GRPC_PORT: '' })).toMatch(/GRPC_PORT: /);
  });
  it('refuses an empty SHUTDOWN_GRACE_MS', () => {
    expect(refusal({ SHUTDOWN_GRACE_MS: '' })).toMatch(/SHUTDOWN_GRACE_MS: /);
  });
  it('refuses GRPC_PORT=0x50', () => {
    expect(refusal({ GRPC_PORT: '0x50' })).toMatch(/GRPC_PORT: /);
  });
  it('refuses a REDIS_URL that is not redis:// or rediss://', () => {
    expect(refusal({ REDIS_URL: 'http://example.com' })).toMatch(/REDIS_URL: /);
  });
  it('refuses a REDIS_CLUSTER_NODES port above 65535', () => {
    expect(refusal({ REDIS_CLUSTER_NODES: 'a:99999' })).toMatch(/REDIS_CLUSTER_NODES: /);
  });
});
