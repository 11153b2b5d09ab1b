import { PARTITION_COUNT } from '../config/limits.js';
import { parseLedgerEvent, type LedgerEvent } from '../domain/ledger-event.js';
import { partitionPrefix } from './keys.js';
import type { RedisConnection } from './redis-connection.js';

/**
 * The partition ledger streams as the flusher consumes them, through one consumer group shared by
 * every meterd replica: XREADGROUP delivers each entry to one consumer and keeps it pending until
 * XACK (after the Postgres COMMIT). A consumer first re-reads its own pending entries (id 0), so
 * a failed write is retried; XAUTOCLAIM takes over a dead consumer's entries. Trimming is a script
 * (RedisCreditStore.trimLedger), so it is atomic with its look at the group.
 */
export const FLUSH_GROUP = 'flush';

type StreamEntries = Array<[id: string, fields: string[]]>;

export interface PartitionBatch {
  partition: number;
  events: LedgerEvent[];
}

export class LedgerStreams {
  constructor(private readonly redis: RedisConnection, private readonly keyPrefix: string) {}

  streamKey(partition: number): string {
    return `${partitionPrefix(this.keyPrefix, partition)}ledger`;
  }

  /** Creates the consumer group on every partition stream (from the start: nothing is skipped). */
  async ensureGroups(): Promise<void> {
    await Promise.all(Array.from({ length: PARTITION_COUNT }, async (_, partition) => {
      try {
        await this.redis.xgroup('CREATE', this.streamKey(partition), FLUSH_GROUP, '0', 'MKSTREAM');
      } catch (err) {
        if (!(err instanceof Error) || !err.message.includes('BUSYGROUP')) throw err;
      }
    }));
  }

  /** Up to `count` entries for this consumer: its own pending ones first, then new ones. */
  async read(partition: number, consumer: string, count: number, onlyNew = false): Promise<LedgerEvent[]> {
    for (const from of onlyNew ? ['>' as const] : ['0' as const, '>' as const]) {
      const events = (await this.readMany([partition], consumer, count, from)).get(partition) ?? [];
      if (events.length > 0) return events;
    }
    return [];
  }

  /**
   * Up to `count` entries per partition: from '0' this consumer's pending entries, from '>' new
   * ones. On one Redis it is one XREADGROUP over every stream (one command, not one per partition:
   * the flusher polls all 64 partitions every interval); on a Cluster, whose partitions live in
   * different slots, one XREADGROUP per partition. Partitions with nothing to read are absent.
   */
  async readMany(partitions: readonly number[], consumer: string, count: number, from: '0' | '>'): Promise<Map<number, LedgerEvent[]>> {
    const read = new Map<number, LedgerEvent[]>();
    const keep = (reply: Array<[string, StreamEntries]> | null, partitionOfKey: (key: string) => number) => {
      for (const [key, entries] of reply ?? []) {
        // Pending entries trimmed away come back with null fields; they were flushed already.
        const events = entries.filter(([, fields]) => fields !== null).map(([id, fields]) => parseLedgerEvent(id, fields));
        if (events.length > 0) read.set(partitionOfKey(key), events);
      }
    };
    if (partitions.length === 0) return read;
    if (this.redis.isCluster) {
      await Promise.all(partitions.map(async (partition) => {
        keep(await this.xreadgroup(consumer, count, [this.streamKey(partition)], from), () => partition);
      }));
      return read;
    }
    const keys = partitions.map((partition) => this.streamKey(partition));
    const partitionByKey = new Map(keys.map((key, i) => [key, partitions[i] as number]));
    keep(await this.xreadgroup(consumer, count, keys, from), (key) => partitionByKey.get(key) as number);
    return read;
  }

  private async xreadgroup(consumer: string, count: number, keys: string[], from: '0' | '>'): Promise<Array<[string, StreamEntries]> | null> {
    return (await this.redis.xreadgroup('GROUP', FLUSH_GROUP, consumer, 'COUNT', count, 'STREAMS', ...keys, ...keys.map(() => from))) as
      | Array<[string, StreamEntries]>
      | null;
  }

  async ack(partition: number, ids: string[]): Promise<void> {
    if (ids.length > 0) await this.redis.xack(this.streamKey(partition), FLUSH_GROUP, ...ids);
  }

  /** Takes over entries another consumer left pending for longer than minIdleMs; returns how many. */
  async reclaim(partition: number, consumer: string, minIdleMs: number, count: number): Promise<number> {
    const reply = (await this.redis.xautoclaim(this.streamKey(partition), FLUSH_GROUP, consumer, minIdleMs, '0-0', 'COUNT', count)) as [string, StreamEntries, string[]?];
    return reply[1].length;
  }

  /**
   * Removes consumers that hold nothing and have been idle longer than idleMs (replicas gone for
   * good: every process start joins as a new consumer). Never this process's own consumer.
   */
  async forgetIdleConsumers(partition: number, self: string, idleMs: number): Promise<number> {
    const key = this.streamKey(partition);
    const consumers = (await this.redis.xinfo('CONSUMERS', key, FLUSH_GROUP)) as Array<Array<string | number>>;
    let removed = 0;
    for (const consumer of consumers) {
      const field = (name: string) => consumer[consumer.indexOf(name) + 1];
      const name = String(field('name'));
      if (name !== self && Number(field('pending')) === 0 && Number(field('idle')) > idleMs) {
        // DELCONSUMER would drop pending entries; only consumers holding none are removed.
        await this.redis.xgroup('DELCONSUMER', key, FLUSH_GROUP, name);
        removed += 1;
      }
    }
    return removed;
  }

  async length(partition: number): Promise<number> {
    return this.redis.xlen(this.streamKey(partition));
  }
}
