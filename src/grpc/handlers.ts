import type { handleUnaryCall, UntypedServiceImplementation } from '@grpc/grpc-js';
import type { ProductConfig } from '../config/product-config.js';
import type { Clock } from '../domain/clock.js';
import {
  checkId, parseAdjust, parseChangePlan, parseCommit, parseExtend, parseGrant, parseRefund, parseRelease, parseReserve,
  parseUpsertAccount,
} from '../domain/commands.js';
import type { CreditStore } from '../domain/ports.js';
import type { AdminServiceServer } from '../gen/meterd/v1/admin_service.js';
import type { MeteringServiceServer } from '../gen/meterd/v1/metering_service.js';
import type { Logger } from '../observability/logger.js';
import { grantKindName, toAccount, toBalance, toReservation, toUsage } from './mappers.js';
import { wrapUnary, type CallObserver } from './wrap-unary.js';

export interface HandlerDependencies {
  store: CreditStore;
  product: ProductConfig;
  clock: Clock;
  logger: Logger;
  observe: CallObserver;
}

type Handlers<S> = { [K in keyof S]: (request: never) => Promise<unknown> };

/** Wraps each `async (request) => response` with the shared wrapper (errors, logs, metrics). */
function wrapAll<S extends UntypedServiceImplementation>(service: string, handlers: Handlers<S>, deps: HandlerDependencies): S {
  const wrapped: Record<string, unknown> = {};
  for (const [method, handler] of Object.entries(handlers)) {
    wrapped[method] = wrapUnary(service, method, handler as (request: unknown) => Promise<unknown>, deps.logger, deps.observe);
  }
  return wrapped as S;
}

/** The request type of a generated handler (handleUnaryCall<Req, Res>). */
type RequestOf<S, K extends keyof S> = S[K] extends handleUnaryCall<infer R, unknown> ? R : never;

export function meteringHandlers(deps: HandlerDependencies): MeteringServiceServer {
  const { store, product } = deps;
  type S = MeteringServiceServer;
  return wrapAll<S>('meterd.v1.MeteringService', {
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
    getBalance: async (r: RequestOf<S, 'getBalance'>) => toBalance(await store.getBalance(checkId('account_id', r.accountId))),
  }, deps);
}

export function adminHandlers(deps: HandlerDependencies): AdminServiceServer {
  const { store, product, clock } = deps;
  type S = AdminServiceServer;
  return wrapAll<S>('meterd.v1.AdminService', {
    upsertAccount: async (r: RequestOf<S, 'upsertAccount'>) => toAccount(await store.upsertAccount(parseUpsertAccount(product, r.account))),
    getAccount: async (r: RequestOf<S, 'getAccount'>) => toAccount(await store.getAccount(checkId('account_id', r.accountId))),
    changePlan: async (r: RequestOf<S, 'changePlan'>) => toAccount(await store.changePlan(parseChangePlan(product, r))),
    grantCredits: async (r: RequestOf<S, 'grantCredits'>) =>
      toBalance(await store.grant(parseGrant({ ...r, kind: grantKindName(r.kind) }, clock.nowMs()))),
    adjustCredits: async (r: RequestOf<S, 'adjustCredits'>) => toBalance(await store.adjust(parseAdjust(r))),
    refundCharge: async (r: RequestOf<S, 'refundCharge'>) => toBalance(await store.refund(parseRefund(r))),
    getUsage: async (r: RequestOf<S, 'getUsage'>) => toUsage(await store.getUsage(checkId('account_id', r.accountId))),
  }, deps);
}
