import { status } from '@grpc/grpc-js';
import { MeterdError } from './errors.js';

export interface RetryPolicy {
  /** Attempts in total, the first included (1 = never retry). */
  attemptsMax: number;
  /** The first retry waits up to this long; each later one up to twice the previous. */
  backoffBaseMs: number;
  /** No single wait is longer than this. */
  backoffMaxMs: number;
}

/** Enough to ride out a meterd restart or a Redis failover blip, short of a model call's patience. */
export const RETRY_POLICY_DEFAULT: RetryPolicy = { attemptsMax: 4, backoffBaseMs: 50, backoffMaxMs: 1_000 };

/**
 * Runs `attempt` until it succeeds, fails with anything but UNAVAILABLE, runs out of attempts, or
 * the next wait would pass `deadlineAtMs`. The caller builds the request (and its request_id) once,
 * before the first attempt, so every retry sends the same ids: a reserve that ran but whose answer
 * was lost is answered from the idempotency record, and a commit or release is settled once per
 * reservation id. DEADLINE_EXCEEDED is not retried: the deadline is the caller's budget for the
 * whole call, and it is spent (the caller may still retry itself with MeterdError.requestId).
 */
export async function withRetries<T>(
  attempt: (attemptDeadlineAtMs: number) => Promise<T>,
  policy: RetryPolicy,
  deadlineAtMs: number,
  describe: (error: unknown) => MeterdError,
): Promise<T> {
  for (let attemptNumber = 1; ; attemptNumber++) {
    try {
      return await attempt(deadlineAtMs);
    } catch (err) {
      const error = describe(err);
      if (error.code !== status.UNAVAILABLE || attemptNumber >= policy.attemptsMax) throw error;
      const waitMs = backoffMs(policy, attemptNumber);
      if (Date.now() + waitMs >= deadlineAtMs) throw error;
      await new Promise((resolve) => setTimeout(resolve, waitMs));
    }
  }
}

/** Exponential backoff with full jitter, so clients cut off together do not come back together. */
function backoffMs(policy: RetryPolicy, retryNumber: number): number {
  const ceiling = Math.min(policy.backoffMaxMs, policy.backoffBaseMs * 2 ** (retryNumber - 1));
  return Math.random() * ceiling;
}
