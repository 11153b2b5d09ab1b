import { describe, expect, it } from 'vitest';
import { PRICE_CREDITS_MAX, PRICE_PER_UNITS_MAX } from '../../src/config/limits.js';
import {
  EXAMPLE_PRODUCT_CONFIG_PATH, loadProductConfig, parseProductConfig,
} from '../../src/config/product-config.js';
import { configRefusal } from '../support/config-refusal.js';

interface RawPlan { id: unknown; monthly_credits?: unknown; price_cents?: unknown; overage_limit?: unknown; [key: string]: unknown }
interface RawFeature { id: unknown; credits?: unknown; per_units?: unknown; min_credits?: unknown; [key: string]: unknown }
interface RawConfig { plans?: RawPlan[]; features?: RawFeature[]; [key: string]: unknown }

/** A valid config; each test breaks one thing. */
function valid(): RawConfig {
  return {
    plans: [
      { id: 'free', monthly_credits: 250, price_cents: 0 },
      { id: 'pro', monthly_credits: 5000, price_cents: 7900, overage_limit: 2000 },
    ],
    features: [
      { id: 'content_rewrite', credits: 1 },
      { id: 'image_1k', credits: 30 },
      { id: 'chat', credits: 2, per_units: 1000, min_credits: 1 },
    ],
  };
}

const refusal = (raw: unknown): string => configRefusal(() => parseProductConfig(raw));

describe('parseProductConfig', () => {
  it('accepts the shipped example (loadProductConfig)', () => {
    const config = loadProductConfig(EXAMPLE_PRODUCT_CONFIG_PATH);
    expect([...config.plans.keys()]).toEqual(['free', 'starter', 'pro']);
    expect(config.plans.get('pro')).toEqual({ id: 'pro', monthlyCredits: 5000n, priceCents: 7900, overageLimit: 2000n });
    expect(config.plans.get('free')?.overageLimit).toBe(0n);
    expect([...config.features.keys()]).toEqual(['content_rewrite', 'section_generate', 'image_1k', 'image_2k', 'avatar_select', 'chat']);
    expect(config.features.get('chat')).toEqual({ id: 'chat', credits: 2, perUnits: 1000, minCredits: 1 });
    expect(config.features.get('avatar_select')).toEqual({ id: 'avatar_select', credits: 0, perUnits: 0, minCredits: 0 });
    expect(config.planTableText).toBe('|free/250/0|starter/1000/0|pro/5000/2000');
  });

  it('builds planTableText as "|id/monthly/overage" per plan, in order, with exact big amounts', () => {
    const raw = valid();
    raw.plans = [
      { id: 'a.b:c-d_e', monthly_credits: 1_000_000_000_000_000, price_cents: 1, overage_limit: 1_000_000_000_000_000 },
      { id: 'zero', monthly_credits: 0, price_cents: 0 },
    ];
    // Lua's tostring would print 1e+15; the table must carry the digits.
    expect(parseProductConfig(raw).planTableText).toBe('|a.b:c-d_e/1000000000000000/1000000000000000|zero/0/0');
  });

  it('accepts prices exactly at the limits', () => {
    const raw = valid();
    raw.features = [{ id: 'max', credits: PRICE_CREDITS_MAX, per_units: PRICE_PER_UNITS_MAX, min_credits: PRICE_CREDITS_MAX }];
    expect(parseProductConfig(raw).features.get('max')).toEqual({
      id: 'max', credits: PRICE_CREDITS_MAX, perUnits: PRICE_PER_UNITS_MAX, minCredits: PRICE_CREDITS_MAX,
    });
  });

  it('names the source in its errors', () => {
    expect(() => parseProductConfig({}, 'my.yaml')).toThrow(/^my\.yaml: plans: /);
  });

  const cases: ReadonlyArray<readonly [name: string, breakIt: (raw: RawConfig) => unknown, expected: RegExp]> = [
    ['missing plans', (raw) => ({ features: raw.features }), /(^|: )plans: /],
    ['no plans', (raw) => ({ ...raw, plans: [] }), /(^|: )plans: needs at least one plan/],
    ['missing features', (raw) => ({ plans: raw.plans }), /(^|: )features: /],
    ['not an object', () => 'plans', /\(root\): /],
    ['negative monthly_credits', (raw) => { raw.plans![1]!.monthly_credits = -1; return raw; }, /plans\[1\]\.monthly_credits: must not be negative/],
    ['fractional monthly_credits', (raw) => { raw.plans![0]!.monthly_credits = 1.5; return raw; }, /plans\[0\]\.monthly_credits: must be a whole number/],
    ['fractional feature credits', (raw) => { raw.features![1]!.credits = 0.5; return raw; }, /features\[1\]\.credits: must be a whole number/],
    ['fractional overage_limit', (raw) => { raw.plans![1]!.overage_limit = 2.5; return raw; }, /plans\[1\]\.overage_limit: must be a whole number/],
    ['monthly_credits as a string', (raw) => { raw.plans![0]!.monthly_credits = '250'; return raw; }, /plans\[0\]\.monthly_credits: /],
    ['duplicate plan id', (raw) => { raw.plans![1]!.id = 'free'; return raw; }, /plans\[1\]\.id: duplicate id "free"/],
    ['duplicate feature id', (raw) => { raw.features![2]!.id = 'content_rewrite'; return raw; }, /features\[2\]\.id: duplicate id "content_rewrite"/],
    ['a plan id with a space', (raw) => { raw.plans![0]!.id = 'free plan'; return raw; }, /plans\[0\]\.id: use only letters, digits and \. _ : -/],
    ['a plan id with a |', (raw) => { raw.plans![0]!.id = 'free|x'; return raw; }, /plans\[0\]\.id: use only/],
    ['a plan id with a /', (raw) => { raw.plans![0]!.id = 'free/x'; return raw; }, /plans\[0\]\.id: use only/],
    ['a feature id with a {', (raw) => { raw.features![1]!.id = 'image{1k}'; return raw; }, /features\[1\]\.id: use only/],
    ['an empty feature id', (raw) => { raw.features![0]!.id = ''; return raw; }, /features\[0\]\.id: /],
    ['a feature id of 129 characters', (raw) => { raw.features![0]!.id = 'f'.repeat(129); return raw; }, /features\[0\]\.id: /],
    ['per_units 0', (raw) => { raw.features![2]!.per_units = 0; return raw; }, /features\[2\]\.per_units: must be at least 1/],
    ['min_credits without per_units', (raw) => { raw.features![1]!.min_credits = 5; return raw; }, /features\[1\]\.min_credits: min_credits needs per_units/],
    ['an unknown key in a plan', (raw) => { raw.plans![0]!.monthly = 5; return raw; }, /plans\[0\]: .*"monthly"/],
    ['an unknown key in a feature', (raw) => { raw.features![0]!.price = 5; return raw; }, /features\[0\]: .*"price"/],
    ['an unknown top-level key', (raw) => ({ ...raw, currency: 'EUR' }), /\(root\): .*"currency"/],
    ['feature credits above the limit', (raw) => { raw.features![0]!.credits = PRICE_CREDITS_MAX + 1; return raw; }, /features\[0\]\.credits: .*1000000/],
    ['per_units above the limit', (raw) => { raw.features![2]!.per_units = PRICE_PER_UNITS_MAX + 1; return raw; }, /features\[2\]\.per_units: .*1000000000/],
    ['min_credits above the limit', (raw) => { raw.features![2]!.min_credits = PRICE_CREDITS_MAX + 1; return raw; }, /features\[2\]\.min_credits: /],
    ['monthly_credits above 10^15', (raw) => { raw.plans![0]!.monthly_credits = 1e15 + 1; return raw; }, /plans\[0\]\.monthly_credits: .*1000000000000000/],
    ['overage_limit above 10^15', (raw) => { raw.plans![1]!.overage_limit = 2e15; return raw; }, /plans\[1\]\.overage_limit: /],
    ['price_cents above 2^53 - 1', (raw) => { raw.plans![0]!.price_cents = 2 ** 53; return raw; }, /plans\[0\]\.price_cents: /],
    ['101 plans', (raw) => ({
      ...raw, plans: Array.from({ length: 101 }, (_, i) => ({ id: `p${i}`, monthly_credits: 1, price_cents: 0 })),
    }), /(^|: )plans: /],
  ];

  it.each(cases)('refuses %s, naming the key', (_name, breakIt, expected) => {
    expect(refusal(breakIt(valid()))).toMatch(expected);
  });

  it('loadProductConfig names METERD_CONFIG when the file cannot be read', () => {
    expect(() => loadProductConfig('/nonexistent/meterd-product.yaml')).toThrow(/^METERD_CONFIG: cannot read \/nonexistent\/meterd-product\.yaml/);
  });
});
