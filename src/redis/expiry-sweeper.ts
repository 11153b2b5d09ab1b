import { PARTITION_COUNT, SWEEP_BATCH_MAX } from '../config/limits.js';
import type { CreditStore } from '../domain/ports.js';
import type { Logger } from '../observability/logger.js';

/**
 * Releases holds past their TTL in every partition, on a fixed interval, so `held` never stays
 * inflated for an account nobody touches (touched accounts release their own lazily). Several
 * replicas may sweep at once: each hold is settled once, by whichever script reaches it first.
 */
export class ExpirySweeper {
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;

  constructor(
    private readonly store: CreditStore,
    private readonly intervalMs: number,
    private readonly logger: Logger,
    private readonly onExpired: (count: number, credits: bigint) => void = () => {},
    private readonly onFailed: (err: unknown) => void = () => {},
  ) {}

  /** One pass over every partition; returns how many holds it expired. */
  async sweepOnce(): Promise<number> {
    let total = 0;
    for (let partition = 0; partition < PARTITION_COUNT; partition++) {
      let more = true;
      while (more) {
        const result = await this.store.sweepExpired(partition, SWEEP_BATCH_MAX);
        total += result.expired;
        if (result.expired > 0) this.onExpired(result.expired, result.credits);
        more = result.more;
      }
    }
    return total;
  }

  start(): void {
    const tick = () => {
      this.running = this.sweepOnce()
        .then(() => undefined)
        .catch((err: unknown) => {
          this.onFailed(err);
          this.logger.warn({ err }, 'expiry sweep failed; retrying next interval');
        })
        .finally(() => {
          if (this.timer !== undefined) this.timer = setTimeout(tick, this.intervalMs);
        });
    };
    this.timer = setTimeout(tick, this.intervalMs);
  }

  async stop(): Promise<void> {
    const timer = this.timer;
    this.timer = undefined;
    if (timer) clearTimeout(timer);
    await this.running;
  }
}
