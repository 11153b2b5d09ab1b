import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import fc from 'fast-check';
import { Redis } from 'ioredis';
import { periodBounds } from '../../src/domain/periods.js';
import { daysInMonthUtc, t } from '../support/time.js';

const REDIS_URL = 'redis://127.0.0.1:6379';

const INCLUDE = readFileSync(
  fileURLToPath(new URL('../../src/redis/lua/includes/periodBounds.lua', import.meta.url)),
  'utf8',
);

/** Single pair: exactly the include + the one-line wrapper. */
const SINGLE_SCRIPT = `${INCLUDE}
local s, e = periodBounds(tonumber(ARGV[1]), tonumber(ARGV[2])) return {string.format('%.0f', s), string.format('%.0f', e)}`;

/** Batch: ARGV = anchor1, now1, anchor2, now2, ...; returns start1, end1, start2, end2, ... */
const BATCH_SCRIPT = `${INCLUDE}
local out = {}
for i = 1, #ARGV, 2 do
  local s, e = periodBounds(tonumber(ARGV[i]), tonumber(ARGV[i + 1]))
  out[#out + 1] = string.format('%.0f', s)
  out[#out + 1] = string.format('%.0f', e)
end
return out`;

type Pair = readonly [anchorMs: number, nowMs: number];

function isStringArray(value: unknown): value is string[] {
  return Array.isArray(value) && value.every((v) => typeof v === 'string');
}

/** Same (anchor, now) pairs as the unit-test table. */
const TABLE: readonly Pair[] = (
  [
    ['2024-01-31T10:00:00.000Z', '2024-01-31T10:00:00.000Z'],
    ['2024-01-31T10:00:00.000Z', '2024-02-15T00:00:00.000Z'],
    ['2024-01-31T10:00:00.000Z', '2024-03-01T00:00:00.000Z'],
    ['2024-01-31T10:00:00.000Z', '2024-04-05T00:00:00.000Z'],
    ['2024-01-31T10:00:00.000Z', '2024-05-01T00:00:00.000Z'],
    ['2023-01-31T10:00:00.000Z', '2023-02-28T09:59:59.999Z'],
    ['2023-01-31T10:00:00.000Z', '2023-02-28T10:00:00.000Z'],
    ['2023-01-31T10:00:00.000Z', '2023-03-31T09:59:59.999Z'],
    ['2023-01-31T10:00:00.000Z', '2023-03-31T10:00:00.000Z'],
    ['2000-01-31T00:00:00.000Z', '2000-02-29T00:00:00.000Z'],
    ['2100-01-31T00:00:00.000Z', '2100-02-28T00:00:00.000Z'],
    ['2100-01-31T00:00:00.000Z', '2100-02-27T23:59:59.999Z'],
    ['2028-01-29T00:00:00.000Z', '2028-02-29T00:00:00.000Z'],
    ['2027-12-30T00:00:00.000Z', '2028-03-01T00:00:00.000Z'],
    ['2024-02-29T06:00:00.000Z', '2025-02-28T06:00:00.000Z'],
    ['2023-01-28T08:00:00.000Z', '2023-02-28T07:59:59.999Z'],
    ['2023-01-28T08:00:00.000Z', '2023-03-01T00:00:00.000Z'],
    ['2023-01-29T08:00:00.000Z', '2023-03-01T00:00:00.000Z'],
    ['2023-01-30T08:00:00.000Z', '2023-03-01T00:00:00.000Z'],
    ['2023-01-30T08:00:00.000Z', '2023-04-30T08:00:00.000Z'],
    ['2024-12-31T00:00:00.000Z', '2024-12-31T00:00:00.000Z'],
    ['2024-12-31T00:00:00.000Z', '2025-01-31T00:00:00.000Z'],
    ['2024-12-31T00:00:00.000Z', '2025-02-28T00:00:00.000Z'],
    ['2024-06-15T12:00:00.000Z', '2024-12-31T23:59:59.999Z'],
    ['2024-06-15T12:00:00.000Z', '2025-01-15T11:59:59.999Z'],
    ['2023-03-31T23:59:59.999Z', '2023-04-30T23:59:59.998Z'],
    ['2023-03-31T23:59:59.999Z', '2023-04-30T23:59:59.999Z'],
    ['2023-03-31T23:59:59.999Z', '2023-05-01T00:00:00.000Z'],
    ['2023-01-31T00:00:00.001Z', '2023-02-28T00:00:00.000Z'],
    ['2024-03-31T10:00:00.000Z', '2024-03-31T09:59:59.999Z'],
    ['2024-03-31T10:00:00.000Z', '2024-03-01T00:00:00.000Z'],
    ['2024-03-31T10:00:00.000Z', '2024-02-29T09:59:59.999Z'],
    ['2024-03-31T10:00:00.000Z', '2023-12-31T10:00:00.000Z'],
    ['2024-03-31T10:00:00.000Z', '2023-12-31T09:59:59.999Z'],
    ['2024-05-31T00:00:00.000Z', '2020-02-10T00:00:00.000Z'],
    ['2024-05-31T00:00:00.000Z', '1970-01-01T00:00:00.000Z'],
    ['1970-01-31T00:00:00.000Z', '2100-02-28T00:00:00.000Z'],
    ['1970-01-01T00:00:00.000Z', '1970-01-01T00:00:00.000Z'],
    ['9999-01-31T23:59:59.999Z', '9999-12-31T23:59:59.999Z'],
    ['1970-01-31T00:00:00.000Z', '9999-02-28T12:00:00.000Z'],
  ] as const
).map(([a, n]) => [t(a), t(n)] as const);

describe('periodBounds.lua matches src/domain/periods.ts', () => {
  let redis: Redis;

  beforeAll(async () => {
    redis = new Redis(REDIS_URL, { lazyConnect: true, maxRetriesPerRequest: 1 });
    await redis.connect();
  });

  afterAll(async () => {
    await redis.quit();
  });

  async function evalBatch(pairs: readonly Pair[]): Promise<Array<{ startMs: number; endMs: number }>> {
    const argv = pairs.flatMap(([a, n]) => [String(a), String(n)]);
    const reply: unknown = await redis.eval(BATCH_SCRIPT, 0, ...argv);
    if (!isStringArray(reply) || reply.length !== argv.length) {
      throw new Error(`unexpected EVAL reply: ${JSON.stringify(reply)}`);
    }
    return pairs.map((_, i) => ({ startMs: Number(reply[2 * i]), endMs: Number(reply[2 * i + 1]) }));
  }

  it('include starts with a --[[ ]] comment block and defines periodBounds', () => {
    expect(INCLUDE.startsWith('--[[')).toBe(true);
    expect(INCLUDE.match(/^local function periodBounds\(anchorMs, nowMs\)$/gm)).toHaveLength(1);
    // every top-level definition is a local function (no globals)
    const topLevel = INCLUDE.split('\n').filter((l) => /^[A-Za-z_]/.test(l) && !/^end\b/.test(l));
    for (const line of topLevel) expect(line).toMatch(/^local function (period_\w+|periodBounds)\(/);
  });

  it.each(TABLE)('table case: anchor %d, now %d (single-pair wrapper)', async (anchorMs, nowMs) => {
    const reply: unknown = await redis.eval(SINGLE_SCRIPT, 0, String(anchorMs), String(nowMs));
    expect(isStringArray(reply)).toBe(true);
    if (!isStringArray(reply)) return;
    const expected = periodBounds(anchorMs, nowMs);
    expect({ startMs: Number(reply[0]), endMs: Number(reply[1]) }).toEqual(expected);
    expect(reply).toEqual([String(expected.startMs), String(expected.endMs)]);
  });

  it('table cases (batched)', async () => {
    expect(await evalBatch(TABLE)).toEqual(TABLE.map(([a, n]) => periodBounds(a, n)));
  });

  it('property: ~2000 random (anchor, now) pairs agree, batched', async () => {
    const lo = Date.UTC(1970, 0, 1);
    const hi = Date.UTC(9999, 0, 1) - 1; // keep endMs inside year <= 9999
    const anyTime = fc.integer({ min: lo, max: hi });
    const modernTime = fc.integer({ min: Date.UTC(2000, 0, 1), max: Date.UTC(2091, 0, 1) - 1 });
    const monthEnd = fc
      .record({
        year: fc.integer({ min: 1970, max: 9998 }),
        month0: fc.integer({ min: 0, max: 11 }),
        day: fc.integer({ min: 27, max: 31 }),
        timeOfDay: fc.oneof(fc.constantFrom(0, 86_399_999), fc.integer({ min: 0, max: 86_399_999 })),
      })
      .map(
        ({ year, month0, day, timeOfDay }) =>
          Date.UTC(year, month0, Math.min(day, daysInMonthUtc(year, month0))) + timeOfDay,
      );
    const anchorArb = fc.oneof(modernTime, anyTime, monthEnd);
    // now: independent, or near the anchor / at an exact boundary
    const pairArb: fc.Arbitrary<Pair> = fc.oneof(
      fc.tuple(anchorArb, fc.oneof(modernTime, anyTime)),
      fc
        .tuple(anchorArb, fc.integer({ min: -400 * 86_400_000, max: 400 * 86_400_000 }))
        .map(([a, d]): Pair => [a, Math.min(hi, Math.max(lo, a + d))]),
      fc
        .tuple(anchorArb, monthEnd, fc.constantFrom(-1, 0, 1))
        .map(([a, m, d]): Pair => [a, Math.min(hi, Math.max(lo, m + d))]),
    );

    let checked = 0;
    await fc.assert(
      fc.asyncProperty(fc.array(pairArb, { minLength: 500, maxLength: 500 }), async (pairs) => {
        const lua = await evalBatch(pairs);
        checked += pairs.length;
        expect(lua).toEqual(pairs.map(([a, n]) => periodBounds(a, n)));
      }),
      { numRuns: 4 },
    );
    expect(checked).toBeGreaterThanOrEqual(2000);
  });

  it('rejects non-integer input', async () => {
    await expect(redis.eval(SINGLE_SCRIPT, 0, '1.5', '0')).rejects.toThrow(/anchorMs must be an integer/);
  });
});
