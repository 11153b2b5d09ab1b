/**
 * Calls of the data-plane scripts that arrive in the same turn of the event loop for one partition
 * are sent as ONE Redis call (the library's batch function), which runs them one after another,
 * each exactly as alone. Under load a gateway's concurrent reserves and commits then cost one round
 * trip per partition per tick instead of one each; a lone call goes out as itself, unchanged.
 */
export interface BatchedCall {
  script: string;
  args: string[];
  resolve(raw: string): void;
  reject(err: unknown): void;
}

/** Most calls in one Redis call: Redis runs a batch without interleaving, so this bounds how long it blocks. */
export const BATCH_CALLS_MAX = 64;

export type BatchSender = (partition: number, calls: BatchedCall[]) => Promise<void>;

export class PartitionBatcher {
  private readonly queues = new Map<number, BatchedCall[]>();
  private scheduled = false;

  constructor(private readonly send: BatchSender) {}

  call(partition: number, script: string, args: string[]): Promise<string> {
    return new Promise<string>((resolve, reject) => {
      let queue = this.queues.get(partition);
      if (!queue) {
        queue = [];
        this.queues.set(partition, queue);
      }
      queue.push({ script, args, resolve, reject });
      if (queue.length >= BATCH_CALLS_MAX) {
        this.queues.delete(partition);
        this.dispatch(partition, queue);
      } else if (!this.scheduled) {
        this.scheduled = true;
        setImmediate(() => this.flush());
      }
    });
  }

  private flush(): void {
    this.scheduled = false;
    const queues = [...this.queues];
    this.queues.clear();
    for (const [partition, calls] of queues) this.dispatch(partition, calls);
  }

  private dispatch(partition: number, calls: BatchedCall[]): void {
    this.send(partition, calls).catch((err: unknown) => {
      for (const call of calls) call.reject(err);
    });
  }
}
