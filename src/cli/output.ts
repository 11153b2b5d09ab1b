/**
 * How the CLI prints answers: `--json` (bigint as strings, times as ISO 8601, every field) or, by
 * default, aligned `key: value` lines with nested records indented and lists as small tables.
 */

/** Exit codes of every command. Usage errors exit with commander's own code (1). */
export const EXIT_OK = 0;
export const EXIT_FAILURE = 1;
export const EXIT_INVALID_CONFIG = 2;

const INDENT = '  ';
const COLUMN_GAP = '  ';

/** JSON.stringify's replacer: bigint as a decimal string (Dates already arrive as ISO strings). */
function jsonReplacer(_key: string, value: unknown): unknown {
  return typeof value === 'bigint' ? value.toString() : value;
}

/** The "Examples:" block of a command's --help. */
export function examples(...lines: string[]): string {
  return `\nExamples:\n${lines.map((line) => `  $ ${line}`).join('\n')}\n`;
}

export function toJson(value: unknown): string {
  return JSON.stringify(value, jsonReplacer, 2);
}

/** accountId → account_id: the proto's own field names. */
export function snakeCase(name: string): string {
  return name.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);
}

function formatScalar(value: unknown): string {
  if (value instanceof Date) return value.toISOString();
  if (value === null) return '-';
  if (typeof value === 'string') return value === '' ? '-' : value;
  return String(value);
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !(value instanceof Date) && !Array.isArray(value);
}

/**
 * A table: one row per record, columns in the first record's field order; columns empty in every row
 * are left out (a ledger page is mostly zeros in some fields).
 */
export function renderTable(rows: ReadonlyArray<Record<string, unknown>>, indent = ''): string[] {
  const first = rows[0];
  if (!first) return [`${indent}(none)`];
  const columns = Object.keys(first).filter((column) =>
    rows.some((row) => row[column] !== undefined && row[column] !== '' && !isRecord(row[column])));
  const cells = rows.map((row) => columns.map((column) => (row[column] === undefined ? '-' : formatScalar(row[column]))));
  const headers = columns.map(snakeCase);
  const widths = headers.map((header, i) => Math.max(header.length, ...cells.map((line) => (line[i] as string).length)));
  const line = (values: string[]) => indent + values.map((v, i) => v.padEnd(widths[i] as number)).join(COLUMN_GAP).trimEnd();
  return [line(headers), ...cells.map(line)];
}

/** Aligned `key: value` lines; undefined fields are skipped, nested records indented, arrays as tables. */
export function renderRecord(record: Record<string, unknown>, indent = ''): string[] {
  const entries = Object.entries(record).filter(([, value]) => value !== undefined);
  const scalars = entries.filter(([, value]) => !isRecord(value) && !Array.isArray(value));
  const width = Math.max(0, ...scalars.map(([key]) => snakeCase(key).length + 1));
  const lines: string[] = [];
  for (const [key, value] of entries) {
    const label = `${snakeCase(key)}:`;
    if (Array.isArray(value)) {
      if (value.length === 0) lines.push(`${indent}${label} (none)`);
      else lines.push(`${indent}${label}`, ...renderTable(value as Array<Record<string, unknown>>, indent + INDENT));
    } else if (isRecord(value)) {
      lines.push(`${indent}${label}`, ...renderRecord(value, indent + INDENT));
    } else {
      lines.push(`${indent}${label.padEnd(width)} ${formatScalar(value)}`);
    }
  }
  return lines;
}

/** Prints an answer in the chosen form on stdout. */
export function printResult(value: unknown, json: boolean, human: (value: never) => string[] = renderAny): void {
  process.stdout.write(`${json ? toJson(value) : human(value as never).join('\n')}\n`);
}

function renderAny(value: unknown): string[] {
  return isRecord(value) ? renderRecord(value) : [formatScalar(value)];
}

/** `error: <message> (<REASON>)` on stderr; the caller sets the exit code. */
export function printError(message: string, reason?: string): void {
  process.stderr.write(`error: ${message}${reason ? ` (${reason})` : ''}\n`);
}
