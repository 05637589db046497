export const BACKOFF_BASE_MS = 500;
export const BACKOFF_CAP_MS = 30_000;

/** The upper bound of the delay before reconnect attempt number `attempt` (0-based). */
export function backoffCeiling(attempt: number, baseMs = BACKOFF_BASE_MS, capMs = BACKOFF_CAP_MS): number {
  const exp = Math.min(Math.max(0, Math.floor(attempt)), 40);
  return Math.min(capMs, baseMs * 2 ** exp);
}

/**
 * Exponential backoff with full jitter:
 * delay = random(0, min(cap, base * 2^attempt)).
 * `random` returns a number in [0, 1) like Math.random.
 */
export function backoffDelay(
  attempt: number,
  random: () => number = Math.random,
  baseMs = BACKOFF_BASE_MS,
  capMs = BACKOFF_CAP_MS,
): number {
  const ceiling = backoffCeiling(attempt, baseMs, capMs);
  const r = Math.min(Math.max(random(), 0), 1);
  return Math.min(ceiling, Math.floor(r * ceiling));
}
