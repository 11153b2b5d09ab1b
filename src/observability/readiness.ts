/**
 * Whether this replica should get traffic: every dependency answers and it is not draining. The
 * same answer feeds /readyz, the gRPC health service and the meterd_ready gauge; it is refreshed
 * on an interval and on every /readyz request.
 */
export type DependencyCheck = () => Promise<unknown>;

export interface ReadinessReport {
  ready: boolean;
  draining: boolean;
  /** 'ok' or what failed, per dependency (redis, postgres). */
  checks: Record<string, string>;
}

/** How long one dependency may take to answer a readiness check. */
export const READINESS_CHECK_TIMEOUT_MS = 1_000;
/** How often readiness is refreshed in the background. */
export const READINESS_INTERVAL_MS = 2_000;

export class Readiness {
  private draining = false;
  private last: boolean | undefined;
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly checks: Record<string, DependencyCheck>,
    private readonly onChange: (ready: boolean) => void,
  ) {}

  async check(): Promise<ReadinessReport> {
    const entries = await Promise.all(Object.entries(this.checks).map(async ([name, check]) => [name, await answer(check)] as const));
    const checks = Object.fromEntries(entries);
    const ready = !this.draining && entries.every(([, result]) => result === 'ok');
    if (ready !== this.last) {
      this.last = ready;
      this.onChange(ready);
    }
    return { ready, draining: this.draining, checks };
  }

  /** From the first shutdown signal on: never ready again. */
  startDraining(): void {
    this.draining = true;
    this.last = false;
    this.onChange(false);
  }

  start(intervalMs = READINESS_INTERVAL_MS): void {
    const tick = () => {
      void this.check().finally(() => {
        if (this.timer !== undefined) this.timer = setTimeout(tick, intervalMs).unref();
      });
    };
    this.timer = setTimeout(tick, 0).unref();
  }

  stop(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
  }
}

async function answer(check: DependencyCheck): Promise<string> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<string>((resolve) => {
    timer = setTimeout(() => resolve(`no answer within ${READINESS_CHECK_TIMEOUT_MS} ms`), READINESS_CHECK_TIMEOUT_MS);
  });
  try {
    return await Promise.race([check().then(() => 'ok', (err: unknown) => (err instanceof Error ? err.message : String(err))), timeout]);
  } finally {
    clearTimeout(timer);
  }
}
