import type { LedgerEvent } from './ledger-event.js';

/**
 * Which events of a flush join a pool's ledger, and in what order — the ledger is one unbroken
 * chain per pool. Every event names the stream entry of its pool's previous event (prev, see
 * src/redis/lua/includes/ledger.lua). The ledger's head is its last event; every event from 1 up to
 * it is stored. Then:
 * - an event right after the head that chains to it joins the ledger and becomes the head;
 * - an event right after the head that does not chain to it is of another Redis timeline (a Redis
 *   that lost the tail of its data hands out the lost sequence numbers again): kept apart,
 *   `diverged` — and so is every event that chains to a kept-apart one, however far past the
 *   ledger it runs;
 * - an event at or before the head is a redelivery (same payload) or, with another payload, a
 *   `payload_differs` conflict, kept apart;
 * - an event further ahead arrived before the one it follows (another lane's or replica's batch):
 *   parked until that one comes, unless it chains to a kept-apart event.
 * Pure: the caller reads heads, parked events and stored payload hashes under the pool's lock and
 * writes the outcome in the same transaction.
 */
export interface LedgerHead {
  seq: bigint;
  streamEntryId: string;
}

export interface Candidate {
  event: LedgerEvent;
  /** Already in ledger_parked (from an earlier flush). */
  parked: boolean;
}

export interface ChainInput {
  head: LedgerHead;
  /** This flush's events of the pool and the pool's parked ones. */
  candidates: Candidate[];
  /** Payload hashes of stored events, by event id, for every candidate at or before the head. */
  storedHashes: ReadonlyMap<string, string>;
  /** "<event id> <stream entry id>" of events kept apart earlier, for candidates' predecessors. */
  keptApart: ReadonlySet<string>;
}

export interface ChainOutcome {
  head: LedgerHead;
  /** Join the ledger, in sequence order. */
  accepted: LedgerEvent[];
  payloadDiffers: LedgerEvent[];
  diverged: LedgerEvent[];
  /** Newly parked (this flush's events only; those parked before stay). */
  parked: LedgerEvent[];
  /** Parked before and settled now (accepted, kept apart, or redelivered): their parked rows go. */
  unparked: LedgerEvent[];
  /** This flush's events already stored with the same payload (a redelivered batch). */
  duplicates: number;
}

export const predecessorId = (e: LedgerEvent): string => `${e.accountId}/${e.seq - 1n}`;

export function chainPool(input: ChainInput): ChainOutcome {
  const out: ChainOutcome = { head: { ...input.head }, accepted: [], payloadDiffers: [], diverged: [], parked: [], unparked: [], duplicates: 0 };
  const known = new Map(input.storedHashes);
  const keptApartSids = new Set<string>();
  const seen = new Set<string>();
  const ordered = [...input.candidates].sort((a, b) => (a.event.seq === b.event.seq
    ? (a.event.streamEntryId < b.event.streamEntryId ? -1 : 1) : a.event.seq < b.event.seq ? -1 : 1));
  for (const { event: e, parked } of ordered) {
    const key = `${e.eventId} ${e.streamEntryId}`;
    if (seen.has(key)) { // the same entry twice (parked, and redelivered in this flush)
      if (!parked) out.duplicates += 1;
      continue;
    }
    seen.add(key);
    const keepApart = (list: LedgerEvent[]) => {
      list.push(e);
      keptApartSids.add(e.streamEntryId);
    };
    let outcome: 'accepted' | 'duplicate' | 'kept apart' | 'parked';
    if (e.seq <= out.head.seq) {
      const stored = known.get(e.eventId);
      if (stored === e.payloadSha256) outcome = 'duplicate';
      else if (stored === undefined && e.prevStreamEntryId === '') outcome = 'accepted'; // a gap left by events older than the chain
      else {
        keepApart(stored === undefined ? out.diverged : out.payloadDiffers);
        outcome = 'kept apart';
      }
    } else if (e.seq === out.head.seq + 1n) {
      if (e.prevStreamEntryId === '' || e.prevStreamEntryId === out.head.streamEntryId) {
        outcome = 'accepted';
        out.head = { seq: e.seq, streamEntryId: e.streamEntryId };
      } else {
        keepApart(out.diverged);
        outcome = 'kept apart';
      }
    } else if (keptApartSids.has(e.prevStreamEntryId) || input.keptApart.has(`${predecessorId(e)} ${e.prevStreamEntryId}`)) {
      keepApart(out.diverged);
      outcome = 'kept apart';
    } else {
      outcome = 'parked';
    }
    if (outcome === 'accepted') {
      out.accepted.push(e);
      known.set(e.eventId, e.payloadSha256);
    }
    if (outcome === 'duplicate' && !parked) out.duplicates += 1;
    if (outcome === 'parked' && !parked) out.parked.push(e);
    if (outcome !== 'parked' && parked) out.unparked.push(e);
  }
  return out;
}
