/**
 * An OpenAI-style chat call metered by meterd with withCredits.
 *
 *   npx tsx examples/chat-with-credits.ts [account] [prompt]
 *
 * Holds an estimate before the call, charges the tokens the model really used (usage.total_tokens,
 * priced by the `chat` feature), and releases the hold if the call fails or times out. The second
 * call streams: its hold is kept alive while chunks arrive and the commit charges what the stream used.
 *
 * Environment: METERD_ADDRESS (default 127.0.0.1:50051), METERD_TOKEN; OPENAI_API_KEY (absent: a
 * built-in fake model answers, so it runs offline), OPENAI_BASE_URL, OPENAI_MODEL.
 */
import { createMeterdClient, MeterdError, METERD_ADDRESS_DEFAULT, withCredits, type MeterdClient } from '../src/client/index.js';

/** The most tokens we let the model answer with; with the prompt, what the hold covers. */
const COMPLETION_TOKENS_MAX = 512;
/** A rough tokens-per-character ratio for the prompt estimate (English text: ~4 characters per token). */
const CHARACTERS_PER_TOKEN = 4;
/** A model call taking longer is abandoned (and its hold released). */
const MODEL_TIMEOUT_MS = 60_000;
/** The plan a missing demo account is created on. */
const DEMO_PLAN = 'free';

interface ChatMessage { role: 'system' | 'user' | 'assistant'; content: string }
interface ChatCompletion {
  choices: Array<{ message: ChatMessage }>;
  usage: { prompt_tokens: number; completion_tokens: number; total_tokens: number };
}

const apiKey = process.env.OPENAI_API_KEY;
const baseUrl = process.env.OPENAI_BASE_URL ?? 'https://api.openai.com/v1';
const model = process.env.OPENAI_MODEL ?? 'gpt-4o-mini';

const estimateTokens = (text: string) => Math.ceil(text.length / CHARACTERS_PER_TOKEN);

/** One chat completion: OpenAI's API when a key is set, else a fake model shaped like it. */
async function chatCompletion(messages: ChatMessage[], signal: AbortSignal): Promise<ChatCompletion> {
  if (!apiKey) return fakeModel(messages);
  const response = await fetch(`${baseUrl}/chat/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${apiKey}` },
    body: JSON.stringify({ model, messages, max_tokens: COMPLETION_TOKENS_MAX }),
    signal,
  });
  if (!response.ok) throw new Error(`model call failed: HTTP ${response.status} ${await response.text()}`);
  return (await response.json()) as ChatCompletion;
}

/** A streamed chat completion as text chunks with their token counts (fake model offline). */
async function* chatStream(messages: ChatMessage[], signal: AbortSignal): AsyncGenerator<{ text: string; tokens: number }> {
  const completion = await chatCompletion(messages, signal);
  const words = completion.choices[0]?.message.content.split(/(?<= )/) ?? [];
  // Offline or not, the example streams the answer word by word and counts each word's tokens;
  // a real stream would read the provider's SSE chunks (and its final usage chunk) here.
  yield { text: '', tokens: completion.usage.prompt_tokens };
  for (const word of words) {
    signal.throwIfAborted();
    yield { text: word, tokens: estimateTokens(word) };
  }
}

function fakeModel(messages: ChatMessage[]): ChatCompletion {
  const prompt = messages.map((m) => m.content).join('\n');
  const content = `(fake model) You said: "${prompt}". Set OPENAI_API_KEY to ask a real model.`;
  const promptTokens = estimateTokens(prompt);
  const completionTokens = estimateTokens(content);
  return {
    choices: [{ message: { role: 'assistant', content } }],
    usage: { prompt_tokens: promptTokens, completion_tokens: completionTokens, total_tokens: promptTokens + completionTokens },
  };
}

/** Creates the demo account on the free plan unless it exists (never changes an existing one). */
async function ensureAccount(client: MeterdClient, accountId: string): Promise<void> {
  try {
    await client.admin.getAccount({ accountId });
  } catch (err) {
    if (!(err instanceof MeterdError) || err.reason !== 'ACCOUNT_NOT_FOUND') throw err;
    await client.admin.upsertAccount({ account: { accountId, plan: DEMO_PLAN } });
    console.log(`created account ${accountId} on the ${DEMO_PLAN} plan`);
  }
}

async function main(): Promise<void> {
  const account = process.argv[2] ?? 'demo-account';
  const prompt = process.argv[3] ?? 'Write a haiku about metering.';
  const client = createMeterdClient({ address: process.env.METERD_ADDRESS ?? METERD_ADDRESS_DEFAULT, token: process.env.METERD_TOKEN });
  try {
    await ensureAccount(client, account);
    const messages: ChatMessage[] = [{ role: 'user', content: prompt }];
    const estimate = estimateTokens(prompt) + COMPLETION_TOKENS_MAX;

    // 1. A plain call: hold the estimate, charge usage.total_tokens.
    const { result, charge } = await withCredits(client, {
      account, feature: 'chat', units: estimate, user: 'example-user', signal: AbortSignal.timeout(MODEL_TIMEOUT_MS),
      cost: (completion: ChatCompletion) => ({ units: completion.usage.total_tokens }),
    }, (hold) => chatCompletion(messages, hold.signal));
    console.log(result.choices[0]?.message.content);
    console.log(`charged ${charge.chargedCredits} credits for ${result.usage.total_tokens} tokens; ${charge.balance?.available} available`);

    // 2. A streamed call: the hold is extended while chunks arrive; the commit charges what was streamed.
    const streamed = await withCredits(client, {
      account, feature: 'chat', units: estimate, user: 'example-user', signal: AbortSignal.timeout(MODEL_TIMEOUT_MS),
    }, async (hold) => {
      let text = '';
      for await (const chunk of chatStream(messages, hold.signal)) {
        text += chunk.text;
        hold.addUsage({ units: chunk.tokens });
      }
      return text;
    });
    console.log(`streamed ${streamed.result.length} characters; charged ${streamed.charge.chargedCredits} credits; ${streamed.charge.balance?.available} available`);
  } catch (err) {
    if (err instanceof MeterdError && err.reason === 'INSUFFICIENT_CREDITS') {
      console.error(`not enough credits: this call needs ${err.required}, the account has ${err.available}`);
      process.exitCode = 2;
    } else {
      throw err;
    }
  } finally {
    client.close();
  }
}

await main();
