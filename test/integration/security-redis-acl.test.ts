import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Client, credentials, Metadata, status, type MethodDefinition, type ServiceError } from '@grpc/grpc-js';
import { Redis } from 'ioredis';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  AdjustCreditsRequest, AdminServiceService, ChangePlanRequest, GetAccountRequest, GetUsageRequest, GrantCreditsRequest,
  ListLedgerEntriesRequest, RefundChargeRequest, UpsertAccountRequest,
} from '../../src/gen/meterd/v1/admin_service.js';
import {
  CreateCheckoutSessionRequest, GetAutoRefillRequest, ListCreditPacksRequest, SetAutoRefillRequest, SetStripeCustomerRequest, WatchAlertsRequest,
} from '../../src/gen/meterd/v1/billing.js';
import {
  CommitReservationRequest, ExtendReservationRequest, GetBalanceRequest, MeteringServiceService, OperationRequest,
  ReleaseReservationRequest, ReserveCreditsRequest,
} from '../../src/gen/meterd/v1/metering_service.js';
import { GrantKind, type Account } from '../../src/gen/meterd/v1/types.js';
import { START_POSITION_HEADER } from '../../src/grpc/alert-handlers.js';
import { errorInfoOf } from '../../src/grpc/status-details.js';
import { FakeStripe, TEST_PAYMENTS_PRODUCT, TEST_STRIPE_SECRET_KEY, TEST_WEBHOOK_SECRET } from '../support/fake-stripe.js';
import { connectClients, type TestClients } from '../support/grpc-clients.js';
import { dropDatabase, startTestMeterd, TEST_EPOCH_MS, type TestMeterd } from '../support/meterd.js';
import { startRedisServer, type RedisServerHandle } from '../support/redis-servers.js';

/**
 * Security cases of the reliability note's §6 (G2, G4) that security.test.ts does not cover:
 *  - meterd runs on a Redis ACL user allowed only the commands it uses, only on its own keys: it
 *    starts, serves every operation, flushes its ledger, sweeps and reconciles; the same user gets
 *    NOPERM for FLUSHALL, FLUSHDB, CONFIG SET, SCRIPT FLUSH, KEYS, DEBUG and friends, and for any key
 *    outside `<prefix>:*`. The ACL below is the one the README recommends (REDIS_KEY_PREFIX=meterd).
 *  - every AdminService method (read from the service definition: a new RPC is covered without
 *    touching this file) refuses a missing or wrong token and a data-plane token, and every
 *    MeteringService method a missing or wrong one — each with a request that would change state,
 *    and nothing in Redis or Postgres changes.
 */

const KEY_PREFIX = 'meterd';
const ACL_USER = 'meterd';
const ACL_PASSWORD = 'acl-test-password-0123456789';
const GATEWAY_TOKEN = 'gw-token-acl-0123456789abcdef';
const ADMIN_TOKEN = 'admin-token-acl-0123456789abcdef';
const DAY_MS = 86_400_000;

/** What meterd itself sends, outside its Lua functions (src/redis/*.ts, ioredis' connect). */
const SERVER_COMMANDS = [
  'fcall', 'function|load', // every operation; the library is (re)loaded at startup and after a restart lost it
  'xgroup|create', 'xreadgroup', 'xack', 'xautoclaim', 'xinfo|consumers', 'xgroup|delconsumer', 'xlen', // the ledger flush
  'config|get', // the startup check: maxmemory-policy noeviction, appendonly
  'ping', // readiness (/readyz, gRPC health)
  'info', // ioredis' ready check, which waits while Redis loads its AOF (without it ioredis warns and skips the wait)
];
/** What the Lua functions call (Redis checks a function's commands against the caller's ACL too). */
const LUA_COMMANDS = [
  'del', 'exists', 'get', 'set', 'pexpire', 'hdel', 'hget', 'hgetall', 'hincrby', 'hmget', 'hset',
  'zadd', 'zrange', 'zrangebyscore', 'zrem', 'zscore', 'xadd', 'xinfo|groups', 'xpending', 'xrange', 'xtrim',
  'time', // a repair's mark in the ledger stream (restorePool)
];
/** The production ACL (README): nothing but these commands, nothing but meterd's keys, no channels. */
const ACL_RULES = ['on', `>${ACL_PASSWORD}`, 'resetkeys', `~${KEY_PREFIX}:*`, 'resetchannels', '-@all',
  ...[...SERVER_COMMANDS, ...LUA_COMMANDS].map((command) => `+${command}`)];

/** Every redis.call / redis.pcall command (and subcommand where the ACL needs one) in the Lua sources. */
function luaCommands(): string[] {
  const directory = join(process.cwd(), 'src/redis');
  const files = [
    ...readdirSync(join(directory, 'lua'), { recursive: true }).map(String).filter((f) => f.endsWith('.lua')).map((f) => join(directory, 'lua', f)),
    join(directory, 'script-loader.ts'), // the batch function's Lua lives here
  ];
  const found = new Set<string>();
  for (const file of files) {
    for (const match of readFileSync(file, 'utf8').matchAll(/redis\.p?call\(\s*['"]([A-Za-z]+)['"](?:\s*,\s*['"]([A-Za-z]+)['"])?/g)) {
      const command = (match[1] as string).toLowerCase();
      found.add(['xinfo', 'xgroup', 'config', 'function', 'script', 'client'].includes(command) && match[2] ? `${command}|${(match[2] as string).toLowerCase()}` : command);
    }
  }
  return [...found].sort();
}

type AnyMethod = MethodDefinition<unknown, unknown> & { name: string };
const methodsOf = (service: Record<string, unknown>): AnyMethod[] =>
  Object.entries(service).map(([name, definition]) => ({ ...(definition as MethodDefinition<unknown, unknown>), name }));
const ADMIN_METHODS = methodsOf(AdminServiceService);
const METERING_METHODS = methodsOf(MeteringServiceService);
const identity = (bytes: Buffer) => bytes;

interface Answer { code: status; reason: string; metadata: Record<string, string> }

/** Sends bytes to a method (unary, server stream or bidi) with these authorization values; the status it ends with. */
function call(raw: Client, method: AnyMethod, body: Buffer, authorization: string[]): Promise<Answer> {
  const metadata = new Metadata();
  for (const value of authorization) metadata.add('authorization', value);
  const options = { deadline: Date.now() + 10_000 };
  const answer = (err: ServiceError | null): Answer => {
    const info = err ? errorInfoOf(err) : undefined;
    return { code: err ? err.code : status.OK, reason: info?.reason ?? '', metadata: info?.metadata ?? {} };
  };
  return new Promise((resolve) => {
    if (!method.requestStream && !method.responseStream) {
      raw.makeUnaryRequest(method.path, identity, identity, body, metadata, options, (err) => resolve(answer(err)));
      return;
    }
    const bidi = method.requestStream ? raw.makeBidiStreamRequest(method.path, identity, identity, metadata, options) : undefined;
    const stream = bidi ?? raw.makeServerStreamRequest(method.path, identity, identity, body, metadata, options);
    let started = false;
    stream.on('metadata', (headers: Metadata) => {
      // WatchAlerts sends this header once it streams: past authentication.
      if (headers.get(START_POSITION_HEADER).length > 0) {
        started = true;
        stream.cancel();
      }
    });
    stream.on('data', () => {
      // A bidi result: the operation ran, so the stream was past authentication.
      started = true;
    });
    stream.on('error', (err: ServiceError) => resolve(started ? answer(null) : answer(err)));
    stream.on('status', (s: { code: status }) => {
      if (s.code === status.OK) resolve(answer(null));
    });
    if (bidi) {
      bidi.write(body);
      bidi.end();
    }
  });
}

describe('meterd on a least-privilege Redis ACL user, and credentials on every RPC', () => {
  let redisServer: RedisServerHandle;
  let fake: FakeStripe;
  let t: TestMeterd;
  let root: Redis;
  let restricted: Redis;
  let admin: TestClients;
  let raw: Client;
  let db: pg.Pool;

  beforeAll(async () => {
    // DEBUG enabled on the server, so that refusing it is the ACL's doing.
    redisServer = await startRedisServer({ extraArgs: ['--enable-debug-command', 'yes'] });
    root = new Redis(redisServer.url, { protocol: 2 });
    await root.call('ACL', 'SETUSER', ACL_USER, ...ACL_RULES);
    fake = await FakeStripe.start();
    const aclUrl = `redis://${ACL_USER}:${ACL_PASSWORD}@127.0.0.1:${redisServer.port}`;
    t = await startTestMeterd({
      target: { url: aclUrl }, postgres: true, product: TEST_PAYMENTS_PRODUCT,
      env: {
        REDIS_KEY_PREFIX: KEY_PREFIX, AUTH_DATA_PLANE_TOKENS: GATEWAY_TOKEN, AUTH_ADMIN_TOKENS: ADMIN_TOKEN,
        STRIPE_SECRET_KEY: TEST_STRIPE_SECRET_KEY, STRIPE_WEBHOOK_SECRET: TEST_WEBHOOK_SECRET, STRIPE_API_URL: fake.url,
        STRIPE_MAX_NETWORK_RETRIES: '0', OVERAGE_REPORT_INTERVAL_MS: '0',
      },
    });
    restricted = new Redis(aclUrl, { protocol: 2, maxRetriesPerRequest: 0 });
    admin = connectClients(t.meterd.grpcPort, { token: ADMIN_TOKEN });
    raw = new Client(`127.0.0.1:${t.meterd.grpcPort}`, credentials.createInsecure());
    db = new pg.Pool({ connectionString: t.databaseUrl, max: 2 });
    db.on('error', () => {});
  });

  afterAll(async () => {
    raw?.close();
    admin?.close();
    restricted?.disconnect();
    root?.disconnect();
    await db?.end();
    // Not t.stop(): its key cleanup SCANs, which this user may not (the private server goes away whole).
    t?.clients.close();
    await t?.meterd.stop();
    if (t) await dropDatabase(t.databaseUrl);
    await fake?.close();
    await redisServer?.stop();
  });

  const account = (accountId: string, plan: string, parentId = ''): Account => ({
    accountId, plan, parentId, trialCredits: 0n, lowBalanceThreshold: 0n, lowBalancePercent: 0, pendingPlan: '',
    ...(plan === '' ? {} : { billingAnchor: new Date(TEST_EPOCH_MS - 10 * DAY_MS) }),
  });

  describe('the Redis ACL user', () => {
    it('the ACL allows exactly the commands the Lua functions call (a change shows up here: update the README line too)', () => {
      expect(luaCommands()).toEqual([...LUA_COMMANDS].sort());
    });

    it('is what meterd runs on: every operation, the ledger flush, the sweeper and reconcile work', async () => {
      expect((await root.call('ACL', 'WHOAMI')) as string).toBe('default');
      const clients = (await root.call('CLIENT', 'LIST')) as string;
      expect(clients).toMatch(new RegExp(`user=${ACL_USER}\\b`));
      const { admin: a, metering: m } = admin;
      await a.upsertAccount({ account: account('acl-root', 'pro') });
      await a.upsertAccount({ account: account('acl-space', '', 'acl-root') });
      await a.grantCredits({ accountId: 'acl-root', credits: 100n, kind: GrantKind.GRANT_KIND_PROMO, grantId: 'acl-promo', reason: 'p',
        expiresAt: new Date(TEST_EPOCH_MS + DAY_MS) });
      await a.adjustCredits({ accountId: 'acl-root', delta: 50n, adjustmentId: 'acl-adj', reason: 'r', actor: 'support' });
      const held = await m.reserveCredits({ accountId: 'acl-space', feature: 'image_2k', requestId: 'acl-r1', userId: 'u-1', labels: { model: 'x' } });
      expect(held.heldCredits).toBe(60n);
      await m.extendReservation({ reservationId: held.reservationId, ttlSeconds: 600, additionalCredits: 5n, requestId: 'acl-x1' });
      const committed = await m.commitReservation({ reservationId: held.reservationId, credits: 40n });
      expect(committed.chargedCredits).toBe(40n);
      const released = await m.reserveCredits({ accountId: 'acl-root', feature: 'chat', units: 5000n, requestId: 'acl-r2', userId: '', labels: {}, ttlSeconds: 1 });
      expect((await m.releaseReservation({ reservationId: released.reservationId, reason: 'upstream 503' })).releasedCredits).toBe(10n);
      await a.refundCharge({ reservationId: held.reservationId, refundId: 'acl-refund', reason: 'bad answer', credits: 5n });
      await a.changePlan({ accountId: 'acl-root', plan: 'starter' });
      // A hold left to expire, for the sweeper.
      await m.reserveCredits({ accountId: 'acl-root', feature: 'content_rewrite', requestId: 'acl-r3', userId: '', labels: {}, ttlSeconds: 1 });
      t.clock.advance(2_000);
      expect(await t.meterd.sweeper.sweepOnce()).toBe(1);
      const balance = await m.getBalance({ accountId: 'acl-root' });
      expect(balance.held).toBe(0n);
      expect((await a.getUsage({ accountId: 'acl-space' })).credits).toBeGreaterThan(0n);

      const flushed = await t.meterd.drainLedger();
      expect(flushed).toBeGreaterThan(5);
      expect(await t.meterd.flusher!.reclaimOnce()).toBe(0);
      expect((await t.meterd.flusher!.checkBacklog()).alarm).toBe(false);
      const { rows } = await db.query<{ kinds: string[] }>('SELECT array_agg(DISTINCT kind ORDER BY kind) AS kinds FROM ledger_events');
      expect(rows[0]?.kinds).toEqual(expect.arrayContaining(['account_created', 'grant', 'adjust', 'hold', 'extend', 'commit', 'release', 'refund', 'expire']));
      const entries = await a.listLedgerEntries({ accountId: 'acl-root', kinds: [], reservationId: '', userId: '', feature: '', pageSize: 0, pageToken: '' });
      expect(entries.entries.length).toBeGreaterThan(5);
      const { report } = await t.meterd.reconcileNow();
      expect(report).toMatchObject({ drifts: [] });
      // Every key meterd wrote is under its prefix (the ACL would have refused anything else).
      expect((await root.keys('*')).filter((key) => !key.startsWith(`${KEY_PREFIX}:`))).toEqual([]);
      // Readiness PINGs Redis.
      const ready = await fetch(`http://127.0.0.1:${t.meterd.httpPort}/readyz`);
      expect(ready.status).toBe(200);
      expect(await ready.json()).toMatchObject({ ready: true, checks: { redis: 'ok' } });
      // Forgetting a replica gone for good (idle ten reclaim periods, 10 s at the least) sends XGROUP
      // DELCONSUMER: allowed, shown directly rather than waited for.
      const stream = `${KEY_PREFIX}:{p0}:ledger`;
      const [group] = ((await root.xinfo('GROUPS', stream)) as string[][]).map((g) => g[g.indexOf('name') + 1] as string);
      expect(await root.call('XGROUP', 'CREATECONSUMER', stream, group as string, 'gone-replica')).toBe(1);
      expect(await restricted.call('XGROUP', 'DELCONSUMER', stream, group as string, 'gone-replica')).toBe(0);
    });

    it('the same user gets NOPERM for FLUSHALL, FLUSHDB, CONFIG SET, SCRIPT FLUSH, KEYS, DEBUG and other dangerous commands', async () => {
      const dangerous: string[][] = [
        ['FLUSHALL'], ['FLUSHDB'], ['CONFIG', 'SET', 'maxmemory-policy', 'allkeys-lru'], ['CONFIG', 'SET', 'appendonly', 'no'],
        ['CONFIG', 'REWRITE'], ['CONFIG', 'RESETSTAT'], ['SCRIPT', 'FLUSH'], ['SCRIPT', 'LOAD', 'return 1'], ['KEYS', '*'],
        ['DEBUG', 'SLEEP', '0'], ['DEBUG', 'OBJECT', `${KEY_PREFIX}:x`], ['FUNCTION', 'FLUSH'], ['FUNCTION', 'DELETE', 'meterd'],
        ['FUNCTION', 'DUMP'], ['EVAL', 'return 1', '0'], ['EVALSHA', 'e0e1f9fabfc9d4800c877a703b823ac0578ff8db', '0'], ['ACL', 'SETUSER', 'x', 'on'],
        ['ACL', 'LIST'], ['CLIENT', 'KILL', 'TYPE', 'normal'], ['SAVE'], ['BGSAVE'], ['BGREWRITEAOF'], ['SCAN', '0'], ['REPLICAOF', '127.0.0.1', '1'],
        ['MODULE', 'LIST'], ['SWAPDB', '0', '1'], ['SELECT', '1'], ['MIGRATE', '127.0.0.1', '1', `${KEY_PREFIX}:x`, '0', '1'], ['SHUTDOWN', 'NOSAVE'],
        ['RENAME', `${KEY_PREFIX}:a`, `${KEY_PREFIX}:b`], ['UNLINK', `${KEY_PREFIX}:x`], ['EXPIRE', `${KEY_PREFIX}:x`, '1'], ['PUBLISH', 'c', 'm'],
      ];
      for (const command of dangerous) {
        const error = await restricted.call(command[0] as string, ...command.slice(1)).then(() => null, (err: Error) => err.message);
        expect(error, command.join(' ')).toMatch(/^NOPERM/);
      }
      // Still alive and untouched: the server kept its config, data and functions.
      expect(await root.config('GET', 'maxmemory-policy')).toEqual(['maxmemory-policy', 'noeviction']);
      expect((await root.keys(`${KEY_PREFIX}:*`)).length).toBeGreaterThan(0);
      expect(((await root.call('FUNCTION', 'LIST')) as unknown[]).length).toBe(1);
    });

    it('the same user gets NOPERM for every key outside its prefix, also through a meterd function', async () => {
      await root.set('other:secret', 'v');
      const functionName = String((((await root.call('FUNCTION', 'LIST')) as unknown[][])[0]?.[5] as unknown[][])[0]?.[1]);
      expect(functionName).not.toBe('undefined');
      const outside: string[][] = [
        ['GET', 'other:secret'], ['SET', 'other:x', 'v'], ['DEL', 'other:secret'], ['HSET', 'other:a', 'f', 'v'], ['HGETALL', 'other:a'],
        ['ZADD', 'other:z', '1', 'm'], ['XADD', 'other:s', '*', 'f', 'v'], ['EXISTS', 'other:secret'], ['PEXPIRE', 'other:secret', '1'],
        ['GET', `${KEY_PREFIX}x`], ['GET', `x${KEY_PREFIX}:a`], ['GET', `{p1}:${KEY_PREFIX}:a`],
        ['FCALL', functionName, '1', 'other:{p1}:'], ['FCALL', functionName, '1', `{p1}${KEY_PREFIX}:`],
        ['XREADGROUP', 'GROUP', 'g', 'c', 'STREAMS', 'other:s', '>'], ['XLEN', 'other:s'],
        ['DEL', `${KEY_PREFIX}:a`, 'other:secret'], // one key inside, one outside: the whole command is refused
      ];
      for (const command of outside) {
        const error = await restricted.call(command[0] as string, ...command.slice(1)).then(() => null, (err: Error) => err.message);
        expect(error, command.join(' ')).toMatch(/NOPERM/);
      }
      expect(await root.get('other:secret')).toBe('v');
      expect(await root.keys('other:*')).toEqual(['other:secret']);
      // Inside its prefix the allowed commands work (they are what the functions need).
      expect(await restricted.exists(`${KEY_PREFIX}:nothing-here`)).toBe(0);
    });
  });

  // --------------------------------------------------------------------------------------------
  // Credentials on every RPC.

  describe('credentials on every RPC', () => {
    const requests = new Map<string, Buffer>();
    let stateBefore: { redis: Map<string, string>; postgres: Record<string, string> };

    async function redisState(): Promise<Map<string, string>> {
      const keys = (await root.keys('*')).sort();
      const pipeline = root.pipeline();
      for (const key of keys) pipeline.dumpBuffer(key);
      const dumps = (await pipeline.exec()) ?? [];
      return new Map(keys.map((key, i) => [key, (dumps[i]?.[1] as Buffer | null)?.toString('hex') ?? '']));
    }
    async function postgresState(): Promise<Record<string, string>> {
      const tables = (await db.query<{ tablename: string }>("SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename")).rows;
      const state: Record<string, string> = {};
      for (const { tablename } of tables) {
        const { rows } = await db.query<{ digest: string | null }>(`SELECT md5(string_agg(t::text, '|' ORDER BY t::text)) AS digest FROM "${tablename}" t`);
        state[tablename] = rows[0]?.digest ?? '';
      }
      return state;
    }

    beforeAll(async () => {
      const { admin: a, metering: m } = admin;
      await a.upsertAccount({ account: account('tok-root', 'pro') });
      const held = (await m.reserveCredits({ accountId: 'tok-root', feature: 'image_1k', requestId: 'tok-held', userId: '', labels: {}, ttlSeconds: 86_400 })).reservationId;
      const toCommit = (await m.reserveCredits({ accountId: 'tok-root', feature: 'image_1k', requestId: 'tok-c', userId: '', labels: {}, ttlSeconds: 86_400 })).reservationId;
      await m.commitReservation({ reservationId: toCommit });
      await t.meterd.drainLedger();
      const enc = <T>(codec: { encode(v: T): { finish(): Uint8Array } }, value: T) => Buffer.from(codec.encode(value).finish());
      // Requests that would change state (or read it) if the credentials were not checked first.
      requests.set('upsertAccount', enc(UpsertAccountRequest, { account: account('tok-new', 'free') }));
      requests.set('getAccount', enc(GetAccountRequest, { accountId: 'tok-root' }));
      requests.set('changePlan', enc(ChangePlanRequest, { accountId: 'tok-root', plan: 'starter' }));
      requests.set('grantCredits', enc(GrantCreditsRequest, { accountId: 'tok-root', credits: 1000n, kind: GrantKind.GRANT_KIND_PACK, grantId: 'tok-steal', reason: '' }));
      requests.set('adjustCredits', enc(AdjustCreditsRequest, { accountId: 'tok-root', delta: 1000n, adjustmentId: 'tok-adj', reason: '', actor: 'x' }));
      requests.set('refundCharge', enc(RefundChargeRequest, { reservationId: toCommit, refundId: 'tok-refund', reason: '' }));
      requests.set('getUsage', enc(GetUsageRequest, { accountId: 'tok-root' }));
      requests.set('listLedgerEntries', enc(ListLedgerEntriesRequest, { accountId: 'tok-root', kinds: [], reservationId: '', userId: '', feature: '', pageSize: 0, pageToken: '' }));
      requests.set('listCreditPacks', enc(ListCreditPacksRequest, {}));
      requests.set('createCheckoutSession', enc(CreateCheckoutSessionRequest, {
        accountId: 'tok-root', packId: 'pack_500', credits: 0n, successUrl: 'https://app.example/ok', cancelUrl: 'https://app.example/no', requestId: 'tok-co',
      }));
      requests.set('setStripeCustomer', enc(SetStripeCustomerRequest, { accountId: 'tok-root', stripeCustomerId: 'cus_tok' }));
      requests.set('setAutoRefill', enc(SetAutoRefillRequest, { settings: {
        accountId: 'tok-root', enabled: true, thresholdCredits: 10n, packId: 'pack_500', targetCredits: 0n, monthlyCapCents: 10_000n, paymentMethodId: 'pm_tok', disabledReason: '',
      } }));
      requests.set('getAutoRefill', enc(GetAutoRefillRequest, { accountId: 'tok-root' }));
      requests.set('watchAlerts', enc(WatchAlertsRequest, { accountId: 'tok-root', afterPosition: 0n }));
      requests.set('reserveCredits', enc(ReserveCreditsRequest, { accountId: 'tok-root', feature: 'image_1k', requestId: 'tok-r', userId: '', labels: {} }));
      requests.set('commitReservation', enc(CommitReservationRequest, { reservationId: held }));
      requests.set('releaseReservation', enc(ReleaseReservationRequest, { reservationId: held, reason: '' }));
      requests.set('extendReservation', enc(ExtendReservationRequest, { reservationId: held, ttlSeconds: 60, additionalCredits: 5n, requestId: 'tok-x' }));
      requests.set('getBalance', enc(GetBalanceRequest, { accountId: 'tok-root' }));
      requests.set('streamOperations', enc(OperationRequest, { opId: 1n, operation: { $case: 'reserve', value: {
        accountId: 'tok-root', feature: 'image_1k', requestId: 'tok-s', userId: '', labels: {} } } }));
      stateBefore = { redis: await redisState(), postgres: await postgresState() };
    });

    it('has a state-changing request for every method of both services', () => {
      expect([...ADMIN_METHODS, ...METERING_METHODS].map((m) => m.name).filter((name) => !requests.has(name))).toEqual([]);
    });

    const BAD_CREDENTIALS: ReadonlyArray<readonly [string, string[], string]> = [
      ['no authorization', [], 'TOKEN_MISSING'],
      ['an empty authorization', [''], 'TOKEN_MISSING'],
      ['a wrong token', ['Bearer admin-token-acl-0123456789abcdeX'], 'TOKEN_INVALID'],
      ['the admin token under Basic', [`Basic ${ADMIN_TOKEN}`], 'TOKEN_INVALID'],
      ['the admin token without a scheme', [ADMIN_TOKEN], 'TOKEN_INVALID'],
      ['"Bearer " and nothing', ['Bearer '], 'TOKEN_MISSING or TOKEN_INVALID'],
      ['a prefix of the admin token', [`Bearer ${ADMIN_TOKEN.slice(0, -1)}`], 'TOKEN_INVALID'],
      ['the admin token plus a character', [`Bearer ${ADMIN_TOKEN}x`], 'TOKEN_INVALID'],
      // Node's HTTP/2 sends authorization once; two values arrive joined like this.
      ['a wrong token and the admin token in one header', [`Bearer wrong-token-0123456789abcdef, Bearer ${ADMIN_TOKEN}`], 'TOKEN_INVALID'],
      ['the data-plane and admin tokens in one header', [`Bearer ${GATEWAY_TOKEN},Bearer ${ADMIN_TOKEN}`], 'TOKEN_INVALID'],
    ];

    /** grpc-js trims metadata values, so "Bearer " may arrive as missing or as invalid: either is a refusal. */
    const reasonLike = (reason: string) => expect.stringMatching(new RegExp(`^(${reason.split(' or ').join('|')})$`));

    it('refuses every AdminService method without a valid admin token (UNAUTHENTICATED), or with a data-plane one (PERMISSION_DENIED); nothing changes', async () => {
      for (const method of ADMIN_METHODS) {
        const body = requests.get(method.name) ?? Buffer.alloc(0);
        for (const [label, authorization, reason] of BAD_CREDENTIALS) {
          expect(await call(raw, method, body, authorization), `${method.path} with ${label}`).toMatchObject({ code: status.UNAUTHENTICATED, reason: reasonLike(reason) });
        }
        expect(await call(raw, method, body, [`Bearer ${GATEWAY_TOKEN}`]), `${method.path} with the data-plane token`).toEqual({
          code: status.PERMISSION_DENIED, reason: 'PERMISSION_DENIED', metadata: { service: 'meterd.v1.AdminService' },
        });
        // Credentials are checked before the request is even decoded.
        const garbage = Buffer.from([0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f]);
        expect(await call(raw, method, garbage, []), `${method.path}: undecodable, no token`).toMatchObject({ code: status.UNAUTHENTICATED });
        expect(await call(raw, method, garbage, [`Bearer ${GATEWAY_TOKEN}`]), `${method.path}: undecodable, data-plane token`).toMatchObject({ code: status.PERMISSION_DENIED });
      }
      expect(await redisState()).toEqual(stateBefore.redis);
      expect(await postgresState()).toEqual(stateBefore.postgres);
      expect(fake.requests).toEqual([]); // nothing reached Stripe either
    });

    it('refuses every MeteringService method without a valid token; nothing changes', async () => {
      for (const method of METERING_METHODS) {
        const body = requests.get(method.name) ?? Buffer.alloc(0);
        for (const [label, authorization, reason] of BAD_CREDENTIALS) {
          expect(await call(raw, method, body, authorization), `${method.path} with ${label}`).toMatchObject({ code: status.UNAUTHENTICATED, reason: reasonLike(reason) });
        }
      }
      expect(await redisState()).toEqual(stateBefore.redis);
      expect(await postgresState()).toEqual(stateBefore.postgres);
    });

    it('with the right token the same requests pass authentication (so the refusals above were the credentials)', async () => {
      const refusedForCredentials = (a: Answer) => a.code === status.UNAUTHENTICATED || a.code === status.PERMISSION_DENIED;
      for (const method of METERING_METHODS) {
        const answer = await call(raw, method, requests.get(method.name) ?? Buffer.alloc(0), [`Bearer ${GATEWAY_TOKEN}`]);
        expect(refusedForCredentials(answer), `${method.path} with the data-plane token: ${status[answer.code]} ${answer.reason}`).toBe(false);
      }
      for (const method of ADMIN_METHODS) {
        const answer = await call(raw, method, requests.get(method.name) ?? Buffer.alloc(0), [`Bearer ${ADMIN_TOKEN}`]);
        expect(refusedForCredentials(answer), `${method.path} with the admin token: ${status[answer.code]} ${answer.reason}`).toBe(false);
      }
      // And they did change something: the grant landed.
      expect((await admin.metering.getBalance({ accountId: 'tok-root' })).packCredits).toBe(2000n);
    });
  });
});
