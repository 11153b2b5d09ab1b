import { randomUUID } from 'node:crypto';
import type { Command } from 'commander';
import { alertKindToJSON, type Alert } from '../gen/meterd/v1/billing.js';
import { addClientOptions, withConnection, type ClientOptions } from './client-options.js';
import { examples, printResult, toJson } from './output.js';
import { parseCredits } from './parse.js';

/**
 * Money in and warnings out, from the command line: packs on sale, a Checkout link, the Stripe
 * customer, auto-refill settings, and a live view of balance alerts (AdminService).
 */


function presentAlert(alert: Alert): Record<string, unknown> {
  return { ...alert, kind: alertKindToJSON(alert.kind).replace('ALERT_KIND_', '').toLowerCase() };
}

export function addBillingCommands(program: Command): void {
  addClientOptions(program.command('packs')
    .summary('list the credit packs on sale')
    .description('list the credit packs and the custom quantity offer of the product config (ListCreditPacks)'))
    .addHelpText('after', examples('meterd packs'))
    .action(async (options: ClientOptions) => withConnection(options, async ({ admin }) => {
      printResult(await admin.listCreditPacks({}), options.json === true);
    }));

  interface CheckoutOptions extends ClientOptions { pack?: string; credits?: bigint; successUrl: string; cancelUrl: string; requestId?: string }
  addClientOptions(program.command('checkout')
    .summary('create a Stripe Checkout link to buy credits')
    .description('create a Stripe Checkout Session for a pack or a quantity; credits are granted once Stripe reports it paid (CreateCheckoutSession)')
    .argument('<accountId>')
    .option('--pack <packId>', 'a pack from the product config')
    .option('--credits <n>', 'a quantity at the configured unit price', parseCredits)
    .requiredOption('--success-url <url>', 'where Stripe sends the buyer after paying')
    .requiredOption('--cancel-url <url>', 'where Stripe sends the buyer who gives up')
    .option('--request-id <id>', 'idempotency key (default: a new one; the same id returns the same session)'))
    .addHelpText('after', examples('meterd checkout acme --pack pack_500 --success-url https://app.example/ok --cancel-url https://app.example/buy'))
    .action(async (accountId: string, options: CheckoutOptions) => withConnection(options, async ({ admin }) => {
      const requestId = options.requestId ?? `cli-${randomUUID()}`;
      printResult(await admin.createCheckoutSession({
        accountId, packId: options.pack ?? '', credits: options.credits ?? 0n, successUrl: options.successUrl,
        cancelUrl: options.cancelUrl, requestId,
      }), options.json === true);
    }));

  addClientOptions(program.command('stripe-customer')
    .summary('link an account to its Stripe customer')
    .description('set the Stripe customer billed for overage and charged by auto-refill (SetStripeCustomer)')
    .argument('<accountId>')
    .argument('<stripeCustomerId>', 'cus_...'))
    .addHelpText('after', examples('meterd stripe-customer acme cus_Q1w2e3'))
    .action(async (accountId: string, stripeCustomerId: string, options: ClientOptions) => withConnection(options, async ({ admin }) => {
      printResult(await admin.setStripeCustomer({ accountId, stripeCustomerId }), options.json === true);
    }));

  const refill = program.command('auto-refill').description('read and change auto-refill (SetAutoRefill, GetAutoRefill)');
  addClientOptions(refill.command('get').summary('show auto-refill settings').argument('<accountId>'))
    .action(async (accountId: string, options: ClientOptions) => withConnection(options, async ({ admin }) => {
      printResult(await admin.getAutoRefill({ accountId }), options.json === true);
    }));

  interface RefillOptions extends ClientOptions {
    threshold: bigint; pack?: string; target?: bigint; capCents: bigint; paymentMethod: string; off?: boolean;
  }
  addClientOptions(refill.command('set')
    .summary('turn auto-refill on (or off with --off)')
    .argument('<accountId>')
    .requiredOption('--threshold <credits>', 'refill when available credits fall below this', parseCredits)
    .option('--pack <packId>', 'buy this pack ...')
    .option('--target <credits>', '... or credits up to this balance', parseCredits)
    .requiredOption('--cap-cents <cents>', 'most spent on refills per calendar month', parseCredits)
    .requiredOption('--payment-method <pm>', 'the saved card (pm_...) of the account\'s Stripe customer')
    .option('--off', 'store the settings but keep auto-refill off'))
    .addHelpText('after', examples('meterd auto-refill set acme --threshold 100 --pack pack_500 --cap-cents 10000 --payment-method pm_123'))
    .action(async (accountId: string, options: RefillOptions) => withConnection(options, async ({ admin }) => {
      printResult(await admin.setAutoRefill({ settings: {
        accountId, enabled: options.off !== true, thresholdCredits: options.threshold, packId: options.pack ?? '',
        targetCredits: options.target ?? 0n, monthlyCapCents: options.capCents, paymentMethodId: options.paymentMethod,
      } }), options.json === true);
    }));

  interface WatchOptions extends ClientOptions { account?: string; after?: bigint }
  addClientOptions(program.command('alerts')
    .summary('print balance alerts as they happen')
    .description('print balance alerts (low, exhausted, recovered, refill_failed) as they happen until Ctrl-C (WatchAlerts); --json prints one JSON object per line')
    .option('--account <accountId>', 'only this account\'s alerts')
    .option('--after <position>', 'resume after this position (default: only new alerts)', parseCredits))
    .addHelpText('after', examples('meterd alerts', 'meterd alerts --account acme --json'))
    .action(async (options: WatchOptions) => withConnection(options, async (connection) => {
      const stop = new AbortController();
      process.once('SIGINT', () => stop.abort());
      await connection.watchAlerts({ accountId: options.account ?? '', afterPosition: options.after ?? 0n }, (alert) => {
        if (options.json === true) process.stdout.write(`${toJson(presentAlert(alert)).replace(/\n\s*/g, ' ')}\n`);
        else printResult(presentAlert(alert), false);
      }, stop.signal);
    }));
}
