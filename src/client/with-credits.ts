import type { CommitReservationResponse } from '../gen/meterd/v1/metering_service.js';
import type { Reservation } from '../gen/meterd/v1/types.js';
import { REASON_LENGTH_MAX, TTL_SECONDS_DEFAULT } from '../config/limits.js';
import { MeterdError } from './errors.js';
import type { MeterdClient } from './meterd-client.js';

/**
 * Extend a hold once this fraction of its TTL has passed: a failed extension (meterd briefly down)
 * still leaves half the TTL for the next one before the hold would expire.
 */
export const EXTEND_AT_TTL_FRACTION = 0.5;

/** Extending more often than this is a mistake (a hot loop against meterd), refused up front. */
export const EXTEND_INTERVAL_MS_MIN = 1_000;

/** The real cost of a call: usage units (priced by the feature) or credits. Neither: charge the hold. */
export interface Cost {
  units?: number | bigint | undefined;
  credits?: number | bigint | undefined;
}

/** Where the automatic extension's timer comes from; tests pass one they fire by hand. */
export interface ExtensionTimers {
  /** Calls `tick` every `intervalMs` until the returned function is called. */
  every(intervalMs: number, tick: () => Promise<void>): () => void;
}

export const realTimers: ExtensionTimers = {
  every(intervalMs, tick) {
    const handle = setInterval(() => void tick(), intervalMs);
    handle.unref(); // an extension timer alone must not keep the process alive
    return () => clearInterval(handle);
  },
};

export interface WithCreditsOptions<T> {
  account: string;
  feature: string;
  /** Usage estimate for features priced per units (the hold). */
  units?: number | bigint | undefined;
  /** An explicit hold in credits. */
  credits?: number | bigint | undefined;
  /** The seat, for attribution. */
  user?: string | undefined;
  labels?: Record<string, string> | undefined;
  /** The hold's time to live (default TTL_SECONDS_DEFAULT); renewed while the callback runs. */
  ttlSeconds?: number | undefined;
  /** Idempotency key of the reserve (default: generated). Pass the gateway's request id to make a retried request hold once. */
  requestId?: string | undefined;
  /** Aborting releases the hold and rejects with the signal's reason. */
  signal?: AbortSignal | undefined;
  /**
   * The real cost from the callback's result, e.g. `(r) => ({ units: r.usage.total_tokens })`.
   * Default: the result's own `units`/`credits`, else what `hold.addUsage` recorded, else the hold.
   */
  cost?: ((result: T) => Cost | undefined) | undefined;
  /** Extension interval (default EXTEND_AT_TTL_FRACTION of the TTL). */
  extendEveryMs?: number | undefined;
  timers?: ExtensionTimers | undefined;
}

/** What the callback gets: the hold, and ways to keep it alive and count a stream's usage. */
export interface Hold {
  readonly reservationId: string;
  /** Credits held now (grows with `extend(additionalCredits)`). */
  readonly heldCredits: bigint;
  /** When the hold expires unless extended (updated by each extension). */
  readonly expiresAt: Date | undefined;
  /** Aborted when the caller aborts or the hold is lost (e.g. it expired): stop the model call. */
  readonly signal: AbortSignal;
  /** Extensions done so far. */
  readonly extensions: number;
  /** Changes the automatic extension interval (e.g. shorter for a long stream). */
  extendEvery(intervalMs: number): void;
  /** Extends now (TTL renewed); `additionalCredits` grows the hold when a stream outgrows it. */
  extend(additionalCredits?: number | bigint): Promise<Reservation>;
  /** Adds a streamed chunk's usage; committed at the end when the result states no cost. */
  addUsage(cost: Cost): void;
  readonly usage: { units: bigint; credits: bigint };
}

export interface CreditsOutcome<T> {
  result: T;
  /** charged, overage, shortfall and released credits, and the balance after. */
  charge: CommitReservationResponse;
  reservation: Reservation;
}

/**
 * Reserves, runs `call` (the model call), and commits the real cost it returns; releases on any
 * throw or abort and rethrows. While `call` runs, the hold is extended before it can expire.
 *
 * If meterd is unreachable at the end, the commit is retried (same reservation id, so it charges at
 * most once); if meterd stays down past the retries, this rejects with UNAVAILABLE and the hold
 * expires by itself — the call is never charged (promise 1), rather than possibly charged twice.
 */
export async function withCredits<T>(
  client: MeterdClient, options: WithCreditsOptions<T>, call: (hold: Hold) => Promise<T>,
): Promise<CreditsOutcome<T>> {
  options.signal?.throwIfAborted();
  const ttlSeconds = options.ttlSeconds ?? TTL_SECONDS_DEFAULT;
  const extendIntervalMs = atLeastExtendIntervalMin(options.extendEveryMs ?? ttlSeconds * 1000 * EXTEND_AT_TTL_FRACTION);
  const reservation = await client.reserve({
    accountId: options.account, feature: options.feature, units: options.units, credits: options.credits,
    userId: options.user ?? '', labels: options.labels ?? {}, ttlSeconds, requestId: options.requestId ?? '',
  });
  const reservationId = reservation.reservationId;
  const holdAbort = new AbortController();
  const onCallerAbort = () => holdAbort.abort(options.signal?.reason);
  options.signal?.addEventListener('abort', onCallerAbort, { once: true });
  if (options.signal?.aborted) holdAbort.abort(options.signal.reason); // aborted while reserving

  let expiresAt = toDate(reservation);
  let heldCredits = reservation.heldCredits;
  let extensions = 0;
  const usage = { units: 0n, credits: 0n };
  let usageRecorded = false;
  const extend = async (additionalCredits?: number | bigint): Promise<Reservation> => {
    const extended = await client.extend({ reservationId, ttlSeconds, additionalCredits: additionalCredits ?? 0 });
    expiresAt = toDate(extended) ?? expiresAt;
    heldCredits = extended.heldCredits;
    extensions++;
    return extended;
  };

  const timers = options.timers ?? realTimers;
  let extending = false;
  const tick = async (): Promise<void> => {
    if (extending || holdAbort.signal.aborted) return;
    extending = true;
    try {
      await extend();
    } catch (err) {
      const error = MeterdError.from(err);
      // Still unreachable after the retries: the hold has the rest of its TTL; the next tick tries again.
      // Anything else (expired, released) means the hold is gone: stop the call rather than run it free.
      if (!error.retryable) holdAbort.abort(error);
    } finally {
      extending = false;
    }
  };
  let stopExtending = timers.every(extendIntervalMs, tick);

  const hold: Hold = {
    reservationId,
    get heldCredits() { return heldCredits; },
    get expiresAt() { return expiresAt; },
    signal: holdAbort.signal,
    get extensions() { return extensions; },
    extendEvery(intervalMs) {
      atLeastExtendIntervalMin(intervalMs);
      stopExtending();
      stopExtending = timers.every(intervalMs, tick);
    },
    extend,
    addUsage(cost) {
      usage.units += BigInt(cost.units ?? 0);
      usage.credits += BigInt(cost.credits ?? 0);
      usageRecorded = true;
    },
    get usage() { return { ...usage }; },
  };

  let result: T;
  try {
    result = await untilAborted(Promise.resolve().then(() => call(hold)), holdAbort.signal);
  } catch (err) {
    await releaseQuietly(client, reservationId, releaseReason(err, holdAbort.signal));
    throw err;
  } finally {
    stopExtending();
    options.signal?.removeEventListener('abort', onCallerAbort);
  }

  const cost = options.cost ? options.cost(result) : costInResult(result) ?? (usageRecorded ? recordedCost(usage) : undefined);
  const charge = await client.commit({ reservationId, units: cost?.units, credits: cost?.credits });
  return { result, charge, reservation };
}

function atLeastExtendIntervalMin(intervalMs: number): number {
  if (!(intervalMs >= EXTEND_INTERVAL_MS_MIN)) throw new RangeError(`extend interval ${intervalMs} ms: at least ${EXTEND_INTERVAL_MS_MIN} ms`);
  return intervalMs;
}

/** Rejects with the signal's reason as soon as it aborts; the call's own later outcome is ignored. */
function untilAborted<T>(work: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) {
    work.catch(() => {});
    return Promise.reject(signal.reason);
  }
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => {
      work.catch(() => {}); // the call may still fail after we gave up on it
      reject(signal.reason);
    };
    signal.addEventListener('abort', onAbort, { once: true });
    work.then(resolve, reject).finally(() => signal.removeEventListener('abort', onAbort));
  });
}

/**
 * Releases and ignores a failure: the caller is already handling the error that made us release,
 * and a hold we could not release expires by itself without charging anything.
 */
async function releaseQuietly(client: MeterdClient, reservationId: string, reason: string): Promise<void> {
  try {
    await client.release({ reservationId, reason });
  } catch {
    // expiry settles it (nothing charged)
  }
}

function releaseReason(err: unknown, signal: AbortSignal): string {
  const message = err instanceof Error ? `${err.name}: ${err.message}` : String(err);
  const reason = signal.aborted && signal.reason === err ? `aborted: ${message}` : `failed: ${message}`;
  return reason.slice(0, REASON_LENGTH_MAX);
}

function costInResult(result: unknown): Cost | undefined {
  if (typeof result !== 'object' || result === null) return undefined;
  const { units, credits } = result as Record<string, unknown>;
  const isAmount = (v: unknown): v is number | bigint => typeof v === 'bigint' || (typeof v === 'number' && Number.isSafeInteger(v) && v >= 0);
  if (!isAmount(units) && !isAmount(credits)) return undefined;
  return { units: isAmount(units) ? units : undefined, credits: isAmount(credits) ? credits : undefined };
}

function recordedCost(usage: { units: bigint; credits: bigint }): Cost {
  // Credits override units on the server, so send credits only when the stream counted credits.
  return usage.credits > 0n ? { credits: usage.credits } : { units: usage.units };
}

function toDate(reservation: Reservation): Date | undefined {
  return reservation.expiresAt;
}
