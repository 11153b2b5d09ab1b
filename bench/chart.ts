/**
 * bench/results/latest.svg: a hand-written SVG bar chart of one run (no chart dependency).
 * Left panel: throughput (cycles/s, log scale); right panel: first-call p50/p99 latency (ms, log scale).
 */
import type { BenchReport, ClosedLoopResult } from './run.js';

const escape = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');

export function renderChart(report: BenchReport): string {
  const p = report.parts as Record<string, ClosedLoopResult | undefined> & { highThroughput?: { available: boolean; spread?: ClosedLoopResult; hot?: ClosedLoopResult } };
  const accounts = String(report.settings.accounts);
  const series: Array<{ label: string; loop?: ClosedLoopResult; color: string }> = [
    { label: 'meterd unary, hot', loop: p.unaryHot, color: '#2b6cb0' },
    { label: `meterd unary, ${accounts} acc`, loop: p.unarySpread, color: '#2b6cb0' },
    { label: 'meterd high-thru, hot', loop: p.highThroughput?.hot, color: '#2c7a7b' },
    { label: `meterd high-thru, ${accounts} acc`, loop: p.highThroughput?.spread, color: '#2c7a7b' },
    { label: 'Postgres design, hot', loop: p.postgresHot, color: '#c05621' },
    { label: `Postgres design, ${accounts} acc`, loop: p.postgresSpread, color: '#c05621' },
    { label: 'empty gRPC call pairs', loop: p.emptyCall, color: '#718096' },
    { label: 'Redis only, hot', loop: p.redisHot, color: '#9b2c2c' },
    { label: `Redis only, ${accounts} acc`, loop: p.redisSpread, color: '#9b2c2c' },
  ];
  const rowH = 26;
  const top = 70;
  const labelW = 190;
  const panelW = 330;
  const height = top + series.length * rowH + 60;
  const width = labelW + 2 * panelW + 80;
  const log10 = (v: number) => Math.log10(Math.max(v, 1));
  const maxRate = Math.max(10, ...series.map((s) => s.loop?.cyclesPerSecond ?? 0));
  const rateScale = (v: number) => (log10(v) / Math.ceil(log10(maxRate))) * (panelW - 60);
  const maxMs = Math.max(1, ...series.map((s) => s.loop?.reserveMs.p99 ?? 0));
  const msDecades = Math.ceil(Math.log10(maxMs * 1000)); // from 1 µs
  const msScale = (ms: number) => (Math.log10(Math.max(ms * 1000, 1)) / msDecades) * (panelW - 60);
  const out: string[] = [];
  out.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" font-family="sans-serif" font-size="12">`);
  out.push(`<rect width="100%" height="100%" fill="white"/>`);
  const m = report.machine;
  out.push(`<text x="10" y="20" font-size="14" font-weight="bold">meterd benchmark ${escape(report.startedAt)}${report.settings.quick ? ' (--quick smoke run)' : ''}</text>`);
  out.push(`<text x="10" y="38">${escape(`${m.cores} × ${m.cpuModel}; node ${m.node}, redis ${m.redis}, postgres ${m.postgres}, grpc-js ${m.grpcJs}; concurrency ${String(report.settings.concurrency)}, ${String(report.settings.secondsPerRun)} s per run`)}</text>`);
  const x1 = labelW;
  const x2 = labelW + panelW + 40;
  out.push(`<text x="${x1}" y="${top - 10}" font-weight="bold">Reserve→Commit/Release cycles/s (log)</text>`);
  out.push(`<text x="${x2}" y="${top - 10}" font-weight="bold">first call latency p50 / p99, ms (log)</text>`);
  series.forEach((s, i) => {
    const y = top + i * rowH;
    out.push(`<text x="${labelW - 8}" y="${y + 15}" text-anchor="end">${escape(s.label)}</text>`);
    if (!s.loop) {
      out.push(`<text x="${x1 + 4}" y="${y + 15}" fill="#a0aec0">not available</text>`);
      return;
    }
    const w = rateScale(s.loop.cyclesPerSecond);
    out.push(`<rect x="${x1}" y="${y + 3}" width="${w.toFixed(1)}" height="${rowH - 8}" fill="${s.color}"/>`);
    out.push(`<text x="${(x1 + w + 4).toFixed(1)}" y="${y + 15}">${Math.round(s.loop.cyclesPerSecond).toLocaleString('en-US')}</text>`);
    const w99 = msScale(s.loop.reserveMs.p99);
    const w50 = msScale(s.loop.reserveMs.p50);
    out.push(`<rect x="${x2}" y="${y + 3}" width="${w99.toFixed(1)}" height="${rowH - 8}" fill="${s.color}" fill-opacity="0.35"/>`);
    out.push(`<rect x="${x2}" y="${y + 3}" width="${w50.toFixed(1)}" height="${rowH - 8}" fill="${s.color}"/>`);
    out.push(`<text x="${(x2 + w99 + 4).toFixed(1)}" y="${y + 15}">${s.loop.reserveMs.p50} / ${s.loop.reserveMs.p99}</text>`);
  });
  const passed = report.rows.filter((r) => r.pass === true).length;
  const missed = report.rows.filter((r) => r.pass === false).length;
  out.push(`<text x="10" y="${height - 20}">${escape(`targets: ${passed} pass, ${missed} miss (see latest.json rows); darker bar = p50, lighter = p99`)}</text>`);
  out.push('</svg>');
  return out.join('\n');
}
