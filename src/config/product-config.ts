import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { parse as parseYaml } from 'yaml';
import { z } from 'zod';
import {
  CHARGE_AMOUNT_MINOR_MAX, CREDIT_PACKS_COUNT_MAX, CREDITS_MAX, FEATURES_COUNT_MAX, ID_CHARACTERS_DESCRIPTION, ID_LENGTH_MAX, ID_PATTERN,
  PLANS_COUNT_MAX, PRICE_CREDITS_MAX, PRICE_PER_UNITS_MAX, QUICK_PICKS_COUNT_MAX,
} from './limits.js';

/** The product config shipped as the default: the commented example next to this file. */
export const EXAMPLE_PRODUCT_CONFIG_PATH = fileURLToPath(new URL('./product.example.yaml', import.meta.url));

export interface Plan {
  id: string;
  monthlyCredits: bigint;
  priceCents: number;
  /** 0 = hard stop at zero. */
  overageLimit: bigint;
}

export interface FeaturePrice {
  id: string;
  /** Credits per operation, or per `perUnits` units when perUnits > 0. */
  credits: number;
  perUnits: number;
  minCredits: number;
}

/** A pack of credits sold at a fixed price (Stripe Checkout, auto-refill). */
export interface CreditPackPrice {
  id: string;
  credits: bigint;
  /** In the currency's smallest unit (cents for usd). */
  priceCents: number;
  /** ISO 4217, lower case as Stripe writes it. */
  currency: string;
}

/** Any quantity of credits at a unit price, when the config allows it. */
export interface CustomQuantityPrice {
  /** Price of one credit in hundredths of the smallest unit (4 cents = 400): sub-cent prices stay exact. */
  unitPriceCentiCents: bigint;
  currency: string;
  minCredits: bigint;
  maxCredits: bigint;
  /** Amounts a buyer can pick with one click (100 / 250 / 500 / 1,000). */
  quickPicks: bigint[];
}

export interface ProductConfig {
  plans: ReadonlyMap<string, Plan>;
  features: ReadonlyMap<string, FeaturePrice>;
  /** Credit packs on sale, in config order (none: only a custom quantity, or no top-ups). */
  packs: ReadonlyMap<string, CreditPackPrice>;
  customQuantity: CustomQuantityPrice | null;
  /** The plan table as Lua reads it (see src/redis/lua/includes/plans.lua). */
  planTableText: string;
}

const id = z.string().min(1).max(ID_LENGTH_MAX).regex(ID_PATTERN, `use only ${ID_CHARACTERS_DESCRIPTION}`);
const wholeNumber = (max: number) => z.number().int('must be a whole number').min(0, 'must not be negative').max(max);

const planSchema = z.strictObject({
  id,
  monthly_credits: wholeNumber(Number(CREDITS_MAX)),
  price_cents: wholeNumber(Number.MAX_SAFE_INTEGER),
  overage_limit: wholeNumber(Number(CREDITS_MAX)).optional(),
});

const featureSchema = z
  .strictObject({
    id,
    credits: wholeNumber(PRICE_CREDITS_MAX),
    per_units: z.number().int('must be a whole number').min(1, 'must be at least 1').max(PRICE_PER_UNITS_MAX).optional(),
    min_credits: wholeNumber(PRICE_CREDITS_MAX).optional(),
  })
  .refine((f) => f.min_credits === undefined || f.per_units !== undefined, {
    message: 'min_credits needs per_units', path: ['min_credits'],
  });

const currency = z.string().regex(/^[a-z]{3}$/, 'must be a three-letter ISO 4217 code in lower case (usd)');
const positive = (max: number) => z.number().int('must be a whole number').min(1, 'must be at least 1').max(max);

const packSchema = z.strictObject({
  id,
  credits: positive(Number(CREDITS_MAX)),
  price_cents: positive(CHARGE_AMOUNT_MINOR_MAX),
  currency,
});

const customQuantitySchema = z
  .strictObject({
    unit_price_centi_cents: positive(CHARGE_AMOUNT_MINOR_MAX * 100),
    currency,
    min_credits: positive(Number(CREDITS_MAX)),
    max_credits: positive(Number(CREDITS_MAX)),
    quick_picks: z.array(positive(Number(CREDITS_MAX))).max(QUICK_PICKS_COUNT_MAX).optional(),
  })
  .refine((c) => c.max_credits >= c.min_credits, { message: 'must be at least min_credits', path: ['max_credits'] })
  .refine((c) => BigInt(c.max_credits) * BigInt(c.unit_price_centi_cents) <= BigInt(CHARGE_AMOUNT_MINOR_MAX) * 100n, {
    message: `max_credits × unit_price_centi_cents must stay within one charge (${CHARGE_AMOUNT_MINOR_MAX} in the smallest unit)`,
    path: ['max_credits'],
  })
  .refine((c) => (c.quick_picks ?? []).every((q) => q >= c.min_credits && q <= c.max_credits), {
    message: 'each quick pick must be within min_credits..max_credits', path: ['quick_picks'],
  });

const productSchema = z.strictObject({
  plans: z.array(planSchema).min(1, 'needs at least one plan').max(PLANS_COUNT_MAX),
  features: z.array(featureSchema).min(1, 'needs at least one feature').max(FEATURES_COUNT_MAX),
  packs: z.array(packSchema).max(CREDIT_PACKS_COUNT_MAX).optional(),
  custom_quantity: customQuantitySchema.optional(),
});

export class ConfigError extends Error {
  override name = 'ConfigError';
}

/** "features[2].per_units: must be at least 1" — the key and what is wrong. */
function describeIssue(issue: z.core.$ZodIssue): string {
  let path = '';
  for (const part of issue.path) {
    path += typeof part === 'number' ? `[${part}]` : path === '' ? String(part) : `.${String(part)}`;
  }
  return `${path || '(root)'}: ${issue.message}`;
}

function uniqueById<T extends { id: string }>(items: T[], key: string): Map<string, T> {
  const byId = new Map<string, T>();
  items.forEach((item, index) => {
    if (byId.has(item.id)) throw new ConfigError(`${key}[${index}].id: duplicate id "${item.id}"`);
    byId.set(item.id, item);
  });
  return byId;
}

/** Validates a parsed product config; throws ConfigError naming the key and what is wrong. */
export function parseProductConfig(raw: unknown, source = 'product config'): ProductConfig {
  const result = productSchema.safeParse(raw);
  if (!result.success) {
    const lines = result.error.issues.map(describeIssue).join('; ');
    throw new ConfigError(`${source}: ${lines}`);
  }
  const plans = uniqueById(
    result.data.plans.map((p) => ({
      id: p.id,
      monthlyCredits: BigInt(p.monthly_credits),
      priceCents: p.price_cents,
      overageLimit: BigInt(p.overage_limit ?? 0),
    })),
    'plans',
  );
  const features = uniqueById(
    result.data.features.map((f) => ({
      id: f.id, credits: f.credits, perUnits: f.per_units ?? 0, minCredits: f.min_credits ?? 0,
    })),
    'features',
  );
  const packs = uniqueById(
    (result.data.packs ?? []).map((p) => ({ id: p.id, credits: BigInt(p.credits), priceCents: p.price_cents, currency: p.currency })),
    'packs',
  );
  const custom = result.data.custom_quantity;
  const customQuantity: CustomQuantityPrice | null = custom === undefined ? null : {
    unitPriceCentiCents: BigInt(custom.unit_price_centi_cents),
    currency: custom.currency,
    minCredits: BigInt(custom.min_credits),
    maxCredits: BigInt(custom.max_credits),
    quickPicks: (custom.quick_picks ?? []).map((q) => BigInt(q)),
  };
  const planTableText = [...plans.values()].map((p) => `|${p.id}/${p.monthlyCredits}/${p.overageLimit}`).join('');
  return { plans, features, packs, customQuantity, planTableText };
}

export function loadProductConfig(path: string): ProductConfig {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new ConfigError(`METERD_CONFIG: cannot read ${path}: ${(err as Error).message}`);
  }
  let raw: unknown;
  try {
    raw = parseYaml(text);
  } catch (err) {
    throw new ConfigError(`${path}: not valid YAML: ${(err as Error).message}`);
  }
  return parseProductConfig(raw, path);
}
