/** Of a failed response's body, at most this many bytes are read (into last_error); the rest is discarded unread. */
export const ALERT_RESPONSE_BYTES_MAX = 1_024;
/** last_error is cut to this many characters. */
export const ALERT_LAST_ERROR_CHARS_MAX = 500;

export interface PostOutcome {
  /** The HTTP status, or null when no response came (refused, reset, timed out). */
  status: number | null;
  /** '' on success; else what went wrong, one line, at most ALERT_LAST_ERROR_CHARS_MAX characters. */
  error: string;
}

/**
 * POSTs one webhook and reports what came back. Redirects are never followed (a 3xx is a failed
 * attempt: the receiver's URL must be configured as it is served), the whole exchange — connect,
 * headers, the bounded body read — runs under one timeout, and a 2xx's body is not read at all.
 */
export async function postWebhook(url: string, body: string, headers: Record<string, string>, timeoutMs: number): Promise<PostOutcome> {
  try {
    const response = await fetch(url, {
      method: 'POST', body, headers, redirect: 'manual', signal: AbortSignal.timeout(timeoutMs),
    });
    if (response.status >= 200 && response.status < 300) {
      await response.body?.cancel().catch(() => {});
      return { status: response.status, error: '' };
    }
    if (response.status >= 300 && response.status < 400) {
      await response.body?.cancel().catch(() => {});
      return { status: response.status, error: oneLine(`HTTP ${response.status}: redirect to ${response.headers.get('location') ?? '(none)'} not followed`) };
    }
    const excerpt = await readBounded(response, ALERT_RESPONSE_BYTES_MAX).catch(() => '');
    return { status: response.status, error: oneLine(`HTTP ${response.status}${excerpt === '' ? '' : `: ${excerpt}`}`) };
  } catch (err) {
    return { status: null, error: oneLine(describeFailure(err, timeoutMs)) };
  }
}

/** At most `bytesMax` bytes of the body as text; the stream is cancelled after that. */
async function readBounded(response: Response, bytesMax: number): Promise<string> {
  if (!response.body) return '';
  const reader = response.body.getReader();
  const chunks: Uint8Array[] = [];
  let bytes = 0;
  try {
    while (bytes < bytesMax) {
      const { done, value } = await reader.read();
      if (done) break;
      chunks.push(value);
      bytes += value.byteLength;
    }
  } finally {
    await reader.cancel().catch(() => {});
  }
  return Buffer.concat(chunks).subarray(0, bytesMax).toString('utf8');
}

function describeFailure(err: unknown, timeoutMs: number): string {
  const error = err as { name?: string; message?: string; cause?: { code?: string; message?: string } };
  if (error.name === 'TimeoutError' || error.name === 'AbortError') return `no answer within ${timeoutMs} ms`;
  const cause = error.cause?.code ?? error.cause?.message;
  return `${error.message ?? String(err)}${cause ? ` (${cause})` : ''}`;
}

/** Control characters and line breaks become spaces; cut to ALERT_LAST_ERROR_CHARS_MAX. */
function oneLine(text: string): string {
  // eslint-disable-next-line no-control-regex
  return text.replace(/[\u0000-\u001f\u007f]+/g, ' ').trim().slice(0, ALERT_LAST_ERROR_CHARS_MAX);
}

/** A URL as logs may show it: scheme, host and path; no credentials, query or fragment. */
export function urlForLogs(url: string): string {
  try {
    const parsed = new URL(url);
    return `${parsed.protocol}//${parsed.host}${parsed.pathname}`;
  } catch {
    return '(unparsable URL)';
  }
}
