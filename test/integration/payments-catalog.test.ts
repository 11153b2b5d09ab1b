import { describe, expect, it } from 'vitest';
import { CHARGE_AMOUNT_MINOR_MAX, CREDIT_PACKS_COUNT_MAX } from '../../src/config/limits.js';
import { EXAMPLE_PRODUCT_CONFIG_PATH, loadProductConfig, parseProductConfig } from '../../src/config/product-config.js';
import {
  customPurchase, customTotal, formatMoney, formatUnitPrice, packPurchase, upgradeHint, type Purchase,
} from '../../src/payments/catalog.js';
import { checkoutGrantId, checkoutIdempotencyKey, overageIdentifier, refillGrantId } from '../../src/payments/ids.js';
import { configRefusal } from '../support/config-refusal.js';

/** Pure parts of payments: prices, totals, hints, names, and the product config's packs. */
const base = {
  plans: [
    { id: 'free', monthly_credits: 250, price_cents: 0 },
    { id: 'starter', monthly_credits: 1000, price_cents: 4900 },
    { id: 'team', monthly_credits: 1000, price_cents: 4500 },
    { id: 'pro', monthly_credits: 5000, price_cents: 7900, overage_limit: 2000 },
  ],
  features: [{ id: 'chat', credits: 1 }],
};

const refusal = (raw: unknown): string => configRefusal(() => parseProductConfig(raw));

describe('prices and totals', () => {
  it('writes amounts as people read them, per currency', () => {
    expect(formatMoney(2000n, 'usd')).toBe('$20.00');
    expect(formatMoney(123456789n, 'eur')).toBe('€1,234,567.89');
    expect(formatMoney(500n, 'jpy')).toBe('¥500');
    expect(formatMoney(5n, 'chf')).toBe('CHF 0.05');
    expect(formatUnitPrice(400n, 'usd')).toBe('$0.04');
    expect(formatUnitPrice(2450n, 'usd')).toBe('$0.245');
    expect(formatUnitPrice(10000n, 'usd')).toBe('$1.00');
    expect(formatUnitPrice(1n, 'usd')).toBe('$0.0001');
    expect(formatUnitPrice(250n, 'jpy')).toBe('¥2.5');
  });

  it('rounds a custom total half up to the smallest unit', () => {
    expect(customTotal(199n, 2450n)).toBe(4876n); // 4875.5
    expect(customTotal(3n, 2450n)).toBe(74n); // 73.5
    expect(customTotal(1n, 49n)).toBe(0n); // 0.49
    expect(customTotal(1n, 50n)).toBe(1n);
  });

  it('shows a pack unit price only when it is exact', () => {
    expect(packPurchase({ id: 'p', credits: 2500n, priceCents: 10000, currency: 'usd' }).breakdown).toBe('2,500 credits × $0.04 = $100.00');
    expect(packPurchase({ id: 'p', credits: 7n, priceCents: 100, currency: 'usd' }).breakdown).toBe('7 credits = $1.00');
    expect(customPurchase({ unitPriceCentiCents: 400n, currency: 'usd', minCredits: 1n, maxCredits: 10n, quickPicks: [] }, 3n))
      .toMatchObject({ packId: '', credits: 3n, amountCents: 12n, breakdown: '3 credits × $0.04 = $0.12' });
  });

  it('hints the cheapest plan whose extra price fits the purchase and whose extra credits cover it', () => {
    const product = parseProductConfig(base);
    const purchase = (credits: bigint, amountCents: bigint): Purchase => ({ packId: '', credits, amountCents, currency: 'usd', breakdown: '' });
    // team ($45, +750) is cheaper than starter ($49, +750).
    expect(upgradeHint(product, 'free', purchase(200n, 4500n))?.plan).toBe('team');
    expect(upgradeHint(product, 'free', purchase(200n, 4499n))).toBeNull();
    expect(upgradeHint(product, 'free', purchase(751n, 100_000n))?.plan).toBe('pro'); // +750 is not enough; pro adds 4,750
    expect(upgradeHint(product, 'starter', purchase(100n, 3000n))?.plan).toBe('pro'); // $30 difference, +4,000
    expect(upgradeHint(product, 'pro', purchase(100n, 1_000_000n))).toBeNull();
    expect(upgradeHint(product, 'gone', purchase(100n, 1_000_000n))).toBeNull();
  });
});

describe('names', () => {
  it('composes readable ids within their limits, and hashes them when too long', () => {
    expect(checkoutIdempotencyKey('acme', 'r-1')).toBe('checkout:acme:r-1');
    const long = checkoutIdempotencyKey('a'.repeat(128), 'b'.repeat(128));
    expect(long).toMatch(/^checkout:h[0-9a-f]{48}$/);
    expect(checkoutIdempotencyKey('a'.repeat(128), 'b'.repeat(128))).toBe(long);
    expect(checkoutGrantId('cs_test_abc')).toBe('checkout:cs_test_abc');
    expect(refillGrantId('acme/42')).toBe('refill:acme:42');
    expect(refillGrantId(`${'a'.repeat(125)}/42`)).toMatch(/^refill:h[0-9a-f]{48}$/);
    expect(overageIdentifier('acme', 1768478400000, 3)).toBe('ovg:acme:1768478400000:3');
    const hashed = overageIdentifier('a'.repeat(128), 1768478400000, 3);
    expect(hashed).toMatch(/^ovg:h[0-9a-f]{40}:1768478400000:3$/);
    expect(hashed.length).toBeLessThanOrEqual(100);
  });
});

describe('packs and custom_quantity in the product config', () => {
  it('ships the seed packs and a custom quantity in the example', () => {
    const config = loadProductConfig(EXAMPLE_PRODUCT_CONFIG_PATH);
    expect([...config.packs.values()]).toEqual([
      { id: 'pack_500', credits: 500n, priceCents: 2000, currency: 'usd' },
      { id: 'pack_2500', credits: 2500n, priceCents: 10000, currency: 'usd' },
      { id: 'pack_12500', credits: 12500n, priceCents: 50000, currency: 'usd' },
    ]);
    expect(config.customQuantity).toEqual({
      unitPriceCentiCents: 400n, currency: 'usd', minCredits: 100n, maxCredits: 100000n, quickPicks: [100n, 250n, 500n, 1000n],
    });
  });

  it('makes both optional', () => {
    const config = parseProductConfig(base);
    expect(config.packs.size).toBe(0);
    expect(config.customQuantity).toBeNull();
  });

  it('refuses bad packs and quantities naming the key', () => {
    const pack = { id: 'p', credits: 500, price_cents: 2000, currency: 'usd' };
    const custom = { unit_price_centi_cents: 400, currency: 'usd', min_credits: 100, max_credits: 1000 };
    expect(refusal({ ...base, packs: [pack, pack] })).toContain('packs[1].id: duplicate id "p"');
    expect(refusal({ ...base, packs: [{ ...pack, currency: 'USD' }] })).toContain('packs[0].currency: must be a three-letter ISO 4217 code');
    expect(refusal({ ...base, packs: [{ ...pack, price_cents: 0 }] })).toContain('packs[0].price_cents: must be at least 1');
    expect(refusal({ ...base, packs: [{ ...pack, price_cents: CHARGE_AMOUNT_MINOR_MAX + 1 }] })).toContain('packs[0].price_cents');
    expect(refusal({ ...base, packs: [{ ...pack, extra: 1 }] })).toContain('packs[0]');
    expect(refusal({ ...base, packs: Array.from({ length: CREDIT_PACKS_COUNT_MAX + 1 }, (_, i) => ({ ...pack, id: `p${i}` })) })).toContain('packs');
    expect(refusal({ ...base, custom_quantity: { ...custom, max_credits: 99 } })).toContain('custom_quantity.max_credits: must be at least min_credits');
    expect(refusal({ ...base, custom_quantity: { ...custom, quick_picks: [50] } })).toContain('custom_quantity.quick_picks: each quick pick must be within');
    expect(refusal({ ...base, custom_quantity: { ...custom, max_credits: 10 ** 9 } })).toContain('custom_quantity.max_credits: max_credits × unit_price_centi_cents');
    expect(refusal({ ...base, custom_quantity: { ...custom, quick_picks: [100, 100, 100, 100, 100, 100, 100, 100, 100] } })).toContain('custom_quantity.quick_picks');
  });
});
