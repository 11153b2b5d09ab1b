import { createHmac, timingSafeEqual } from 'node:crypto';

/**
 * Alert webhooks are signed like Stripe's: the sender computes
 * HMAC-SHA256(secret, "<unix seconds>.<raw body>") and sends
 *   Meterd-Timestamp: <unix seconds>
 *   Meterd-Signature: v1=<hex digest>
 * A receiver recomputes the digest over the raw bytes it received (before any JSON parsing) and
 * rejects timestamps too far from its clock, so a captured request cannot be replayed later.
 */
export const TIMESTAMP_HEADER = 'meterd-timestamp';
export const SIGNATURE_HEADER = 'meterd-signature';
export const SIGNATURE_SCHEME = 'v1';

/** Receivers should refuse a request whose timestamp is further than this from their clock. */
export const SIGNATURE_TOLERANCE_SECONDS_DEFAULT = 300;
/** A Meterd-Signature header longer than this is refused unread (a few signatures at most). */
const SIGNATURE_HEADER_CHARS_MAX = 1_024;
const HEX_DIGEST = /^[0-9a-fA-F]{64}$/;
const UNIX_SECONDS = /^\d{1,12}$/;

export function signatureDigest(secret: string, timestampSeconds: number, rawBody: string | Buffer): string {
  return createHmac('sha256', secret).update(`${timestampSeconds}.`).update(rawBody).digest('hex');
}

/** The two headers that sign `rawBody` at `timestampSeconds`. */
export function signatureHeaders(secret: string, timestampSeconds: number, rawBody: string | Buffer): Record<string, string> {
  return {
    [TIMESTAMP_HEADER]: String(timestampSeconds),
    [SIGNATURE_HEADER]: `${SIGNATURE_SCHEME}=${signatureDigest(secret, timestampSeconds, rawBody)}`,
  };
}

/** Node's IncomingHttpHeaders (lower-case names), a plain record, or fetch's Headers. */
export type HeaderSource = Record<string, string | string[] | undefined> | { get(name: string): string | null };

function header(headers: HeaderSource, name: string): string | undefined {
  if (typeof (headers as { get?: unknown }).get === 'function') return (headers as { get(n: string): string | null }).get(name) ?? undefined;
  const record = headers as Record<string, string | string[] | undefined>;
  const found = Object.keys(record).find((key) => key.toLowerCase() === name);
  const value = found === undefined ? undefined : record[found];
  return Array.isArray(value) ? value[0] : value;
}

/**
 * True when `rawBody` was signed with `secret` at a timestamp within `toleranceSeconds` of
 * `nowSeconds` (either way). Accepts several comma-separated `v1=` entries (a sender rotating its
 * secret may send one per secret); entries of other schemes are ignored. Comparison is constant-time.
 */
export function verifyAlertSignature(
  rawBody: string | Buffer,
  headers: HeaderSource,
  secret: string,
  toleranceSeconds: number = SIGNATURE_TOLERANCE_SECONDS_DEFAULT,
  nowSeconds: number = Math.floor(Date.now() / 1000),
): boolean {
  const timestamp = header(headers, TIMESTAMP_HEADER);
  const signature = header(headers, SIGNATURE_HEADER);
  if (timestamp === undefined || signature === undefined || secret === '') return false;
  if (!UNIX_SECONDS.test(timestamp) || signature.length > SIGNATURE_HEADER_CHARS_MAX) return false;
  const timestampSeconds = Number(timestamp);
  if (Math.abs(nowSeconds - timestampSeconds) > toleranceSeconds) return false;
  const expected = Buffer.from(signatureDigest(secret, timestampSeconds, rawBody), 'hex');
  let valid = false;
  for (const entry of signature.split(',')) {
    const [scheme, digest] = entry.trim().split('=', 2);
    if (scheme !== SIGNATURE_SCHEME || digest === undefined || !HEX_DIGEST.test(digest)) continue;
    // No early exit: every entry is compared.
    if (timingSafeEqual(Buffer.from(digest, 'hex'), expected)) valid = true;
  }
  return valid;
}
