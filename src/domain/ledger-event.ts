import { createHash } from 'node:crypto';

/**
 * One ledger event as the Lua scripts append it to a partition's stream (see
 * src/redis/lua/includes/ledger.lua): amounts are signed changes of the pool's fields.
 */
export interface LedgerEvent {
  eventId: string;
  accountId: string;
  seq: bigint;
  kind: string;
  spaceId: string;
  userId: string;
  feature: string;
  reservationId: string;
  trial: bigint;
  allowance: bigint;
  promo: bigint;
  pack: bigint;
  overage: bigint;
  held: bigint;
  charged: bigint;
  chargedOverage: bigint;
  shortfall: bigint;
  promoDetail: string;
  plan: string;
  periodStartMs: number | null;
  periodEndMs: number | null;
  expiresAtMs: number | null;
  opId: string;
  reason: string;
  actor: string;
  labels: string | null;
  settings: string | null;
  /** An alert's or refill's figures as JSON ({available, threshold}). */
  detail: string | null;
  occurredAtMs: number;
  streamEntryId: string;
  /** The stream entry id of the pool's previous event ('' before there was one, or for events older than the chain). */
  prevStreamEntryId: string;
  /** Hash of every field: the same event id arriving with another payload is a bug to alarm on. */
  payloadSha256: string;
}

const NEVER_EXPIRES_MS = '9007199254740991';

export class LedgerEventShapeError extends Error {
  override name = 'LedgerEventShapeError';
}

function integer(fields: Record<string, string>, name: string): bigint {
  const value = fields[name] ?? '0';
  if (!/^-?\d+$/.test(value)) throw new LedgerEventShapeError(`ledger field ${name} is not an integer: ${value}`);
  return BigInt(value);
}

function optionalMs(fields: Record<string, string>, name: string): number | null {
  return fields[name] === undefined ? null : Number(integer(fields, name));
}

/** Parses a stream entry's flat [field, value, ...] list. */
export function parseLedgerEvent(streamEntryId: string, flat: string[]): LedgerEvent {
  const fields: Record<string, string> = {};
  for (let i = 0; i + 1 < flat.length; i += 2) fields[flat[i] as string] = flat[i + 1] as string;
  const eventId = fields.id;
  const accountId = fields.account;
  const kind = fields.kind;
  if (!eventId || !accountId || !kind) throw new LedgerEventShapeError(`ledger entry ${streamEntryId} lacks id, account or kind`);
  const payload = Object.keys(fields).sort().map((k) => `${k}=${fields[k]}`).join('\n');
  return {
    eventId,
    accountId,
    seq: integer(fields, 'seq'),
    kind,
    spaceId: fields.space ?? '',
    userId: fields.user ?? '',
    feature: fields.feature ?? '',
    reservationId: fields.reservation ?? '',
    trial: integer(fields, 'trial'),
    allowance: integer(fields, 'allowance'),
    promo: integer(fields, 'promo'),
    pack: integer(fields, 'pack'),
    overage: integer(fields, 'overage'),
    held: integer(fields, 'held'),
    charged: integer(fields, 'charged'),
    chargedOverage: integer(fields, 'charged_overage'),
    shortfall: integer(fields, 'shortfall'),
    promoDetail: fields.promo_detail ?? '',
    plan: fields.plan ?? '',
    periodStartMs: optionalMs(fields, 'period_start'),
    periodEndMs: optionalMs(fields, 'period_end'),
    // A grant that never expires carries 2^53-1 ms (it sorts last in Redis); Postgres stores NULL.
    expiresAtMs: fields.expires_at === NEVER_EXPIRES_MS ? null : optionalMs(fields, 'expires_at'),
    opId: fields.op_id ?? '',
    reason: fields.reason ?? '',
    actor: fields.actor ?? '',
    labels: fields.labels ?? null,
    settings: fields.settings ?? null,
    detail: fields.detail ?? null,
    occurredAtMs: Number(integer(fields, 'time')),
    streamEntryId,
    prevStreamEntryId: fields.prev ?? '',
    payloadSha256: createHash('sha256').update(payload).digest('hex'),
  };
}
