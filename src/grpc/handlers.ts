import type { handleUnaryCall, UntypedServiceImplementation } from '@grpc/grpc-js';
import type { ProductConfig } from '../config/product-config.js';
import type { Clock } from '../domain/clock.js';
import {
  checkId, ledgerPageToken, parseAdjust, parseListLedger, parseUsageQuery, parseChangePlan, parseCommit, parseExtend, parseGrant, parseRefund, parseRelease, parseReserve,
  parseUpsertAccount,
} from '../domain/commands.js';
import type { CreditStore, LedgerReader } from '../domain/ports.js';
import { DomainError, ErrorReason } from '../domain/errors.js';
import type { AdminServiceServer } from '../gen/meterd/v1/admin_service.js';
import type { MeteringServiceServer } from '../gen/meterd/v1/metering_service.js';
import type { Logger } from '../observability/logger.js';
import { grantKindName, toAccount, toBalance, toLedgerEntry, toReservation, toUsage } from './mappers.js';
import type { AlertFeed } from '../alerts/alert-feed.js';
import type { Payments } from '../payments/payments.js';
import { watchAlertsHandler } from './alert-handlers.js';
import { DATA_PLANE_SERVICE, type Authorizer } from './auth.js';
import { streamOperationsHandler } from './stream-operations.js';
import { billingHandlers } from './billing-handlers.js';
import { wrapUnary, type CallObserver } from './wrap-unary.js';

export interface HandlerDependencies {
  store: CreditStore;
  /** The Postgres ledger's read side; absent when meterd runs without the ledger. */
  ledger?: LedgerReader;
  product: ProductConfig;
  clock: Clock;
  logger: Logger;
  observe: CallObserver;
  started?: (service: string, method: string) => void;
  authorize?: Authorizer | null;
  /** Stripe top-ups and auto-refill; absent when Stripe is not configured. */
  payments?: Payments;
  /** Balance alerts for WatchAlerts; absent without the ledger. */
  alerts?: AlertFeed;
}

type Handlers<S> = { [K in keyof S]: (request: never) => Promise<unknown> };

/** Wraps each `async (request) => response` with the shared wrapper (errors, logs, metrics). */
function wrapAll<S extends UntypedServiceImplementation>(service: string, handlers: Handlers<S>, deps: HandlerDependencies): S {
  const wrapped: Record<string, unknown> = {};
  for (const [method, handler] of Object.entries(handlers)) {
    // Metrics and logs name methods as the proto does (ReserveCredits), not as ts-proto does.
    const protoMethod = method.charAt(0).toUpperCase() + method.slice(1);
    wrapped[method] = wrapUnary(service, protoMethod, handler as (request: unknown) => Promise<unknown>, deps);
  }
  return wrapped as S;
}

/** The request type of a generated handler (handleUnaryCall<Req, Res>). */
type RequestOf<S, K extends keyof S> = S[K] extends handleUnaryCall<infer R, unknown> ? R : never;

/**
 * The data-plane operations, proto in and proto out: the unary RPCs and the operation stream
 * (stream-operations.ts) run exactly these, so both keep every rule of the engine.
 */
export function meteringOperations(deps: HandlerDependencies) {
  const { store, product } = deps;
  type S = MeteringServiceServer;
  return {
    reserveCredits: async (r: RequestOf<S, 'reserveCredits'>) => toReservation(await store.reserve(parseReserve(product, r))),
    commitReservation: async (r: RequestOf<S, 'commitReservation'>) => {
      const c = await store.commit(parseCommit(r));
      return { ...c, balance: toBalance(c.balance) };
    },
    releaseReservation: async (r: RequestOf<S, 'releaseReservation'>) => {
      const c = await store.release(parseRelease(r));
      return { ...c, balance: toBalance(c.balance) };
    },
    extendReservation: async (r: RequestOf<S, 'extendReservation'>) => toReservation(await store.extend(parseExtend(r))),
  };
}

export function meteringHandlers(deps: HandlerDependencies): MeteringServiceServer {
  type S = MeteringServiceServer;
  type Unary = Omit<S, 'streamOperations'> & UntypedServiceImplementation;
  const operations = meteringOperations(deps);
  const unary = wrapAll<Unary>(DATA_PLANE_SERVICE, {
    ...operations,
    getBalance: async (r: RequestOf<S, 'getBalance'>) => toBalance(await deps.store.getBalance(checkId('account_id', r.accountId))),
  }, deps);
  return { ...unary, streamOperations: streamOperationsHandler(deps, operations) } as unknown as S;
}

export function adminHandlers(deps: HandlerDependencies): AdminServiceServer {
  const { store, product, clock } = deps;
  type S = AdminServiceServer;
  type Unary = Omit<S, 'watchAlerts'> & UntypedServiceImplementation;
  const unary = wrapAll<Unary>('meterd.v1.AdminService', {
    upsertAccount: async (r: RequestOf<S, 'upsertAccount'>) => toAccount(await store.upsertAccount(parseUpsertAccount(product, r.account))),
    getAccount: async (r: RequestOf<S, 'getAccount'>) => toAccount(await store.getAccount(checkId('account_id', r.accountId))),
    changePlan: async (r: RequestOf<S, 'changePlan'>) => toAccount(await store.changePlan(parseChangePlan(product, r))),
    grantCredits: async (r: RequestOf<S, 'grantCredits'>) =>
      toBalance(await store.grant(parseGrant({ ...r, kind: grantKindName(r.kind) }, clock.nowMs()))),
    adjustCredits: async (r: RequestOf<S, 'adjustCredits'>) => toBalance(await store.adjust(parseAdjust(r))),
    refundCharge: async (r: RequestOf<S, 'refundCharge'>) => toBalance(await store.refund(parseRefund(r))),
    getUsage: async (r: RequestOf<S, 'getUsage'>) => {
      const query = parseUsageQuery(r);
      const live = await store.getUsage(query.accountId);
      if (query.periodStartMs === undefined || query.periodStartMs === live.periodStartMs) return toUsage(live);
      const { pool, space } = await poolOf(query.accountId);
      return toUsage(await ledgerOf(deps).usageForPeriod(pool, space, query.periodStartMs));
    },
    listLedgerEntries: async (r: RequestOf<S, 'listLedgerEntries'>) => {
      const query = parseListLedger(r);
      const reader = ledgerOf(deps);
      const { pool, space } = await poolOf(query.accountId);
      const page = await reader.listEntries(pool, space, query);
      return {
        entries: page.entries.map(toLedgerEntry),
        nextPageToken: page.nextBeforeSeq === undefined ? '' : ledgerPageToken(page.nextBeforeSeq),
      };
    },
    ...billingHandlers(deps),
  }, deps);
  // The generated server type carries an index signature, so Omit cannot name "all but watchAlerts".
  return { ...unary, watchAlerts: watchAlertsHandler(deps) } as unknown as S;

  /** The pool an account draws on, and the space to narrow to ('' for a root). */
  async function poolOf(accountId: string): Promise<{ pool: string; space: string }> {
    const account = await store.getAccount(accountId);
    return account.parentId === '' ? { pool: accountId, space: '' } : { pool: account.parentId, space: accountId };
  }
}

function ledgerOf(deps: HandlerDependencies): LedgerReader {
  if (!deps.ledger) throw new DomainError(ErrorReason.LEDGER_DISABLED, 'this meterd runs without its Postgres ledger');
  return deps.ledger;
}
