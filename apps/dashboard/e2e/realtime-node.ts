// The dashboard's real-time code that e2e/reconnect-spread.mjs runs in Node: bundled from
// these very sources by Vite (the dashboard's own toolchain), so what is measured is what
// ships, not a re-implementation. Type-checked with the app (tsconfig.json includes e2e/).
export { BACKOFF_BASE_MS, BACKOFF_CAP_MS, backoffCeiling } from '../src/realtime/backoff';
export { topicsForPath } from '../src/realtime/topics';
export { defaultRealtimeDeps, openRealtimeSocket } from '../src/realtime/useWebSocket';
