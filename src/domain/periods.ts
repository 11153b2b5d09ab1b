/**
 * Monthly billing periods anchored at an account's billing anchor.
 *
 * Period `n` (any integer, negative before the anchor) starts at
 * `addMonthsClamped(anchor, n)`: the anchor's UTC day-of-month and
 * time-of-day, `n` calendar months later. When the target month is too short
 * the day is clamped to that month's last day (anchor Jan 31 10:00 gives
 * Feb 28/29 10:00, then Mar 31 10:00, Apr 30 10:00, ...). Every period start
 * is computed from the original anchor, never from the previous period, so a
 * clamped day does not stick: the 31st comes back in 31-day months.
 *
 * All values are integer milliseconds since the Unix epoch, UTC.
 *
 * The Redis Lua include `src/redis/lua/includes/periodBounds.lua` implements
 * the same algorithm and must stay in sync with this file.
 */

const MS_PER_DAY = 86_400_000;

function assertSafeInteger(name: string, value: number): void {
  if (!Number.isSafeInteger(value)) {
    throw new RangeError(`${name} must be a safe integer, got ${String(value)}`);
  }
}

/** Epoch ms of 00:00:00.000 UTC on the given civil date (month 0-based, day may overflow). */
function utcMidnight(year: number, month0: number, day: number): number {
  const ms = Date.UTC(year, month0, day);
  if (year >= 0 && year <= 99) {
    // Date.UTC maps years 0..99 to 1900..1999; setUTCFullYear does not.
    const d = new Date(ms);
    d.setUTCFullYear(year, month0, day);
    return d.getTime();
  }
  return ms;
}

/** Number of days in the given month (month 0-based). */
function daysInMonth(year: number, month0: number): number {
  return new Date(utcMidnight(year, month0 + 1, 0)).getUTCDate();
}

/**
 * Start of billing period `months` relative to `anchorMs`: same UTC
 * day-of-month and time-of-day as the anchor, `months` calendar months later
 * (or earlier, if negative), with the day clamped to the last day of the
 * target month. Always computed from the original anchor.
 *
 * @throws RangeError if an input is not a safe integer or the result is out of Date range.
 */
export function addMonthsClamped(anchorMs: number, months: number): number {
  assertSafeInteger('anchorMs', anchorMs);
  assertSafeInteger('months', months);

  const anchor = new Date(anchorMs);
  const year = anchor.getUTCFullYear();
  const month0 = anchor.getUTCMonth();
  const day = anchor.getUTCDate();
  const timeOfDayMs = anchorMs - Math.floor(anchorMs / MS_PER_DAY) * MS_PER_DAY;

  const totalMonths = year * 12 + month0 + months;
  const targetYear = Math.floor(totalMonths / 12);
  const targetMonth0 = totalMonths - targetYear * 12;
  const targetDay = Math.min(day, daysInMonth(targetYear, targetMonth0));

  const result = utcMidnight(targetYear, targetMonth0, targetDay) + timeOfDayMs;
  if (!Number.isSafeInteger(result)) {
    throw new RangeError(`addMonthsClamped(${anchorMs}, ${months}) is out of range`);
  }
  return result;
}

/**
 * The billing period containing `nowMs`: the unique integer `n` with
 * `addMonthsClamped(anchorMs, n) <= nowMs < addMonthsClamped(anchorMs, n + 1)`.
 * `nowMs` may be before the anchor (then `n` is negative).
 *
 * @returns `startMs` (inclusive) and `endMs` (exclusive; start of the next period).
 * @throws RangeError if an input is not a safe integer.
 */
export function periodBounds(anchorMs: number, nowMs: number): { startMs: number; endMs: number } {
  assertSafeInteger('anchorMs', anchorMs);
  assertSafeInteger('nowMs', nowMs);

  const anchor = new Date(anchorMs);
  const now = new Date(nowMs);
  // Calendar-month distance: period n starts inside now's month, so n or n - 1 is the answer.
  let n =
    (now.getUTCFullYear() - anchor.getUTCFullYear()) * 12 + (now.getUTCMonth() - anchor.getUTCMonth());

  let startMs = addMonthsClamped(anchorMs, n);
  while (startMs > nowMs) {
    n -= 1;
    startMs = addMonthsClamped(anchorMs, n);
  }
  let endMs = addMonthsClamped(anchorMs, n + 1);
  while (endMs <= nowMs) {
    n += 1;
    startMs = endMs;
    endMs = addMonthsClamped(anchorMs, n + 1);
  }
  return { startMs, endMs };
}
