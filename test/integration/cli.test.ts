import { spawn } from 'node:child_process';
import { tmpdir } from 'node:os';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeTestCertificates, type TestCertificates } from '../support/certificates.js';
import { LOCAL_REDIS, startTestMeterd, type TestMeterd } from '../support/meterd.js';

/**
 * The `meterd` command line as a user runs it: a child process per command (node with tsx's loader
 * on src/main.ts) against an in-process meterd with its own key prefix and database.
 */

const REPO_ROOT = fileURLToPath(new URL('../../', import.meta.url));
/** A CLI run that takes longer than this is stuck (each normally takes about a second, mostly tsx). */
const CLI_RUN_TIMEOUT_MS = 20_000;
/** The longest test runs about a dozen commands one after another. */
const TEST_TIMEOUT_MS = 120_000;

interface CliRun {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs `meterd <args>` with a clean environment (nothing from the test runner leaks in) plus `env`. */
function runCli(args: string[], env: Record<string, string> = {}): Promise<CliRun> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', 'src/main.ts', ...args], {
      cwd: REPO_ROOT,
      env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: process.env.HOME ?? tmpdir(), TMPDIR: tmpdir(), ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString('utf8')));
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString('utf8')));
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`meterd ${args.join(' ')} did not finish within ${CLI_RUN_TIMEOUT_MS} ms\n${stdout}\n${stderr}`));
    }, CLI_RUN_TIMEOUT_MS);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

describe('meterd command line', { timeout: TEST_TIMEOUT_MS }, () => {
  let server: TestMeterd;
  let clientEnv: Record<string, string>;
  /** A client command that must succeed; returns its stdout. */
  const ok = async (...args: string[]): Promise<string> => {
    const run = await runCli(args, clientEnv);
    expect(run.stderr, `meterd ${args.join(' ')}`).toBe('');
    expect(run.code, `meterd ${args.join(' ')}`).toBe(0);
    return run.stdout;
  };
  const okJson = async <T = Record<string, unknown>>(...args: string[]): Promise<T> => JSON.parse(await ok(...args, '--json')) as T;

  beforeAll(async () => {
    server = await startTestMeterd({ postgres: true });
    clientEnv = { METERD_ADDRESS: `127.0.0.1:${server.meterd.grpcPort}` };
  });
  afterAll(async () => {
    await server?.stop();
  });

  it('lists every command in --help, and each command has its own help with examples', async () => {
    const [top, reserve, account] = await Promise.all([runCli(['--help']), runCli(['reserve', '--help']), runCli(['account', 'create', '--help'])]);
    expect(top.code).toBe(0);
    for (const command of ['serve', 'migrate', 'check-config', 'reconcile', 'rebuild-redis', 'account', 'grant', 'balance', 'usage', 'ledger', 'reserve', 'commit', 'release']) {
      expect(top.stdout).toMatch(new RegExp(`^  ${command}\\b`, 'm'));
    }
    expect(reserve.code).toBe(0);
    expect(reserve.stdout).toContain('--request-id <id>');
    expect(reserve.stdout).toContain('METERD_ADDRESS');
    expect(reserve.stdout).toContain('Examples:');
    expect(account.stdout).toContain('--trial-ends <iso>');
  });

  it('creates an account, grants, reserves, commits, and reads balance, ledger and usage', async () => {
    const account = await okJson('account', 'create', 'cli-acme', '--plan', 'starter', '--low-balance', '100');
    expect(account).toMatchObject({ accountId: 'cli-acme', plan: 'starter', lowBalanceThreshold: '100' , lowBalancePercent: 0});

    const granted = await ok('grant', 'cli-acme', '500', '--kind', 'pack', '--id', 'cli-pack-1', '--reason', 'welcome');
    expect(granted).toMatch(/^pack_credits:\s+500$/m);
    expect(granted).toMatch(/^available:\s+1500$/m);

    const reservation = await okJson('reserve', 'cli-acme', 'image_2k', '--user', 'u-1', '--label', 'model=img-2');
    expect(reservation).toMatchObject({ accountId: 'cli-acme', feature: 'image_2k', heldCredits: '60', state: 'HELD', userId: 'u-1' });
    expect(reservation.requestId).toMatch(/^cli-[0-9a-f-]{36}$/); // generated, and printed
    expect((reservation.balance as Record<string, unknown>).available).toBe('1440');

    const committed = await okJson('commit', reservation.reservationId as string, '--credits', '50');
    expect(committed).toMatchObject({ chargedCredits: '50', releasedCredits: '10', shortfallCredits: '0', replayed: false });

    expect(await okJson('balance', 'cli-acme')).toMatchObject({ available: '1450', held: '0', packCredits: '500', allowanceRemaining: '950' });
    expect(await ok('balance', 'cli-acme')).toMatch(/^available:\s+1450$/m);

    await server.meterd.flusher?.drain(); // the ledger is read from Postgres
    const ledger = await okJson<{ entries: Array<Record<string, unknown>>; nextPageToken: string }>('ledger', 'cli-acme');
    const kinds = ledger.entries.map((e) => e.kind);
    expect(kinds.slice(0, 3)).toEqual(['commit', 'hold', 'grant']); // newest first
    expect(kinds.at(-1)).toBe('account_created');
    expect(ledger.entries[0]).toMatchObject({ charged: '50', reservationId: reservation.reservationId, occurredAt: expect.stringMatching(/^2026-01-15T/) });
    const paged = await okJson<{ entries: unknown[]; nextPageToken: string }>('ledger', 'cli-acme', '--page-size', '1', '--all');
    expect(paged).toEqual({ entries: ledger.entries, nextPageToken: '' });
    const filtered = await okJson<{ entries: Array<Record<string, unknown>> }>('ledger', 'cli-acme', '--kind', 'grant');
    expect(filtered.entries.map((e) => e.opId)).toEqual(['cli-pack-1']);
    const table = await ok('ledger', 'cli-acme');
    expect(table).toMatch(/^occurred_at\s+seq\s+kind/);
    expect(table).toMatch(/commit .*charged:\+50/);

    const usage = await okJson('usage', 'cli-acme');
    expect(usage).toMatchObject({ operations: '1', credits: '50', features: [{ feature: 'image_2k', operations: '1', credits: '50' }] });
    expect(await ok('usage', 'cli-acme')).toMatch(/^features:\n\s+feature\s+operations\s+credits\n\s+image_2k\s+1\s+50$/m);
  });

  it('releases a reservation, charging nothing', async () => {
    await ok('account', 'create', 'cli-rel', '--plan', 'free');
    const reservation = await okJson('reserve', 'cli-rel', 'section_generate', '--request-id', 'cli-rel-1', '--ttl', '60');
    expect(reservation).toMatchObject({ heldCredits: '10', requestId: 'cli-rel-1' });
    const released = await okJson('release', reservation.reservationId as string, '--reason', 'provider timeout');
    expect(released).toMatchObject({ releasedCredits: '10', balance: { available: '250', held: '0' } });
    // Settled once: a second commit is refused with the reason.
    const again = await runCli(['commit', reservation.reservationId as string], clientEnv);
    expect(again.code).toBe(1);
    expect(again.stderr).toMatch(/^error: .+ \(RESERVATION_RELEASED\)\n$/);
  });

  it('prints refusals as "error: <message> (<REASON>)" and exits 1', async () => {
    await ok('account', 'create', 'cli-poor', '--plan', 'free');
    const [beyond, unknown, unreachable] = await Promise.all([
      runCli(['reserve', 'cli-poor', 'image_2k', '--credits', '1000'], clientEnv),
      runCli(['balance', 'cli-nobody'], clientEnv),
      runCli(['balance', 'cli-poor', '--address', '127.0.0.1:1']),
    ]);
    expect(beyond.code).toBe(1);
    expect(beyond.stdout).toBe('');
    expect(beyond.stderr).toMatch(/^error: .*1000.* \(INSUFFICIENT_CREDITS\)\n$/);
    expect(unknown.code).toBe(1);
    expect(unknown.stderr).toMatch(/\(ACCOUNT_NOT_FOUND\)\n$/);
    expect(unreachable.code).toBe(1);
    expect(unreachable.stderr).toMatch(/^error: cannot reach meterd at 127\.0\.0\.1:1: .* \(UNAVAILABLE\)\n$/);
    expect(await okJson('balance', 'cli-poor')).toMatchObject({ available: '250', held: '0' }); // nothing held
  });

  it('rejects amounts that are not whole numbers, naming the flag or argument', async () => {
    const [grant, commit, both] = await Promise.all([
      runCli(['grant', 'cli-acme', '1.5', '--kind', 'pack', '--id', 'g'], clientEnv),
      runCli(['commit', 'r1.x', '--credits=-3'], clientEnv),
      runCli(['reserve', 'cli-acme', 'chat', '--units', '10', '--credits', '3'], clientEnv),
    ]);
    expect(grant.code).toBe(1);
    expect(grant.stderr).toMatch(/argument 'credits'.*whole number/);
    expect(commit.code).toBe(1);
    expect(commit.stderr).toMatch(/--credits <n>.*whole number/);
    expect(both.code).toBe(1);
    expect(both.stderr).toMatch(/--units.*cannot be used with.*--credits/);
  });

  it('check-config: exit 0 with secrets redacted, exit 2 naming the bad variable', async () => {
    const secretEnv = {
      DATABASE_URL: 'postgres://meterd:db-secret-1@db.internal:5432/meterd',
      REDIS_URL: 'redis://:redis-secret-2@redis.internal:6379',
      AUTH_ADMIN_TOKENS: 'admin-token-0123456789abcdef',
      AUTH_DATA_PLANE_TOKENS: 'gateway-token-0123456789abcdef',
    };
    const [human, json, badPort, badProduct] = await Promise.all([
      runCli(['check-config'], secretEnv),
      runCli(['check-config', '--json'], secretEnv),
      runCli(['check-config'], { GRPC_PORT: 'fifty' }),
      runCli(['check-config'], { METERD_CONFIG: '/nonexistent/product.yaml' }),
    ]);
    expect(human.code).toBe(0);
    expect(human.stdout).toMatch(/^\s+plans:\s+3$/m);
    expect(human.stdout).toMatch(/^\s+features:\s+6$/m);
    expect(human.stdout).toContain('db.internal');
    for (const secret of ['db-secret-1', 'redis-secret-2', 'admin-token', 'gateway-token']) {
      expect(human.stdout).not.toContain(secret);
      expect(json.stdout).not.toContain(secret);
    }
    expect(json.code).toBe(0);
    const summary = JSON.parse(json.stdout) as { valid: boolean; productConfig: { plans: number }; settings: Record<string, unknown> };
    expect(summary).toMatchObject({ valid: true, productConfig: { plans: 3 } });
    expect(summary.settings.databaseUrl).toBe('postgres://meterd:[redacted]@db.internal:5432/meterd');

    expect(badPort.code).toBe(2);
    expect(badPort.stderr).toMatch(/^error: .*GRPC_PORT/);
    expect(badProduct.code).toBe(2);
    expect(badProduct.stderr).toMatch(/^error: METERD_CONFIG: cannot read/);
  });

  it('rebuild-redis --account exits 1 for an account the ledger does not know', async () => {
    const run = await runCli(['rebuild-redis', '--account', 'cli-nobody'], {
      DATABASE_URL: server.databaseUrl, REDIS_URL: LOCAL_REDIS.url as string, REDIS_KEY_PREFIX: server.keyPrefix,
    });
    expect(run.code).toBe(1);
    expect(run.stdout).toContain('cannot repair');
  });
});

describe('meterd command line against an authenticated, TLS-only server', { timeout: TEST_TIMEOUT_MS }, () => {
  const adminToken = 'cli-admin-token-0123456789';
  let server: TestMeterd;
  let certs: TestCertificates;
  let env: Record<string, string>;

  beforeAll(async () => {
    certs = makeTestCertificates();
    server = await startTestMeterd({ env: {
      AUTH_ADMIN_TOKENS: adminToken, AUTH_DATA_PLANE_TOKENS: 'cli-gateway-token-0123456789',
      GRPC_TLS_CERT_FILE: certs.serverCertFile, GRPC_TLS_KEY_FILE: certs.serverKeyFile,
    } });
    env = { METERD_ADDRESS: `127.0.0.1:${server.meterd.grpcPort}`, METERD_TLS_CA_FILE: certs.caFile };
  });
  afterAll(async () => {
    await server?.stop();
    certs?.remove();
  });

  it('sends its token over TLS; without one, or with a data-plane token on an admin command, it is refused', async () => {
    const created = await runCli(['account', 'create', 'cli-auth', '--plan', 'free', '--token', adminToken], env);
    expect(created.stderr).toBe('');
    expect(created.code).toBe(0);
    const missing = await runCli(['balance', 'cli-auth'], env);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toContain('(TOKEN_MISSING)');
    const gateway = await runCli(['grant', 'cli-auth', '5', '--kind', 'pack', '--id', 'g'], { ...env, METERD_TOKEN: 'cli-gateway-token-0123456789' });
    expect(gateway.code).toBe(1);
    expect(gateway.stderr).toContain('(PERMISSION_DENIED)');
    const balance = JSON.parse((await runCli(['balance', 'cli-auth', '--json'], { ...env, METERD_TOKEN: adminToken })).stdout) as { available: string };
    expect(balance.available).toBe('250');
  });
});
