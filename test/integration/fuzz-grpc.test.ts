import { BinaryWriter } from '@bufbuild/protobuf/wire';
import { Client, credentials, Metadata, status, type MethodDefinition, type ServiceError } from '@grpc/grpc-js';
import fc from 'fast-check';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GRPC_MESSAGE_BYTES_MAX } from '../../src/config/limits.js';
import { Timestamp } from '../../src/gen/google/protobuf/timestamp.js';
import {
  AdjustCreditsRequest, AdminServiceService, GetUsageRequest, GrantCreditsRequest, ListLedgerEntriesRequest, RefundChargeRequest,
  UpsertAccountRequest,
} from '../../src/gen/meterd/v1/admin_service.js';
import {
  CreateCheckoutSessionRequest, SetAutoRefillRequest, SetStripeCustomerRequest, WatchAlertsRequest,
} from '../../src/gen/meterd/v1/billing.js';
import {
  CommitReservationRequest, ExtendReservationRequest, MeteringServiceService, OperationRequest, OperationResult,
  ReleaseReservationRequest, ReserveCreditsRequest,
} from '../../src/gen/meterd/v1/metering_service.js';
import { GrantKind, type Account } from '../../src/gen/meterd/v1/types.js';
import { START_POSITION_HEADER } from '../../src/grpc/alert-handlers.js';
import { errorInfoOf, errorInfoOfStatus } from '../../src/grpc/status-details.js';
import { FakeStripe, TEST_PAYMENTS_PRODUCT, TEST_STRIPE_SECRET_KEY, TEST_WEBHOOK_SECRET } from '../support/fake-stripe.js';
import { startTestMeterd, TEST_EPOCH_MS, type TestMeterd } from '../support/meterd.js';
import { startRedisServer, type RedisServerHandle } from '../support/redis-servers.js';

/**
 * Fuzzing both gRPC services (A2–A4, G3 of the reliability note) with fast-check, through the real
 * server on a private redis-server (so the whole key space can be read after every call) and this
 * run's own Postgres database, with Stripe pointed at the local fake:
 *  (a) random bytes and mutated valid encodings sent with identity serializers to every method path;
 *  (b) requests built from adversarial values (2^53 and 2^64 edges, int64 extremes, empty, 64/65/10 KB
 *      strings, Unicode, NUL, `{`, `}`, `:`, `*`, CRLF, odd label maps);
 *  (c) around every refused call, the sentinel accounts' balances and every key under the run's prefix
 *      are unchanged (so no ledger event either), and no key ever escapes the `{p<n>}` hash tag;
 *  (d) messages over 64 KiB are RESOURCE_EXHAUSTED; the server answers afterwards.
 * A clean answer is a valid response or a status meterd chose (ErrorInfo, the field named for
 * INVALID_ARGUMENT) — never UNKNOWN, INTERNAL, or UNAVAILABLE (the server stays up).
 *
 * Deterministic by default: FUZZ_SEED (default below) and FUZZ_RUNS (per property) override.
 */
const SEED = Number(process.env.FUZZ_SEED ?? 20_261_125);
const RUNS = Number(process.env.FUZZ_RUNS ?? 100);
console.log(`fuzz-grpc: seed ${SEED}, ${RUNS} runs per property (set FUZZ_SEED / FUZZ_RUNS to change)`);
const fcParams = (runs = RUNS): fc.Parameters<unknown> => ({ seed: SEED, numRuns: runs, endOnFailure: true });

const DAY_MS = 86_400_000;
const E15 = 10n ** 15n;
const U64_MAX = 2n ** 64n - 1n;
const CALL_DEADLINE_MS = 10_000;

/** Statuses a caller can act on; a refusal meterd chose carries its ErrorInfo. */
const CLEAN_REFUSALS = new Set<status>([
  status.INVALID_ARGUMENT, status.NOT_FOUND, status.FAILED_PRECONDITION, status.RESOURCE_EXHAUSTED, status.ALREADY_EXISTS,
]);

// ---------------------------------------------------------------------------------------------
// Every method of both services, from the generated service definitions (a new RPC is fuzzed
// without touching this file).

type AnyMethod = MethodDefinition<unknown, unknown> & { name: string };
const METHODS: AnyMethod[] = [MeteringServiceService, AdminServiceService].flatMap((service) =>
  Object.entries(service).map(([name, definition]) => ({ ...(definition as MethodDefinition<unknown, unknown>), name })));

const identity = (bytes: Buffer) => bytes;

/** What one call answered. `results` are a stream's messages, decoded. */
interface Outcome {
  code: status;
  details: string;
  reason: string;
  field: string;
  /** Decoded responses (unary: one; server stream: those before the cancel; bidi: each operation's result). */
  responses: unknown[];
  /** Bidi: the refusals inside OperationResults, as [code, reason, field]. */
  operationErrors: Array<{ code: number; reason: string; field: string; message: string }>;
}

function outcomeOf(err: ServiceError | null, responses: unknown[] = []): Outcome {
  if (!err) return { code: status.OK, details: '', reason: '', field: '', responses, operationErrors: [] };
  const info = errorInfoOf(err);
  return { code: err.code, details: err.details, reason: info?.reason ?? '', field: info?.metadata.field ?? '', responses, operationErrors: [] };
}

/** Sends raw bytes to a method path as its request and collects the answer, whatever its kind. */
function send(raw: Client, method: AnyMethod, body: Buffer): Promise<Outcome> {
  const deadline = Date.now() + CALL_DEADLINE_MS;
  if (!method.requestStream && !method.responseStream) {
    return new Promise((resolve) => {
      raw.makeUnaryRequest(method.path, identity, identity, body, new Metadata(), { deadline }, (err, response) => {
        if (err) return resolve(outcomeOf(err));
        resolve(outcomeOf(null, [method.responseDeserialize(response as Buffer)]));
      });
    });
  }
  if (!method.requestStream) {
    // A server stream (WatchAlerts) that started runs until cancelled: its start header is the answer.
    return new Promise((resolve) => {
      const call = raw.makeServerStreamRequest(method.path, identity, identity, body, new Metadata(), { deadline });
      const responses: unknown[] = [];
      let started = false;
      call.on('metadata', (headers: Metadata) => {
        if (headers.get(START_POSITION_HEADER).length > 0) {
          started = true;
          call.cancel();
        }
      });
      call.on('data', (message: Buffer) => responses.push(method.responseDeserialize(message)));
      call.on('error', (err: ServiceError) => resolve(started && err.code === status.CANCELLED ? outcomeOf(null, responses) : outcomeOf(err)));
      call.on('status', (s: { code: status }) => {
        if (s.code === status.OK) resolve(outcomeOf(null, responses));
      });
    });
  }
  // Bidi (StreamOperations): one message, then half-close; every result and the final status.
  return new Promise((resolve) => {
    const call = raw.makeBidiStreamRequest(method.path, identity, identity, new Metadata(), { deadline });
    const responses: unknown[] = [];
    const operationErrors: Outcome['operationErrors'] = [];
    call.on('data', (message: Buffer) => {
      const result = OperationResult.decode(message);
      responses.push(result);
      if (result.result?.$case === 'error') {
        const info = errorInfoOfStatus(result.result.value);
        operationErrors.push({ code: result.result.value.code, reason: info?.reason ?? '', field: info?.metadata.field ?? '', message: result.result.value.message });
      }
    });
    call.on('error', (err: ServiceError) => resolve({ ...outcomeOf(err, responses), operationErrors }));
    call.on('status', (s: { code: status }) => {
      if (s.code === status.OK) resolve({ ...outcomeOf(null, responses), operationErrors });
    });
    call.write(body);
    call.end();
  });
}

/** Why an outcome is not clean, or '' when it is. */
function uncleanBecause(o: Outcome): string {
  const refusal = (code: number, reason: string, field: string, message: string): string => {
    if (!CLEAN_REFUSALS.has(code)) return `status ${status[code] ?? code}: ${message}`;
    // grpc-js' own size refusal carries no ErrorInfo; everything else is meterd's and does.
    if (reason === '' && !(code === status.RESOURCE_EXHAUSTED && /larger than/.test(message))) return `status ${status[code]} without ErrorInfo: ${message}`;
    if (reason === 'INVALID_ARGUMENT' && (field === '' || !message.startsWith(`${field}: `))) return `INVALID_ARGUMENT without its field: ${message}`;
    return '';
  };
  if (o.code !== status.OK) return refusal(o.code, o.reason, o.field, o.details);
  for (const e of o.operationErrors) {
    const why = refusal(e.code, e.reason, e.field, e.message);
    if (why !== '') return `operation refused with ${why}`;
  }
  return '';
}

/** A refused call: the status, or every operation of a stream refused. */
const refused = (o: Outcome) => o.code !== status.OK || (o.responses.length > 0 && o.operationErrors.length === o.responses.length);
/** The one change a refusal may make: a hold refused for credits records an `exhausted` alert. */
const mayRecordAlert = (o: Outcome) => o.reason === 'INSUFFICIENT_CREDITS' || o.operationErrors.some((e) => e.reason === 'INSUFFICIENT_CREDITS');

// ---------------------------------------------------------------------------------------------
// Raw protobuf building blocks.

const WIRE = { VARINT: 0, I64: 1, LEN: 2, SGROUP: 3, EGROUP: 4, I32: 5 } as const;

function varint(value: bigint): number[] {
  const out: number[] = [];
  let v = BigInt.asUintN(64, value);
  do {
    const byte = Number(v & 0x7fn);
    v >>= 7n;
    out.push(v === 0n ? byte : byte | 0x80);
  } while (v !== 0n);
  return out;
}
const tag = (field: number, wire: number) => varint(BigInt(field * 8 + wire));

type Mutation =
  | { kind: 'flip'; at: number; bit: number }
  | { kind: 'truncate'; at: number }
  | { kind: 'insert'; at: number; bytes: Uint8Array }
  | { kind: 'duplicate' }
  | { kind: 'unknown-field'; field: number; wire: number; payload: Uint8Array }
  | { kind: 'wrong-wire-type'; field: number; wire: number }
  | { kind: 'long-varint'; field: number; length: number }
  | { kind: 'negative-varint'; field: number; value: bigint }
  | { kind: 'length-past-end'; field: number; claimed: number }
  | { kind: 'nested-groups'; depth: number };

function applyMutation(input: Uint8Array, m: Mutation): Uint8Array {
  const bytes = [...input];
  const at = (n: number) => (bytes.length === 0 ? 0 : n % (bytes.length + 1));
  switch (m.kind) {
    case 'flip':
      if (bytes.length > 0) bytes[m.at % bytes.length] = (bytes[m.at % bytes.length] as number) ^ (1 << m.bit);
      return Uint8Array.from(bytes);
    case 'truncate':
      return Uint8Array.from(bytes.slice(0, at(m.at)));
    case 'insert':
      bytes.splice(at(m.at), 0, ...m.bytes);
      return Uint8Array.from(bytes);
    case 'duplicate':
      return Uint8Array.from([...bytes, ...bytes]);
    case 'unknown-field': {
      const payload = [...m.payload];
      const body = m.wire === WIRE.VARINT ? varint(BigInt(payload.length * 1_000_003)) : m.wire === WIRE.I64 ? [...payload, 0, 0, 0, 0, 0, 0, 0, 0].slice(0, 8)
        : m.wire === WIRE.I32 ? [...payload, 0, 0, 0, 0].slice(0, 4) : m.wire === WIRE.LEN ? [...varint(BigInt(payload.length)), ...payload]
          : m.wire === WIRE.SGROUP ? [...tag(m.field, WIRE.EGROUP)] : [];
      return Uint8Array.from([...bytes, ...tag(m.field, m.wire), ...body]);
    }
    case 'wrong-wire-type':
      // A known field number with a wire type its decoder does not expect (6 and 7 are invalid).
      return Uint8Array.from([...tag(m.field, m.wire), ...varint(5n), 1, 2, 3, 4, 5, 6, 7, 8, ...bytes]);
    case 'long-varint':
      // 10 bytes is the longest legal varint; 11 and more are malformed.
      return Uint8Array.from([...bytes, ...tag(m.field, WIRE.VARINT), ...Array<number>(m.length - 1).fill(0xff), 0x01]);
    case 'negative-varint':
      return Uint8Array.from([...bytes, ...tag(m.field, WIRE.VARINT), ...varint(m.value)]);
    case 'length-past-end':
      return Uint8Array.from([...bytes, ...tag(m.field, WIRE.LEN), ...varint(BigInt(m.claimed)), 0x41]);
    case 'nested-groups':
      return Uint8Array.from([...bytes, ...Array<number>(m.depth).fill(tag(1, WIRE.SGROUP)[0] as number)]);
  }
}

const mutationArb: fc.Arbitrary<Mutation> = fc.oneof(
  fc.record({ kind: fc.constant('flip' as const), at: fc.nat(), bit: fc.integer({ min: 0, max: 7 }) }),
  fc.record({ kind: fc.constant('truncate' as const), at: fc.nat() }),
  fc.record({ kind: fc.constant('insert' as const), at: fc.nat(), bytes: fc.uint8Array({ minLength: 1, maxLength: 12 }) }),
  fc.constant({ kind: 'duplicate' as const }),
  fc.record({
    kind: fc.constant('unknown-field' as const), field: fc.oneof(fc.integer({ min: 12, max: 100 }), fc.constant(2 ** 29 - 1)),
    wire: fc.constantFrom(0, 1, 2, 3, 5), payload: fc.uint8Array({ maxLength: 40 }),
  }),
  fc.record({ kind: fc.constant('wrong-wire-type' as const), field: fc.integer({ min: 1, max: 11 }), wire: fc.integer({ min: 0, max: 7 }) }),
  fc.record({ kind: fc.constant('long-varint' as const), field: fc.integer({ min: 1, max: 11 }), length: fc.integer({ min: 10, max: 14 }) }),
  fc.record({
    kind: fc.constant('negative-varint' as const), field: fc.integer({ min: 1, max: 11 }),
    value: fc.constantFrom(-1n, -(2n ** 63n), 2n ** 63n - 1n, 2n ** 53n + 1n, U64_MAX, 2n ** 32n, 2n ** 31n),
  }),
  fc.record({ kind: fc.constant('length-past-end' as const), field: fc.integer({ min: 1, max: 11 }), claimed: fc.constantFrom(2, 1000, 2 ** 31 - 1, 2 ** 32) }),
  fc.record({ kind: fc.constant('nested-groups' as const), depth: fc.constantFrom(2, 200, 5_000) }),
);

// ---------------------------------------------------------------------------------------------
// The run's state: sentinels, every key, and the hash-tag rule.

const SENTINELS = ['fz-root', 'fz-space', 'fz-free'] as const;

describe('gRPC fuzzing: every call answers cleanly, refusals change nothing, the server stays up', () => {
  let redisServer: RedisServerHandle;
  let fake: FakeStripe;
  let t: TestMeterd;
  let inspect: Redis;
  let raw: Client;
  let held = '';
  let committed = '';
  /** Valid encodings per method (the base of mutated ones); methods without a sample use the empty message. */
  const samples = new Map<string, Buffer[]>();
  let keyPattern: RegExp;
  const stats = { calls: 0, refused: 0, answered: 0, byCode: new Map<string, number>() };

  beforeAll(async () => {
    redisServer = await startRedisServer();
    fake = await FakeStripe.start();
    t = await startTestMeterd({
      target: { url: redisServer.url }, postgres: true, product: TEST_PAYMENTS_PRODUCT,
      env: {
        STRIPE_SECRET_KEY: TEST_STRIPE_SECRET_KEY, STRIPE_WEBHOOK_SECRET: TEST_WEBHOOK_SECRET, STRIPE_API_URL: fake.url,
        STRIPE_MAX_NETWORK_RETRIES: '0', OVERAGE_REPORT_INTERVAL_MS: '0',
      },
    });
    inspect = new Redis(redisServer.url, { protocol: 2 });
    raw = new Client(`127.0.0.1:${t.meterd.grpcPort}`, credentials.createInsecure());
    // Keys are `<prefix>:{p<n>}:<rest>`: one hash tag, a partition below 64, no brace after it.
    keyPattern = new RegExp(`^${t.keyPrefix}:\\{p([0-9]|[1-5][0-9]|6[0-3])\\}:[^{}]*$`);

    const { admin, metering } = t.clients;
    const account = (accountId: string, plan: string, parentId = ''): Account => ({
      accountId, plan, parentId, trialCredits: 0n, lowBalanceThreshold: 0n, lowBalancePercent: 0, pendingPlan: '',
      ...(plan === '' ? {} : { billingAnchor: new Date(TEST_EPOCH_MS - 10 * DAY_MS) }),
    });
    await admin.upsertAccount({ account: account('fz-root', 'pro') });
    await admin.upsertAccount({ account: account('fz-space', '', 'fz-root') });
    await admin.upsertAccount({ account: account('fz-free', 'free') });
    await admin.grantCredits({ accountId: 'fz-root', credits: 1000n, kind: GrantKind.GRANT_KIND_PACK, grantId: 'fz-pack', reason: 'setup' });
    held = (await metering.reserveCredits({
      accountId: 'fz-root', feature: 'content_rewrite', requestId: 'fz-held', ttlSeconds: 86_400, userId: 'u-1', labels: { model: 'm' },
    })).reservationId;
    committed = (await metering.reserveCredits({
      accountId: 'fz-root', feature: 'section_generate', requestId: 'fz-committed', ttlSeconds: 86_400, userId: 'u-1', labels: {},
    })).reservationId;
    await metering.commitReservation({ reservationId: committed });
    for (const id of SENTINELS) await metering.getBalance({ accountId: id });
    const setCustomer = METHODS.find((m) => m.name === 'setStripeCustomer') as AnyMethod;
    expect((await send(raw, setCustomer, Buffer.from(SetStripeCustomerRequest.encode({ accountId: 'fz-free', stripeCustomerId: 'cus_fz0' }).finish()))).code).toBe(status.OK);

    const encode = <T>(m: { encode(v: T): { finish(): Uint8Array } }, ...values: T[]) => values.map((v) => Buffer.from(m.encode(v).finish()));
    const reserve = (accountId: string, extra: Partial<ReserveCreditsRequest> = {}): ReserveCreditsRequest => ({
      accountId, feature: 'chat', units: 4000n, requestId: 'fz-r1', ttlSeconds: 600, userId: 'u-1', labels: { model: 'gpt' }, ...extra,
    });
    samples.set('reserveCredits', encode(ReserveCreditsRequest, reserve('fz-root'), reserve('fz-space', { credits: 5n, units: undefined })));
    samples.set('commitReservation', encode(CommitReservationRequest, { reservationId: held, units: 10n }, { reservationId: committed, credits: 3n }));
    samples.set('releaseReservation', encode(ReleaseReservationRequest, { reservationId: held, reason: 'upstream 503' }));
    samples.set('extendReservation', encode(ExtendReservationRequest, { reservationId: held, ttlSeconds: 900, additionalCredits: 2n, requestId: 'fz-x1' }));
    samples.set('streamOperations', encode(OperationRequest,
      { opId: 7n, operation: { $case: 'reserve', value: reserve('fz-free', { feature: 'content_rewrite', units: undefined }) } },
      { opId: U64_MAX, operation: { $case: 'release', value: { reservationId: held, reason: 'x' } } }));
    samples.set('upsertAccount', encode(UpsertAccountRequest,
      { account: { ...account('fz-root', 'pro'), spaceLimitCredits: undefined, lowBalanceThreshold: 10n } },
      { account: { ...account('fz-space', '', 'fz-root'), spaceLimitCredits: 100n } }));
    samples.set('grantCredits', encode(GrantCreditsRequest, {
      accountId: 'fz-root', credits: 5n, kind: GrantKind.GRANT_KIND_PROMO, grantId: 'fz-grant', expiresAt: new Date(TEST_EPOCH_MS + DAY_MS), reason: 'promo',
    }));
    samples.set('adjustCredits', encode(AdjustCreditsRequest, { accountId: 'fz-free', delta: -3n, adjustmentId: 'fz-adj', reason: 'r', actor: 'a' }));
    samples.set('refundCharge', encode(RefundChargeRequest, { reservationId: committed, credits: 1n, refundId: 'fz-refund', reason: '' }));
    samples.set('getUsage', encode(GetUsageRequest, { accountId: 'fz-root', periodStart: new Date(TEST_EPOCH_MS - 40 * DAY_MS) }));
    samples.set('listLedgerEntries', encode(ListLedgerEntriesRequest, {
      accountId: 'fz-root', kinds: ['hold', 'commit'], reservationId: held, userId: 'u-1', feature: 'chat',
      since: new Date(TEST_EPOCH_MS - DAY_MS), until: new Date(TEST_EPOCH_MS + DAY_MS), pageSize: 500, pageToken: 'czEwMA',
    }));
    samples.set('createCheckoutSession', encode(CreateCheckoutSessionRequest, {
      accountId: 'fz-root', packId: 'pack_500', credits: 0n, successUrl: 'https://app.example/ok', cancelUrl: 'https://app.example/no', requestId: 'fz-co',
    }));
    samples.set('setStripeCustomer', encode(SetStripeCustomerRequest, { accountId: 'fz-free', stripeCustomerId: 'cus_fz1' }));
    samples.set('setAutoRefill', encode(SetAutoRefillRequest, { settings: {
      accountId: 'fz-free', enabled: true, thresholdCredits: 10n, packId: 'pack_500', targetCredits: 0n, monthlyCapCents: 10_000n,
      paymentMethodId: 'pm_fz1', disabledReason: '',
    } }));
    samples.set('watchAlerts', encode(WatchAlertsRequest, { accountId: 'fz-root', afterPosition: 0n }));
  });

  afterAll(async () => {
    console.log(`fuzz-grpc: ${stats.calls} calls, ${stats.answered} answered, ${stats.refused} refused; by status ${
      JSON.stringify(Object.fromEntries([...stats.byCode].sort()))}`);
    raw?.close();
    inspect?.disconnect();
    await t?.stop();
    await fake?.close();
    await redisServer?.stop();
  });

  /** Every key under the run's prefix with its DUMP (type, content and encoding). */
  async function redisState(): Promise<Map<string, string>> {
    const keys = (await inspect.keys(`${t.keyPrefix}:*`)).sort();
    const pipeline = inspect.pipeline();
    for (const key of keys) pipeline.dumpBuffer(key);
    const dumps = (await pipeline.exec()) ?? [];
    return new Map(keys.map((key, i) => [key, (dumps[i]?.[1] as Buffer | null)?.toString('hex') ?? '']));
  }

  async function sentinelBalances(): Promise<unknown[]> {
    return Promise.all(SENTINELS.map((accountId) => t.clients.metering.getBalance({ accountId })));
  }

  /** Changes between two states, except what an INSUFFICIENT_CREDITS refusal may record (its alert). */
  async function forbiddenChanges(before: Map<string, string>, after: Map<string, string>, allowAlert: boolean): Promise<string[]> {
    const changes: string[] = [];
    for (const [key, value] of after) {
      if (!before.has(key)) changes.push(`+ ${key}`);
      else if (before.get(key) !== value) changes.push(`~ ${key}`);
    }
    for (const key of before.keys()) if (!after.has(key)) changes.push(`- ${key}`);
    if (!allowAlert) return changes;
    const forbidden: string[] = [];
    for (const change of changes) {
      const key = change.slice(2);
      if (change.startsWith('~ ') && key.endsWith(':ledger')) {
        // Only `alert` events added.
        const entries = await inspect.xrange(key, '-', '+');
        const kinds = entries.map(([, fields]) => fields[fields.indexOf('kind') + 1]);
        const beforeCount = await fromDump(before.get(key) as string, (scratch) => inspect.xlen(scratch));
        if (kinds.slice(beforeCount).some((kind) => kind !== 'alert')) forbidden.push(`${change} (events other than alert)`);
      } else if (change.startsWith('~ ') && /:a\/[^/]+$/.test(key)) {
        // Only the pool's alert state and its ledger sequence number.
        const was = await fromDump(before.get(key) as string, (scratch) => inspect.hgetall(scratch));
        const now = await inspect.hgetall(key);
        const fields = [...new Set([...Object.keys(was), ...Object.keys(now)])].filter((f) => was[f] !== now[f]);
        if (fields.some((f) => !['al', 'alv', 'lsid', 'seq'].includes(f))) forbidden.push(`${change} (fields ${fields.join(', ')})`);
      } else forbidden.push(change);
    }
    return forbidden;
  }

  /** Reads a key as it was before: its DUMP restored into a scratch key outside the prefix. */
  async function fromDump<T>(dump: string, read: (scratch: string) => Promise<T>): Promise<T> {
    const scratch = `fuzz-scratch:${Math.random().toString(36).slice(2)}`;
    await inspect.restore(scratch, 0, Buffer.from(dump, 'hex'));
    try {
      return await read(scratch);
    } finally {
      await inspect.del(scratch);
    }
  }

  /**
   * Sends one request and checks everything (a)-(c) promise. Returns the outcome for callers that
   * want more.
   */
  async function checkCall(method: AnyMethod, body: Buffer): Promise<Outcome> {
    const balancesBefore = await sentinelBalances();
    const before = await redisState();
    const outcome = await send(raw, method, body);
    const after = await redisState();
    const balancesAfter = await sentinelBalances(); // the server is still serving
    stats.calls += 1;
    const codeName = outcome.code === status.OK && outcome.operationErrors.length > 0
      ? `stream:${[...new Set(outcome.operationErrors.map((e) => status[e.code]))].join('+')}` : (status[outcome.code] ?? String(outcome.code));
    stats.byCode.set(codeName, (stats.byCode.get(codeName) ?? 0) + 1);
    const where = `${method.path} with ${body.length} bytes ${body.subarray(0, 48).toString('hex')}${body.length > 48 ? '…' : ''}`;
    expect(uncleanBecause(outcome), where).toBe('');
    const escaped = [...after.keys()].filter((key) => !keyPattern.test(key));
    expect(escaped, `${where}: keys outside the {p<n>} layout`).toEqual([]);
    if (refused(outcome)) {
      stats.refused += 1;
      expect(await forbiddenChanges(before, after, mayRecordAlert(outcome)), `${where}: refused (${outcome.reason || status[outcome.code]}) yet changed`).toEqual([]);
      if (!mayRecordAlert(outcome)) expect(balancesAfter, `${where}: sentinel balances`).toEqual(balancesBefore);
    } else stats.answered += 1;
    return outcome;
  }

  const methodArb = fc.constantFrom(...METHODS);

  it('lists every method of both services (so each is fuzzed)', () => {
    const paths = METHODS.map((m) => m.path);
    expect(paths).toContain('/meterd.v1.MeteringService/ReserveCredits');
    expect(paths).toContain('/meterd.v1.MeteringService/StreamOperations');
    expect(paths).toContain('/meterd.v1.AdminService/WatchAlerts');
    expect(METHODS.length).toBeGreaterThanOrEqual(20);
  });

  it('(a) random bytes to every method path: a clean status, nothing changed on refusal', async () => {
    await fc.assert(fc.asyncProperty(methodArb, fc.uint8Array({ maxLength: 300 }), async (method, bytes) => {
      await checkCall(method, Buffer.from(bytes));
    }), fcParams());
  }, 120_000);

  it('(a) mutated valid encodings (bit flips, truncation, duplicated and unknown fields, wrong wire types, long varints, lengths past the end)', async () => {
    const sampleArb = methodArb.chain((method) => {
      const valid = samples.get(method.name) ?? [Buffer.alloc(0)];
      return fc.tuple(fc.constant(method), fc.constantFrom(...valid), fc.array(mutationArb, { minLength: 1, maxLength: 3 }));
    });
    await fc.assert(fc.asyncProperty(sampleArb, async ([method, valid, mutations]) => {
      const mutated = mutations.reduce<Uint8Array>((bytes, m) => applyMutation(bytes, m), valid);
      await checkCall(method, Buffer.from(mutated));
    }), fcParams(RUNS * 2));
  }, 120_000);

  it('(a) every method once with each kind of malformed encoding (the cases random search may miss)', async () => {
    const cases: Array<[string, Mutation]> = [
      ['an 11-byte varint', { kind: 'long-varint', field: 1, length: 11 }],
      ['a length prefix past the end', { kind: 'length-past-end', field: 1, claimed: 1000 }],
      ['a length prefix of 2^32', { kind: 'length-past-end', field: 2, claimed: 2 ** 32 }],
      ['wire type 7', { kind: 'wrong-wire-type', field: 1, wire: 7 }],
      ['a string field sent as a varint', { kind: 'wrong-wire-type', field: 1, wire: 0 }],
      ['an unknown field 2^29-1', { kind: 'unknown-field', field: 2 ** 29 - 1, wire: 2, payload: Uint8Array.from([1, 2, 3]) }],
      ['an unterminated group', { kind: 'nested-groups', depth: 2 }],
      ['5,000 nested groups', { kind: 'nested-groups', depth: 5_000 }],
      ['a uint64 field set to -1 (2^64-1)', { kind: 'negative-varint', field: 2, value: -1n }],
      ['a field set to -2^63', { kind: 'negative-varint', field: 3, value: -(2n ** 63n) }],
      ['a varint field 4 of 2^64-1', { kind: 'negative-varint', field: 4, value: U64_MAX }],
    ];
    for (const method of METHODS) {
      for (const valid of samples.get(method.name) ?? [Buffer.alloc(0)]) {
        for (const [, mutation] of cases) await checkCall(method, Buffer.from(applyMutation(valid, mutation)));
        // Invalid UTF-8 in the first string field.
        await checkCall(method, Buffer.concat([Buffer.from([0x0a, 0x03, 0xc3, 0x28, 0xff]), valid]));
      }
    }
  }, 120_000);

  // ------------------------------------------------------------------------------------------
  // (b) adversarial values, encoded correctly.

  const VALID_RESERVATION = () => fc.constantFrom(held, committed, `r1.${'0'.repeat(24)}`, `r63.${'f'.repeat(24)}`, `r64.${'0'.repeat(24)}`);
  const strArb = (): fc.Arbitrary<string> => fc.oneof(
    { weight: 3, arbitrary: fc.constantFrom(
      '', 'a'.repeat(64), 'a'.repeat(65), 'a'.repeat(128), 'a'.repeat(129), 'x'.repeat(10_240), '\u0000', 'a\u0000b', '{', '}', ':', '*',
      '\r\n', 'a{p1}b', '{p1}', 'fz-root{x}', 'fz-root}', 'fz-root:x', 'fz-root:{p0}:a/x', 'fz-root/holds', '..', '../../etc', 'a b',
      '\u{1F4B3}', 'caf\u00e9', '\uFFFD', '\u202E', 'fz-root', 'fz-space', 'fz-free', 'chat', 'content_rewrite', 'pro', 'pack_500',
      '*:*', '\t', '\u007f', 'https://app.example/ok', 'javascript:alert(1)',
    ) },
    { weight: 1, arbitrary: fc.string({ unit: 'binary', maxLength: 40 }) },
    { weight: 1, arbitrary: fc.string({ unit: fc.constantFrom('{', '}', ':', '*', '/', '\r', '\n', '\u0000', 'a', '-', '.'), maxLength: 12 }) },
    { weight: 1, arbitrary: fc.stringMatching(/^[A-Za-z0-9._:-]{1,130}$/) },
  );
  const idArb = () => fc.oneof({ weight: 1, arbitrary: fc.constantFrom(...SENTINELS) }, { weight: 3, arbitrary: strArb() });
  const u64Arb = fc.oneof(
    { weight: 3, arbitrary: fc.constantFrom(0n, 1n, 2n ** 53n - 1n, 2n ** 53n, 2n ** 53n + 1n, E15, E15 + 1n, 2n * E15, 2n ** 63n - 1n, 2n ** 63n, U64_MAX) },
    { weight: 1, arbitrary: fc.bigInt({ min: 0n, max: U64_MAX }) },
  );
  const optU64Arb = fc.option(u64Arb, { nil: undefined });
  const i64Arb = fc.oneof(
    { weight: 3, arbitrary: fc.constantFrom(-(2n ** 63n), -(2n ** 53n) - 1n, -E15 - 1n, -1n, 0n, 1n, E15, 2n ** 53n + 1n, 2n ** 63n - 1n) },
    { weight: 1, arbitrary: fc.bigInt({ min: -(2n ** 63n), max: 2n ** 63n - 1n }) },
  );
  const u32Arb = fc.oneof(fc.constantFrom(0, 1, 86_400, 86_401, 2 ** 31 - 1, 2 ** 31, 2 ** 32 - 1), fc.nat({ max: 2 ** 32 - 1 }));
  const dateArb = fc.option(fc.oneof(
    fc.constantFrom(new Date(-1), new Date(0), new Date(TEST_EPOCH_MS), new Date(Date.UTC(9999, 0, 1)), new Date(8.64e15), new Date(-8.64e15)),
    fc.date({ noInvalidDate: true }),
  ), { nil: undefined });
  const labelsArb = fc.oneof(
    fc.dictionary(strArb(), strArb(), { maxKeys: 5 }),
    fc.constant(Object.fromEntries(Array.from({ length: 17 }, (_, i) => [`k${i}`, 'v']))),
    fc.constant(Object.fromEntries(Array.from({ length: 2_000 }, (_, i) => [`k${i}`, 'v']))),
    fc.constant({ model: 'v'.repeat(257) }),
    fc.constant({ ['k'.repeat(65)]: 'v' }),
  );
  const reserveArb = fc.record({
    accountId: idArb(), feature: fc.oneof(fc.constantFrom('chat', 'content_rewrite', 'avatar_select'), strArb()),
    units: optU64Arb, credits: optU64Arb, requestId: strArb(), ttlSeconds: fc.option(u32Arb, { nil: undefined }), userId: strArb(), labels: labelsArb,
  });
  const commitArb = fc.record({ reservationId: fc.oneof(VALID_RESERVATION(), strArb()), units: optU64Arb, credits: optU64Arb });
  const releaseArb = fc.record({ reservationId: fc.oneof(VALID_RESERVATION(), strArb()), reason: strArb() });
  const extendArb = fc.record({ reservationId: fc.oneof(VALID_RESERVATION(), strArb()), ttlSeconds: u32Arb, additionalCredits: u64Arb, requestId: strArb() });

  /** A method and a request of its type built from adversarial values. */
  const valueRequests: Array<[string, fc.Arbitrary<unknown>]> = [
    ['reserveCredits', reserveArb],
    ['commitReservation', commitArb],
    ['releaseReservation', releaseArb],
    ['extendReservation', extendArb],
    ['getBalance', fc.record({ accountId: idArb() })],
    ['streamOperations', fc.record({
      opId: u64Arb,
      operation: fc.option(fc.oneof(
        reserveArb.map((value) => ({ $case: 'reserve' as const, value })),
        commitArb.map((value) => ({ $case: 'commit' as const, value })),
        releaseArb.map((value) => ({ $case: 'release' as const, value })),
        extendArb.map((value) => ({ $case: 'extend' as const, value })),
      ), { nil: undefined }),
    })],
    ['upsertAccount', fc.record({ account: fc.option(fc.record({
      accountId: idArb(), plan: fc.oneof(fc.constantFrom('', 'free', 'pro'), strArb()), billingAnchor: dateArb, parentId: fc.oneof(fc.constantFrom('', 'fz-root', 'fz-space'), strArb()),
      spaceLimitCredits: optU64Arb, trialCredits: u64Arb, trialEndsAt: dateArb, lowBalanceThreshold: u64Arb, lowBalancePercent: u32Arb, pendingPlan: strArb(),
    }), { nil: undefined }) })],
    ['getAccount', fc.record({ accountId: idArb() })],
    ['changePlan', fc.record({ accountId: idArb(), plan: fc.oneof(fc.constantFrom('free', 'pro', 'starter'), strArb()) })],
    ['grantCredits', fc.record({
      accountId: idArb(), credits: u64Arb, kind: fc.constantFrom(0, 1, 2, 3, 2 ** 31 - 1, -1), grantId: strArb(), expiresAt: dateArb, reason: strArb(),
    })],
    ['adjustCredits', fc.record({ accountId: idArb(), delta: i64Arb, adjustmentId: strArb(), reason: strArb(), actor: strArb() })],
    ['refundCharge', fc.record({ reservationId: fc.oneof(VALID_RESERVATION(), strArb()), credits: optU64Arb, refundId: strArb(), reason: strArb() })],
    ['getUsage', fc.record({ accountId: idArb(), periodStart: dateArb })],
    ['listLedgerEntries', fc.record({
      accountId: idArb(), kinds: fc.array(fc.oneof(fc.constantFrom('hold', 'commit', 'alert'), strArb()), { maxLength: 4 }),
      reservationId: fc.oneof(fc.constant(''), VALID_RESERVATION(), strArb()), userId: strArb(), feature: strArb(), since: dateArb, until: dateArb,
      pageSize: u32Arb,
      pageToken: fc.oneof(fc.constantFrom('', 'czEwMA', Buffer.from('s9999999999999999999').toString('base64url'), Buffer.from('s0').toString('base64url'),
        Buffer.from(`s${U64_MAX}`).toString('base64url')), strArb()),
    })],
    ['listCreditPacks', fc.constant({})],
    ['createCheckoutSession', fc.record({
      accountId: idArb(), packId: fc.oneof(fc.constantFrom('', 'pack_500', 'pack_12500'), strArb()), credits: u64Arb,
      successUrl: fc.oneof(fc.constant('https://app.example/ok'), strArb()), cancelUrl: fc.oneof(fc.constant('https://app.example/no'), strArb()), requestId: strArb(),
    })],
    ['setStripeCustomer', fc.record({ accountId: idArb(), stripeCustomerId: fc.oneof(fc.constantFrom('cus_1', 'cus_', 'cus_{x}', `cus_${'a'.repeat(252)}`), strArb()) })],
    ['setAutoRefill', fc.record({ settings: fc.option(fc.record({
      accountId: idArb(), enabled: fc.boolean(), thresholdCredits: u64Arb, packId: fc.oneof(fc.constantFrom('', 'pack_500'), strArb()), targetCredits: u64Arb,
      monthlyCapCents: u64Arb, paymentMethodId: fc.oneof(fc.constantFrom('pm_1', ''), strArb()), disabledReason: strArb(),
    }), { nil: undefined }) })],
    ['getAutoRefill', fc.record({ accountId: idArb() })],
    ['watchAlerts', fc.record({ accountId: fc.oneof(fc.constant(''), idArb()), afterPosition: u64Arb })],
  ];

  it('(b) covers every method with a value generator', () => {
    expect(METHODS.map((m) => m.name).filter((name) => !valueRequests.some(([n]) => n === name))).toEqual([]);
  });

  it('(b) adversarial values in every field: a valid answer or a clean refusal naming the field; refusals change nothing', async () => {
    const arb = fc.oneof(...valueRequests.map(([name, requestArb]) => {
      const method = METHODS.find((m) => m.name === name);
      if (!method) throw new Error(`no method ${name}`);
      return requestArb.map((request) => ({ method, request }));
    }));
    await fc.assert(fc.asyncProperty(arb, async ({ method, request }) => {
      await checkCall(method, method.requestSerialize(request));
    }), fcParams(RUNS * 3));
  }, 180_000);

  /** The adversarial values for one field, by its name (the proto's types: uint64, int64, uint32, enum, Timestamp, map, repeated). */
  function valuesFor(field: string): fc.Arbitrary<unknown> {
    if (field === 'delta') return i64Arb;
    if (['units', 'credits', 'additionalCredits', 'trialCredits', 'lowBalanceThreshold', 'spaceLimitCredits', 'thresholdCredits',
      'targetCredits', 'monthlyCapCents', 'afterPosition', 'opId'].includes(field)) return u64Arb;
    if (['ttlSeconds', 'pageSize', 'lowBalancePercent'].includes(field)) return u32Arb;
    if (field === 'kind') return fc.constantFrom(0, 1, 2, 3, 2 ** 31 - 1, -1);
    if (['billingAnchor', 'trialEndsAt', 'expiresAt', 'periodStart', 'since', 'until', 'createdAt'].includes(field)) return dateArb;
    if (field === 'enabled') return fc.boolean();
    if (field === 'labels') return labelsArb;
    if (field === 'kinds') return fc.array(strArb(), { maxLength: 3 });
    return strArb();
  }
  /** Paths to the leaf fields of a decoded request (one level into account, settings and a stream operation). */
  function leafPaths(request: Record<string, unknown>): string[][] {
    return Object.entries(request).flatMap(([key, value]) => {
      if (key === 'account' || key === 'settings') return Object.keys(value as object).map((inner) => [key, inner]);
      if (key === 'operation') return Object.keys((value as { value: object }).value).map((inner) => [key, 'value', inner]);
      return [[key]];
    });
  }
  const snake = (name: string) => name.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);
  const shown = (value: unknown) => (JSON.stringify(value, (_k, v: unknown) => (typeof v === 'bigint' ? `${v}n` : v)) ?? 'undefined').slice(0, 80);

  it('(b) a valid request with one field replaced by an adversarial value: a valid answer, or a refusal naming that field', async () => {
    const arb = fc.constantFrom(...METHODS.filter((m) => samples.has(m.name))).chain((method) =>
      fc.constantFrom(...(samples.get(method.name) as Buffer[])).chain((valid) => {
        const request = method.requestDeserialize(valid) as Record<string, unknown>;
        return fc.constantFrom(...leafPaths(request)).chain((path) =>
          valuesFor(path[path.length - 1] as string).map((value) => ({ method, request, path, value })));
      }));
    await fc.assert(fc.asyncProperty(arb, async ({ method, request, path, value }) => {
      const changed = structuredClone(request);
      let node = changed as Record<string, unknown>;
      for (const key of path.slice(0, -1)) node = node[key] as Record<string, unknown>;
      node[path[path.length - 1] as string] = value;
      const outcome = await checkCall(method, method.requestSerialize(changed));
      const refusal = outcome.code === status.INVALID_ARGUMENT && outcome.reason === 'INVALID_ARGUMENT' ? { field: outcome.field, message: outcome.details }
        : outcome.operationErrors.find((e) => e.reason === 'INVALID_ARGUMENT');
      if (refusal) {
        const leaf = snake(path[path.length - 1] as string);
        // The field named is the one replaced (under its message's prefix, or a label key under labels.),
        // or the refusal is about how the two relate and its message names the replaced one too.
        const { field, message } = refusal;
        expect(field === leaf || field.endsWith(`.${leaf}`) || field.startsWith(`${leaf}.`) || message.includes(leaf),
          `${method.path}: replaced ${path.join('.')} with ${shown(value)}, refused: ${message}`).toBe(true);
      }
    }), fcParams(RUNS * 2));
  }, 180_000);

  it('(b) Timestamp fields at the int64 edges (seconds 2^63-1, -2^63; nanos out of range): a clean refusal', async () => {
    const timestamp = (seconds: bigint, nanos: number) => Timestamp.encode({ seconds, nanos }).finish();
    const edges: Array<[bigint, number]> = [[2n ** 63n - 1n, 0], [-(2n ** 63n), 0], [0n, -1], [0n, 2 ** 31 - 1], [253402300800n, 0], [-62135596800n, 0]];
    const getUsage = METHODS.find((m) => m.name === 'getUsage') as AnyMethod;
    const grant = METHODS.find((m) => m.name === 'grantCredits') as AnyMethod;
    const listLedger = METHODS.find((m) => m.name === 'listLedgerEntries') as AnyMethod;
    for (const [seconds, nanos] of edges) {
      const ts = timestamp(seconds, nanos);
      await checkCall(getUsage, Buffer.from(new BinaryWriter().uint32(10).string('fz-root').uint32(18).bytes(ts).finish()));
      await checkCall(grant, Buffer.from(new BinaryWriter().uint32(10).string('fz-root').uint32(16).uint64(5n).uint32(24).int32(GrantKind.GRANT_KIND_PROMO)
        .uint32(34).string(`fz-ts-${seconds}-${nanos}`).uint32(42).bytes(ts).finish()));
      const o = await checkCall(listLedger, Buffer.from(new BinaryWriter().uint32(10).string('fz-root').uint32(50).bytes(ts).finish()));
      expect([status.OK, status.INVALID_ARGUMENT]).toContain(o.code);
    }
  });

  it('(b) numbers that reach Postgres at their edges (page token past int64, alert position 2^64-1): a clean answer', async () => {
    const method = (name: string) => METHODS.find((m) => m.name === name) as AnyMethod;
    const token = (text: string) => Buffer.from(text).toString('base64url');
    const ledgerPage = (pageToken: string, extra: Partial<ListLedgerEntriesRequest> = {}) => Buffer.from(ListLedgerEntriesRequest.encode({
      accountId: 'fz-root', kinds: [], reservationId: '', userId: '', feature: '', pageSize: 0, pageToken, ...extra,
    }).finish());
    // A sequence number past 2^63-1 used to reach Postgres as an out-of-range bigint (INTERNAL).
    for (const [text, code] of [['s9223372036854775807', status.OK], ['s9223372036854775808', status.INVALID_ARGUMENT],
      ['s9999999999999999999', status.INVALID_ARGUMENT], ['s0', status.OK], [`s${'0'.repeat(19)}`, status.OK], ['s-1', status.INVALID_ARGUMENT]] as const) {
      const o = await checkCall(method('listLedgerEntries'), ledgerPage(token(text)));
      expect({ code: o.code, field: o.field }, `page token ${text}`).toEqual({ code, field: code === status.OK ? '' : 'page_token' });
    }
    await checkCall(method('listLedgerEntries'), ledgerPage('', { since: new Date(Date.UTC(9998, 11, 31)), until: new Date(0), pageSize: 500 }));
    // Positions are Postgres bigints: past 2^63-1 the stream would start and then fail every poll
    // (UNAVAILABLE, "reconnect with after_position = ..." forever), so it is refused up front.
    for (const [afterPosition, code] of [[2n ** 63n - 1n, status.OK], [2n ** 63n, status.INVALID_ARGUMENT], [U64_MAX, status.INVALID_ARGUMENT]] as const) {
      for (const accountId of ['', 'fz-root']) {
        const o = await checkCall(method('watchAlerts'), Buffer.from(WatchAlertsRequest.encode({ accountId, afterPosition }).finish()));
        expect({ code: o.code, field: o.field }, `after_position ${afterPosition}`).toEqual({ code, field: code === status.OK ? '' : 'after_position' });
      }
    }
    for (const periodStart of [new Date(0), new Date(Date.UTC(9998, 11, 31)), new Date(TEST_EPOCH_MS - 40 * DAY_MS + 1)]) {
      await checkCall(method('getUsage'), Buffer.from(GetUsageRequest.encode({ accountId: 'fz-space', periodStart }).finish()));
    }
  });

  // ------------------------------------------------------------------------------------------
  // (c) after everything: no key escaped the layout, and the sentinels still answer.

  it('(c) after all of the above, every key sits in one {p<n>} partition and the ledger holds no event from a refused call', async () => {
    const keys = await inspect.keys(`${t.keyPrefix}:*`);
    expect(keys.filter((key) => !keyPattern.test(key))).toEqual([]);
    // Nothing outside the prefix either (the private server holds only this run's keys).
    expect((await inspect.keys('*')).filter((key) => !key.startsWith(`${t.keyPrefix}:`))).toEqual([]);
    expect(stats.refused).toBeGreaterThan(0);
    expect(stats.answered).toBeGreaterThan(0);
  });

  it('(c) the state check is not blind: a grant that succeeds shows as a change of the pool and its ledger', async () => {
    const before = await redisState();
    await t.clients.admin.grantCredits({ accountId: 'fz-free', credits: 1n, kind: GrantKind.GRANT_KIND_PACK, grantId: 'fz-probe', reason: '' });
    const changes = await forbiddenChanges(before, await redisState(), false);
    expect(changes.some((c) => c.endsWith(':a/fz-free'))).toBe(true);
    expect(changes.some((c) => c.endsWith(':ledger'))).toBe(true);
    // …and allowing an alert does not excuse a grant event.
    expect((await forbiddenChanges(before, await redisState(), true)).some((c) => c.endsWith(':ledger (events other than alert)'))).toBe(true);
  });

  // ------------------------------------------------------------------------------------------
  // (d) oversized messages.

  it('(d) a request of exactly 64 KiB is read; one byte more is RESOURCE_EXHAUSTED on every method; the server answers afterwards', async () => {
    const reserve = METHODS.find((m) => m.name === 'reserveCredits') as AnyMethod;
    const withLabel = (valueLength: number) => Buffer.from(ReserveCreditsRequest.encode({
      accountId: 'fz-root', feature: 'content_rewrite', requestId: 'fz-big', userId: '', labels: { model: 'v'.repeat(valueLength) },
    }).finish());
    const overhead = withLabel(GRPC_MESSAGE_BYTES_MAX).length - GRPC_MESSAGE_BYTES_MAX;
    const exact = withLabel(GRPC_MESSAGE_BYTES_MAX - overhead);
    expect(exact.length).toBe(GRPC_MESSAGE_BYTES_MAX);
    const atLimit = await checkCall(reserve, exact);
    expect({ code: atLimit.code, field: atLimit.field }).toEqual({ code: status.INVALID_ARGUMENT, field: 'labels.model' });
    const oneMore = withLabel(GRPC_MESSAGE_BYTES_MAX - overhead + 1);
    expect(oneMore.length).toBe(GRPC_MESSAGE_BYTES_MAX + 1);
    expect((await checkCall(reserve, oneMore)).code).toBe(status.RESOURCE_EXHAUSTED);
    for (const method of METHODS) {
      for (const size of [GRPC_MESSAGE_BYTES_MAX + 1, 5 * 1024 * 1024]) {
        const outcome = await checkCall(method, Buffer.alloc(size, 0x41));
        expect(outcome.code, `${method.path} with ${size} bytes`).toBe(status.RESOURCE_EXHAUSTED);
      }
    }
    expect((await t.clients.metering.getBalance({ accountId: 'fz-root' })).accountId).toBe('fz-root');
  }, 60_000);
});
