import { z } from 'zod';
import { ID_CHARACTERS_DESCRIPTION, ID_LENGTH_MAX, ID_PATTERN } from './limits.js';
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
  FLUSH_LANES: integer(1, 8, 2),
  RECONCILE_INTERVAL_MS: integer(0, 86_400_000, 300_000),
  /** The background check rebuilds a pool from Postgres when Redis lost events of it; 'false' only reports. */
  RECONCILE_REPAIR: z.enum(['true', 'false']).default('true'),
  LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
  HTTP_HOST: z.string().default('0.0.0.0'),
  HTTP_PORT: integer(0, 65_535, 9_464),
  AUTH_DATA_PLANE_TOKENS: z.string().default(''),
  AUTH_ADMIN_TOKENS: z.string().default(''),
  GRPC_TLS_CERT_FILE: z.string().default(''),
  GRPC_TLS_KEY_FILE: z.string().default(''),
  GRPC_TLS_CLIENT_CA_FILE: z.string().default(''),
  GRPC_MAX_CONCURRENT_STREAMS: integer(1, 100_000, 1_000),
  SHADOW_MODE: z.enum(['true', 'false']).default('false'),
  METRICS_ACCOUNT_IDS: z.string().default(''),
  STRIPE_SECRET_KEY: z.string().default(''),
  STRIPE_WEBHOOK_SECRET: z.string().default(''),
  STRIPE_API_URL: z.string().regex(/^https?:\/\/[^/\s]+\/?$/, 'must be http(s)://host[:port]').default('https://api.stripe.com'),
  STRIPE_TIMEOUT_MS: integer(100, 120_000, 10_000),
  STRIPE_MAX_NETWORK_RETRIES: integer(0, 10, 2),
  STRIPE_METER_EVENT_NAME: z.string().regex(/^[A-Za-z0-9_.:-]{1,100}$/, 'use 1-100 of letters, digits and _ . : -').default('meterd_overage_credits'),
  OUTBOX_POLL_INTERVAL_MS: integer(10, 60_000, 1_000),
  REFILL_ATTEMPTS_MAX: integer(1, 20, 4),
  REFILL_RETRY_BASE_MS: integer(10, 86_400_000, 60_000),
  OVERAGE_REPORT_INTERVAL_MS: integer(0, 86_400_000, 60_000),
  ALERT_WEBHOOK_URLS: z.string().default(''),
  ALERT_WEBHOOK_SECRET: z.string().default(''),
  ALERT_DELIVERY_ATTEMPTS_MAX: integer(1, 100, 12),
  ALERT_RETRY_BASE_MS: integer(10, 3_600_000, 1_000),
  ALERT_DELIVERY_TIMEOUT_MS: integer(100, 60_000, 5_000),
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
  /** Flush transactions this process runs side by side (each lane its own consumer). */
  flushLanes: number;
  /** 0 turns the background reconciliation off. */
  reconcileIntervalMs: number;
  reconcileRepair: boolean;
  logLevel: string;
  httpHost: string;
  httpPort: number;
  /** Bearer tokens for MeteringService; admin tokens may call both services. Both empty: no authentication. */
  dataPlaneTokens: string[];
  adminTokens: string[];
  /** TLS on the gRPC port when cert and key are set; mutual TLS when a client CA is set too. */
  grpcTls: { certFile: string; keyFile: string; clientCaFile: string } | null;
  grpcMaxConcurrentStreams: number;
  /** Reserve refusals are counted and reported in the reply, never returned as errors. */
  shadowMode: boolean;
  /** Accounts whose balances are exported as gauges (opt-in; bounded). */
  metricsAccountIds: string[];
  /** Stripe (payments off when secretKey is ''). */
  stripe: {
    secretKey: string; webhookSecret: string; apiUrl: string; timeoutMs: number; maxNetworkRetries: number; meterEventName: string;
  };
  /** How often the outboxes (grants, refills, alert deliveries) are polled, besides being nudged. */
  outboxPollIntervalMs: number;
  refillAttemptsMax: number;
  refillRetryBaseMs: number;
  /** 0 turns overage reporting to Stripe off. */
  overageReportIntervalMs: number;
  alerts: { webhookUrls: string[]; webhookSecret: string; deliveryAttemptsMax: number; retryBaseMs: number; deliveryTimeoutMs: number };
}

/** Bounds of an authentication token: long enough to be unguessable, printable, no separators. */
export const AUTH_TOKEN_CHARS_MIN = 16;
export const AUTH_TOKEN_CHARS_MAX = 256;
export const AUTH_TOKENS_MAX = 16;
/** At most this many accounts in the per-account balance collector. */
export const METRICS_ACCOUNT_IDS_MAX = 100;

function parseTokens(variable: string, text: string): string[] {
  const tokens = text.split(',').map((t) => t.trim()).filter((t) => t !== '');
  if (tokens.length > AUTH_TOKENS_MAX) throw new ConfigError(`${variable}: at most ${AUTH_TOKENS_MAX} tokens`);
  for (const [i, token] of tokens.entries()) {
    if (token.length < AUTH_TOKEN_CHARS_MIN || token.length > AUTH_TOKEN_CHARS_MAX || !/^[\x21-\x7e]+$/.test(token)) {
      // The token itself is never echoed: only its position.
      throw new ConfigError(`${variable}: token ${i + 1} must be ${AUTH_TOKEN_CHARS_MIN}-${AUTH_TOKEN_CHARS_MAX} printable ASCII characters without spaces or commas`);
    }
  }
  return tokens;
}

function parseTls(s: { GRPC_TLS_CERT_FILE: string; GRPC_TLS_KEY_FILE: string; GRPC_TLS_CLIENT_CA_FILE: string }): Settings['grpcTls'] {
  const { GRPC_TLS_CERT_FILE: certFile, GRPC_TLS_KEY_FILE: keyFile, GRPC_TLS_CLIENT_CA_FILE: clientCaFile } = s;
  if (certFile === '' && keyFile === '' && clientCaFile === '') return null;
  if (certFile === '' || keyFile === '') throw new ConfigError('GRPC_TLS_CERT_FILE and GRPC_TLS_KEY_FILE: set both for TLS (GRPC_TLS_CLIENT_CA_FILE needs them too)');
  return { certFile, keyFile, clientCaFile };
}

/** At most this many alert webhook URLs. */
export const ALERT_WEBHOOK_URLS_MAX = 10;

function parseWebhookUrls(text: string): string[] {
  const urls = text.split(',').map((t) => t.trim()).filter((t) => t !== '');
  if (urls.length > ALERT_WEBHOOK_URLS_MAX) throw new ConfigError(`ALERT_WEBHOOK_URLS: at most ${ALERT_WEBHOOK_URLS_MAX} URLs`);
  for (const url of urls) {
    if (!/^https?:\/\/\S+$/.test(url)) throw new ConfigError(`ALERT_WEBHOOK_URLS: "${url}" is not an http(s) URL`);
  }
  return urls;
}

function parseAccountIds(text: string): string[] {
  const ids = text.split(',').map((t) => t.trim()).filter((t) => t !== '');
  if (ids.length > METRICS_ACCOUNT_IDS_MAX) throw new ConfigError(`METRICS_ACCOUNT_IDS: at most ${METRICS_ACCOUNT_IDS_MAX} accounts`);
  for (const id of ids) {
    if (id.length > ID_LENGTH_MAX || !ID_PATTERN.test(id)) {
      throw new ConfigError(`METRICS_ACCOUNT_IDS: "${id}" is not an account id (1-${ID_LENGTH_MAX} ${ID_CHARACTERS_DESCRIPTION})`);
    }
  }
  return [...new Set(ids)];
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
  if (s.STRIPE_SECRET_KEY !== '' && s.STRIPE_WEBHOOK_SECRET === '') {
    throw new ConfigError('STRIPE_WEBHOOK_SECRET: required when STRIPE_SECRET_KEY is set (credits are granted only from signed webhooks)');
  }
  if (s.ALERT_WEBHOOK_URLS.trim() !== '' && s.ALERT_WEBHOOK_SECRET.length < AUTH_TOKEN_CHARS_MIN) {
    throw new ConfigError(`ALERT_WEBHOOK_SECRET: at least ${AUTH_TOKEN_CHARS_MIN} characters required when ALERT_WEBHOOK_URLS is set (receivers verify the signature)`);
  }
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
    flushLanes: s.FLUSH_LANES,
    reconcileIntervalMs: s.RECONCILE_INTERVAL_MS,
    reconcileRepair: s.RECONCILE_REPAIR === 'true',
    logLevel: s.LOG_LEVEL,
    httpHost: s.HTTP_HOST,
    httpPort: s.HTTP_PORT,
    dataPlaneTokens: parseTokens('AUTH_DATA_PLANE_TOKENS', s.AUTH_DATA_PLANE_TOKENS),
    adminTokens: parseTokens('AUTH_ADMIN_TOKENS', s.AUTH_ADMIN_TOKENS),
    grpcTls: parseTls(s),
    grpcMaxConcurrentStreams: s.GRPC_MAX_CONCURRENT_STREAMS,
    shadowMode: s.SHADOW_MODE === 'true',
    metricsAccountIds: parseAccountIds(s.METRICS_ACCOUNT_IDS),
    stripe: {
      secretKey: s.STRIPE_SECRET_KEY, webhookSecret: s.STRIPE_WEBHOOK_SECRET, apiUrl: s.STRIPE_API_URL.replace(/\/$/, ''),
      timeoutMs: s.STRIPE_TIMEOUT_MS, maxNetworkRetries: s.STRIPE_MAX_NETWORK_RETRIES, meterEventName: s.STRIPE_METER_EVENT_NAME,
    },
    outboxPollIntervalMs: s.OUTBOX_POLL_INTERVAL_MS,
    refillAttemptsMax: s.REFILL_ATTEMPTS_MAX,
    refillRetryBaseMs: s.REFILL_RETRY_BASE_MS,
    overageReportIntervalMs: s.OVERAGE_REPORT_INTERVAL_MS,
    alerts: {
      webhookUrls: parseWebhookUrls(s.ALERT_WEBHOOK_URLS), webhookSecret: s.ALERT_WEBHOOK_SECRET,
      deliveryAttemptsMax: s.ALERT_DELIVERY_ATTEMPTS_MAX, retryBaseMs: s.ALERT_RETRY_BASE_MS, deliveryTimeoutMs: s.ALERT_DELIVERY_TIMEOUT_MS,
    },
  });
}
