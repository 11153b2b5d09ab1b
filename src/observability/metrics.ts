import { status } from '@grpc/grpc-js';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import { DomainError, ErrorReason } from '../domain/errors.js';
import type { CreditStore } from '../domain/ports.js';
import type { CallObserver } from '../grpc/wrap-unary.js';
import type { PaymentsObserver } from '../payments/observer.js';
import type { FlushObserver } from '../postgres/flusher.js';
import type { ReconcileOutcome } from '../app.js';
import type { ScriptObserver } from '../redis/redis-credit-store.js';

/**
 * Every metric meterd exports, in one registry (not prom-client's global one, so tests and several
 * instances in one process stay apart). Base units, `_total` on counters, bounded labels only: an
 * account id appears only in the opt-in balance gauge (METRICS_ACCOUNT_IDS).
 */

/** Buckets for a sub-millisecond hot path: 50 µs … 1 s. */
export const LATENCY_BUCKETS_SECONDS = [0.00005, 0.0001, 0.0002, 0.0003, 0.0005, 0.00075, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1];
/** Commit-to-Postgres lag: flush interval (100 ms) up to minutes of Postgres outage. */
export const FLUSH_LAG_BUCKETS_SECONDS = [0.01, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 30, 60, 300, 1800];
export const FLUSH_BATCH_BUCKETS_EVENTS = [1, 5, 10, 50, 100, 250, 500, 1000, 2500, 5000, 10_000];

/** gRPC code number → name, as go-grpc-prometheus labels it (OK, NOT_FOUND, ...). */
const CODE_NAMES = new Map<number, string>(Object.entries(status).filter(([, v]) => typeof v === 'number').map(([k, v]) => [v as number, k]));

/** Error kinds counted in meterd_errors_total (one fixed set: labels stay bounded). */
export type ErrorKind = 'redis_unavailable' | 'postgres_unavailable' | 'internal' | 'auth_missing' | 'auth_invalid' | 'auth_forbidden'
  | 'flush_failed' | 'reconcile_failed' | 'sweep_failed' | 'ledger_conflict' | 'alert_delivery_gave_up'
  | 'stripe_webhook_failed' | 'credit_grant_failed' | 'overage_report_failed';

/** Refusals of a call that count as errors of meterd (the rest are answers: denials, bad input). */
const ERROR_KIND_BY_REASON: Partial<Record<string, ErrorKind>> = {
  [ErrorReason.BACKEND_UNAVAILABLE]: 'redis_unavailable',
  [ErrorReason.INTERNAL]: 'internal',
  [ErrorReason.TOKEN_MISSING]: 'auth_missing',
  [ErrorReason.TOKEN_INVALID]: 'auth_invalid',
  [ErrorReason.PERMISSION_DENIED]: 'auth_forbidden',
};

/** A refusal by the engine (not an outage or a bug). */
function isDenial(err: unknown): err is DomainError {
  return err instanceof DomainError && ERROR_KIND_BY_REASON[err.reason] === undefined;
}

export class MeterdMetrics {
  readonly registry = new Registry();

  private readonly rpcStarted = new Counter({
    name: 'grpc_server_started_total', help: 'RPCs started on the server.',
    labelNames: ['grpc_type', 'grpc_service', 'grpc_method'], registers: [this.registry],
  });
  private readonly rpcHandled = new Counter({
    name: 'grpc_server_handled_total', help: 'RPCs completed on the server, by status code.',
    labelNames: ['grpc_type', 'grpc_service', 'grpc_method', 'grpc_code'], registers: [this.registry],
  });
  private readonly rpcSeconds = new Histogram({
    name: 'grpc_server_handling_seconds', help: 'Time meterd spent handling an RPC (from the request decoded to the response handed to grpc-js).',
    labelNames: ['grpc_type', 'grpc_service', 'grpc_method'], buckets: LATENCY_BUCKETS_SECONDS, registers: [this.registry],
  });
  private readonly reservations = new Counter({
    name: 'meterd_reservations_total', help: 'ReserveCredits outcomes: held, refused, shadow_refused (shadow mode), replayed (a repeated request_id).',
    labelNames: ['result'], registers: [this.registry],
  });
  private readonly settlements = new Counter({
    name: 'meterd_settlements_total', help: 'Holds settled: commit, release, expire (by the sweeper).',
    labelNames: ['kind'], registers: [this.registry],
  });
  private readonly credits = new Counter({
    name: 'meterd_credits_total', help: 'Credits moved: held, charged, released, expired, overage (charged beyond the plan), shortfall (owed but not there).',
    labelNames: ['movement'], registers: [this.registry],
  });
  private readonly denials = new Counter({
    name: 'meterd_denials_total', help: 'Reserves and extends refused, by ErrorInfo reason.',
    labelNames: ['reason'], registers: [this.registry],
  });
  private readonly replays = new Counter({
    name: 'meterd_idempotent_replays_total', help: 'Requests answered from an earlier identical request (nothing moved again).',
    labelNames: ['method'], registers: [this.registry],
  });
  private readonly shadowRefusals = new Counter({
    name: 'meterd_shadow_refusals_total', help: 'Shadow mode: reserves that would have been refused, by reason (the call went on).',
    labelNames: ['reason'], registers: [this.registry],
  });
  private readonly scriptSeconds = new Histogram({
    name: 'meterd_redis_script_duration_seconds', help: 'Round trip of one Redis Function call, by script and outcome.',
    labelNames: ['script', 'outcome'], buckets: LATENCY_BUCKETS_SECONDS, registers: [this.registry],
  });
  private readonly flushEvents = new Counter({ name: 'meterd_flush_events_total', help: 'Ledger events written to Postgres by this replica.', registers: [this.registry] });
  private readonly flushBatch = new Histogram({
    name: 'meterd_flush_batch_events', help: 'Events per flush transaction.', buckets: FLUSH_BATCH_BUCKETS_EVENTS, registers: [this.registry],
  });
  private readonly flushLag = new Histogram({
    name: 'meterd_flush_lag_seconds', help: 'From a ledger event in Redis to its commit in Postgres.', buckets: FLUSH_LAG_BUCKETS_SECONDS, registers: [this.registry],
  });
  private readonly flushErrors = new Counter({ name: 'meterd_flush_errors_total', help: 'Flush transactions that failed (the events stay pending in Redis).', registers: [this.registry] });
  private readonly flushLastSuccess = new Gauge({
    name: 'meterd_flush_last_success_timestamp_seconds', help: 'When this replica last flushed without error (Unix seconds).', registers: [this.registry],
  });
  private readonly backlogEvents = new Gauge({ name: 'meterd_ledger_backlog_events', help: 'Ledger events waiting in the Redis streams (all partitions).', registers: [this.registry] });
  private readonly backlogAlarm = new Gauge({
    name: 'meterd_ledger_backlog_alarm', help: '1 while the backlog is past FLUSH_BACKLOG_ALARM_EVENTS (Postgres down or too slow).', registers: [this.registry],
  });
  private readonly ledgerConflicts = new Counter({
    name: 'meterd_ledger_conflicts_total',
    help: 'Events of a Redis that lost data, kept in ledger_conflicts: payload_differs (an id stored with another payload), diverged (another Redis timeline).',
    labelNames: ['reason'], registers: [this.registry],
  });
  private readonly reconcileRuns = new Counter({
    name: 'meterd_reconcile_runs_total', help: 'Reconciliation runs: clean, drift, failed.', labelNames: ['result'], registers: [this.registry],
  });
  private readonly reconcileDrifts = new Gauge({ name: 'meterd_reconcile_drifts', help: 'Drifts found by the last reconciliation (0 is normal).', registers: [this.registry] });
  private readonly reconcileRepairs = new Counter({
    name: 'meterd_reconcile_repairs_total', help: 'Pools rebuilt from the ledger by reconciliation, by outcome.', labelNames: ['outcome'], registers: [this.registry],
  });
  private readonly reconcileLastRun = new Gauge({
    name: 'meterd_reconcile_last_run_timestamp_seconds', help: 'When reconciliation last completed (Unix seconds).', registers: [this.registry],
  });
  private readonly errors = new Counter({ name: 'meterd_errors_total', help: 'Errors by kind.', labelNames: ['kind'], registers: [this.registry] });
  private readonly alertDeliveries = new Counter({
    name: 'meterd_alert_deliveries_total', help: 'Alert webhook delivery attempts by outcome: delivered, retrying, gave_up.',
    labelNames: ['outcome'], registers: [this.registry],
  });
  private readonly stripeWebhooks = new Counter({
    name: 'meterd_stripe_webhooks_total', help: 'Stripe webhook deliveries by result: processed, duplicate, ignored, invalid_signature, too_large, failed.',
    labelNames: ['result'], registers: [this.registry],
  });
  private readonly creditGrants = new Counter({
    name: 'meterd_credit_grants_total', help: 'Paid credits applied to Redis from the grant outbox, by source (checkout, refill) and outcome.',
    labelNames: ['source', 'outcome'], registers: [this.registry],
  });
  private readonly refills = new Counter({
    name: 'meterd_refills_total', help: 'Auto-refill steps by outcome (charged, succeeded, retry_scheduled, failed, skipped_*).',
    labelNames: ['outcome'], registers: [this.registry],
  });
  private readonly overageReports = new Counter({
    name: 'meterd_overage_reports_total', help: 'Overage meter events sent to Stripe, by outcome.', labelNames: ['outcome'], registers: [this.registry],
  });
  private readonly overageReportedCredits = new Counter({
    name: 'meterd_overage_reported_credits_total', help: 'Overage credits Stripe acknowledged (billed separately).', registers: [this.registry],
  });
  private readonly ready = new Gauge({ name: 'meterd_ready', help: '1 when Redis and Postgres answer and meterd is not draining.', registers: [this.registry] });

  constructor(build: { version: string }) {
    collectDefaultMetrics({ register: this.registry });
    new Gauge({
      name: 'meterd_build_info', help: 'Build of this meterd (always 1).', labelNames: ['version', 'node_version'], registers: [this.registry],
    }).set({ version: build.version, node_version: process.version }, 1);
    // Every label value known up front is exported at 0, so rates and alerts work before the first event.
    for (const result of ['held', 'refused', 'shadow_refused', 'replayed']) this.reservations.inc({ result }, 0);
    for (const kind of ['commit', 'release', 'expire']) this.settlements.inc({ kind }, 0);
    for (const movement of ['held', 'charged', 'released', 'expired', 'overage', 'shortfall']) this.credits.inc({ movement }, 0);
    this.denials.inc({ reason: 'INSUFFICIENT_CREDITS' }, 0);
    for (const result of ['clean', 'drift', 'failed']) this.reconcileRuns.inc({ result }, 0);
    for (const reason of ['payload_differs', 'diverged']) this.ledgerConflicts.inc({ reason }, 0);
  }

  /** For wrapUnary: counts RPCs by service, method and code, and times them. */
  readonly callStarted = (service: string, method: string): void => {
    this.rpcStarted.inc({ grpc_type: 'unary', grpc_service: service, grpc_method: method });
  };

  readonly callFinished: CallObserver = (service, method, code, seconds, reason) => {
    const labels = { grpc_type: 'unary', grpc_service: service, grpc_method: method };
    this.rpcHandled.inc({ ...labels, grpc_code: CODE_NAMES.get(code) ?? String(code) });
    this.rpcSeconds.observe(labels, seconds);
    const kind = reason === undefined ? undefined : ERROR_KIND_BY_REASON[reason];
    if (kind) this.errors.inc({ kind });
  };

  readonly scriptFinished: ScriptObserver = (script, seconds, outcome) => {
    this.scriptSeconds.observe({ script, outcome }, seconds);
  };

  readonly flush: FlushObserver = {
    flushed: (events, nowMs) => {
      this.flushEvents.inc(events.length);
      this.flushBatch.observe(events.length);
      for (const event of events) this.flushLag.observe(Math.max(0, nowMs - event.occurredAtMs) / 1000);
      this.flushLastSuccess.set(nowMs / 1000);
    },
    failed: () => {
      this.flushErrors.inc();
      this.errors.inc({ kind: 'flush_failed' });
    },
    idle: (nowMs) => this.flushLastSuccess.set(nowMs / 1000),
    conflicts: (reason, count) => {
      this.ledgerConflicts.inc({ reason }, count);
      this.errors.inc({ kind: 'ledger_conflict' }, count);
    },
    backlog: (events, alarm) => {
      this.backlogEvents.set(events);
      this.backlogAlarm.set(alarm ? 1 : 0);
    },
  };

  /** The expiry sweeper's callback. */
  readonly expired = (count: number, credits: bigint): void => {
    this.settlements.inc({ kind: 'expire' }, count);
    this.credits.inc({ movement: 'expired' }, Number(credits));
  };

  reconciled(outcome: ReconcileOutcome | 'failed', nowMs: number): void {
    if (outcome === 'failed') {
      this.reconcileRuns.inc({ result: 'failed' });
      this.errors.inc({ kind: 'reconcile_failed' });
      return;
    }
    this.reconcileRuns.inc({ result: outcome.report.drifts.length === 0 ? 'clean' : 'drift' });
    this.reconcileDrifts.set(outcome.report.drifts.length);
    for (const repair of outcome.repairs) this.reconcileRepairs.inc({ outcome: repair.outcome });
    this.reconcileLastRun.set(nowMs / 1000);
  }

  readonly payments: PaymentsObserver = {
    webhook: (result) => {
      this.stripeWebhooks.inc({ result });
      if (result === 'failed') this.errors.inc({ kind: 'stripe_webhook_failed' });
    },
    grant: (source, outcome) => {
      this.creditGrants.inc({ source, outcome });
      if (outcome === 'failed') this.errors.inc({ kind: 'credit_grant_failed' });
    },
    refill: (outcome) => this.refills.inc({ outcome }),
    overage: (outcome, credits) => {
      this.overageReports.inc({ outcome });
      if (outcome === 'reported') this.overageReportedCredits.inc(Number(credits));
      else this.errors.inc({ kind: 'overage_report_failed' });
    },
  };

  readonly alertDelivered = (outcome: string): void => {
    this.alertDeliveries.inc({ outcome });
    if (outcome === 'gave_up') this.errors.inc({ kind: 'alert_delivery_gave_up' });
  };

  error(kind: ErrorKind): void {
    this.errors.inc({ kind });
  }

  setReady(ready: boolean): void {
    this.ready.set(ready ? 1 : 0);
  }

  /**
   * The credit store as the gRPC handlers see it: every outcome counted on its way out. Counting
   * here, not in handlers, keeps handlers to mapping and counts exactly what the engine did.
   */
  instrument(store: CreditStore): CreditStore {
    const refused = (err: unknown): never => {
      if (isDenial(err)) this.denials.inc({ reason: err.reason });
      throw err;
    };
    return {
      getBalance: (accountId) => store.getBalance(accountId),
      upsertAccount: (command) => store.upsertAccount(command),
      getAccount: (accountId) => store.getAccount(accountId),
      changePlan: (command) => store.changePlan(command),
      grant: (command) => store.grant(command),
      adjust: (command) => store.adjust(command),
      refund: (command) => store.refund(command),
      getUsage: (accountId) => store.getUsage(accountId),
      sweepExpired: (partition, max) => store.sweepExpired(partition, max),
      reserve: async (command) => {
        const result = await store.reserve(command).catch((err: unknown) => {
          if (isDenial(err)) this.reservations.inc({ result: 'refused' });
          return refused(err);
        });
        if (result.replayed) {
          this.reservations.inc({ result: 'replayed' });
          this.replays.inc({ method: 'ReserveCredits' });
        } else if (result.shadowRefusal) {
          this.reservations.inc({ result: 'shadow_refused' });
          this.shadowRefusals.inc({ reason: result.shadowRefusal.reason });
        } else {
          this.reservations.inc({ result: 'held' });
          this.credits.inc({ movement: 'held' }, Number(result.heldCredits));
        }
        return result;
      },
      extend: (command) => store.extend(command).catch(refused),
      commit: async (command) => {
        const result = await store.commit(command);
        if (result.replayed) {
          this.replays.inc({ method: 'CommitReservation' });
          return result;
        }
        this.settlements.inc({ kind: 'commit' });
        this.credits.inc({ movement: 'charged' }, Number(result.chargedCredits));
        this.credits.inc({ movement: 'released' }, Number(result.releasedCredits));
        this.credits.inc({ movement: 'overage' }, Number(result.overageCredits));
        this.credits.inc({ movement: 'shortfall' }, Number(result.shortfallCredits));
        return result;
      },
      release: async (command) => {
        const result = await store.release(command);
        if (result.replayed) {
          this.replays.inc({ method: 'ReleaseReservation' });
          return result;
        }
        this.settlements.inc({ kind: 'release' });
        this.credits.inc({ movement: 'released' }, Number(result.releasedCredits));
        return result;
      },
    };
  }

  /**
   * The opt-in per-account collector: the balances of a configured, bounded list of accounts,
   * read when Prometheus scrapes (an account that does not exist is skipped).
   */
  watchBalances(accountIds: string[], store: CreditStore): void {
    if (accountIds.length === 0) return;
    new Gauge({
      name: 'meterd_account_available_credits', help: 'Available credits of each account listed in METRICS_ACCOUNT_IDS.',
      labelNames: ['account_id'], registers: [this.registry],
      async collect() {
        this.reset();
        await Promise.all(accountIds.map(async (accountId) => {
          const balance = await store.getBalance(accountId).catch(() => undefined);
          if (balance) this.set({ account_id: accountId }, Number(balance.available));
        }));
      },
    });
  }
}
