/**
 * A minimal AI gateway that meters every request with meterd.
 *
 *   npx tsx examples/metered-http-gateway.ts
 *   curl -s localhost:8787/v1/chat/completions -H 'x-account-id: demo-account' \
 *        -d '{"messages":[{"role":"user","content":"hello"}]}'
 *
 * Each POST /v1/chat/completions holds credits for its estimated tokens, forwards the body to
 * UPSTREAM_URL (an OpenAI-compatible endpoint; absent: a built-in echo model), charges the
 * upstream's usage.total_tokens, and releases the hold when the upstream fails or the client hangs
 * up. Out of credits → 402 with required/available; meterd unreachable → 503 (fail closed: no
 * model call without a hold). The client's x-request-id is the reserve's idempotency key, so a
 * client retrying the same request is held once.
 *
 * Environment: PORT (default 8787), METERD_ADDRESS (default 127.0.0.1:50051), METERD_TOKEN,
 * UPSTREAM_URL, UPSTREAM_API_KEY.
 */
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { createMeterdClient, MeterdError, METERD_ADDRESS_DEFAULT, status, withCredits } from '../src/client/index.js';

const PORT_DEFAULT = 8787;
/** The feature every request is metered as (priced per token in the product config). */
const FEATURE = 'chat';
/** A request body larger than this is refused before anything is held. */
const REQUEST_BYTES_MAX = 1_000_000;
/** What the hold covers for the answer when the request sets no max_tokens. */
const COMPLETION_TOKENS_DEFAULT = 512;
const CHARACTERS_PER_TOKEN = 4;
/** An upstream taking longer is abandoned and its hold released. */
const UPSTREAM_TIMEOUT_MS = 60_000;

interface ChatRequest { messages?: Array<{ role: string; content: string }>; max_tokens?: number }
interface ChatResponse { usage?: { total_tokens?: number } }

class HttpError extends Error {
  constructor(readonly statusCode: number, message: string) {
    super(message);
  }
}

const upstreamUrl = process.env.UPSTREAM_URL;
// A gateway is the high-throughput case: all its meterd operations share one stream.
const meterd = createMeterdClient({
  address: process.env.METERD_ADDRESS ?? METERD_ADDRESS_DEFAULT, token: process.env.METERD_TOKEN, highThroughput: true,
});

async function readJson(request: IncomingMessage): Promise<ChatRequest> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of request) {
    size += (chunk as Buffer).length;
    if (size > REQUEST_BYTES_MAX) throw new HttpError(413, `request body over ${REQUEST_BYTES_MAX} bytes`);
    chunks.push(chunk as Buffer);
  }
  try {
    return JSON.parse(Buffer.concat(chunks).toString('utf8')) as ChatRequest;
  } catch {
    throw new HttpError(400, 'the body is not JSON');
  }
}

function estimateTokens(body: ChatRequest): number {
  const promptCharacters = (body.messages ?? []).reduce((sum, m) => sum + String(m.content ?? '').length, 0);
  return Math.ceil(promptCharacters / CHARACTERS_PER_TOKEN) + (body.max_tokens ?? COMPLETION_TOKENS_DEFAULT);
}

/** The upstream model: UPSTREAM_URL, or an echo model that answers with the last message. */
async function callModel(body: ChatRequest, signal: AbortSignal): Promise<ChatResponse> {
  if (upstreamUrl) {
    const response = await fetch(upstreamUrl, {
      method: 'POST', body: JSON.stringify(body), signal,
      headers: { 'content-type': 'application/json', ...(process.env.UPSTREAM_API_KEY ? { authorization: `Bearer ${process.env.UPSTREAM_API_KEY}` } : {}) },
    });
    if (!response.ok) throw new HttpError(502, `upstream answered HTTP ${response.status}`);
    return (await response.json()) as ChatResponse;
  }
  const last = body.messages?.at(-1)?.content ?? '';
  const promptTokens = Math.ceil(last.length / CHARACTERS_PER_TOKEN);
  return {
    choices: [{ message: { role: 'assistant', content: `echo: ${last}` } }],
    usage: { prompt_tokens: promptTokens, completion_tokens: promptTokens + 2, total_tokens: 2 * promptTokens + 2 },
  } as ChatResponse;
}

function send(response: ServerResponse, statusCode: number, body: unknown, headers: Record<string, string> = {}): void {
  response.writeHead(statusCode, { 'content-type': 'application/json', ...headers });
  response.end(JSON.stringify(body));
}

/** A meterd refusal as the HTTP status a gateway's client understands. */
function httpStatusOf(error: MeterdError): number {
  if (error.reason === 'INSUFFICIENT_CREDITS') return 402;
  if (error.code === status.UNAVAILABLE || error.code === status.DEADLINE_EXCEEDED) return 503;
  if (error.code === status.INVALID_ARGUMENT || error.code === status.NOT_FOUND) return 400;
  return 500;
}

async function handle(request: IncomingMessage, response: ServerResponse): Promise<void> {
  if (request.method !== 'POST' || request.url !== '/v1/chat/completions') throw new HttpError(404, 'POST /v1/chat/completions');
  const account = request.headers['x-account-id'];
  if (typeof account !== 'string' || account === '') throw new HttpError(401, 'x-account-id header required');
  const body = await readJson(request);
  // The client hanging up aborts the model call and releases the hold.
  const clientGone = new AbortController();
  response.once('close', () => { if (!response.writableFinished) clientGone.abort(new Error('client closed the connection')); });
  const requestId = request.headers['x-request-id'];
  const { result, charge } = await withCredits(meterd, {
    account, feature: FEATURE, units: estimateTokens(body),
    user: typeof request.headers['x-user-id'] === 'string' ? request.headers['x-user-id'] : undefined,
    requestId: typeof requestId === 'string' ? requestId : undefined,
    signal: AbortSignal.any([clientGone.signal, AbortSignal.timeout(UPSTREAM_TIMEOUT_MS)]),
    // No usage from the upstream: charge the hold (the estimate).
    cost: (answer: ChatResponse) => (answer.usage?.total_tokens !== undefined ? { units: answer.usage.total_tokens } : undefined),
  }, (hold) => callModel(body, hold.signal));
  send(response, 200, result, {
    'x-credits-charged': String(charge.chargedCredits),
    'x-credits-available': String(charge.balance?.available ?? ''),
  });
}

const server = createServer((request, response) => {
  handle(request, response).catch((err: unknown) => {
    if (response.headersSent || response.destroyed) return;
    if (err instanceof MeterdError) {
      send(response, httpStatusOf(err), {
        error: { reason: err.reason, message: err.message, ...(err.required !== undefined ? { required: String(err.required), available: String(err.available) } : {}) },
      });
    } else if (err instanceof HttpError) {
      send(response, err.statusCode, { error: { message: err.message } });
    } else {
      send(response, 502, { error: { message: err instanceof Error ? err.message : String(err) } });
    }
  });
});

const port = Number(process.env.PORT ?? PORT_DEFAULT);
server.listen(port, () => {
  const address = server.address();
  console.log(`metered gateway on http://127.0.0.1:${typeof address === 'object' && address ? address.port : port} → ${upstreamUrl ?? 'built-in echo model'}`);
});

for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => {
    server.close();
    meterd.close();
  });
}
