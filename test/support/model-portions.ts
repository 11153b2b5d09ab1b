/**
 * Shared by the reference models of the credit engine (engine-model.property.test.ts and the chaos
 * suite's credit-model.ts): a hold's portions — the credits it took from each bucket, in burn
 * order — and the refusal a settled hold gives, as the scripts have them.
 */
export interface PortionLike { b: string; n: number }

export type HoldState = 'H' | 'C' | 'R' | 'E';

/** The credits of the portions, or of one bucket's. */
export function sumPortions<P extends PortionLike>(portions: readonly P[], bucket?: P['b']): number {
  return portions.reduce((total, p) => total + (bucket === undefined || p.b === bucket ? p.n : 0), 0);
}

/** The first `amount` credits of the portions (in order) and the rest. */
export function splitPortions<P extends PortionLike>(portions: readonly P[], amount: number): [P[], P[]] {
  const first: P[] = [];
  const rest: P[] = [];
  let left = amount;
  for (const p of portions) {
    if (left >= p.n) {
      first.push(p);
      left -= p.n;
    } else if (left > 0) {
      first.push({ ...p, n: left });
      rest.push({ ...p, n: p.n - left });
      left = 0;
    } else {
      rest.push(p);
    }
  }
  return [first, rest];
}

/** The refusal for settling a hold that is no longer held. */
export function notHeldReason(state: HoldState): string {
  if (state === 'C') return 'RESERVATION_COMMITTED';
  if (state === 'R') return 'RESERVATION_RELEASED';
  return 'RESERVATION_EXPIRED';
}
