import type { ProductConfig } from '../config/product-config.js';
import {
  CREDITS_MAX, LAZY_EXPIRY_BATCH_MAX, OPERATION_ID_RETENTION_SECONDS, POOL_CREDITS_MAX, REQUEST_ID_RETENTION_SECONDS,
  SETTLED_RESERVATION_RETENTION_SECONDS, USAGE_RETENTION_AFTER_PERIOD_SECONDS,
} from '../config/limits.js';
import type { Clock } from '../domain/clock.js';
import type {
  AdjustCommand, ChangePlanCommand, CommitCommand, ExtendCommand, GrantCommand, RefundCommand, ReleaseCommand,
  ReserveCommand, UpsertAccountCommand,
} from '../domain/commands.js';
import { DomainError, ErrorReason, invalidArgument } from '../domain/errors.js';
import type { CreditStore } from '../domain/ports.js';
import { parseLedgerEvent, type LedgerEvent } from '../domain/ledger-event.js';
import type {
  AccountResult, BalanceResult, CommitResult, ReleaseResult, ReservationResult, SweepResult, UsageResult,
} from '../domain/types.js';
import { homePartition, newReservationId, partitionPrefix, reservationPartition } from './keys.js';
import { Cluster } from 'ioredis';
import type { RedisConnection } from './redis-connection.js';
import {
  decodeAccount, decodeBalance, decodeCommit, decodeRelease, decodeReservation, decodeSweep, decodeUsage, type Reply,
} from './replies.js';
import { BATCHABLE_SCRIPTS, buildLibrary, type ScriptLibrary } from './script-loader.js';
import { PartitionBatcher, type BatchedCall } from './partition-batcher.js';
import { scriptRefusal, type ErrorContext } from './script-errors.js';

export type ScriptName =
  | 'reserveCredits' | 'commitReservation' | 'releaseReservation' | 'extendReservation' | 'expireReservations'
  | 'getBalance' | 'upsertAccount' | 'placeAccountStub' | 'getAccount' | 'changePlan' | 'grantCredits'
  | 'adjustCredits' | 'refundCharge' | 'getUsage' | 'trimLedger' | 'snapshotLedger' | 'restorePool' | 'setRefill';

/** A pool as rebuild-redis restores it; every value is Redis hash text. */
export interface RestoredPool {
  id: string;
  fields: Record<string, string>;
  spaces: Array<{ id: string; fields: Record<string, string> }>;
  promos: Array<{ id: string; expires: string; left: string }>;
  holds: Array<{ id: string; expires: string; fields: Record<string, string> }>;
  /** Replace mode: reservations whose Redis record may not be the ledger's (touched since Redis' data diverged): dropped first. */
  forget?: string[];
  /** Grant and adjustment ids as the ledger has them (remembered again), and those only a replaced timeline applied (forgotten). */
  operations?: Array<{ kind: string; id: string; fingerprint: string; ttlMs: string }>;
  forgetOperations?: Array<{ kind: string; id: string }>;
}

/** A pool's auto-refill state in Redis. */
export interface RefillState {
  accountId: string;
  thresholdCredits: bigint;
  /** When the refill in flight was asked for (ms), or null. */
  pendingSinceMs: number | null;
}

function decodeRefill(reply: Reply): RefillState {
  const pending = String(reply.pending ?? '');
  return { accountId: String(reply.account_id), thresholdCredits: BigInt(String(reply.threshold ?? '0')), pendingSinceMs: pending === '' ? null : Number(pending) };
}

export interface LedgerSnapshot {
  /** Pool fields (trial, allow, promo, pack, ovg, held, seq) of the pools that exist. */
  pools: Map<string, Record<string, bigint>>;
  events: LedgerEvent[];
  /** False when the stream held more entries than asked for. */
  complete: boolean;
}

/** Observes every script call (metrics live outside the adapter). */
export type ScriptObserver = (script: ScriptName, seconds: number, outcome: 'ok' | 'refused' | 'error') => void;

export interface RedisCreditStoreOptions {
  keyPrefix: string;
  product: ProductConfig;
  clock: Clock;
  observe?: ScriptObserver;
  /** SHADOW_MODE: a refused reserve holds nothing and goes on, the refusal reported in the reply. */
  shadowMode?: boolean;
}

/** Spaces whose stub sent us to their parent's partition; ids never move, so this never goes stale. */
const MOVED_CACHE_ENTRIES_MAX = 100_000;

const SECOND_MS = 1000;
const ms = (seconds: number) => String(seconds * SECOND_MS);

/** A failure of Redis itself (connection, timeout): the outcome is unknown, so the caller retries. */
function unavailable(err: unknown): DomainError {
  return new DomainError(ErrorReason.BACKEND_UNAVAILABLE, 'the credit store (Redis) is unavailable; retry with the same ids', {
    cause: err instanceof Error ? err.message.slice(0, 200) : 'unknown',
  });
}

/** Script errors (a Lua runtime error) are bugs, not outages. */
function isScriptBug(err: unknown): boolean {
  return err instanceof Error && /ERR .*(user_function|user_script|script|Lua)/i.test(err.message) && !/Function not found/i.test(err.message);
}

/** The scripts as one Redis Function library, built once per process. */
const LIBRARY: ScriptLibrary = buildLibrary();
const BATCHABLE: ReadonlySet<string> = new Set(BATCHABLE_SCRIPTS);

export class RedisCreditStore implements CreditStore {
  private readonly movedAccounts = new Map<string, number>();
  private readonly keyPrefix: string;
  private readonly product: ProductConfig;
  private readonly clock: Clock;
  private readonly observe: ScriptObserver;
  private readonly shadowMode: boolean;

  constructor(private readonly redis: RedisConnection, options: RedisCreditStoreOptions) {
    this.keyPrefix = options.keyPrefix;
    this.product = options.product;
    this.clock = options.clock;
    this.observe = options.observe ?? (() => {});
    this.shadowMode = options.shadowMode ?? false;
  }

  /**
   * Loads the script library into every master (FUNCTION LOAD REPLACE: same name, same content).
   * Functions persist in the AOF/RDB and replicate; a node that lost them (a restart without
   * persistence, a new cluster node) answers "Function not found" and run() loads them again.
   */
  async loadScripts(): Promise<void> {
    const nodes = this.redis instanceof Cluster ? this.redis.nodes('master') : [this.redis];
    await Promise.all(nodes.map((node) => node.call('FUNCTION', 'LOAD', 'REPLACE', LIBRARY.code)));
  }

  /** The shared arguments every script gets first (see lua/includes/context.lua). */
  private sharedArgs(): string[] {
    return [String(this.clock.nowMs()), this.product.planTableText, ms(SETTLED_RESERVATION_RETENTION_SECONDS), String(LAZY_EXPIRY_BATCH_MAX)];
  }

  /** FCALL of one library function, loading the library once when Redis lost it (the call did not run). */
  private async fcall(name: string, partition: number, args: string[]): Promise<unknown> {
    const call = () => this.redis.fcall(name, 1, partitionPrefix(this.keyPrefix, partition), ...args);
    try {
      return await call();
    } catch (err) {
      if (!(err instanceof Error) || !/Function not found/i.test(err.message)) throw err;
      await this.loadScripts();
      return call();
    }
  }

  /** Sends the calls one tick gathered for a partition: alone as itself, together as one batch call. */
  private readonly sendBatch = async (partition: number, calls: BatchedCall[]): Promise<void> => {
    const [only] = calls;
    if (calls.length === 1 && only) {
      only.resolve(await this.fcall(LIBRARY.functions.get(only.script) as string, partition, [...this.sharedArgs(), ...only.args]) as string);
      return;
    }
    const args = [...this.sharedArgs(), String(calls.length)];
    for (const call of calls) args.push(call.script, String(call.args.length), ...call.args);
    const replies = await this.fcall(LIBRARY.batchFunction, partition, args) as string[];
    calls.forEach((call, i) => call.resolve(replies[i] as string));
  };

  private readonly batcher = new PartitionBatcher(this.sendBatch);

  /** Runs a script in one partition with the shared arguments first (see lua/includes/context.lua). */
  private async run(script: ScriptName, partition: number, args: string[], context: ErrorContext = {}, followsMoved = false): Promise<Reply> {
    const name = LIBRARY.functions.get(script);
    if (name === undefined) throw new Error(`no Lua script ${script}`);
    const started = process.hrtime.bigint();
    let raw: string;
    try {
      raw = BATCHABLE.has(script)
        ? await this.batcher.call(partition, script, args)
        : await this.fcall(name, partition, [...this.sharedArgs(), ...args]) as string;
    } catch (err) {
      this.observe(script, Number(process.hrtime.bigint() - started) / 1e9, 'error');
      if (isScriptBug(err)) throw err;
      throw unavailable(err);
    }
    const reply = JSON.parse(raw) as Reply;
    const refused = reply.e !== undefined;
    this.observe(script, Number(process.hrtime.bigint() - started) / 1e9, refused ? 'refused' : 'ok');
    if (refused && !(reply.e === 'MOVED' && followsMoved)) throw scriptRefusal(reply, context);
    return reply;
  }

  /** Runs a script for an account, following a space's stub to its parent's partition once. */
  private async runForAccount(script: ScriptName, accountId: string, args: (partition: number) => string[], context?: ErrorContext): Promise<Reply> {
    let partition = this.movedAccounts.get(accountId) ?? homePartition(accountId);
    let reply = await this.run(script, partition, args(partition), context, true);
    if (reply.e === 'MOVED') {
      partition = Number(reply.partition);
      this.rememberMoved(accountId, partition);
      reply = await this.run(script, partition, args(partition), context);
    }
    return reply;
  }

  private rememberMoved(accountId: string, partition: number): void {
    if (this.movedAccounts.size >= MOVED_CACHE_ENTRIES_MAX) {
      const oldest = this.movedAccounts.keys().next();
      if (!oldest.done) this.movedAccounts.delete(oldest.value);
    }
    this.movedAccounts.set(accountId, partition);
  }

  private reservationPartitionOf(reservationId: string): number {
    const partition = reservationPartition(reservationId);
    if (partition === undefined) throw invalidArgument('reservation_id', 'is not a reservation id issued by meterd', 'r<partition>.<24 hex>');
    return partition;
  }

  async reserve(c: ReserveCommand): Promise<ReservationResult> {
    const reply = await this.runForAccount('reserveCredits', c.accountId, (partition) => [
      c.accountId, c.requestId, c.feature.id, c.units?.toString() ?? '', c.credits?.toString() ?? '',
      String(c.feature.credits), String(c.feature.perUnits), String(c.feature.minCredits),
      String(c.ttlMs), c.userId, c.labelsJson, c.fingerprint, newReservationId(partition),
      ms(REQUEST_ID_RETENTION_SECONDS), CREDITS_MAX.toString(), this.shadowMode ? '1' : '',
    ], { what: c.feature.id });
    const reservation = decodeReservation(reply);
    const shadow = reply.shadow_refusal as { reason: string; details: Reply } | undefined;
    if (shadow) {
      const refusal = scriptRefusal({ e: shadow.reason, ...shadow.details }, { what: c.feature.id });
      reservation.shadowRefusal = { reason: refusal.reason, message: refusal.message, metadata: { ...refusal.metadata } };
    }
    return reservation;
  }

  async commit(c: CommitCommand): Promise<CommitResult> {
    const reply = await this.run('commitReservation', this.reservationPartitionOf(c.reservationId), [
      c.reservationId, c.units?.toString() ?? '', c.credits?.toString() ?? '', CREDITS_MAX.toString(),
      ms(USAGE_RETENTION_AFTER_PERIOD_SECONDS),
    ]);
    return decodeCommit(reply);
  }

  async release(c: ReleaseCommand): Promise<ReleaseResult> {
    const reply = await this.run('releaseReservation', this.reservationPartitionOf(c.reservationId), [c.reservationId, c.reason]);
    return decodeRelease(reply);
  }

  async extend(c: ExtendCommand): Promise<ReservationResult> {
    const reply = await this.run('extendReservation', this.reservationPartitionOf(c.reservationId), [
      c.reservationId, String(c.ttlMs), c.additionalCredits.toString(), c.requestId,
    ], { what: `growing the hold by ${c.additionalCredits}` });
    return decodeReservation(reply);
  }

  async getBalance(accountId: string): Promise<BalanceResult> {
    return decodeBalance(await this.runForAccount('getBalance', accountId, () => [accountId]));
  }

  async upsertAccount(c: UpsertAccountCommand): Promise<AccountResult> {
    const args = () => [
      c.accountId, c.plan?.id ?? '', c.plan?.monthlyCredits.toString() ?? '0', c.plan?.overageLimit.toString() ?? '0',
      c.billingAnchorMs === undefined ? '' : String(c.billingAnchorMs), c.parentId, c.spaceLimitCredits?.toString() ?? '',
      c.trialCredits.toString(), String(c.trialEndsAtMs), c.lowBalanceThreshold.toString(), String(c.lowBalancePercent),
    ];
    if (c.parentId === '') return decodeAccount(await this.runForAccount('upsertAccount', c.accountId, args));
    // A space lives in its parent's partition; its own id's partition keeps a stub pointing there.
    // The parent is checked first so a refused request leaves no stub behind.
    const parent = await this.getAccount(c.parentId).catch((err: unknown) => {
      if (err instanceof DomainError && err.reason === ErrorReason.ACCOUNT_NOT_FOUND) {
        throw new DomainError(ErrorReason.PARENT_NOT_FOUND, `parent account "${c.parentId}" does not exist`, { parent_id: c.parentId });
      }
      throw err;
    });
    if (parent.parentId !== '') {
      throw new DomainError(ErrorReason.PARENT_IS_SPACE, `parent "${c.parentId}" is itself a space; spaces nest one level only`, { parent_id: c.parentId });
    }
    const target = homePartition(c.parentId);
    const home = homePartition(c.accountId);
    if (home !== target) {
      await this.run('placeAccountStub', home, [c.accountId, String(target)]);
      this.rememberMoved(c.accountId, target);
    }
    return decodeAccount(await this.run('upsertAccount', target, args()));
  }

  async getAccount(accountId: string): Promise<AccountResult> {
    return decodeAccount(await this.runForAccount('getAccount', accountId, () => [accountId]));
  }

  async changePlan(c: ChangePlanCommand): Promise<AccountResult> {
    return decodeAccount(await this.runForAccount('changePlan', c.accountId, () => [
      c.accountId, c.plan.id, c.plan.monthlyCredits.toString(), c.plan.overageLimit.toString(),
    ]));
  }

  async grant(c: GrantCommand): Promise<BalanceResult> {
    return decodeBalance(await this.runForAccount('grantCredits', c.accountId, () => [
      c.accountId, c.kind, c.credits.toString(), c.grantId, c.expiresAtMs === undefined ? '' : String(c.expiresAtMs),
      c.reason, ms(OPERATION_ID_RETENTION_SECONDS), POOL_CREDITS_MAX.toString(),
    ]));
  }

  async adjust(c: AdjustCommand): Promise<BalanceResult> {
    return decodeBalance(await this.runForAccount('adjustCredits', c.accountId, () => [
      c.accountId, c.delta.toString(), c.adjustmentId, c.reason, c.actor, ms(OPERATION_ID_RETENTION_SECONDS),
      POOL_CREDITS_MAX.toString(),
    ]));
  }

  async refund(c: RefundCommand): Promise<BalanceResult> {
    return decodeBalance(await this.run('refundCharge', this.reservationPartitionOf(c.reservationId), [
      c.reservationId, c.credits?.toString() ?? '', c.refundId, c.reason,
    ]));
  }

  async getUsage(accountId: string): Promise<UsageResult> {
    return decodeUsage(await this.runForAccount('getUsage', accountId, () => [accountId]));
  }

  /** Trims a partition's ledger stream below what the flush group has acknowledged. */
  async trimLedger(partition: number, group: string): Promise<number> {
    const reply = await this.run('trimLedger', partition, [group]);
    return Number(reply.trimmed);
  }

  /** One consistent read of pools' fields and the ledger entries still in a partition's stream. */
  async snapshotLedger(partition: number, poolIds: string[], entriesMax: number): Promise<LedgerSnapshot> {
    const reply = await this.run('snapshotLedger', partition, [String(entriesMax), poolIds.join(',')]);
    const pools = new Map<string, Record<string, bigint>>();
    for (const [id, fields] of Object.entries((reply.pools ?? {}) as Record<string, Record<string, string>>)) {
      pools.set(id, Object.fromEntries(Object.entries(fields).map(([k, v]) => [k, BigInt(v)])));
    }
    const entries = Array.isArray(reply.entries) ? (reply.entries as string[][]) : [];
    return {
      pools,
      events: entries.map(([id, ...flat]) => parseLedgerEvent(id as string, flat)),
      complete: reply.complete === true,
    };
  }

  /**
   * Writes a pool rebuilt from the ledger (rebuild-redis) into its partition, with stubs for its
   * spaces whose ids live elsewhere. Returns false when the pool already exists in Redis.
   */
  /** Restores a pool missing from Redis; false when it exists (rebuild-redis skips it). */
  async restorePool(pool: RestoredPool): Promise<boolean> {
    try {
      await this.writePool(pool, '');
      return true;
    } catch (err) {
      if (err instanceof DomainError && err.reason === ErrorReason.ACCOUNT_EXISTS) return false;
      throw err;
    }
  }

  /**
   * Auto-refill's threshold for a root account (null: off). Clears a refill in flight too, so a
   * changed setting starts afresh; a threshold above what is available asks for a refill at once.
   */
  async setAutoRefillThreshold(accountId: string, thresholdCredits: bigint | null): Promise<RefillState> {
    return decodeRefill(await this.runForAccount('setRefill', accountId, () => [accountId, (thresholdCredits ?? 0n).toString(), '1']));
  }

  /** A refill ended (paid, or given up): the next fall below the threshold may ask for another. */
  async clearRefillPending(accountId: string): Promise<RefillState> {
    return decodeRefill(await this.runForAccount('setRefill', accountId, () => [accountId, '', '1']));
  }

  /** A pool's ledger sequence number in Redis; null when Redis does not have the pool. */
  async poolSeq(accountId: string): Promise<bigint | null> {
    return (await this.snapshotLedger(homePartition(accountId), [accountId], 0)).pools.get(accountId)?.seq ?? null;
  }

  /**
   * Replaces a pool with one rebuilt from the ledger, only while its sequence number is still
   * `expectedSeq` (else `replaced` is false and `seq` says where it is now). `holdsDropped`: holds
   * only Redis knew, gone with it.
   */
  async replacePool(pool: RestoredPool, expectedSeq: bigint): Promise<{ replaced: boolean; seq: bigint; holdsDropped: number; mark: string }> {
    const reply = await this.writePool(pool, expectedSeq.toString());
    return reply.restored === true
      ? { replaced: true, seq: BigInt(pool.fields.seq ?? '0'), holdsDropped: Number(reply.dropped ?? 0), mark: String(reply.mark ?? '') }
      : { replaced: false, seq: BigInt(String(reply.seq ?? '0')), holdsDropped: 0, mark: '' };
  }

  private async writePool(pool: RestoredPool, expectedSeq: string): Promise<Reply> {
    const target = homePartition(pool.id);
    for (const space of pool.spaces) {
      if (homePartition(space.id) !== target) await this.run('placeAccountStub', homePartition(space.id), [space.id, String(target)]);
    }
    return this.run('restorePool', target, [JSON.stringify(pool), expectedSeq]);
  }

  async sweepExpired(partition: number, max: number): Promise<SweepResult> {
    return decodeSweep(await this.run('expireReservations', partition, [String(max)]));
  }
}
