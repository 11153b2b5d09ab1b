/**
 * Whether this replica should get traffic: its required dependencies answer (Redis: every reserve
 * and commit needs it), nothing raised an alarm (the ledger backlog past its bound), and it is not
 * draining. Optional dependencies (Postgres: reserves and commits go on while it is down, the flush
 * waits) are reported and make the answer `degraded`, not unready — taking every replica out of
 * service because the ledger is slow would refuse every model call for nothing. The same answer
 * feeds /readyz, the gRPC health service and the meterd_ready gauge; it is refreshed on an interval
 * and on every /readyz request.
 */
export type DependencyCheck = () => Promise<unknown>;

export interface ReadinessReport {
  ready: boolean;
  /** An optional dependency does not answer. */
  degraded: boolean;
  draining: boolean;
  /** Raised alarms that make the replica unready (e.g. ledger_backlog). */
  alarms: string[];
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
    private readonly dependencies: { required: Record<string, DependencyCheck>; optional: Record<string, DependencyCheck> },
    private readonly onChange: (ready: boolean) => void,
    private readonly alarms: () => string[] = () => [],
  ) {}

  async check(): Promise<ReadinessReport> {
    const run = (group: Record<string, DependencyCheck>) =>
      Promise.all(Object.entries(group).map(async ([name, check]) => [name, await answer(check)] as const));
    const [required, optional] = await Promise.all([run(this.dependencies.required), run(this.dependencies.optional)]);
    const alarms = this.alarms();
    const ready = !this.draining && alarms.length === 0 && required.every(([, result]) => result === 'ok');
    if (ready !== this.last) {
      this.last = ready;
      this.onChange(ready);
    }
    return {
      ready, degraded: optional.some(([, result]) => result !== 'ok'), draining: this.draining, alarms,
      checks: Object.fromEntries([...required, ...optional]),
    };
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
