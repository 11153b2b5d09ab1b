import type { CreditPackPrice, CustomQuantityPrice, Plan, ProductConfig } from '../config/product-config.js';
import { invalidArgument } from '../domain/errors.js';
import type { ListCreditPacksResponse, UpgradeHint } from '../gen/meterd/v1/billing.js';

/**
 * What a purchase costs: a pack from the product config, or a quantity at the custom unit price.
 * Pure arithmetic on bigints (amounts in the currency's smallest unit, "cents"), so a total is the
 * same on every replica and in every test.
 */
export interface Purchase {
  /** '' for a custom quantity. */
  packId: string;
  credits: bigint;
  amountCents: bigint;
  currency: string;
  /** "500 credits × $0.04 = $20.00" */
  breakdown: string;
}

export const UPGRADE_HINT_MESSAGE = "It's cheaper to upgrade your subscription than to purchase credits";

/** Stripe's zero-decimal currencies: amounts are whole units, not hundredths. */
const ZERO_DECIMAL_CURRENCIES = new Set([
  'bif', 'clp', 'djf', 'gnf', 'jpy', 'kmf', 'krw', 'mga', 'pyg', 'rwf', 'ugx', 'vnd', 'vuv', 'xaf', 'xof', 'xpf',
]);
const CURRENCY_SYMBOLS: Record<string, string> = { usd: '$', eur: '€', gbp: '£', jpy: '¥', inr: '₹' };

function minorDigits(currency: string): number {
  return ZERO_DECIMAL_CURRENCIES.has(currency) ? 0 : 2;
}

/** `value` / 10^scale as a decimal string with at least `minFraction` fraction digits ("0.245", "20.00"). */
function decimal(value: bigint, scale: number, minFraction: number): string {
  const divisor = 10n ** BigInt(scale);
  const whole = (value / divisor).toLocaleString('en-US');
  let fraction = scale === 0 ? '' : (value % divisor).toString().padStart(scale, '0');
  while (fraction.length > minFraction && fraction.endsWith('0')) fraction = fraction.slice(0, -1);
  return fraction === '' ? whole : `${whole}.${fraction}`;
}

function withSymbol(currency: string, amount: string): string {
  const symbol = CURRENCY_SYMBOLS[currency];
  return symbol === undefined ? `${currency.toUpperCase()} ${amount}` : `${symbol}${amount}`;
}

/** An amount in the smallest unit as people read it: 2000 usd → "$20.00", 500 jpy → "¥500". */
export function formatMoney(amountMinor: bigint, currency: string): string {
  const digits = minorDigits(currency);
  return withSymbol(currency, decimal(amountMinor, digits, digits));
}

/** A unit price in hundredths of the smallest unit: 400 usd → "$0.04", 2450 usd → "$0.245". */
export function formatUnitPrice(centiMinor: bigint, currency: string): string {
  const digits = minorDigits(currency);
  return withSymbol(currency, decimal(centiMinor, digits + 2, digits));
}

/** credits × unit price, rounded half up to the smallest unit. */
export function customTotal(credits: bigint, unitPriceCentiCents: bigint): bigint {
  return (credits * unitPriceCentiCents + 50n) / 100n;
}

function breakdown(credits: bigint, centiMinorPerCredit: bigint | null, amountCents: bigint, currency: string): string {
  const quantity = `${credits.toLocaleString('en-US')} credits`;
  const total = formatMoney(amountCents, currency);
  return centiMinorPerCredit === null ? `${quantity} = ${total}` : `${quantity} × ${formatUnitPrice(centiMinorPerCredit, currency)} = ${total}`;
}

export function packPurchase(pack: CreditPackPrice): Purchase {
  const amountCents = BigInt(pack.priceCents);
  // A pack's unit price is shown only when it is exact in hundredths of a cent.
  const centi = amountCents * 100n;
  const unit = centi % pack.credits === 0n ? centi / pack.credits : null;
  return { packId: pack.id, credits: pack.credits, amountCents, currency: pack.currency, breakdown: breakdown(pack.credits, unit, amountCents, pack.currency) };
}

export function customPurchase(custom: CustomQuantityPrice, credits: bigint): Purchase {
  const amountCents = customTotal(credits, custom.unitPriceCentiCents);
  return { packId: '', credits, amountCents, currency: custom.currency, breakdown: breakdown(credits, custom.unitPriceCentiCents, amountCents, custom.currency) };
}

export function findPack(product: ProductConfig, packId: string, field: string): CreditPackPrice {
  const pack = product.packs.get(packId);
  if (!pack) {
    const known = [...product.packs.keys()].join(', ') || 'none';
    throw invalidArgument(field, `"${packId}" is not a credit pack of the product config (packs: ${known})`);
  }
  return pack;
}

export function customQuantityOf(product: ProductConfig, field: string): CustomQuantityPrice {
  if (!product.customQuantity) throw invalidArgument(field, 'buying a custom quantity is not enabled in the product config; pick a pack_id');
  return product.customQuantity;
}

/** The price of what CreateCheckoutSession asks for: a pack, or `credits` within the custom range. */
export function pricePurchase(product: ProductConfig, packId: string, credits: bigint): Purchase {
  if (packId !== '') return packPurchase(findPack(product, packId, 'pack_id'));
  const custom = customQuantityOf(product, 'credits');
  if (credits < custom.minCredits || credits > custom.maxCredits) {
    throw invalidArgument('credits', `is ${credits}; must be ${custom.minCredits}..${custom.maxCredits}`, `${custom.minCredits}..${custom.maxCredits}`);
  }
  return customPurchase(custom, credits);
}

/**
 * "It's cheaper to upgrade": the cheapest plan with more monthly credits whose extra price is no more
 * than this purchase and whose extra allowance is at least the credits bought. Null when none is.
 */
export function upgradeHint(product: ProductConfig, currentPlanId: string, purchase: Purchase): UpgradeHint | null {
  const current = product.plans.get(currentPlanId);
  if (!current) return null;
  let best: Plan | null = null;
  for (const plan of product.plans.values()) {
    if (plan.monthlyCredits <= current.monthlyCredits) continue;
    const extraPrice = BigInt(plan.priceCents - current.priceCents);
    if (extraPrice > purchase.amountCents) continue;
    if (plan.monthlyCredits - current.monthlyCredits < purchase.credits) continue;
    if (!best || plan.priceCents < best.priceCents || (plan.priceCents === best.priceCents && plan.monthlyCredits > best.monthlyCredits)) best = plan;
  }
  if (!best) return null;
  return { plan: best.id, planPriceCents: BigInt(best.priceCents), planMonthlyCredits: best.monthlyCredits, message: UPGRADE_HINT_MESSAGE };
}

export function listCreditPacks(product: ProductConfig): ListCreditPacksResponse {
  const response: ListCreditPacksResponse = {
    packs: [...product.packs.values()].map((p) => ({ packId: p.id, credits: p.credits, priceCents: BigInt(p.priceCents), currency: p.currency })),
  };
  const custom = product.customQuantity;
  if (custom) {
    response.customQuantity = {
      unitPriceCentiCents: custom.unitPriceCentiCents, currency: custom.currency,
      minCredits: custom.minCredits, maxCredits: custom.maxCredits, quickPicks: [...custom.quickPicks],
    };
  }
  return response;
}
