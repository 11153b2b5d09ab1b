import { InvalidArgumentError } from 'commander';
import { CREDITS_MAX, UNITS_MAX } from '../config/limits.js';

/**
 * Argument parsers for commander. Each throws InvalidArgumentError, which commander reports naming
 * the flag or argument ("option '--credits <n>' argument '1.5' is invalid. ...") and exits with its
 * usage-error code.
 */

const WHOLE_NUMBER = /^\d+$/;
/** Times must at least start with a date; Date.parse then reads the rest (ISO 8601). */
const ISO_DATE_START = /^\d{4}-\d{2}-\d{2}/;

function wholeNumber(value: string, max: bigint, what: string): bigint {
  if (!WHOLE_NUMBER.test(value)) throw new InvalidArgumentError(`must be a whole number of ${what} (decimal digits, 0 to ${max})`);
  const amount = BigInt(value);
  if (amount > max) throw new InvalidArgumentError(`must be at most ${max} ${what}`);
  return amount;
}

/** A credit amount: whole, 0 to 10^15 (CREDITS_MAX). */
export function parseCredits(value: string): bigint {
  return wholeNumber(value, CREDITS_MAX, 'credits');
}

/** A usage amount (e.g. tokens): whole, 0 to 10^15 (UNITS_MAX). */
export function parseUnits(value: string): bigint {
  return wholeNumber(value, UNITS_MAX, 'units');
}

/** A small integer option (TTL, page size) within [min, max]. */
export function integerBetween(min: number, max: number): (value: string) => number {
  return (value) => {
    const number = WHOLE_NUMBER.test(value) ? Number(value) : Number.NaN;
    if (!Number.isSafeInteger(number) || number < min || number > max) {
      throw new InvalidArgumentError(`must be a whole number from ${min} to ${max}`);
    }
    return number;
  };
}

/** An ISO 8601 time, e.g. 2026-02-01T00:00:00Z (without a zone offset it is local time). */
export function parseTime(value: string): Date {
  const ms = ISO_DATE_START.test(value) ? Date.parse(value) : Number.NaN;
  if (Number.isNaN(ms)) throw new InvalidArgumentError('must be an ISO 8601 time, e.g. 2026-02-01T00:00:00Z');
  return new Date(ms);
}

/** Repeatable `--label key=value`, collected into one record (a later key wins). */
export function collectLabel(value: string, previous: Record<string, string> = {}): Record<string, string> {
  const equals = value.indexOf('=');
  if (equals <= 0) throw new InvalidArgumentError('must be key=value with a non-empty key');
  return { ...previous, [value.slice(0, equals)]: value.slice(equals + 1) };
}

/** Repeatable string option (e.g. `--kind commit --kind hold`). */
export function collect(value: string, previous: string[] = []): string[] {
  return [...previous, value];
}
