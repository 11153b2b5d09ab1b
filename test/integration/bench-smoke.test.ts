// `npm run bench -- --quick` as a smoke test: every part runs and reports (or says "not available"),
// the JSON and the chart are written, nothing fails. No timing assertions: CI machines vary.
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { parseBenchArgs, runBench, type BenchReport } from '../../bench/run.js';

const out = mkdtempSync(join(tmpdir(), 'meterd-bench-'));
afterAll(() => rmSync(out, { recursive: true, force: true }));

describe('npm run bench -- --quick', () => {
  it('runs every part and writes the JSON and the chart', async () => {
    const lines: string[] = [];
    const options = { ...parseBenchArgs(['--quick', '--seconds', '1', '--out', out]), log: (line: string) => lines.push(line) };
    const report = await runBench(options);

    expect(report.errors, lines.join('\n')).toEqual([]);
    const written = JSON.parse(readFileSync(join(out, 'latest-quick.json'), 'utf8')) as BenchReport;
    expect(written.startedAt).toBe(report.startedAt);
    expect(readFileSync(join(out, 'latest-quick.svg'), 'utf8')).toMatch(/^<svg[\s\S]*<\/svg>$/);
    expect(existsSync(join(out, 'latest.json'))).toBe(false); // quick runs never replace the full results

    for (const part of ['unaryHot', 'unarySpread', 'postgresHot', 'postgresSpread', 'emptyCall', 'redisHot', 'redisSpread',
      'openLoopEmpty', 'openLoopMeterd', 'flush', 'redisMemory', 'meterdResidentMb']) {
      expect(written.parts[part], part).toBeDefined();
    }
    const highThroughput = written.parts.highThroughput as { available: boolean; reason?: string };
    expect(highThroughput.available || typeof highThroughput.reason === 'string').toBe(true);
    expect(new Set(written.rows.map((r) => r.part))).toEqual(new Set([1, 2, 3, 4, 5, 6, 7]));
    for (const row of written.rows) {
      // A figure is a number, or n/a with the reason in its note ("not available: …").
      if (row.value === null) expect(row.note, row.figure).toMatch(/not available|not run/);
      else expect(Number.isFinite(row.value), row.figure).toBe(true);
    }
    for (const key of ['cpuModel', 'cores', 'node', 'redis', 'postgres', 'grpcJs']) expect(written.machine, key).toHaveProperty(key);
    expect(lines.some((l) => l.includes('…'))).toBe(true); // progress while running
  }, 150_000);
});
