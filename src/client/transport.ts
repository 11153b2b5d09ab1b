import { Metadata, status, type ClientDuplexStream, type ServiceError } from '@grpc/grpc-js';
import type {
  CommitReservationRequest, CommitReservationResponse, ExtendReservationRequest, MeteringServiceClient, OperationRequest,
  OperationResult, ReleaseReservationRequest, ReleaseReservationResponse, ReserveCreditsRequest,
} from '../gen/meterd/v1/metering_service.js';
import type { Reservation } from '../gen/meterd/v1/types.js';
import { errorInfoOf } from '../grpc/status-details.js';
import { MeterdError } from './errors.js';

/**
 * How the gateway client moves the four data-plane operations: one unary RPC each, or one shared
 * StreamOperations stream. One attempt per call; retries live above (retry.ts), so both transports
 * retry the same way. Failures are grpc-js errors or MeterdErrors; callers turn them into MeterdErrors.
 */
export interface DataPlaneTransport {
  reserve(request: ReserveCreditsRequest, deadlineAtMs: number): Promise<Reservation>;
  commit(request: CommitReservationRequest, deadlineAtMs: number): Promise<CommitReservationResponse>;
  release(request: ReleaseReservationRequest, deadlineAtMs: number): Promise<ReleaseReservationResponse>;
  extend(request: ExtendReservationRequest, deadlineAtMs: number): Promise<Reservation>;
  close(): void;
}

/** One unary RPC per operation. */
export function unaryTransport(client: MeteringServiceClient, metadata: () => Metadata): DataPlaneTransport {
  const call = <Req, Res>(
    method: (req: Req, md: Metadata, options: { deadline: number }, cb: (err: ServiceError | null, res: Res) => void) => unknown,
  ) => (request: Req, deadlineAtMs: number) => new Promise<Res>((resolve, reject) => {
    method.call(client, request, metadata(), { deadline: deadlineAtMs }, (err, res) => (err ? reject(err) : resolve(res)));
  });
  return {
    reserve: call(client.reserveCredits),
    commit: call(client.commitReservation),
    release: call(client.releaseReservation),
    extend: call(client.extendReservation),
    close() {},
  };
}

/**
 * Operations a stream may carry unanswered at once. Past it, callers wait for a slot (backpressure):
 * memory stays bounded when meterd slows down, and a broken stream fails at most this many.
 */
export const STREAM_IN_FLIGHT_MAX = 4096;

type Operation = NonNullable<OperationRequest['operation']>;
type OperationAnswer = Exclude<NonNullable<OperationResult['result']>, { $case: 'error' }>;
type OperationCall = ClientDuplexStream<OperationRequest, OperationResult>;

interface PendingOperation {
  call: OperationCall;
  resolve(answer: OperationAnswer): void;
  reject(error: MeterdError): void;
  deadlineTimer: NodeJS.Timeout;
}

/** Codes a broken stream keeps: retrying would meet them again (bad token, a server without the RPC). */
const STREAM_FAILURES_KEPT = new Set<status>([status.UNAUTHENTICATED, status.PERMISSION_DENIED, status.UNIMPLEMENTED]);

/**
 * The high-throughput path: every operation of this client over one long-lived StreamOperations
 * stream, each tagged with an op_id and answered by it (in any order). The stream opens on first use
 * and again after it breaks; operations in flight on a broken stream fail with UNAVAILABLE, which
 * the retry layer resends on the next stream with the same request and reservation ids (safe: both
 * are idempotent on the server).
 */
export class OperationStream {
  private call: OperationCall | null = null;
  private nextOpId = 1n;
  private readonly pending = new Map<bigint, PendingOperation>();
  private readonly slotWaiters: Array<() => void> = [];
  /** Set while the HTTP/2 write buffer is full: new writes wait for 'drain'. */
  private drain: { promise: Promise<void>; resolve(): void } | null = null;
  private closed = false;
  private readonly brokenCalls = new WeakSet<OperationCall>();

  constructor(
    private readonly client: MeteringServiceClient,
    private readonly metadata: () => Metadata,
    private readonly inFlightMax = STREAM_IN_FLIGHT_MAX,
  ) {}

  /** Operations sent and not yet answered (for tests and metrics). */
  get inFlight(): number {
    return this.pending.size;
  }

  async send(operation: Operation, deadlineAtMs: number): Promise<OperationAnswer> {
    while (this.pending.size >= this.inFlightMax && !this.closed) {
      await new Promise<void>((resolve) => this.slotWaiters.push(resolve));
    }
    while (this.drain && !this.closed) await this.drain.promise;
    if (this.closed) throw new MeterdError(status.CANCELLED, 'CANCELLED', 'the meterd client is closed');
    const call = this.openCall();
    const opId = this.nextOpId++;
    return new Promise<OperationAnswer>((resolve, reject) => {
      const deadlineTimer = setTimeout(() => {
        // A late answer finds no pending entry and is dropped; the retry layer does not retry this.
        if (this.forget(opId)) reject(new MeterdError(status.DEADLINE_EXCEEDED, 'DEADLINE_EXCEEDED', 'meterd did not answer the operation in time'));
      }, Math.max(0, deadlineAtMs - Date.now()));
      this.pending.set(opId, { call, resolve, reject, deadlineTimer });
      if (!call.write({ opId, operation }) && !this.drain) {
        let resolveDrain!: () => void;
        const promise = new Promise<void>((r) => { resolveDrain = r; });
        this.drain = { promise, resolve: resolveDrain };
        call.once('drain', () => this.endDrainWait());
      }
    });
  }

  close(): void {
    this.closed = true;
    const call = this.call;
    this.call = null;
    if (call) this.fail(call, new MeterdError(status.CANCELLED, 'CANCELLED', 'the meterd client is closed'));
    call?.cancel();
    this.endDrainWait();
    for (const wake of this.slotWaiters.splice(0)) wake();
  }

  private openCall(): OperationCall {
    if (this.call) return this.call;
    const call = this.client.streamOperations(this.metadata());
    this.call = call;
    call.on('data', (result: OperationResult) => this.answer(result));
    call.on('error', (err: ServiceError) => this.broken(call, err));
    // The server ended the stream: whatever it did not answer will not be answered on this one.
    call.on('end', () => this.broken(call, null));
    return call;
  }

  private answer(result: OperationResult): void {
    const entry = this.pending.get(result.opId);
    if (!entry || !result.result) return;
    this.forget(result.opId);
    if (result.result.$case === 'error') entry.reject(MeterdError.fromStatus(result.result.value));
    else entry.resolve(result.result);
  }

  private broken(call: OperationCall, err: ServiceError | null): void {
    if (this.brokenCalls.has(call)) return; // 'error' and 'end' may both come
    this.brokenCalls.add(call);
    if (this.call === call) this.call = null;
    if (err && (errorInfoOf(err) || STREAM_FAILURES_KEPT.has(err.code))) {
      this.fail(call, MeterdError.fromServiceError(err));
    } else {
      const why = err ? `${status[err.code] ?? err.code}: ${err.details}` : 'the server ended it';
      this.fail(call, new MeterdError(status.UNAVAILABLE, 'UNAVAILABLE', `the meterd operation stream broke (${why})`, {}, undefined, { cause: err }));
    }
    call.end();
    this.endDrainWait();
  }

  /** Fails every operation still waiting on `call`. */
  private fail(call: OperationCall, error: MeterdError): void {
    for (const [opId, entry] of this.pending) {
      if (entry.call !== call) continue;
      this.forget(opId);
      entry.reject(error);
    }
  }

  private forget(opId: bigint): boolean {
    const entry = this.pending.get(opId);
    if (!entry) return false;
    clearTimeout(entry.deadlineTimer);
    this.pending.delete(opId);
    this.slotWaiters.shift()?.();
    return true;
  }

  private endDrainWait(): void {
    const drain = this.drain;
    this.drain = null;
    drain?.resolve();
  }
}

/** The four operations over one OperationStream. */
export function streamTransport(stream: OperationStream): DataPlaneTransport {
  type ValueOf = { [C in OperationAnswer['$case']]: Extract<OperationAnswer, { $case: C }>['value'] };
  const expect = async <C extends OperationAnswer['$case']>(answer: Promise<OperationAnswer>, expected: C): Promise<ValueOf[C]> => {
    const result = await answer;
    if (result.$case !== expected) {
      throw new MeterdError(status.INTERNAL, 'INTERNAL', `meterd answered a ${expected} operation with ${result.$case}`);
    }
    return result.value as ValueOf[C];
  };
  return {
    reserve: (value, deadlineAtMs) => expect(stream.send({ $case: 'reserve', value }, deadlineAtMs), 'reservation'),
    commit: (value, deadlineAtMs) => expect(stream.send({ $case: 'commit', value }, deadlineAtMs), 'commit'),
    release: (value, deadlineAtMs) => expect(stream.send({ $case: 'release', value }, deadlineAtMs), 'release'),
    extend: (value, deadlineAtMs) => expect(stream.send({ $case: 'extend', value }, deadlineAtMs), 'reservation'),
    close: () => stream.close(),
  };
}
