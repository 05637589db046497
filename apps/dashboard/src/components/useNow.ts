import { useEffect, useState } from 'react';

/** Current time, refreshed every `intervalMs` while `enabled` (local timer only; no network). */
export function useNow(intervalMs = 5000, enabled = true): number {
  const [now, setNow] = useState(() => Date.now());
  useEffect(() => {
    if (!enabled) return;
    setNow(Date.now());
    const id = setInterval(() => setNow(Date.now()), intervalMs);
    return () => clearInterval(id);
  }, [intervalMs, enabled]);
  return now;
}
