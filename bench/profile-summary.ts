/**
 * Top frames of a V8 .cpuprofile (node --cpu-prof) by self time, grouped by function and location.
 *
 *   npx tsx bench/profile-summary.ts bench/results/profile/<file>.cpuprofile [top]
 */
import { readFileSync } from 'node:fs';
import { relative } from 'node:path';

interface ProfileNode { id: number; callFrame: { functionName: string; url: string; lineNumber: number }; hitCount?: number; children?: number[] }
interface CpuProfile { nodes: ProfileNode[]; startTime: number; endTime: number; samples: number[]; timeDeltas: number[] }

export interface Frame { frame: string; selfMs: number; selfPct: number }

export function summarizeProfile(file: string, top = 20): Frame[] {
  const profile = JSON.parse(readFileSync(file, 'utf8')) as CpuProfile;
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const selfUs = new Map<number, number>();
  profile.samples.forEach((id, i) => selfUs.set(id, (selfUs.get(id) ?? 0) + (profile.timeDeltas[i] ?? 0)));
  const total = [...selfUs.values()].reduce((a, b) => a + b, 0) || 1;
  const grouped = new Map<string, number>();
  for (const [id, us] of selfUs) {
    const node = byId.get(id);
    if (!node) continue;
    const { functionName, url, lineNumber } = node.callFrame;
    let where = url.replace(/^file:\/\//, '');
    if (where.startsWith('/')) where = relative(process.cwd(), where);
    where = where.replace(/^node_modules\//, 'nm/');
    const key = `${functionName || '(anonymous)'}${where ? ` ${where}:${lineNumber + 1}` : ''}`;
    grouped.set(key, (grouped.get(key) ?? 0) + us);
  }
  return [...grouped.entries()].sort((a, b) => b[1] - a[1]).slice(0, top)
    .map(([frame, us]) => ({ frame, selfMs: Math.round(us / 1000), selfPct: Number(((us / total) * 100).toFixed(1)) }));
}

/** Self time per area: grpc-js, ioredis, the ledger flush, protobuf, pino, meterd src, GC, idle, node internals. */
export function summarizeAreas(file: string): Array<{ area: string; selfPct: number }> {
  const frames = summarizeProfile(file, 100_000);
  const areas = new Map<string, number>();
  for (const f of frames) {
    const area = /\(idle\)/.test(f.frame) ? 'idle'
      : /\(garbage collector\)/.test(f.frame) ? 'GC'
        : /\(program\)/.test(f.frame) ? '(program: native/V8)'
          : /@grpc\/grpc-js/.test(f.frame) ? 'grpc-js'
            : /ioredis|redis-parser|denque/.test(f.frame) ? 'ioredis'
              : /nm\/pg|pg-protocol|ledger-event|flusher|ledger-writer/.test(f.frame) ? 'ledger flush (pg, ledger events)'
              : /@bufbuild|protobufjs|src\/gen\//.test(f.frame) ? 'protobuf'
                : /pino|prom-client/.test(f.frame) ? 'logging/metrics libs'
                  : /^[^ ]+ src\//.test(f.frame) ? 'meterd src'
                    : /node:|^\S+$/.test(f.frame) ? 'node internals'
                      : 'other';
    areas.set(area, (areas.get(area) ?? 0) + f.selfPct);
  }
  return [...areas.entries()].sort((a, b) => b[1] - a[1]).map(([area, selfPct]) => ({ area, selfPct: Number(selfPct.toFixed(1)) }));
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const file = process.argv[2];
  if (!file) throw new Error('usage: profile-summary.ts <file.cpuprofile> [top]');
  for (const a of summarizeAreas(file)) console.log(`${String(a.selfPct).padStart(5)}%  ${a.area}`);
  console.log('');
  for (const f of summarizeProfile(file, Number(process.argv[3] ?? 25))) console.log(`${String(f.selfPct).padStart(5)}%  ${String(f.selfMs).padStart(7)} ms  ${f.frame}`);
}
