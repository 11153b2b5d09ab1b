/** An ISO-8601 UTC timestamp as epoch ms (throws on a typo rather than yielding NaN). */
export function t(iso: string): number {
  const ms = Date.parse(iso);
  if (Number.isNaN(ms)) throw new Error(`bad timestamp ${iso}`);
  return ms;
}

export function daysInMonthUtc(year: number, month0: number): number {
  return new Date(Date.UTC(year, month0 + 1, 0)).getUTCDate();
}
