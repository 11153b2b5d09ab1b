import type {
  AdjustCommand, ChangePlanCommand, CommitCommand, ExtendCommand, GrantCommand, RefundCommand, ReleaseCommand,
  ReserveCommand, UpsertAccountCommand,
} from './commands.js';
import type { LedgerQuery } from './commands.js';
import type {
  AccountResult, BalanceResult, CommitResult, LedgerPage, ReleaseResult, ReservationResult, SweepResult, UsageResult,
} from './types.js';

/** Where credits live and move atomically (the Redis adapter implements it). */
export interface CreditStore {
  reserve(command: ReserveCommand): Promise<ReservationResult>;
  commit(command: CommitCommand): Promise<CommitResult>;
  release(command: ReleaseCommand): Promise<ReleaseResult>;
  extend(command: ExtendCommand): Promise<ReservationResult>;
  getBalance(accountId: string): Promise<BalanceResult>;
  upsertAccount(command: UpsertAccountCommand): Promise<AccountResult>;
  getAccount(accountId: string): Promise<AccountResult>;
  changePlan(command: ChangePlanCommand): Promise<AccountResult>;
  grant(command: GrantCommand): Promise<BalanceResult>;
  adjust(command: AdjustCommand): Promise<BalanceResult>;
  refund(command: RefundCommand): Promise<BalanceResult>;
  getUsage(accountId: string): Promise<UsageResult>;
  /** Releases expired holds of one partition; the sweeper calls it for every partition. */
  sweepExpired(partition: number, max: number): Promise<SweepResult>;
}

/** The durable ledger's read side (Postgres). `spaceId` narrows a pool's rows to one space. */
export interface LedgerReader {
  listEntries(poolId: string, spaceId: string, query: LedgerQuery): Promise<LedgerPage>;
  usageForPeriod(poolId: string, spaceId: string, periodStartMs: number): Promise<UsageResult>;
}
