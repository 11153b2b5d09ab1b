import type pg from 'pg';
import type { ProductConfig } from '../config/product-config.js';
import { DomainError, ErrorReason, invalidArgument } from '../domain/errors.js';
import type { CreditStore } from '../domain/ports.js';
import type { AutoRefillSettings, SetStripeCustomerResponse } from '../gen/meterd/v1/billing.js';
import type { Logger } from '../observability/logger.js';
import { customQuantityOf, customPurchase, findPack, formatMoney, packPurchase } from './catalog.js';

/** The Redis side of auto-refill (RedisCreditStore): the threshold the reserve/commit path watches. */
export interface RefillThresholdStore {
  setAutoRefillThreshold(accountId: string, thresholdCredits: bigint | null): Promise<unknown>;
}

export interface AutoRefillRow {
  account_id: string;
  enabled: boolean;
  threshold_credits: string;
  pack_id: string;
  target_credits: string | null;
  monthly_cap_cents: string;
  payment_method_id: string;
  disabled_reason: string;
}

export const AUTO_REFILL_COLUMNS = `account_id, enabled, threshold_credits::text AS threshold_credits, pack_id,
  target_credits::text AS target_credits, monthly_cap_cents::text AS monthly_cap_cents, payment_method_id, disabled_reason`;

export function toAutoRefillSettings(row: AutoRefillRow): AutoRefillSettings {
  return {
    accountId: row.account_id, enabled: row.enabled, thresholdCredits: BigInt(row.threshold_credits), packId: row.pack_id,
    targetCredits: BigInt(row.target_credits ?? '0'), monthlyCapCents: BigInt(row.monthly_cap_cents),
    paymentMethodId: row.payment_method_id, disabledReason: row.disabled_reason,
  };
}

function disabledDefault(accountId: string): AutoRefillSettings {
  return { accountId, enabled: false, thresholdCredits: 0n, packId: '', targetCredits: 0n, monthlyCapCents: 0n, paymentMethodId: '', disabledReason: '' };
}

/** Stripe customers and auto-refill settings belong to a pool root; a space is refused naming its parent. */
async function requireRoot(store: Pick<CreditStore, 'getAccount'>, accountId: string): Promise<void> {
  const account = await store.getAccount(accountId);
  if (account.parentId !== '') {
    throw new DomainError(ErrorReason.ACCOUNT_IS_SPACE, `account "${accountId}" is a space; billing settings belong to its parent "${account.parentId}"`,
      { account_id: accountId, parent_id: account.parentId });
  }
}

/**
 * SetStripeCustomer, SetAutoRefill and GetAutoRefill. Postgres holds the settings (authoritative);
 * Redis holds only the threshold, which the reserve/commit path watches to ask for a refill.
 */
export class AutoRefillSettingsService {
  constructor(
    private readonly database: pg.Pool,
    private readonly store: Pick<CreditStore, 'getAccount'> & RefillThresholdStore,
    private readonly product: ProductConfig,
    private readonly logger: Logger,
  ) {}

  async setStripeCustomer(accountId: string, stripeCustomerId: string): Promise<SetStripeCustomerResponse> {
    await requireRoot(this.store, accountId);
    await this.database.query(
      `INSERT INTO stripe_customers (account_id, stripe_customer_id) VALUES ($1, $2)
       ON CONFLICT (account_id) DO UPDATE SET stripe_customer_id = EXCLUDED.stripe_customer_id, updated_at = now()`,
      [accountId, stripeCustomerId]);
    this.logger.info({ accountId, stripeCustomerId }, 'stripe customer set');
    return { accountId, stripeCustomerId };
  }

  async getAutoRefill(accountId: string): Promise<AutoRefillSettings> {
    await requireRoot(this.store, accountId);
    const row = (await this.database.query<AutoRefillRow>(`SELECT ${AUTO_REFILL_COLUMNS} FROM auto_refill_settings WHERE account_id = $1`, [accountId])).rows[0];
    return row ? toAutoRefillSettings(row) : disabledDefault(accountId);
  }

  /**
   * Turning it on checks the pack (or the custom price for a target), that the cap allows at least one
   * refill and that the account has a Stripe customer; saves in Postgres, then sets the threshold in
   * Redis (which also ends a refill in flight and, when the pool is already below, asks for one now).
   * Turning it off keeps the saved figures and removes the threshold.
   */
  async setAutoRefill(settings: AutoRefillSettings): Promise<AutoRefillSettings> {
    const accountId = settings.accountId;
    await requireRoot(this.store, accountId);
    if (!settings.enabled) {
      const row = (await this.database.query<AutoRefillRow>(
        `UPDATE auto_refill_settings SET enabled = false, disabled_reason = '', updated_at = now() WHERE account_id = $1
         RETURNING ${AUTO_REFILL_COLUMNS}`, [accountId])).rows[0];
      await this.store.setAutoRefillThreshold(accountId, null);
      this.logger.info({ accountId }, 'auto-refill turned off');
      return row ? toAutoRefillSettings(row) : disabledDefault(accountId);
    }
    const onePurchase = settings.packId !== ''
      ? packPurchase(findPack(this.product, settings.packId, 'settings.pack_id'))
      : this.smallestTargetPurchase();
    if (settings.targetCredits !== 0n && settings.targetCredits <= settings.thresholdCredits) {
      throw invalidArgument('settings.target_credits', `is ${settings.targetCredits}; must be above threshold_credits (${settings.thresholdCredits})`);
    }
    if (settings.monthlyCapCents < onePurchase.amountCents) {
      throw invalidArgument('settings.monthly_cap_cents',
        `is ${settings.monthlyCapCents}; one refill costs ${onePurchase.amountCents} (${formatMoney(onePurchase.amountCents, onePurchase.currency)})`,
        onePurchase.amountCents.toString());
    }
    const customer = (await this.database.query('SELECT 1 FROM stripe_customers WHERE account_id = $1', [accountId])).rowCount;
    if (!customer) throw invalidArgument('settings.account_id', `has no Stripe customer to charge; call SetStripeCustomer for "${accountId}" first`);
    const row = (await this.database.query<AutoRefillRow>(
      `INSERT INTO auto_refill_settings (account_id, enabled, threshold_credits, pack_id, target_credits, monthly_cap_cents, payment_method_id, disabled_reason)
       VALUES ($1, true, $2, $3, $4, $5, $6, '')
       ON CONFLICT (account_id) DO UPDATE SET enabled = true, threshold_credits = EXCLUDED.threshold_credits, pack_id = EXCLUDED.pack_id,
         target_credits = EXCLUDED.target_credits, monthly_cap_cents = EXCLUDED.monthly_cap_cents,
         payment_method_id = EXCLUDED.payment_method_id, disabled_reason = '', updated_at = now()
       RETURNING ${AUTO_REFILL_COLUMNS}`,
      [accountId, settings.thresholdCredits.toString(), settings.packId, settings.packId === '' ? settings.targetCredits.toString() : null,
        settings.monthlyCapCents.toString(), settings.paymentMethodId])).rows[0] as AutoRefillRow;
    await this.store.setAutoRefillThreshold(accountId, settings.thresholdCredits);
    this.logger.info({ accountId, thresholdCredits: settings.thresholdCredits.toString(), packId: settings.packId,
      targetCredits: settings.targetCredits.toString(), monthlyCapCents: settings.monthlyCapCents.toString() }, 'auto-refill turned on');
    return toAutoRefillSettings(row);
  }

  /** A refill up to a target buys at least the custom minimum. */
  private smallestTargetPurchase() {
    const custom = customQuantityOf(this.product, 'settings.target_credits');
    return customPurchase(custom, custom.minCredits);
  }
}
