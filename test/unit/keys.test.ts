import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { PARTITION_COUNT } from '../../src/config/limits.js';
import { homePartition, newReservationId, partitionPrefix, reservationPartition } from '../../src/redis/keys.js';

describe('homePartition', () => {
  it('is FNV-1a 32 of the UTF-8 bytes, mod 64 (published FNV test vectors)', () => {
    // FNV-1a 32: "" = 0x811c9dc5, "a" = 0xe40c292c, "foobar" = 0xbf9cf968.
    expect(homePartition('')).toBe(0x811c9dc5 % 64);
    expect(homePartition('a')).toBe(0xe40c292c % 64);
    expect(homePartition('foobar')).toBe(0xbf9cf968 % 64);
  });

  it('is pinned: an account never moves between releases', () => {
    const pinned: Record<string, number> = {
      '': 5, a: 44, foobar: 40, 'acct-1': 28, 'org:42': 63, 'space-x': 0, 'ghost-parent': 7,
      'customer_000123': 50, 'caf\u00e9': 9,
    };
    for (const [id, partition] of Object.entries(pinned)) expect(homePartition(id), id).toBe(partition);
    expect(homePartition('\u00e9')).toBe(1);
  });

  it('is stable and in range for any id', () => {
    fc.assert(fc.property(fc.string({ maxLength: 128 }), (id) => {
      const partition = homePartition(id);
      expect(Number.isInteger(partition)).toBe(true);
      expect(partition).toBeGreaterThanOrEqual(0);
      expect(partition).toBeLessThan(PARTITION_COUNT);
      expect(homePartition(id)).toBe(partition);
    }));
  });

  it('spreads ids over every partition', () => {
    const seen = new Set<number>();
    for (let i = 0; i < 5000; i++) seen.add(homePartition(`acct-${i}`));
    expect(seen.size).toBe(PARTITION_COUNT);
  });
});

describe('partitionPrefix', () => {
  it('is "<prefix>:{p<n>}:" so every key of a partition shares one hash tag', () => {
    expect(partitionPrefix('meterd', 0)).toBe('meterd:{p0}:');
    expect(partitionPrefix('m:prod', 63)).toBe('m:prod:{p63}:');
  });
});

describe('reservation ids', () => {
  it('round-trip their partition', () => {
    for (let partition = 0; partition < PARTITION_COUNT; partition++) {
      const id = newReservationId(partition);
      expect(id).toMatch(/^r\d{1,2}\.[0-9a-f]{24}$/);
      expect(reservationPartition(id)).toBe(partition);
    }
  });

  it('are unique', () => {
    const ids = new Set(Array.from({ length: 1000 }, () => newReservationId(7)));
    expect(ids.size).toBe(1000);
  });

  it('are valid ids (letters, digits and . _ : -, at most 128)', () => {
    const id = newReservationId(PARTITION_COUNT - 1);
    expect(id).toMatch(/^[A-Za-z0-9._:-]{1,128}$/);
  });

  const hex = 'a1b2c3d4e5f6a7b8c9d0e1f2';
  const malformed: ReadonlyArray<readonly [name: string, id: string]> = [
    ['empty', ''],
    ['free text', 'abc'],
    ['no partition', `r.${hex}`],
    ['partition = PARTITION_COUNT', `r${PARTITION_COUNT}.${hex}`],
    ['partition 999', `r999.${hex}`],
    ['partition of 5 digits', `r00001.${hex}`],
    ['a negative partition', `r-1.${hex}`],
    ['23 hex digits', `r1.${hex.slice(1)}`],
    ['25 hex digits', `r1.${hex}0`],
    ['upper-case hex', `r1.${hex.toUpperCase()}`],
    ['non-hex', `r1.${'g'.repeat(24)}`],
    ['another letter', `x1.${hex}`],
    ['upper-case R', `R1.${hex}`],
    ['a trailing newline', `r1.${hex}\n`],
    ['a leading space', ` r1.${hex}`],
    ['no dot', `r1${hex}`],
  ];
  it.each(malformed)('rejects %s', (_name, id) => {
    expect(reservationPartition(id)).toBeUndefined();
  });

  it('accepts leading zeros in the partition (a well-formed id meterd never issues)', () => {
    expect(reservationPartition(`r01.${hex}`)).toBe(1);
  });
});
