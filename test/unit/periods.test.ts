import { describe, it, expect } from 'vitest';
import fc from 'fast-check';
import { addMonthsClamped, periodBounds } from '../../src/domain/periods.js';
import { daysInMonthUtc, t } from '../support/time.js';

describe('addMonthsClamped', () => {
  const cases: ReadonlyArray<readonly [anchor: string, months: number, expected: string]> = [
    ['2024-01-31T10:00:00.000Z', 0, '2024-01-31T10:00:00.000Z'],
    ['2024-01-31T10:00:00.000Z', 1, '2024-02-29T10:00:00.000Z'],
    ['2024-01-31T10:00:00.000Z', 2, '2024-03-31T10:00:00.000Z'],
    ['2024-01-31T10:00:00.000Z', 3, '2024-04-30T10:00:00.000Z'],
    ['2024-01-31T10:00:00.000Z', 4, '2024-05-31T10:00:00.000Z'],
    ['2024-01-31T10:00:00.000Z', 12, '2025-01-31T10:00:00.000Z'],
    ['2024-01-31T10:00:00.000Z', 13, '2025-02-28T10:00:00.000Z'],
    ['2024-01-31T10:00:00.000Z', -1, '2023-12-31T10:00:00.000Z'],
    ['2024-01-31T10:00:00.000Z', -2, '2023-11-30T10:00:00.000Z'],
    ['2024-01-31T10:00:00.000Z', -11, '2023-02-28T10:00:00.000Z'],
    ['2023-01-31T00:00:00.000Z', 1, '2023-02-28T00:00:00.000Z'],
    ['2023-01-31T00:00:00.000Z', 2, '2023-03-31T00:00:00.000Z'],
    // leap years: 2000 leap (div by 400), 2100 not leap (div by 100), 2024/2028 leap
    ['2000-01-31T00:00:00.000Z', 1, '2000-02-29T00:00:00.000Z'],
    ['2100-01-31T00:00:00.000Z', 1, '2100-02-28T00:00:00.000Z'],
    ['2028-01-30T00:00:00.000Z', 1, '2028-02-29T00:00:00.000Z'],
    ['2028-01-30T00:00:00.000Z', 2, '2028-03-30T00:00:00.000Z'],
    ['2000-02-29T12:00:00.000Z', 12, '2001-02-28T12:00:00.000Z'],
    ['2000-02-29T12:00:00.000Z', 13, '2001-03-29T12:00:00.000Z'],
    ['2000-02-29T12:00:00.000Z', 48, '2004-02-29T12:00:00.000Z'],
    ['2096-02-29T12:00:00.000Z', 48, '2100-02-28T12:00:00.000Z'],
    // anchors on the 28th/29th/30th
    ['2023-01-28T08:00:00.000Z', 1, '2023-02-28T08:00:00.000Z'],
    ['2023-01-28T08:00:00.000Z', 2, '2023-03-28T08:00:00.000Z'],
    ['2023-01-29T08:00:00.000Z', 1, '2023-02-28T08:00:00.000Z'],
    ['2023-01-29T08:00:00.000Z', 2, '2023-03-29T08:00:00.000Z'],
    ['2024-01-29T08:00:00.000Z', 1, '2024-02-29T08:00:00.000Z'],
    ['2023-01-30T08:00:00.000Z', 1, '2023-02-28T08:00:00.000Z'],
    ['2023-01-30T08:00:00.000Z', 2, '2023-03-30T08:00:00.000Z'],
    ['2023-01-30T08:00:00.000Z', 3, '2023-04-30T08:00:00.000Z'],
    ['2023-03-30T08:00:00.000Z', -1, '2023-02-28T08:00:00.000Z'],
    // year end
    ['2023-12-31T00:00:00.000Z', 1, '2024-01-31T00:00:00.000Z'],
    ['2023-12-31T00:00:00.000Z', 2, '2024-02-29T00:00:00.000Z'],
    ['2024-12-31T00:00:00.000Z', 1, '2025-01-31T00:00:00.000Z'],
    ['2024-12-31T00:00:00.000Z', 2, '2025-02-28T00:00:00.000Z'],
    ['2024-12-31T00:00:00.000Z', 3, '2025-03-31T00:00:00.000Z'],
    ['2025-01-15T00:00:00.000Z', -1, '2024-12-15T00:00:00.000Z'],
    ['2025-01-15T00:00:00.000Z', -13, '2023-12-15T00:00:00.000Z'],
    // time of day preserved to the millisecond
    ['2023-03-31T23:59:59.999Z', 1, '2023-04-30T23:59:59.999Z'],
    ['2023-03-31T23:59:59.999Z', -1, '2023-02-28T23:59:59.999Z'],
    ['1970-01-01T00:00:00.000Z', 1, '1970-02-01T00:00:00.000Z'],
  ];

  it.each(cases)('%s plus %i months -> %s', (anchor, months, expected) => {
    expect(new Date(addMonthsClamped(t(anchor), months)).toISOString()).toBe(expected);
  });

  it('is computed from the original anchor, so the 31st comes back', () => {
    const anchor = t('2023-01-31T10:00:00.000Z');
    const days = Array.from({ length: 12 }, (_, n) => new Date(addMonthsClamped(anchor, n)).getUTCDate());
    expect(days).toEqual([31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31]);
  });

  it('rejects non-safe-integer inputs with RangeError', () => {
    for (const bad of [Number.NaN, Number.POSITIVE_INFINITY, 1.5, 2 ** 53]) {
      expect(() => addMonthsClamped(bad, 1)).toThrow(RangeError);
      expect(() => addMonthsClamped(0, bad)).toThrow(RangeError);
    }
  });
});

describe('periodBounds', () => {
  const cases: ReadonlyArray<readonly [anchor: string, now: string, start: string, end: string]> = [
    // Jan 31 -> Feb 29 (2024 leap) -> Mar 31 -> Apr 30 -> May 31
    ['2024-01-31T10:00:00.000Z', '2024-01-31T10:00:00.000Z', '2024-01-31T10:00:00.000Z', '2024-02-29T10:00:00.000Z'],
    ['2024-01-31T10:00:00.000Z', '2024-02-15T00:00:00.000Z', '2024-01-31T10:00:00.000Z', '2024-02-29T10:00:00.000Z'],
    ['2024-01-31T10:00:00.000Z', '2024-03-01T00:00:00.000Z', '2024-02-29T10:00:00.000Z', '2024-03-31T10:00:00.000Z'],
    ['2024-01-31T10:00:00.000Z', '2024-04-05T00:00:00.000Z', '2024-03-31T10:00:00.000Z', '2024-04-30T10:00:00.000Z'],
    ['2024-01-31T10:00:00.000Z', '2024-05-01T00:00:00.000Z', '2024-04-30T10:00:00.000Z', '2024-05-31T10:00:00.000Z'],
    // Jan 31 -> Feb 28 (2023 not leap) -> Mar 31; boundary: start inclusive, end exclusive
    ['2023-01-31T10:00:00.000Z', '2023-02-28T09:59:59.999Z', '2023-01-31T10:00:00.000Z', '2023-02-28T10:00:00.000Z'],
    ['2023-01-31T10:00:00.000Z', '2023-02-28T10:00:00.000Z', '2023-02-28T10:00:00.000Z', '2023-03-31T10:00:00.000Z'],
    ['2023-01-31T10:00:00.000Z', '2023-03-31T09:59:59.999Z', '2023-02-28T10:00:00.000Z', '2023-03-31T10:00:00.000Z'],
    ['2023-01-31T10:00:00.000Z', '2023-03-31T10:00:00.000Z', '2023-03-31T10:00:00.000Z', '2023-04-30T10:00:00.000Z'],
    // leap years: 2000 leap, 2100 not, 2028 leap
    ['2000-01-31T00:00:00.000Z', '2000-02-29T00:00:00.000Z', '2000-02-29T00:00:00.000Z', '2000-03-31T00:00:00.000Z'],
    ['2100-01-31T00:00:00.000Z', '2100-02-28T00:00:00.000Z', '2100-02-28T00:00:00.000Z', '2100-03-31T00:00:00.000Z'],
    ['2100-01-31T00:00:00.000Z', '2100-02-27T23:59:59.999Z', '2100-01-31T00:00:00.000Z', '2100-02-28T00:00:00.000Z'],
    ['2028-01-29T00:00:00.000Z', '2028-02-29T00:00:00.000Z', '2028-02-29T00:00:00.000Z', '2028-03-29T00:00:00.000Z'],
    ['2027-12-30T00:00:00.000Z', '2028-03-01T00:00:00.000Z', '2028-02-29T00:00:00.000Z', '2028-03-30T00:00:00.000Z'],
    ['2024-02-29T06:00:00.000Z', '2025-02-28T06:00:00.000Z', '2025-02-28T06:00:00.000Z', '2025-03-29T06:00:00.000Z'],
    // anchors on the 28th / 29th / 30th
    ['2023-01-28T08:00:00.000Z', '2023-02-28T07:59:59.999Z', '2023-01-28T08:00:00.000Z', '2023-02-28T08:00:00.000Z'],
    ['2023-01-28T08:00:00.000Z', '2023-03-01T00:00:00.000Z', '2023-02-28T08:00:00.000Z', '2023-03-28T08:00:00.000Z'],
    ['2023-01-29T08:00:00.000Z', '2023-03-01T00:00:00.000Z', '2023-02-28T08:00:00.000Z', '2023-03-29T08:00:00.000Z'],
    ['2023-01-30T08:00:00.000Z', '2023-03-01T00:00:00.000Z', '2023-02-28T08:00:00.000Z', '2023-03-30T08:00:00.000Z'],
    ['2023-01-30T08:00:00.000Z', '2023-04-30T08:00:00.000Z', '2023-04-30T08:00:00.000Z', '2023-05-30T08:00:00.000Z'],
    // year end: Dec 31 -> Jan 31 -> Feb 28
    ['2024-12-31T00:00:00.000Z', '2024-12-31T00:00:00.000Z', '2024-12-31T00:00:00.000Z', '2025-01-31T00:00:00.000Z'],
    ['2024-12-31T00:00:00.000Z', '2025-01-31T00:00:00.000Z', '2025-01-31T00:00:00.000Z', '2025-02-28T00:00:00.000Z'],
    ['2024-12-31T00:00:00.000Z', '2025-02-28T00:00:00.000Z', '2025-02-28T00:00:00.000Z', '2025-03-31T00:00:00.000Z'],
    ['2024-06-15T12:00:00.000Z', '2024-12-31T23:59:59.999Z', '2024-12-15T12:00:00.000Z', '2025-01-15T12:00:00.000Z'],
    ['2024-06-15T12:00:00.000Z', '2025-01-15T11:59:59.999Z', '2024-12-15T12:00:00.000Z', '2025-01-15T12:00:00.000Z'],
    // time of day preserved (23:59:59.999)
    ['2023-03-31T23:59:59.999Z', '2023-04-30T23:59:59.998Z', '2023-03-31T23:59:59.999Z', '2023-04-30T23:59:59.999Z'],
    ['2023-03-31T23:59:59.999Z', '2023-04-30T23:59:59.999Z', '2023-04-30T23:59:59.999Z', '2023-05-31T23:59:59.999Z'],
    ['2023-03-31T23:59:59.999Z', '2023-05-01T00:00:00.000Z', '2023-04-30T23:59:59.999Z', '2023-05-31T23:59:59.999Z'],
    ['2023-01-31T00:00:00.001Z', '2023-02-28T00:00:00.000Z', '2023-01-31T00:00:00.001Z', '2023-02-28T00:00:00.001Z'],
    // now before the anchor (negative n)
    ['2024-03-31T10:00:00.000Z', '2024-03-31T09:59:59.999Z', '2024-02-29T10:00:00.000Z', '2024-03-31T10:00:00.000Z'],
    ['2024-03-31T10:00:00.000Z', '2024-03-01T00:00:00.000Z', '2024-02-29T10:00:00.000Z', '2024-03-31T10:00:00.000Z'],
    ['2024-03-31T10:00:00.000Z', '2024-02-29T09:59:59.999Z', '2024-01-31T10:00:00.000Z', '2024-02-29T10:00:00.000Z'],
    ['2024-03-31T10:00:00.000Z', '2023-12-31T10:00:00.000Z', '2023-12-31T10:00:00.000Z', '2024-01-31T10:00:00.000Z'],
    ['2024-03-31T10:00:00.000Z', '2023-12-31T09:59:59.999Z', '2023-11-30T10:00:00.000Z', '2023-12-31T10:00:00.000Z'],
    ['2024-05-31T00:00:00.000Z', '2020-02-10T00:00:00.000Z', '2020-01-31T00:00:00.000Z', '2020-02-29T00:00:00.000Z'],
    ['2024-05-31T00:00:00.000Z', '1970-01-01T00:00:00.000Z', '1969-12-31T00:00:00.000Z', '1970-01-31T00:00:00.000Z'],
    // far after the anchor
    ['1970-01-31T00:00:00.000Z', '2100-02-28T00:00:00.000Z', '2100-02-28T00:00:00.000Z', '2100-03-31T00:00:00.000Z'],
    ['1970-01-01T00:00:00.000Z', '1970-01-01T00:00:00.000Z', '1970-01-01T00:00:00.000Z', '1970-02-01T00:00:00.000Z'],
  ];

  it.each(cases)('anchor %s, now %s -> [%s, %s)', (anchor, now, start, end) => {
    const b = periodBounds(t(anchor), t(now));
    expect({ start: new Date(b.startMs).toISOString(), end: new Date(b.endMs).toISOString() }).toEqual({
      start,
      end,
    });
  });

  it('rejects non-safe-integer inputs with RangeError', () => {
    for (const bad of [Number.NaN, Number.NEGATIVE_INFINITY, 0.5, -(2 ** 53)]) {
      expect(() => periodBounds(bad, 0)).toThrow(RangeError);
      expect(() => periodBounds(0, bad)).toThrow(RangeError);
    }
  });

  it('property: start <= now < end, consecutive periods from the anchor, clamped day', () => {
    const lo = Date.UTC(2000, 0, 1);
    const hi = Date.UTC(2091, 0, 1) - 1; // 2090-12-31T23:59:59.999Z
    const uniform = fc.integer({ min: lo, max: hi });
    // Bias some anchors to month ends (28th..31st, clamped) so clamping is exercised often.
    const monthEndAnchor = fc
      .record({
        year: fc.integer({ min: 2000, max: 2090 }),
        month0: fc.integer({ min: 0, max: 11 }),
        day: fc.integer({ min: 28, max: 31 }),
        timeOfDay: fc.integer({ min: 0, max: 86_399_999 }),
      })
      .map(
        ({ year, month0, day, timeOfDay }) =>
          Date.UTC(year, month0, Math.min(day, daysInMonthUtc(year, month0))) + timeOfDay,
      );
    const anchorArb = fc.oneof(uniform, monthEndAnchor);

    fc.assert(
      fc.property(anchorArb, uniform, (anchorMs, nowMs) => {
        const { startMs, endMs } = periodBounds(anchorMs, nowMs);
        expect(startMs).toBeLessThanOrEqual(nowMs);
        expect(nowMs).toBeLessThan(endMs);

        const anchor = new Date(anchorMs);
        const start = new Date(startMs);
        const k =
          (start.getUTCFullYear() - anchor.getUTCFullYear()) * 12 + (start.getUTCMonth() - anchor.getUTCMonth());
        expect(addMonthsClamped(anchorMs, k)).toBe(startMs);
        expect(addMonthsClamped(anchorMs, k + 1)).toBe(endMs);

        const dim = daysInMonthUtc(start.getUTCFullYear(), start.getUTCMonth());
        expect(start.getUTCDate()).toBe(Math.min(anchor.getUTCDate(), dim));
        // time of day preserved
        expect(startMs % 86_400_000).toBe(anchorMs % 86_400_000);
        // a period is between 28 and 31 days long
        const lengthDays = (endMs - startMs) / 86_400_000;
        expect(lengthDays).toBeGreaterThanOrEqual(28);
        expect(lengthDays).toBeLessThanOrEqual(31);
      }),
      { numRuns: 2000 },
    );
  });

  it('property: addMonthsClamped(anchor, 0) is the anchor and periods tile time', () => {
    const arb = fc.integer({ min: Date.UTC(2000, 0, 1), max: Date.UTC(2091, 0, 1) - 1 });
    fc.assert(
      fc.property(arb, fc.integer({ min: -60, max: 60 }), (anchorMs, n) => {
        expect(addMonthsClamped(anchorMs, 0)).toBe(anchorMs);
        const s = addMonthsClamped(anchorMs, n);
        const e = addMonthsClamped(anchorMs, n + 1);
        expect(periodBounds(anchorMs, s)).toEqual({ startMs: s, endMs: e });
        expect(periodBounds(anchorMs, e - 1)).toEqual({ startMs: s, endMs: e });
      }),
      { numRuns: 1000 },
    );
  });
});
