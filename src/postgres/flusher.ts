import { hostname } from 'node:os';
import { randomBytes } from 'node:crypto';
import type pg from 'pg';
import { PARTITION_COUNT } from '../config/limits.js';
import type { LedgerEvent } from '../domain/ledger-event.js';
import type { Logger } from '../observability/logger.js';
import { FLUSH_GROUP, type LedgerStreams } from '../redis/ledger-streams.js';
import { type LedgerConflictReason, writeLedgerBatch, type WriteResult } from './ledger-writer.js';

/**
 * Moves ledger events from the partition streams into Postgres, exactly once in effect:
 * read (XREADGROUP, pending until acknowledged) → one transaction (INSERT … ON CONFLICT DO NOTHING
 * plus projections) → COMMIT → XACK → trim what is acknowledged. A crash before COMMIT leaves the
 * entries pending (re-read by this consumer, or reclaimed by another after reclaimIdleMs); a crash
 * between COMMIT and XACK redelivers a batch whose insert is then a no-op. While Postgres is down
 * the streams grow and reserve/commit carry on.
 */
export interface FlusherOptions {
  batchEventsMax: number;
  intervalMs: number;
  reclaimIdleMs: number;
  /** Consumer name in the group; unique per process. */
  consumer?: string;
  /** Events waiting in all streams together above which the flusher raises the alarm (0: never). */
  backlogAlarmEvents?: number;
  observer?: FlushObserver;
  /**
   * Reclaim others' pending entries, forget dead consumers and watch the backlog (default true).
   * A process running several lanes (FLUSH_LANES) lets one of them do it.
   */
  housekeeping?: boolean;
}

/** Sees what the flusher does (metrics hang off this). */
export interface FlushObserver {
  /** A batch committed in Postgres (its events, with their times in Redis, for the lag). */
  flushed(events: readonly LedgerEvent[], nowMs: number): void;
  /** Nothing waited: the flusher is healthy and caught up. */
  idle(nowMs: number): void;
  failed(err: unknown): void;
  /** Events kept apart in ledger_conflicts: payload_differs, diverged (see chainPool). */
  conflicts(reason: LedgerConflictReason, count: number): void;
  backlog(events: number, alarm: boolean): void;
}

const IGNORE: FlushObserver = { flushed() {}, idle() {}, failed() {}, conflicts() {}, backlog() {} };

export interface FlushResult {
  events: number;
  inserted: number;
  duplicates: number;
}

/** Trims one partition's stream below what the group acknowledged (RedisCreditStore.trimLedger). */
export type LedgerTrimmer = (partition: number, group: string) => Promise<number>;

const BACKOFF_MS_MAX = 5_000;
const BACKLOG_CHECK_INTERVAL_MS = 5_000;
/** A consumer idle this many reclaim periods with nothing pending is a replica gone for good. */
const CONSUMER_FORGET_AFTER_RECLAIMS = 10;

export class LedgerFlusher {
  readonly consumer: string;
  private cursor = 0;
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  private failures = 0;
  private lastReclaimMs = 0;
  private lastBacklogCheckMs = 0;
  /** Events waiting in the streams at the last check, and whether that is past the alarm bound. */
  backlog = { events: 0, alarm: false };
  private readonly observer: FlushObserver;
  /**
   * Partitions where this consumer may have entries pending (read, not yet acknowledged): all at
   * start, those of a failed batch, those a reclaim took over. Emptied as '0' reads come back empty.
   */
  private readonly pendingMaybe = new Set<number>(Array.from({ length: PARTITION_COUNT }, (_, p) => p));

  constructor(
    private readonly streams: LedgerStreams,
    private readonly trim: LedgerTrimmer,
    private readonly db: pg.Pool,
    private readonly options: FlusherOptions,
    private readonly logger: Logger,
  ) {
    this.consumer = options.consumer ?? `${hostname()}-${process.pid}-${randomBytes(3).toString('hex')}`;
    this.observer = options.observer ?? IGNORE;
  }

  /**
   * Reads up to batchEventsMax events and flushes them in one transaction. Every partition is read
   * at once for a fair share (one command on one Redis: see LedgerStreams.readMany), then
   * partitions that had more are topped up in turn, starting at a rotating one, until the batch is
   * full. A partition's own pending entries come first, re-read only where some may be left
   * (pendingMaybe), so an idle poll costs one command, not two per partition.
   */
  async flushOnce(): Promise<FlushResult> {
    let budget = this.options.batchEventsMax;
    const share = Math.max(1, Math.floor(budget / PARTITION_COUNT));
    const order = Array.from({ length: PARTITION_COUNT }, (_, i) => (this.cursor + i) % PARTITION_COUNT);
    this.cursor = (this.cursor + 1) % PARTITION_COUNT;
    const pending = await this.streams.readMany(order.filter((p) => this.pendingMaybe.has(p)), this.consumer, share, '0');
    for (const partition of this.pendingMaybe) if (!pending.has(partition)) this.pendingMaybe.delete(partition);
    const unread = order.filter((p) => !pending.has(p));
    const fresh = await this.streams.readMany(unread, this.consumer, share, '>').catch((err: unknown) => {
      // The read may have delivered entries whose reply was lost: they are pending now.
      for (const partition of unread) this.pendingMaybe.add(partition);
      throw err;
    });
    const batches = order
      .map((partition) => ({ partition, events: pending.get(partition) ?? fresh.get(partition) ?? [] }))
      .filter((b) => b.events.length > 0);
    try {
      return await this.write(batches, budget, share);
    } catch (err) {
      // What was read stays pending until acknowledged: re-read it first next time.
      for (const batch of batches) this.pendingMaybe.add(batch.partition);
      throw err;
    }
  }

  private async write(batches: Array<{ partition: number; events: LedgerEvent[] }>, budget: number, share: number): Promise<FlushResult> {
    budget -= batches.reduce((sum, b) => sum + b.events.length, 0);
    for (const batch of batches) {
      if (budget <= 0) break;
      if (batch.events.length < share) continue;
      const more = await this.streams.read(batch.partition, this.consumer, budget, true);
      batch.events.push(...more);
      budget -= more.length;
    }
    const events = batches.flatMap((b) => b.events);
    if (events.length === 0) {
      this.observer.idle(Date.now());
      return { events: 0, inserted: 0, duplicates: 0 };
    }

    const client = await this.db.connect();
    // A checked-out client whose server goes away emits 'error'; unheard, it would end the process.
    // The failing query rejects as well, which is what the loop acts on.
    const onConnectionError = (err: Error) => this.logger.warn({ err: err.message }, 'postgres connection lost during a flush');
    client.on('error', onConnectionError);
    let result;
    try {
      await client.query('BEGIN');
      result = await writeLedgerBatch(client, events);
      await client.query('COMMIT');
    } catch (err) {
      await client.query('ROLLBACK').catch(() => {});
      throw err;
    } finally {
      client.off('error', onConnectionError);
      client.release();
    }
    this.observer.flushed(events, Date.now());
    this.reportConflicts(result);
    await Promise.all(batches.map(async (batch) => {
      await this.streams.ack(batch.partition, batch.events.map((e) => e.streamEntryId));
      await this.trim(batch.partition, FLUSH_GROUP);
    }));
    return { events: events.length, inserted: result.inserted, duplicates: result.duplicates };
  }

  /** Redis lost data (or a bug): every kind of it is an error log line and a count. */
  private reportConflicts(result: WriteResult): void {
    const report = (reason: LedgerConflictReason, eventIds: string[], message: string) => {
      if (eventIds.length === 0) return;
      this.observer.conflicts(reason, eventIds.length);
      this.logger.error({ reason, eventIds: eventIds.slice(0, 20), count: eventIds.length }, message);
    };
    report('payload_differs', result.conflicting,
      'ledger events already in Postgres with another payload (Redis lost data, or a bug): stored ones kept, new ones in ledger_conflicts');
    report('diverged', result.diverged,
      'ledger events of a Redis timeline that diverged from the ledger (Redis lost data and reused its sequence numbers): kept in ledger_conflicts');
  }

  /**
   * Takes over entries that other (dead) consumers left pending too long, and forgets consumers
   * that hold nothing and have been idle for CONSUMER_FORGET_AFTER_RECLAIMS reclaim periods.
   */
  async reclaimOnce(): Promise<number> {
    let claimed = 0;
    for (let partition = 0; partition < PARTITION_COUNT; partition++) {
      const taken = await this.streams.reclaim(partition, this.consumer, this.options.reclaimIdleMs, this.options.batchEventsMax);
      if (taken > 0) this.pendingMaybe.add(partition);
      claimed += taken;
      await this.streams.forgetIdleConsumers(partition, this.consumer, this.options.reclaimIdleMs * CONSUMER_FORGET_AFTER_RECLAIMS);
    }
    return claimed;
  }

  /**
   * Counts what waits in the streams. Past backlogAlarmEvents (Postgres down or too slow) the
   * streams keep growing in Redis memory: say so loudly, once per crossing, well before it is full.
   */
  async checkBacklog(): Promise<{ events: number; alarm: boolean }> {
    let events = 0;
    for (let partition = 0; partition < PARTITION_COUNT; partition++) events += await this.streams.length(partition);
    const bound = this.options.backlogAlarmEvents ?? 0;
    const alarm = bound > 0 && events > bound;
    if (alarm && !this.backlog.alarm) {
      this.logger.error({ events, bound }, 'ledger backlog past its bound: events are not reaching Postgres; Redis memory grows');
    } else if (!alarm && this.backlog.alarm) {
      this.logger.info({ events, bound }, 'ledger backlog back under its bound');
    }
    this.backlog = { events, alarm };
    this.observer.backlog(events, alarm);
    return this.backlog;
  }

  /** Flushes until the streams are empty (shutdown, tests). */
  async drain(): Promise<number> {
    let total = 0;
    for (;;) {
      const { events } = await this.flushOnce();
      total += events;
      if (events === 0) return total;
    }
  }

  start(): void {
    const tick = async () => {
      let delayMs = this.options.intervalMs;
      try {
        const housekeeping = this.options.housekeeping ?? true;
        if (housekeeping && Date.now() - this.lastReclaimMs >= this.options.reclaimIdleMs / 2) {
          this.lastReclaimMs = Date.now();
          const claimed = await this.reclaimOnce();
          if (claimed > 0) this.logger.warn({ claimed }, 'reclaimed ledger entries left pending by another consumer');
        }
        if (housekeeping && Date.now() - this.lastBacklogCheckMs >= BACKLOG_CHECK_INTERVAL_MS) {
          this.lastBacklogCheckMs = Date.now();
          await this.checkBacklog();
        }
        const { events } = await this.flushOnce();
        this.failures = 0;
        if (events >= this.options.batchEventsMax) delayMs = 0; // more is waiting
      } catch (err) {
        this.observer.failed(err);
        this.failures += 1;
        delayMs = Math.min(this.options.intervalMs * 2 ** this.failures, BACKOFF_MS_MAX);
        this.logger.warn({ err, retryInMs: delayMs }, 'ledger flush failed; the events stay pending in Redis');
      }
      if (this.timer !== undefined) this.timer = setTimeout(() => (this.running = tick()), delayMs);
    };
    this.timer = setTimeout(() => (this.running = tick()), this.options.intervalMs);
  }

  /** Stops the loop and runs a final flush. */
  async stop(): Promise<void> {
    const timer = this.timer;
    this.timer = undefined;
    if (timer) clearTimeout(timer);
    await this.running;
    await this.drain().catch((err: unknown) => this.logger.warn({ err }, 'final ledger flush failed; events stay pending in Redis'));
  }
}
