import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, posix, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { parse as parseYaml } from 'yaml';
import { loadSettings } from '../../src/config/settings.js';

/**
 * Static checks of the packaging (no Docker engine in CI): the Dockerfile builds with exactly the npm
 * scripts CI runs and ships only what the service reads at run time; docker-compose.yml runs a
 * durable Redis and sets only real settings; the Grafana dashboard queries only metrics meterd exports.
 */

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const read = (path: string) => readFileSync(join(ROOT, path), 'utf8');
const packageJson = JSON.parse(read('package.json')) as {
  type?: string;
  bin?: Record<string, string>;
  scripts: Record<string, string>;
  devDependencies: Record<string, string>;
};

// ---------------------------------------------------------------- Dockerfile parsing

interface Instruction {
  keyword: string;
  args: string;
}
interface Stage {
  base: string;
  name: string | undefined;
  instructions: Instruction[];
}

/** Instructions with line continuations joined; comment lines (also inside continuations) dropped. */
function parseDockerfile(text: string): { globalArgs: Map<string, string>; stages: Stage[] } {
  const logical: string[] = [];
  let pending = '';
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (line.startsWith('#') || (line === '' && pending === '')) continue;
    if (line.endsWith('\\')) {
      pending += line.slice(0, -1) + ' ';
      continue;
    }
    logical.push((pending + line).trim());
    pending = '';
  }
  if (pending.trim() !== '') logical.push(pending.trim());

  const globalArgs = new Map<string, string>();
  const stages: Stage[] = [];
  for (const entry of logical) {
    const match = /^(\S+)\s*(.*)$/.exec(entry);
    if (!match) continue;
    const keyword = (match[1] as string).toUpperCase();
    const args = match[2] as string;
    if (keyword === 'FROM') {
      const from = /^(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?$/i.exec(args);
      if (!from) throw new Error(`unreadable FROM: ${args}`);
      const base = (from[1] as string).replace(/\$\{(\w+)\}|\$(\w+)/g, (_, a: string, b: string) => globalArgs.get(a ?? b) ?? '');
      stages.push({ base, name: from[2], instructions: [] });
    } else if (stages.length === 0) {
      if (keyword === 'ARG') {
        const [name, value = ''] = args.split('=', 2);
        globalArgs.set((name as string).trim(), value.trim().replace(/^"(.*)"$/, '$1'));
      }
    } else {
      (stages[stages.length - 1] as Stage).instructions.push({ keyword, args });
    }
  }
  return { globalArgs, stages };
}

const runs = (stage: Stage) => stage.instructions.filter((i) => i.keyword === 'RUN').map((i) => i.args);
/** Every shell command of the stage's RUN lines, split on && ; and |. */
const commands = (stage: Stage) => runs(stage).flatMap((r) => r.split(/&&|;|\|\|?/).map((c) => c.trim().replace(/\s+/g, ' ')));
const npmCiCommands = (stage: Stage) => commands(stage).filter((c) => /^npm ci(\s|$)/.test(c));

interface Copy {
  from: string | undefined;
  sources: string[];
  destination: string;
}
function copies(stage: Stage): Copy[] {
  return stage.instructions
    .filter((i) => i.keyword === 'COPY' || i.keyword === 'ADD')
    .map((i) => {
      const words = i.args.startsWith('[') ? (JSON.parse(i.args) as string[]) : i.args.split(/\s+/);
      const from = words.find((w) => w.startsWith('--from='))?.slice('--from='.length);
      const paths = words.filter((w) => !w.startsWith('--'));
      return { from, sources: paths.slice(0, -1), destination: paths[paths.length - 1] as string };
    });
}
const normalize = (path: string) => posix.normalize(path).replace(/^\.\//, '').replace(/\/$/, '');

const dockerfile = parseDockerfile(read('Dockerfile'));
const stages = dockerfile.stages;
const runtime = stages[stages.length - 1] as Stage;
const buildStage = stages.find((s) => commands(s).some((c) => c === 'npm run build'));
const runtimeWorkdir = runtime.instructions.filter((i) => i.keyword === 'WORKDIR').at(-1)?.args ?? '/';

/** Scripts `npm ci` runs by itself in the project (besides dependencies' install scripts). */
const NPM_CI_LIFECYCLE = ['preinstall', 'install', 'postinstall', 'prepublish', 'preprepare', 'prepare', 'postprepare'];

describe('Dockerfile', () => {
  it('is multi-stage on Node 20, with a separate runtime stage', () => {
    expect(stages.length).toBeGreaterThanOrEqual(2);
    for (const stage of stages) expect(stage.base).toMatch(/^(node:20[.-]|node:20$|gcr\.io\/distroless\/nodejs20)/);
    expect(buildStage, 'a stage runs `npm run build`').toBeDefined();
    expect(buildStage).not.toBe(runtime);
  });

  it('builds with exactly the npm scripts CI runs: `npm ci` (whose prepare generates the protobuf code), then `npm run build`', () => {
    const ci = read('.ci/run');
    expect(ci).toMatch(/^npm ci$/m);
    expect(ci).toMatch(/^npm run build$/m);
    const build = buildStage as Stage;
    const cmds = commands(build);
    // Plain `npm ci`: --ignore-scripts would skip `prepare` (buf generate), --omit=dev would drop tsc.
    expect(cmds.findIndex((c) => /^npm ci(\s+--no-(fund|audit))*$/.test(c))).toBeGreaterThanOrEqual(0);
    expect(cmds.findIndex((c) => /^npm ci(\s|$)/.test(c))).toBeLessThan(cmds.indexOf('npm run build'));
    expect(packageJson.scripts.build).toBeDefined();
    expect(packageJson.scripts.prepare).toBeDefined();
    // Every `npm run X` anywhere in the Dockerfile names a script package.json has.
    for (const stage of stages) {
      for (const c of commands(stage)) {
        const script = /^npm run (\S+)/.exec(c)?.[1];
        if (script) expect(packageJson.scripts, `npm run ${script}`).toHaveProperty(script);
      }
    }
  });

  it('copies what `npm ci` and its prepare script read before running it (and everything before the build)', () => {
    const build = buildStage as Stage;
    const ciAt = build.instructions.findIndex((i) => i.keyword === 'RUN' && /(^|&&\s*)npm ci(\s|$)/.test(i.args));
    const copiedBeforeCi = copies({ ...build, instructions: build.instructions.slice(0, ciAt) }).flatMap((c) => c.sources.map(normalize));
    for (const needed of ['package.json', 'package-lock.json', 'buf.yaml', 'buf.gen.yaml', 'proto']) expect(copiedBeforeCi).toContain(needed);
    const buildAt = build.instructions.findIndex((i) => i.keyword === 'RUN' && /npm run build/.test(i.args));
    const copiedBeforeBuild = copies({ ...build, instructions: build.instructions.slice(0, buildAt) }).flatMap((c) => c.sources.map(normalize));
    expect(copiedBeforeBuild).toContain('.');
  });

  it('installs no devDependencies in what the runtime ships', () => {
    const runtimeCopies = copies(runtime);
    const nodeModules = runtimeCopies.filter((c) => c.sources.some((s) => normalize(s).endsWith('node_modules')));
    expect(nodeModules).toHaveLength(1);
    const source = stages.find((s) => s.name === nodeModules[0]?.from);
    expect(source, 'node_modules comes from a named stage').toBeDefined();
    expect(source).not.toBe(buildStage);
    const installs = npmCiCommands(source as Stage);
    expect(installs.length).toBeGreaterThan(0);
    for (const install of installs) {
      expect(install).toMatch(/--omit=dev\b/);
      // No `prepare` (buf generate is a devDependency) and no dependency install scripts.
      expect(install).toMatch(/--ignore-scripts\b/);
    }
    // The runtime stage itself installs nothing.
    expect(commands(runtime).filter((c) => /^(npm|yarn|pnpm) /.test(c))).toEqual([]);
    expect(Object.keys(packageJson.devDependencies)).toContain('@bufbuild/buf');
  });

  it('runs the built entry point as a non-root numeric user, with a health check and the contract ports', () => {
    const users = runtime.instructions.filter((i) => i.keyword === 'USER');
    expect(users.length).toBeGreaterThan(0);
    const user = (users.at(-1) as Instruction).args;
    const match = /^(\d+)(?::(\d+))?$/.exec(user);
    expect(match, `USER ${user} must be numeric (Kubernetes runAsNonRoot)`).not.toBeNull();
    expect(Number(match?.[1])).toBeGreaterThan(0);

    const healthchecks = runtime.instructions.filter((i) => i.keyword === 'HEALTHCHECK');
    expect(healthchecks).toHaveLength(1);
    const healthcheck = (healthchecks[0] as Instruction).args;
    expect(healthcheck).not.toMatch(/^NONE/i);
    expect(healthcheck).toMatch(/\/healthz/);
    expect(healthcheck).toMatch(/HTTP_PORT/);
    expect(healthcheck).toMatch(/9464/);
    expect(healthcheck).not.toMatch(/\bcurl\b|\bwget\b/); // not in node:*-slim

    const exposed = runtime.instructions.filter((i) => i.keyword === 'EXPOSE').flatMap((i) => i.args.split(/\s+/));
    expect(exposed).toEqual(expect.arrayContaining(['50051', '9464']));

    const entrypoint = runtime.instructions.filter((i) => i.keyword === 'ENTRYPOINT').at(-1);
    expect(entrypoint, 'ENTRYPOINT').toBeDefined();
    // Exec form, node directly (no npm: it writes a cache and does not forward SIGTERM).
    expect(JSON.parse((entrypoint as Instruction).args)).toEqual(['node', packageJson.bin?.meterd]);
    expect(packageJson.bin?.meterd).toBe('dist/src/main.js');
    expect(runtime.instructions.some((i) => i.keyword === 'ENV' && /NODE_ENV=production/.test(i.args))).toBe(true);
  });

  it('ships dist/ from the build and package.json (its "type": "module" makes node load dist as ESM)', () => {
    const runtimeCopies = copies(runtime);
    const dist = runtimeCopies.find((c) => c.from === buildStage?.name && c.sources.some((s) => normalize(s).endsWith('dist')));
    expect(dist, 'COPY --from=<build stage> .../dist').toBeDefined();
    expect(posix.resolve(runtimeWorkdir, (dist as Copy).destination)).toBe(posix.join(runtimeWorkdir, 'dist'));
    expect(packageJson.type).toBe('module');
    expect(runtimeCopies.some((c) => c.from === undefined && c.sources.map(normalize).includes('package.json'))).toBe(true);
  });
});

// ---------------------------------------------------------------- files the service reads at run time

function sourceFiles(directory: string): string[] {
  return (readdirSync(join(ROOT, directory), { recursive: true }) as string[])
    .map((file) => posix.join(directory, file.split('\\').join('/')))
    .filter((file) => file.endsWith('.ts') && !file.startsWith('src/gen/'));
}

/** `new URL('<relative>', import.meta.url)`: how the service finds its non-JS files next to its code. */
const assetReferences = sourceFiles('src').flatMap((file) =>
  [...read(file).matchAll(/new URL\(\s*'([^']+)'\s*,\s*import\.meta\.url\s*\)/g)].map((m) => ({ file, relativeUrl: m[1] as string })),
);

/** The paths the build script copies from the repo into dist/ (`fs.cpSync(d, 'dist/' + d)`). */
const buildCopies = [...(/\[([^\]]*)\]/.exec(packageJson.scripts['build:dist'] ?? packageJson.scripts.build ?? '')?.[1] ?? '').matchAll(/'([^']+)'/g)].map((m) => normalize(m[1] as string));

describe('files the service reads at run time', () => {
  it('finds the asset references (the Lua scripts, the migrations, the example product config at least)', () => {
    const targets = assetReferences.map(({ file, relativeUrl }) => normalize(posix.join(posix.dirname(file), relativeUrl)));
    expect(targets).toEqual(expect.arrayContaining(['src/redis/lua', 'src/postgres/migrations', 'src/config/product.example.yaml']));
  });

  it.each(assetReferences)('$file: $relativeUrl exists after `npm run build` inside dist/ (which the image ships)', ({ file, relativeUrl }) => {
    const inRepo = normalize(posix.join(posix.dirname(file), relativeUrl));
    const inBuild = normalize(posix.join('dist', posix.dirname(file), relativeUrl));
    expect(existsSync(join(ROOT, inRepo)), `${inRepo} exists in the repo`).toBe(true);
    // The built file sits at dist/<file>.js, so the same relative URL must land inside dist/...
    expect(inBuild.startsWith('dist/'), `${inBuild} is inside dist/`).toBe(true);
    // ...at dist/<inRepo>, where the build script copies it.
    expect(inBuild).toBe(`dist/${inRepo}`);
    const copiedBy = buildCopies.find((copied) => inRepo === copied || inRepo.startsWith(`${copied}/`));
    expect(copiedBy, `package.json "build" must copy '${inRepo}' to dist/ (copies: ${buildCopies.join(', ')})`).toBeDefined();
  });
});

// ---------------------------------------------------------------- .dockerignore

describe('.dockerignore', () => {
  const patterns = read('.dockerignore')
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l !== '' && !l.startsWith('#'))
    .map((p) => normalize(p.replace(/^\//, '')));
  const ignored = (path: string) => patterns.some((p) => !p.startsWith('!') && (path === p || path.startsWith(`${p}/`)));

  it('keeps generated and installed trees out of the build context', () => {
    for (const path of ['node_modules', 'dist', 'src/gen', '.git', 'coverage', 'bench']) expect(ignored(path), path).toBe(true);
  });

  it('keeps everything the build reads', () => {
    const needed = ['package.json', 'package-lock.json', 'buf.yaml', 'buf.gen.yaml', 'proto', 'src', 'tsconfig.json', 'tsconfig.build.json'];
    for (const asset of assetReferences) needed.push(normalize(posix.join(posix.dirname(asset.file), asset.relativeUrl)));
    for (const path of needed) expect(ignored(path), path).toBe(false);
  });
});

// ---------------------------------------------------------------- docker-compose.yml

/** The settings' variable names, read from the zod schema's keys in src/config/settings.ts. */
const settingsNames = [...read('src/config/settings.ts').matchAll(/^ {2}([A-Z][A-Z0-9_]*):/gm)].map((m) => m[1] as string);
/** The contract's variables of issue 4, accepted too while src/config/settings.ts is being extended. */
const CONTRACT_SETTINGS = [
  'HTTP_HOST', 'HTTP_PORT', 'AUTH_DATA_PLANE_TOKENS', 'AUTH_ADMIN_TOKENS', 'GRPC_TLS_CERT_FILE', 'GRPC_TLS_KEY_FILE',
  'GRPC_TLS_CLIENT_CA_FILE', 'GRPC_MAX_CONCURRENT_STREAMS', 'SHADOW_MODE', 'METRICS_ACCOUNT_IDS',
];

interface ComposeService {
  image?: string;
  build?: string | { context?: string; dockerfile?: string };
  command?: string | string[];
  environment?: Record<string, string | number | boolean | null> | string[];
  depends_on?: string[] | Record<string, { condition?: string }>;
  healthcheck?: { test?: string | string[]; disable?: boolean };
  ports?: Array<string | number | { target?: number }>;
  volumes?: Array<string | { target?: string }>;
}
const compose = parseYaml(read('docker-compose.yml')) as { services: Record<string, ComposeService> };
const service = (name: string) => {
  const found = compose.services[name];
  if (!found) throw new Error(`docker-compose.yml has no service ${name}`);
  return found;
};
const environmentOf = (s: ComposeService): Record<string, string> => {
  if (Array.isArray(s.environment)) {
    return Object.fromEntries(s.environment.map((e) => [e.split('=')[0] as string, e.slice(e.indexOf('=') + 1)]));
  }
  return Object.fromEntries(Object.entries(s.environment ?? {}).map(([k, v]) => [k, v === null ? '' : String(v)]));
};
const containerPorts = (s: ComposeService) =>
  (s.ports ?? []).map((p) => (typeof p === 'object' ? String(p.target) : String(p).split(':').at(-1)?.split('/')[0]));
const volumeTargets = (s: ComposeService) => (s.volumes ?? []).map((v) => (typeof v === 'object' ? v.target : v.split(':')[1]));

describe('docker-compose.yml', () => {
  it('runs Redis 7 durable (AOF) and never evicting, on a volume', () => {
    const redis = service('redis');
    expect(redis.image).toMatch(/^redis:7/);
    const command = Array.isArray(redis.command) ? redis.command.join(' ') : (redis.command ?? '');
    expect(command).toMatch(/--appendonly yes\b/);
    expect(command).toMatch(/--appendfsync (everysec|always)\b/);
    expect(command).toMatch(/--maxmemory-policy noeviction\b/);
    expect(volumeTargets(redis)).toContain('/data');
  });

  it('runs PostgreSQL 15 on a volume, with a health check', () => {
    const postgres = service('postgres');
    expect(postgres.image).toMatch(/^postgres:15/);
    expect(volumeTargets(postgres)).toContain('/var/lib/postgresql/data');
    expect(postgres.healthcheck?.test).toBeDefined();
  });

  it('builds meterd from the Dockerfile and starts it once Redis and Postgres are healthy', () => {
    const meterd = service('meterd');
    const context = typeof meterd.build === 'string' ? meterd.build : meterd.build?.context;
    expect(normalize(context ?? '')).toBe('.');
    for (const dependency of ['redis', 'postgres']) {
      expect((meterd.depends_on as Record<string, { condition?: string }>)[dependency]?.condition).toBe('service_healthy');
      expect(service(dependency).healthcheck?.test, `${dependency} needs a healthcheck for service_healthy`).toBeDefined();
    }
    expect(containerPorts(meterd)).toEqual(expect.arrayContaining(['50051', environmentOf(meterd).HTTP_PORT ?? '9464']));
  });

  it('sets only known settings, with values meterd accepts, pointing at the compose services', () => {
    const env = environmentOf(service('meterd'));
    const known = new Set([...settingsNames, ...CONTRACT_SETTINGS]);
    expect(settingsNames).toContain('REDIS_URL'); // the schema keys were found
    for (const name of Object.keys(env)) expect(known.has(name), `${name} is not a meterd setting`).toBe(true);
    expect(() => loadSettings(env)).not.toThrow();
    expect(new URL(env.REDIS_URL ?? '').hostname).toBe('redis');
    expect(new URL(env.DATABASE_URL ?? '').hostname).toBe('postgres');
  });

  it('has Prometheus, when present, scrape meterd /metrics on its HTTP port', () => {
    const prometheus = compose.services.prometheus;
    if (!prometheus) return;
    const mount = (prometheus.volumes ?? []).map(String).find((v) => v.split(':')[1] === '/etc/prometheus/prometheus.yml');
    expect(mount, 'the scrape config is mounted').toBeDefined();
    const config = parseYaml(read(normalize((mount as string).split(':')[0] as string))) as {
      scrape_configs: Array<{ metrics_path?: string; static_configs: Array<{ targets: string[] }> }>;
    };
    const port = environmentOf(service('meterd')).HTTP_PORT ?? '9464';
    const meterdJob = config.scrape_configs.find((job) => job.static_configs.some((s) => s.targets.includes(`meterd:${port}`)));
    expect(meterdJob).toBeDefined();
    expect(meterdJob?.metrics_path ?? '/metrics').toBe('/metrics');
  });
});

// ---------------------------------------------------------------- Grafana dashboard

const DASHBOARD_PATH = 'helm/meterd/dashboards/meterd-overview.json';
/** The contract's metric names (issue 4); histograms are queried through _bucket/_sum/_count. */
const CONTRACT_METRICS = [
  'grpc_server_started_total', 'grpc_server_handled_total', 'grpc_server_handling_seconds', 'meterd_reservations_total',
  'meterd_settlements_total', 'meterd_credits_total', 'meterd_denials_total', 'meterd_idempotent_replays_total',
  'meterd_redis_script_duration_seconds', 'meterd_flush_events_total', 'meterd_flush_batch_events', 'meterd_flush_lag_seconds',
  'meterd_flush_errors_total', 'meterd_flush_last_success_timestamp_seconds', 'meterd_ledger_backlog_events',
  'meterd_ledger_backlog_alarm', 'meterd_ledger_conflicts_total', 'meterd_reconcile_runs_total', 'meterd_reconcile_drifts',
  'meterd_reconcile_repairs_total', 'meterd_reconcile_last_run_timestamp_seconds', 'meterd_errors_total',
  'meterd_shadow_refusals_total', 'meterd_account_available_credits', 'meterd_build_info', 'meterd_ready',
];
const CONTRACT_HISTOGRAMS = ['grpc_server_handling_seconds', 'meterd_redis_script_duration_seconds', 'meterd_flush_batch_events', 'meterd_flush_lag_seconds'];
const PROMQL_WORDS = new Set(['by', 'without', 'on', 'ignoring', 'group_left', 'group_right', 'bool', 'offset', 'and', 'or', 'unless', 'inf', 'nan', 'atan2']);

/** Metric names in a PromQL expression: identifiers that are not functions, keywords, label names or numbers. */
function metricNames(expr: string): string[] {
  let text = expr.replace(/"(?:[^"\\]|\\.)*"/g, '""'); // label values, $variables inside them
  text = text.replace(/\{[^}]*\}/g, '{}'); // label matchers
  text = text.replace(/\[[^\]]*\]/g, '[]'); // ranges, $__rate_interval
  text = text.replace(/\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, ' '); // label lists
  const names: string[] = [];
  for (const match of text.matchAll(/[A-Za-z_:][A-Za-z0-9_:]*/g)) {
    const word = match[0];
    const at = match.index;
    if (at > 0 && /[0-9.$]/.test(text[at - 1] as string)) continue; // 1e-9, $variables
    if (text.slice(at + word.length).trimStart().startsWith('(')) continue; // function or aggregation
    if (PROMQL_WORDS.has(word)) continue;
    names.push(word);
  }
  return names;
}

/** Every value under a key named `key`, anywhere in the JSON. */
function valuesOf(node: unknown, key: string, found: unknown[] = []): unknown[] {
  if (Array.isArray(node)) for (const item of node) valuesOf(item, key, found);
  else if (node !== null && typeof node === 'object') {
    for (const [k, v] of Object.entries(node)) {
      if (k === key) found.push(v);
      valuesOf(v, key, found);
    }
  }
  return found;
}

interface Panel {
  id: number;
  type: string;
  title: string;
  gridPos: { x: number; y: number; w: number; h: number };
}
const dashboard = JSON.parse(read(DASHBOARD_PATH)) as {
  schemaVersion: number;
  templating: { list: Array<{ name: string; type: string; query: unknown }> };
  panels: Panel[];
};
const expressions = valuesOf(dashboard, 'expr') as string[];
const usedMetrics = new Set(expressions.flatMap(metricNames));

describe('Grafana dashboard', () => {
  it('is a schema-39-era dashboard with a Prometheus ${datasource} variable and distinct panel ids inside the 24-column grid', () => {
    expect(dashboard.schemaVersion).toBeGreaterThanOrEqual(36);
    expect(dashboard.templating.list).toContainEqual(expect.objectContaining({ name: 'datasource', type: 'datasource', query: 'prometheus' }));
    const ids = dashboard.panels.map((p) => p.id);
    expect(new Set(ids).size).toBe(ids.length);
    for (const panel of dashboard.panels) expect(panel.gridPos.x + panel.gridPos.w, panel.title).toBeLessThanOrEqual(24);
    expect(expressions.length).toBeGreaterThan(10);
  });

  it('hard-codes no datasource: every panel, query and variable uses ${datasource}', () => {
    const references = valuesOf(dashboard, 'datasource');
    expect(references.length).toBeGreaterThan(0);
    for (const reference of references) {
      if (typeof reference === 'string') {
        expect(reference).toBe('${datasource}');
        continue;
      }
      const { type, uid } = reference as { type?: string; uid?: string };
      if (type === 'grafana') continue; // Grafana's built-in annotations, not a Prometheus
      expect(uid).toBe('${datasource}');
    }
  });

  it('queries only the contract metrics meterd declares, and prom-client default process/nodejs metrics', () => {
    const declared = read('src/observability/metrics.ts');
    const promClientDefaults = readdirSync(join(ROOT, 'node_modules/prom-client/lib/metrics'))
      .filter((f) => f.endsWith('.js'))
      .map((f) => readFileSync(join(ROOT, 'node_modules/prom-client/lib/metrics', f), 'utf8'))
      .join('\n');
    for (const name of usedMetrics) {
      if (/^(process|nodejs)_/.test(name)) {
        expect(promClientDefaults, `${name} is a prom-client default metric`).toContain(`'${name}'`);
        continue;
      }
      const histogram = CONTRACT_HISTOGRAMS.find((h) => name === `${h}_bucket` || name === `${h}_sum` || name === `${h}_count`);
      const base = histogram ?? name;
      expect(CONTRACT_METRICS, `${name} is a contract metric`).toContain(base);
      expect(declared, `${base} is declared in src/observability/metrics.ts`).toContain(`name: '${base}'`);
    }
  });

  it('covers traffic, latency, credits, Redis, the ledger flush, reconcile, errors, readiness and the process', () => {
    expect([...usedMetrics]).toEqual(
      expect.arrayContaining([
        'grpc_server_handled_total', 'grpc_server_handling_seconds_bucket', 'meterd_reservations_total', 'meterd_denials_total',
        'meterd_credits_total', 'meterd_redis_script_duration_seconds_bucket', 'meterd_flush_lag_seconds_bucket',
        'meterd_ledger_backlog_events', 'meterd_ledger_backlog_alarm', 'meterd_flush_last_success_timestamp_seconds',
        'meterd_reconcile_drifts', 'meterd_errors_total', 'meterd_ready', 'process_resident_memory_bytes', 'process_cpu_seconds_total',
      ]),
    );
    expect(expressions.some((e) => /histogram_quantile\(0\.99,.*grpc_server_handling_seconds_bucket/.test(e))).toBe(true);
    expect(expressions.some((e) => /histogram_quantile\(0\.5,.*grpc_server_handling_seconds_bucket/.test(e))).toBe(true);
    expect(expressions.some((e) => /time\(\) - .*meterd_flush_last_success_timestamp_seconds/.test(e))).toBe(true);
  });

  it('has expressions Prometheus parses (promtool, installed by scripts/install-test-tools.sh)', () => {
    // Grafana's variables replaced by values of the same shape; each expression becomes a recording rule.
    const rules = expressions.map((expr, i) => ({
      record: `dashboard:expression_${i}`,
      expr: expr.replaceAll('$__rate_interval', '5m').replaceAll('$job', '.+').replaceAll('$instance', '.+'),
    }));
    const directory = mkdtempSync(join(tmpdir(), 'meterd-dashboard-'));
    try {
      const file = join(directory, 'rules.json'); // JSON is YAML
      writeFileSync(file, JSON.stringify({ groups: [{ name: 'dashboard', rules }] }));
      let problem = '';
      try {
        execFileSync('promtool', ['check', 'rules', file], { stdio: 'pipe' });
      } catch (err) {
        const { stdout, stderr, message } = err as { stdout?: Buffer; stderr?: Buffer; message: string };
        problem = `${stdout?.toString() ?? ''}${stderr?.toString() ?? ''}` || message;
      }
      expect(problem).toBe('');
    } finally {
      rmSync(directory, { recursive: true, force: true });
    }
  });
});
