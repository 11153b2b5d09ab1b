import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createMeterdClient, type MeterdClient } from '../../src/client/index.js';
import { exitOf, terminate } from '../support/child-processes.js';
import { startTestMeterd, type TestMeterd } from '../support/meterd.js';

/**
 * The README's examples run as a user runs them (`npx tsx examples/<file>.ts`, here node with tsx's
 * loader) against a real meterd, offline: the chat example with its fake model, the gateway with
 * its built-in echo model.
 */

/** An example process still running after this long is stuck (each normally takes about a second, mostly tsx). */
const EXAMPLE_RUN_MS_MAX = 20_000;
const GATEWAY_STOP_GRACE_MS = 2_000;

function runExample(file: string, args: string[], env: Record<string, string>): ChildProcess {
  return spawn(process.execPath, ['--import', 'tsx', file, ...args], {
    cwd: process.cwd(), env: { ...process.env, ...env, OPENAI_API_KEY: '' }, stdio: ['ignore', 'pipe', 'pipe'],
  });
}

function outputOf(child: ChildProcess): { stdout: () => string; stderr: () => string } {
  let stdout = '';
  let stderr = '';
  child.stdout?.on('data', (chunk: Buffer) => { stdout += chunk.toString(); });
  child.stderr?.on('data', (chunk: Buffer) => { stderr += chunk.toString(); });
  return { stdout: () => stdout, stderr: () => stderr };
}

describe('the examples run against a real meterd', () => {
  let t: TestMeterd;
  let client: MeterdClient;
  let address: string;
  const run = randomBytes(4).toString('hex');

  beforeAll(async () => {
    t = await startTestMeterd();
    address = `127.0.0.1:${t.meterd.grpcPort}`;
    client = createMeterdClient({ address });
  });
  afterAll(async () => {
    client?.close();
    await t?.stop();
  });

  it('chat-with-credits: creates the account, charges the plain and the streamed call', { timeout: EXAMPLE_RUN_MS_MAX }, async () => {
    const account = `chat-${run}`;
    const child = runExample('examples/chat-with-credits.ts', [account, 'hello meterd'], { METERD_ADDRESS: address });
    const output = outputOf(child);
    await exitOf(child);
    expect(output.stderr()).toBe('');
    expect(child.exitCode).toBe(0);
    expect(output.stdout()).toContain('(fake model) You said: "hello meterd"');
    expect(output.stdout()).toMatch(/charged 1 credits for \d+ tokens/);
    expect(output.stdout()).toMatch(/streamed \d+ characters; charged 1 credits/);
    expect((await client.getBalance(account)).available).toBe(248n);
  });

  it('metered-http-gateway: meters each request, 402 when out of credits', { timeout: EXAMPLE_RUN_MS_MAX }, async () => {
    const account = `gw-${run}`;
    await client.admin.upsertAccount({ account: { accountId: account, plan: 'free' } });
    const child = runExample('examples/metered-http-gateway.ts', [], { METERD_ADDRESS: address, PORT: '0' });
    const output = outputOf(child);
    try {
      const port = await new Promise<string>((resolve, reject) => {
        child.stdout?.on('data', () => {
          const match = /http:\/\/127\.0\.0\.1:(\d+)/.exec(output.stdout());
          if (match?.[1]) resolve(match[1]);
        });
        child.once('exit', () => reject(new Error(`the gateway exited: ${output.stderr()}`)));
      });
      const chat = (body: object) => fetch(`http://127.0.0.1:${port}/v1/chat/completions`, {
        method: 'POST', headers: { 'x-account-id': account }, body: JSON.stringify(body),
      });
      const ok = await chat({ messages: [{ role: 'user', content: 'hello' }] });
      expect(ok.status).toBe(200);
      expect(ok.headers.get('x-credits-charged')).toBe('1');
      expect(((await ok.json()) as { choices: Array<{ message: { content: string } }> }).choices[0]?.message.content).toBe('echo: hello');
      // 250 credits cover 125,000 tokens at 2 per 1,000: ask for more than that.
      const refused = await chat({ messages: [{ role: 'user', content: 'hi' }], max_tokens: 200_000 });
      expect(refused.status).toBe(402);
      expect(await refused.json()).toMatchObject({ error: { reason: 'INSUFFICIENT_CREDITS', required: '401', available: '249' } });
      const balance = await client.getBalance(account);
      expect(balance.available).toBe(249n);
      expect(balance.held).toBe(0n);
    } finally {
      await terminate(child, 'SIGTERM', GATEWAY_STOP_GRACE_MS);
    }
  });
});
