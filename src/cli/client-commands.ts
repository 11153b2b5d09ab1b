import { randomUUID } from 'node:crypto';
import { Option, type Command } from 'commander';
import { LEDGER_PAGE_SIZE_MAX, TTL_SECONDS_MAX, TTL_SECONDS_MIN } from '../config/limits.js';
import type { ListLedgerEntriesResponse } from '../gen/meterd/v1/admin_service.js';
import {
  GrantKind, reservationStateToJSON, type Account, type LedgerEntry, type Reservation,
} from '../gen/meterd/v1/types.js';
import { addClientOptions, withConnection, type ClientOptions } from './client-options.js';
import { examples, printResult, renderTable } from './output.js';
import { collect, collectLabel, integerBetween, parseCredits, parseTime, parseUnits } from './parse.js';

/**
 * Client commands: each is one (or, for `ledger --all`, a few) gRPC calls to a running meterd,
 * printed for a person or, with --json, for a script.
 */

/** `ledger --all` follows next_page_token at most this many pages (at 500 per page: 500,000 entries). */
export const LEDGER_ALL_PAGES_MAX = 1_000;

const GRANT_KINDS: Record<string, GrantKind> = { pack: GrantKind.GRANT_KIND_PACK, promo: GrantKind.GRANT_KIND_PROMO };

/** The ledger's signed per-field changes, shown together in one column of the human table. */
const LEDGER_CHANGE_FIELDS = [
  'trial', 'allowance', 'promo', 'pack', 'overage', 'held', 'charged', 'chargedOverage', 'shortfall',
] as const satisfies ReadonlyArray<keyof LedgerEntry>;


/** A reservation with its state by name (HELD, COMMITTED, ...) in both output forms. */
function presentReservation(reservation: Reservation): Record<string, unknown> {
  return { ...reservation, state: reservationStateToJSON(reservation.state).replace('RESERVATION_STATE_', '') };
}

function ledgerRow(entry: LedgerEntry): Record<string, unknown> {
  const changes = LEDGER_CHANGE_FIELDS
    .filter((field) => entry[field] !== 0n)
    .map((field) => `${field}:${entry[field] > 0n ? '+' : ''}${entry[field]}`)
    .join(' ');
  return {
    occurredAt: entry.occurredAt, seq: entry.seq, kind: entry.kind, spaceId: entry.spaceId, userId: entry.userId,
    feature: entry.feature, reservationId: entry.reservationId, changes, plan: entry.plan, opId: entry.opId,
    reason: entry.reason, actor: entry.actor,
  };
}

function renderLedger(page: ListLedgerEntriesResponse): string[] {
  const lines = renderTable(page.entries.map(ledgerRow));
  if (page.nextPageToken) lines.push('', `next_page_token: ${page.nextPageToken}`);
  return lines;
}

function accountCommands(program: Command): void {
  const account = program.command('account').description('create, read and change accounts (AdminService)')
    .addHelpText('after', '\nExamples:\n  $ meterd account create acme --plan starter\n  $ meterd account get acme\n  $ meterd account change-plan acme pro\n');

  interface CreateOptions extends ClientOptions {
    plan?: string; parent?: string; trialCredits?: bigint; trialEnds?: Date; spaceLimit?: bigint; lowBalance?: bigint;
    billingAnchor?: Date;
  }
  addClientOptions(account.command('create')
    .summary('create an account or a space')
    .description('create an account, or a space (--parent) drawing on its parent\'s pool (UpsertAccount)')
    .argument('<accountId>', 'the new account\'s id')
    .option('--plan <plan>', 'plan id from the product config (required for a root account)')
    .option('--parent <accountId>', 'make it a space of this root account (set at creation only)')
    .option('--trial-credits <n>', 'trial allowance usable until --trial-ends', parseCredits)
    .option('--trial-ends <iso>', 'end of the trial (ISO 8601)', parseTime)
    .option('--space-limit <n>', 'per-period cap on what a space may use of its parent\'s pool', parseCredits)
    .option('--low-balance <n>', 'report low_balance when available is at or below this (0: off)', parseCredits)
    .option('--billing-anchor <iso>', 'periods run monthly from here (default: now; cannot change)', parseTime))
    .addHelpText('after', examples(
      'meterd account create acme --plan starter',
      'meterd account create acme-docs --parent acme --space-limit 200',
      'meterd account create trialco --plan free --trial-credits 500 --trial-ends 2026-03-01T00:00:00Z',
    ))
    .action(async (accountId: string, options: CreateOptions) => withConnection(options, async ({ admin }) => {
      const created = await admin.upsertAccount({
        account: {
          accountId,
          plan: options.plan ?? '',
          parentId: options.parent ?? '',
          trialCredits: options.trialCredits ?? 0n,
          trialEndsAt: options.trialEnds,
          spaceLimitCredits: options.spaceLimit,
          lowBalanceThreshold: options.lowBalance ?? 0n, lowBalancePercent: 0,
          billingAnchor: options.billingAnchor,
        },
      });
      printResult(created satisfies Account, options.json === true);
    }));

  addClientOptions(account.command('get')
    .summary('show an account\'s settings')
    .description('show an account\'s settings (GetAccount)')
    .argument('<accountId>'))
    .addHelpText('after', examples('meterd account get acme', 'meterd account get acme --json'))
    .action(async (accountId: string, options: ClientOptions) => withConnection(options, async ({ admin }) => {
      printResult(await admin.getAccount({ accountId }), options.json === true);
    }));

  addClientOptions(account.command('change-plan')
    .summary('change an account\'s plan')
    .description('upgrade now, or downgrade at the next period (ChangePlan)')
    .argument('<accountId>')
    .argument('<plan>', 'plan id from the product config'))
    .addHelpText('after', examples('meterd account change-plan acme pro'))
    .action(async (accountId: string, plan: string, options: ClientOptions) => withConnection(options, async ({ admin }) => {
      printResult(await admin.changePlan({ accountId, plan }), options.json === true);
    }));
}

function creditCommands(program: Command): void {
  interface GrantOptions extends ClientOptions { kind: string; id: string; expires?: Date; reason?: string }
  addClientOptions(program.command('grant')
    .summary('grant pack or promo credits')
    .description('grant credits: a pack (never expires) or a promotion (optional expiry), once per --id (GrantCredits)')
    .argument('<accountId>')
    .argument('<credits>', 'whole number of credits', parseCredits)
    .addOption(new Option('--kind <kind>', 'where the credits go').choices(Object.keys(GRANT_KINDS)).makeOptionMandatory())
    .requiredOption('--id <grantId>', 'idempotency key: the same id grants once')
    .option('--expires <iso>', 'promo only: when the grant expires (ISO 8601); absent: never', parseTime)
    .option('--reason <text>', 'recorded in the ledger'))
    .addHelpText('after', examples(
      'meterd grant acme 500 --kind pack --id stripe-pi_123',
      'meterd grant acme 100 --kind promo --id spring-2026 --expires 2026-04-30T23:59:59Z --reason "spring promo"',
    ))
    .action(async (accountId: string, credits: bigint, options: GrantOptions) => withConnection(options, async ({ admin }) => {
      const balance = await admin.grantCredits({
        accountId, credits, kind: GRANT_KINDS[options.kind], grantId: options.id, expiresAt: options.expires, reason: options.reason ?? '',
      });
      printResult(balance, options.json === true);
    }));

  addClientOptions(program.command('balance')
    .summary('show an account\'s credits')
    .description('show an account\'s credits: available, held, each bucket, overage, period (GetBalance)')
    .argument('<accountId>'))
    .addHelpText('after', examples('meterd balance acme', 'meterd balance acme --json | jq -r .available'))
    .action(async (accountId: string, options: ClientOptions) => withConnection(options, async ({ metering }) => {
      printResult(await metering.getBalance({ accountId }), options.json === true);
    }));

  interface UsageOptions extends ClientOptions { periodStart?: Date }
  addClientOptions(program.command('usage')
    .summary('show committed usage of a period')
    .description('committed usage of a period: totals, per feature, per user, per space (GetUsage)')
    .argument('<accountId>')
    .option('--period-start <iso>', 'a past period\'s start (read from Postgres); absent: the current period', parseTime))
    .addHelpText('after', examples('meterd usage acme', 'meterd usage acme --period-start 2026-01-15T12:00:00Z --json'))
    .action(async (accountId: string, options: UsageOptions) => withConnection(options, async ({ admin }) => {
      printResult(await admin.getUsage({ accountId, periodStart: options.periodStart }), options.json === true);
    }));

  interface LedgerOptions extends ClientOptions {
    kind?: string[]; reservation?: string; user?: string; feature?: string; since?: Date; until?: Date;
    pageSize?: number; pageToken?: string; all?: boolean;
  }
  addClientOptions(program.command('ledger')
    .summary('list ledger entries, newest first')
    .description('the account\'s ledger from Postgres, newest first (ListLedgerEntries)')
    .argument('<accountId>')
    .option('--kind <kind>', 'only events of this kind (repeatable: hold, commit, release, grant, ...)', collect)
    .option('--reservation <reservationId>', 'only events of this reservation')
    .option('--user <userId>', 'only events of this user')
    .option('--feature <feature>', 'only events of this feature')
    .option('--since <iso>', 'only events at or after this time', parseTime)
    .option('--until <iso>', 'only events before this time', parseTime)
    .option('--page-size <n>', `entries per page (server default 50, at most ${LEDGER_PAGE_SIZE_MAX})`, integerBetween(1, LEDGER_PAGE_SIZE_MAX))
    .option('--page-token <token>', 'continue from a previous page\'s next_page_token')
    .option('--all', `follow next_page_token to the end (at most ${LEDGER_ALL_PAGES_MAX} pages)`))
    .addHelpText('after', examples(
      'meterd ledger acme',
      'meterd ledger acme --kind commit --kind refund --page-size 200',
      'meterd ledger acme --all --json > acme-ledger.json',
    ))
    .action(async (accountId: string, options: LedgerOptions) => withConnection(options, async ({ admin }) => {
      const request = {
        accountId, kinds: options.kind ?? [], reservationId: options.reservation ?? '', userId: options.user ?? '',
        feature: options.feature ?? '', since: options.since, until: options.until, pageSize: options.pageSize ?? 0,
      };
      let page = await admin.listLedgerEntries({ ...request, pageToken: options.pageToken ?? '' });
      if (options.all) {
        const entries = [...page.entries];
        for (let pages = 1; page.nextPageToken !== ''; pages++) {
          if (pages >= LEDGER_ALL_PAGES_MAX) {
            throw new Error(`ledger --all stopped after ${LEDGER_ALL_PAGES_MAX} pages; continue with --page-token ${page.nextPageToken}`);
          }
          page = await admin.listLedgerEntries({ ...request, pageToken: page.nextPageToken });
          entries.push(...page.entries);
        }
        page = { entries, nextPageToken: '' };
      }
      printResult(page, options.json === true, renderLedger);
    }));
}

function reservationCommands(program: Command): void {
  interface ReserveOptions extends ClientOptions {
    units?: bigint; credits?: bigint; user?: string; ttl?: number; requestId?: string; label?: Record<string, string>;
  }
  addClientOptions(program.command('reserve')
    .summary('hold credits before a model call')
    .description('hold credits for one operation before a model call (ReserveCredits)')
    .argument('<accountId>')
    .argument('<feature>', 'feature id from the product config')
    .addOption(new Option('--units <n>', 'usage estimate (e.g. tokens) for features priced per units').argParser(parseUnits).conflicts('credits'))
    .addOption(new Option('--credits <n>', 'hold exactly this many credits (overrides the price list)').argParser(parseCredits))
    .option('--user <userId>', 'the seat, for attribution')
    .option('--ttl <seconds>', `hold time to live (server default 300, ${TTL_SECONDS_MIN}–${TTL_SECONDS_MAX})`, integerBetween(TTL_SECONDS_MIN, TTL_SECONDS_MAX))
    .option('--request-id <id>', 'idempotency key (default: a new random id, printed)')
    .option('--label <key=value>', 'a label on the reservation (repeatable)', collectLabel))
    .addHelpText('after', examples(
      'meterd reserve acme image_2k --user u-42',
      'meterd reserve acme chat --units 12000 --label model=gpt-4o --request-id req-7',
      'meterd reserve acme section_generate --json | jq -r .reservationId',
    ))
    .action(async (accountId: string, feature: string, options: ReserveOptions) => withConnection(options, async ({ metering }) => {
      const reservation = await metering.reserveCredits({
        accountId, feature, units: options.units, credits: options.credits, ttlSeconds: options.ttl,
        userId: options.user ?? '', requestId: options.requestId ?? `cli-${randomUUID()}`, labels: options.label ?? {},
      });
      printResult(presentReservation(reservation), options.json === true);
    }));

  interface CommitOptions extends ClientOptions { units?: bigint; credits?: bigint }
  addClientOptions(program.command('commit')
    .summary('charge a reservation')
    .description('charge a hold: what is held, or the actual cost in --credits or --units (CommitReservation)')
    .argument('<reservationId>')
    .addOption(new Option('--credits <n>', 'the actual cost in credits').argParser(parseCredits).conflicts('units'))
    .addOption(new Option('--units <n>', 'the actual usage, priced as at reserve time').argParser(parseUnits)))
    .addHelpText('after', examples('meterd commit r12.0123456789abcdef01234567', 'meterd commit r12.0123456789abcdef01234567 --units 9400'))
    .action(async (reservationId: string, options: CommitOptions) => withConnection(options, async ({ metering }) => {
      printResult(await metering.commitReservation({ reservationId, units: options.units, credits: options.credits }), options.json === true);
    }));

  interface ReleaseOptions extends ClientOptions { reason?: string }
  addClientOptions(program.command('release')
    .summary('release a reservation, charging nothing')
    .description('the call failed: release a hold, charging nothing (ReleaseReservation)')
    .argument('<reservationId>')
    .option('--reason <text>', 'why the call failed, for the ledger'))
    .addHelpText('after', examples('meterd release r12.0123456789abcdef01234567 --reason "provider timeout"'))
    .action(async (reservationId: string, options: ReleaseOptions) => withConnection(options, async ({ metering }) => {
      printResult(await metering.releaseReservation({ reservationId, reason: options.reason ?? '' }), options.json === true);
    }));
}

/** Adds every client command to the program. */
export function addClientCommands(program: Command): void {
  accountCommands(program);
  creditCommands(program);
  reservationCommands(program);
}
