import { randomBytes } from 'node:crypto';
import { PARTITION_COUNT } from '../config/limits.js';

/**
 * Accounts are spread over PARTITION_COUNT partitions; each partition's keys share one Redis Cluster
 * hash tag "{p<n>}", so a script only ever touches one slot. Inside a partition the Lua side names the
 * keys (src/redis/lua/includes/keys.lua): a/<account>, r/<reservation>, q/<account>/<request>, expiry,
 * ledger, u/<account>/<period start>, op/<pool>/<kind>/<id>.
 */

/** FNV-1a over the id's bytes: stable across processes, releases and languages. Never change it. */
export function homePartition(accountId: string): number {
  let hash = 0x811c9dc5;
  for (const byte of Buffer.from(accountId, 'utf8')) {
    hash ^= byte;
    hash = Math.imul(hash, 0x01000193) >>> 0;
  }
  return hash % PARTITION_COUNT;
}

/** The prefix every key of a partition starts with; it is KEYS[1] of every script. */
export function partitionPrefix(keyPrefix: string, partition: number): string {
  return `${keyPrefix}:{p${partition}}:`;
}

/** Reservation ids carry their partition ("r<partition>.<24 hex>"), so settling needs no lookup. */
const RESERVATION_ID = /^r(\d{1,4})\.[0-9a-f]{24}$/;

export function newReservationId(partition: number): string {
  return `r${partition}.${randomBytes(12).toString('hex')}`;
}

/** The partition a reservation id names, or undefined when it is not one meterd issued. */
export function reservationPartition(reservationId: string): number | undefined {
  const match = RESERVATION_ID.exec(reservationId);
  if (!match) return undefined;
  const partition = Number(match[1]);
  return partition < PARTITION_COUNT ? partition : undefined;
}
