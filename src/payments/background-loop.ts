import type { Logger } from '../observability/logger.js';

/**
 * One background worker over an outbox table: runs `work` once at start (the replay after a crash),
 * then every `intervalMs`, and at once when nudged (a webhook just wrote a row). Runs never overlap;
 * a nudge during a run makes one more run right after. `work` returns true while it left rows for
 * another pass (a full batch), so a backlog drains without waiting for the interval.
 */
export class BackgroundLoop {
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  private again = false;
  private started = false;

  constructor(
    private readonly name: string,
    private readonly intervalMs: number,
    private readonly work: () => Promise<boolean>,
    private readonly logger: Logger,
  ) {}

  start(): void {
    if (this.started) return;
    this.started = true;
    this.nudge();
  }

  /** Run now (or right after the current run). Does nothing before start and after stop. */
  nudge(): void {
    if (!this.started) return;
    if (this.running) {
      this.again = true;
      return;
    }
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    this.running = this.runOnce()
      .then((more) => {
        this.running = undefined;
        if (!this.started) return;
        if (more || this.again) {
          this.again = false;
          this.nudge();
        } else {
          this.timer = setTimeout(() => this.nudge(), this.intervalMs);
        }
      });
  }

  /** One pass, for tests and for the loop; never throws (a failure is logged and retried next pass). */
  async runOnce(): Promise<boolean> {
    try {
      return await this.work();
    } catch (err) {
      this.logger.warn({ err, worker: this.name }, 'payments worker pass failed; retrying next interval');
      return false;
    }
  }

  async stop(): Promise<void> {
    this.started = false;
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    await this.running;
  }
}
