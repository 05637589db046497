import { describe, expect, it } from 'vitest';
import { backoffCeiling, backoffDelay } from '../src/realtime/backoff';

describe('backoff with full jitter', () => {
  it('ceiling starts at 0.5 s, doubles, and is capped at 30 s', () => {
    expect([0, 1, 2, 3, 4, 5, 6, 7, 8, 20, 1000].map((a) => backoffCeiling(a))).toEqual([
      500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000, 30000, 30000,
    ]);
  });

  it('delay = random * ceiling (full jitter), covering the whole [0, ceiling] range', () => {
    expect(backoffDelay(0, () => 0)).toBe(0);
    expect(backoffDelay(3, () => 0.5)).toBe(2000);
    expect(backoffDelay(3, () => 0.999999)).toBeLessThanOrEqual(4000);
    expect(backoffDelay(3, () => 0.999999)).toBeGreaterThan(3990);
    expect(backoffDelay(10, () => 0.25)).toBe(7500);
  });

  it('all delays stay within [0, min(cap, base*2^attempt)] for many random draws', () => {
    for (let attempt = 0; attempt < 15; attempt++) {
      const ceiling = Math.min(30000, 500 * 2 ** attempt);
      const seen: number[] = [];
      for (let i = 0; i < 300; i++) {
        const d = backoffDelay(attempt);
        expect(d).toBeGreaterThanOrEqual(0);
        expect(d).toBeLessThanOrEqual(ceiling);
        expect(d).toBeLessThanOrEqual(30000);
        seen.push(d);
      }
      // Jitter: the draws are spread out, not a fixed delay.
      expect(new Set(seen).size).toBeGreaterThan(50);
      expect(Math.max(...seen) - Math.min(...seen)).toBeGreaterThan(ceiling * 0.5);
    }
  });

  it('respects custom base and cap', () => {
    expect(backoffCeiling(4, 100, 1000)).toBe(1000);
    expect(backoffCeiling(2, 100, 1000)).toBe(400);
  });
});
