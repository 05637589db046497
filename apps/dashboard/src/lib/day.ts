/**
 * The local day the charts show: from the browser's midnight to now.
 *
 * Reason to change: how a chart's day is cut. Never depends on React or the network.
 */

/** The local midnight that starts the day of `t` (epoch ms). */
export function startOfLocalDay(t: number = Date.now()): number {
  const d = new Date(t);
  d.setHours(0, 0, 0, 0);
  return d.getTime();
}

/** An instant as RFC 3339 in UTC, whole seconds (`2026-12-05T23:00:00Z`). */
export function rfc3339(t: number): string {
  return new Date(Math.floor(t / 1000) * 1000).toISOString().replace(/\.\d{3}Z$/, 'Z');
}

/** `14:05` in the browser's locale and zone. */
export function clockTime(t: number): string {
  return new Date(t).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
}
