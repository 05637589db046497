#!/usr/bin/env node
// How a server restart's reconnects are spread over time, measured with the dashboard's REAL
// reconnect code (issue #8).
//
//   PULSE_SERVER_BIN=/path/to/server node e2e/reconnect-spread.mjs [--clients 500] [--bucket-ms 100]
//   (or RECONNECT_CLIENTS / RECONNECT_BUCKET_MS)
//
// 1. Bundles the dashboard's real-time code (e2e/realtime-node.ts: ReconnectingSocket, the
//    backoff, the per-attempt ticket fetch, the /me check, the wiring of useWebSocket) for Node
//    with Vite, and runs N copies of it, one per simulated dashboard (browser), in this process.
// 2. Starts the real server (fresh SQLite database), connects all N and waits until they are live.
// 3. Restarts the server: SIGTERM (it closes every socket with 1001 and exits), then the same
//    binary again on the same port and database.
// 4. Records, per client, every state change of its ReconnectingSocket and, from the servers'
//    JSON access logs, when the restarted server saw ticket requests and upgrades.
// Writes <repo>/target/e2e/reconnect-spread.json, prints a summary, and exits 1 when a check
// derived from the backoff policy fails (see `checks` below).
//
// What stands in for the browser (kept minimal, so that everything else is the shipped code):
// - `WebSocket`: the `ws` package (Node 20 has no global WebSocket); like a browser it reports
//   a refused upgrade as an error then a close 1006;
// - `window.location`: only protocol/host/origin (the ticket URL is built from it);
// - `fetch`: Node's own, with relative URLs resolved against that origin as a page would;
// - no `document` (the deps then count the page as visible);
// - no `navigator.locks` (Node 20 has no navigator): each client is one browser with one tab,
//   so its TabCoordinator would be the leader/solo tab whose connection is exactly
//   `openRealtimeSocket` — that is what runs here, without the coordinator around it.
// All clients log in as the same admin, so the server runs with WS_MAX_CONNECTIONS_PER_USER
// raised above N (the default 50 per user would refuse them); nothing else is changed.
import fs from 'node:fs';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { build } from 'vite';
import { WebSocket as NodeWebSocket } from 'ws';
import { PulseServer, serverBinFromEnv, sleep } from './server.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const appDir = path.resolve(here, '..');
const repoRoot = path.resolve(appDir, '..', '..');
const outDir = path.join(repoRoot, 'target', 'e2e');
// Inside node_modules so that the bundle's `import "react"` (kept external) resolves.
const bundleDir = path.join(appDir, 'node_modules', '.cache', 'pulse-e2e');

const { values: args } = parseArgs({
  options: {
    clients: { type: 'string', default: process.env.RECONNECT_CLIENTS || '500' },
    'bucket-ms': { type: 'string', default: process.env.RECONNECT_BUCKET_MS || '100' },
  },
});
const N = Number(args.clients);
const BUCKET_MS = Number(args['bucket-ms']);
if (!Number.isInteger(N) || N < 1) throw new Error(`--clients must be a positive integer, not ${args.clients}`);
if (!(BUCKET_MS > 0)) throw new Error(`--bucket-ms must be positive, not ${args['bucket-ms']}`);

/** Clients started per 100 ms at the beginning (the initial connect is not what is measured). */
const START_PER_100MS = 100;
/** Allowance for a ticket fetch + upgrade against a just-started debug server on a busy machine. */
const CONNECT_SLACK_MS = 10_000;
/**
 * Allowance for timers firing late on this process's event loop (N clients share it): an
 * observed wait may exceed the policy's ceiling by this much before it counts as a violation.
 */
const EVENT_LOOP_SLACK_MS = 1000;
/** Standard deviations above the policy's expected peak that a bucket may hold. */
const SIGMAS = 6;

const now = () => performance.timeOrigin + performance.now();
const t0 = now();
const log = (...a) => console.log(`[${((now() - t0) / 1000).toFixed(1).padStart(5)}s]`, ...a);

// ---------------------------------------------------------------- the dashboard's code
/** Bundles e2e/realtime-node.ts (the dashboard's sources) with Vite and imports it. */
async function loadRealtime() {
  await build({
    configFile: false,
    root: appDir,
    logLevel: 'warn',
    mode: 'production',
    publicDir: false,
    build: {
      ssr: path.join(here, 'realtime-node.ts'),
      outDir: bundleDir,
      emptyOutDir: true,
      minify: false,
      rolldownOptions: { output: { entryFileNames: 'realtime.mjs', format: 'esm' } },
    },
  });
  return import(pathToFileURL(path.join(bundleDir, 'realtime.mjs')).href);
}

/** The browser globals the bundle touches (see the header). */
function installBrowserStandIns(origin) {
  const u = new URL(origin);
  globalThis.WebSocket = NodeWebSocket;
  globalThis.window = { location: { protocol: u.protocol, host: u.host, origin: u.origin } };
  const nodeFetch = globalThis.fetch;
  globalThis.fetch = (input, init) => nodeFetch(typeof input === 'string' ? new URL(input, origin) : input, init);
}

// ---------------------------------------------------------------- server logs
/** `2025-01-02T03:04:05.123456Z` → epoch ms with the sub-millisecond part kept. */
function parseTimestamp(ts) {
  const ms = Date.parse(ts);
  const frac = /\.(\d+)Z$/.exec(ts);
  return frac && frac[1].length > 3 ? ms + Number(`0.${frac[1].slice(3)}`) : ms;
}

/** Requests and milestones from the servers' JSON log lines, tagged with the server run (1, 2). */
const serverEvents = [];
let serverRun = 1;
function onServerLine(line) {
  if (!line.startsWith('{')) return;
  let e;
  try {
    e = JSON.parse(line);
  } catch {
    return;
  }
  const at = typeof e.timestamp === 'string' ? parseTimestamp(e.timestamp) : now();
  const msg = String(e.message ?? e.fields?.message ?? '');
  if (msg === 'request') {
    serverEvents.push({ run: serverRun, at, method: e.method, path: e.path, status: Number(e.status) });
  } else if (msg.startsWith('Pulse is listening')) {
    serverEvents.push({ run: serverRun, at, milestone: 'listening' });
  } else if (msg.startsWith('shutting down')) {
    serverEvents.push({ run: serverRun, at, milestone: 'shutting-down' });
  }
}

// ---------------------------------------------------------------- statistics
function percentile(sorted, p) {
  if (sorted.length === 0) return null;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[i];
}

/** Counts per bucket of width BUCKET_MS from `origin`; bucket i covers [i·w, (i+1)·w). */
function histogram(times, origin) {
  const counts = [];
  for (const t of times) {
    const i = Math.max(0, Math.floor((t - origin) / BUCKET_MS));
    while (counts.length <= i) counts.push(0);
    counts[i] += 1;
  }
  return counts;
}

const peakOf = (counts) => counts.reduce((m, c) => Math.max(m, c), 0);
const round = (x, d = 1) => (x === null || x === undefined ? null : Math.round(x * 10 ** d) / 10 ** d);

// ---------------------------------------------------------------- one simulated dashboard
/**
 * One dashboard: `openRealtimeSocket` with the browser's default deps (real ticket fetch, real
 * /me check, real `new WebSocket`), observed through its status callback (the state machine's
 * every transition) and the close codes of its sockets.
 */
function startClient(M, token, topics, id) {
  const c = { id, transitions: [], closes: [], connected: [], unauthorized: false, socket: null };
  const deps = M.defaultRealtimeDeps();
  const createSocket = deps.createSocket;
  deps.createSocket = (url) => {
    const ws = createSocket(url);
    ws.addEventListener('close', (ev) => c.closes.push({ at: now(), code: ev.code }));
    return ws;
  };
  c.socket = M.openRealtimeSocket(deps, token, {
    onStatus: () => {},
    // Every state change of the connection's state machine.
    onState: (state) => c.transitions.push({ at: now(), state }),
    onMessage: (msg) => {
      if (msg.type === 'connected') c.connected.push(now());
    },
    onUnauthorized: () => {
      c.unauthorized = true;
    },
    topics: () => topics,
  });
  return c;
}

/**
 * What happened to one client after `since` (the SIGTERM): its close, each reconnect attempt
 * (started = `connecting`; failed = `backoff` came next, via `checking` if the socket closed
 * before open), the waits before each attempt, and its reconnect.
 */
function episodeOf(c, since) {
  const tr = c.transitions.filter((t) => t.at >= since);
  const closeIdx = tr.findIndex((t) => t.state !== 'open');
  const close = closeIdx >= 0 ? tr[closeIdx] : null;
  const attempts = [];
  /** Observed backoff waits: from entering `backoff` to the next `connecting`. */
  const waits = [];
  let backoffAt = null;
  for (const t of closeIdx >= 0 ? tr.slice(closeIdx) : []) {
    if (t.state === 'backoff') {
      backoffAt = t.at;
      if (attempts.length > 0 && attempts[attempts.length - 1].outcome === null) attempts[attempts.length - 1].outcome = 'failed';
    } else if (t.state === 'connecting') {
      if (backoffAt !== null) waits.push(t.at - backoffAt);
      backoffAt = null;
      attempts.push({ at: t.at, outcome: null });
    } else if (t.state === 'checking') {
      const a = attempts[attempts.length - 1];
      if (a) a.refusedBeforeOpen = true;
    } else if (t.state === 'open') {
      const a = attempts[attempts.length - 1];
      if (a) a.outcome = 'open';
      break;
    } else {
      break; // stopped / unauthorized: no reconnect
    }
  }
  const last = attempts[attempts.length - 1];
  const reconnected = last?.outcome === 'open' ? tr.find((t) => t.at >= last.at && t.state === 'open') : null;
  const connectedMsg = reconnected ? c.connected.find((at) => at >= reconnected.at) : undefined;
  // The delays the real code chose for these waits (and for a wait still running): the newest
  // entries of scheduledDelays (it keeps the last 50; a restart needs far fewer).
  const scheduled = waits.length + (backoffAt !== null ? 1 : 0);
  const chosen = scheduled > 0 ? c.socket.scheduledDelays.slice(-scheduled) : [];
  return {
    closeAt: close?.at ?? null,
    closeCode: c.closes.find((x) => x.at >= since)?.code ?? null,
    attempts,
    waits,
    chosen: chosen.slice(0, waits.length),
    reconnectAt: reconnected?.at ?? null,
    connectedAt: connectedMsg ?? null,
    unauthorized: c.unauthorized,
  };
}

// ---------------------------------------------------------------- main
async function main() {
  const bin = serverBinFromEnv();
  fs.mkdirSync(outDir, { recursive: true });
  log(`bundling the dashboard's real-time code with Vite → ${path.relative(repoRoot, bundleDir)}`);
  const M = await loadRealtime();
  const BASE = M.BACKOFF_BASE_MS;
  const CAP = M.BACKOFF_CAP_MS;
  const ceiling = (k) => M.backoffCeiling(k);

  const server = new PulseServer({
    bin,
    logPath: path.join(outDir, 'reconnect-spread-server.log'),
    env: {
      LOG_FORMAT: 'json',
      WS_MAX_CONNECTIONS_PER_USER: String(2 * N + 10),
    },
    onLine: onServerLine,
  });
  const cleanup = () => server.killSync();
  process.on('exit', cleanup);
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) process.on(sig, () => process.exit(130));

  const clients = [];
  const checks = [];
  const check = (name, ok, detail) => {
    checks.push({ name, ok: Boolean(ok), detail });
    log(`${ok ? 'PASS' : 'FAIL'} ${name}${detail ? ` — ${detail}` : ''}`);
  };
  try {
    await server.init();
    installBrowserStandIns(server.base);
    log(`starting ${bin} on ${server.base}`);
    server.start();
    await server.waitHealthy();
    const login = await fetch(`${server.base}/api/v1/auth/login`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ username: 'admin', password: server.adminPassword }),
    });
    if (!login.ok) throw new Error(`login: HTTP ${login.status}`);
    const { token } = await login.json();

    // ------------------------------------------------ N dashboards, all live
    const topics = M.topicsForPath('/tasks'); // what the layout subscribes: 3 stats + presence
    log(`starting ${N} clients (${START_PER_100MS} per 100 ms), topics ${topics.join(',')}`);
    for (let i = 0; i < N; i += 1) {
      clients.push(startClient(M, token, topics, i));
      if ((i + 1) % START_PER_100MS === 0) await sleep(100);
    }
    const live = () => clients.filter((c) => c.socket.state === 'open' && c.connected.length > 0).length;
    const liveDeadline = now() + 60_000;
    while (live() < N && now() < liveDeadline) await sleep(50);
    if (live() < N) throw new Error(`only ${live()}/${N} clients live after 60 s; see ${server.logPath}`);
    // A restart must find every client at attempt 0 (as after a healthy connection), so that the
    // first wait after it is random(0, BASE) for everyone; an initial failure is reset after the
    // socket's healthy time (10 s).
    const fresh = () => clients.every((c) => c.socket.attempt === 0);
    const freshDeadline = now() + 12_000;
    while (!fresh() && now() < freshDeadline) await sleep(100);
    if (!fresh()) throw new Error('some clients still count failed attempts from the initial connect');
    log(`all ${N} clients live`);
    await sleep(500); // let the initial snapshots settle

    // ------------------------------------------------ restart
    const termAt = now();
    log('SIGTERM');
    await server.stop('SIGTERM', 20_000);
    const exitAt = now();
    serverRun = 2;
    server.start();
    const spawnAt = now();
    await server.waitHealthy();
    const healthyAt = now();
    const upAt = serverEvents.find((e) => e.run === 2 && e.milestone === 'listening')?.at ?? healthyAt;
    log(`old server exited after ${Math.round(exitAt - termAt)} ms; new one listening ${Math.round(upAt - termAt)} ms after SIGTERM`);

    // Every client must be back within the policy's longest wait (CAP) after the server is up,
    // plus time for the ticket fetch and upgrade.
    const reconnectDeadline = upAt + CAP + CONNECT_SLACK_MS;
    const back = () =>
      clients.filter((c) => {
        const last = c.transitions[c.transitions.length - 1];
        return last?.state === 'open' && last.at > termAt && c.connected.some((at) => at > termAt);
      }).length;
    while (back() < N && now() < reconnectDeadline) {
      if (clients.every((c) => c.unauthorized)) break;
      await sleep(50);
    }
    const doneAt = now();
    log(`${back()}/${N} clients back after ${Math.round(doneAt - termAt)} ms`);
    await sleep(300); // the last access-log lines
    for (const c of clients) c.socket.stop();

    // ------------------------------------------------ figures
    const eps = clients.map((c) => episodeOf(c, termAt));
    const reconnected = eps.filter((e) => e.reconnectAt !== null && e.connectedAt !== null);
    const delays = reconnected.map((e) => e.reconnectAt - e.closeAt).sort((a, b) => a - b);
    const allAttempts = eps.flatMap((e) => e.attempts);
    const firstWaits = eps.filter((e) => e.waits.length > 0).map((e) => e.waits[0]);
    const maxK = Math.max(0, ...eps.map((e) => e.waits.length - 1));
    const closeCodes = {};
    for (const e of eps) closeCodes[e.closeCode ?? 'none'] = (closeCodes[e.closeCode ?? 'none'] || 0) + 1;
    const attemptsPerClient = {};
    for (const e of eps) attemptsPerClient[e.attempts.length] = (attemptsPerClient[e.attempts.length] || 0) + 1;

    // Histograms from the SIGTERM: attempts as the clients started them, and what the servers logged.
    const origin = termAt;
    const rel = (t) => (t === null ? null : round(t - origin));
    const run2 = serverEvents.filter((e) => e.run === 2 && e.path);
    const drain = serverEvents.filter((e) => e.run === 1 && e.path && e.at >= termAt);
    const h = {
      attempts: histogram(allAttempts.map((a) => a.at), origin),
      failedAttempts: histogram(allAttempts.filter((a) => a.outcome === 'failed').map((a) => a.at), origin),
      reconnects: histogram(reconnected.map((e) => e.reconnectAt), origin),
      serverTicketRequests: histogram(run2.filter((e) => e.path === '/api/v1/ws-ticket').map((e) => e.at), origin),
      serverUpgrades: histogram(run2.filter((e) => e.path === '/ws' && e.status === 101).map((e) => e.at), origin),
    };
    const len = Math.max(...Object.values(h).map((x) => x.length));
    for (const k of Object.keys(h)) while (h[k].length < len) h[k].push(0);

    // ------------------------------------------------ checks (derived from the policy)
    check(
      'every socket was closed by the shutdown with 1001',
      closeCodes[1001] === N,
      `close codes ${JSON.stringify(closeCodes)}`,
    );
    check('no client was logged out', eps.every((e) => !e.unauthorized));
    check(
      `every client reconnected (and got "connected") within CAP ${CAP} ms + ${CONNECT_SLACK_MS} ms after the server was back`,
      reconnected.length === N && reconnected.every((e) => e.connectedAt <= reconnectDeadline),
      `${reconnected.length}/${N}`,
    );
    const badChoice = eps.flatMap((e) => e.chosen.map((d, k) => ({ d, k }))).filter(({ d, k }) => !(d >= 0 && d < ceiling(k)));
    check(
      'every delay the code chose is in [0, min(CAP, BASE·2^k)) for its k-th wait',
      badChoice.length === 0,
      badChoice.length ? `${badChoice.length} outside, e.g. ${JSON.stringify(badChoice[0])}` : undefined,
    );
    const lateness = eps.flatMap((e) => e.waits.map((w, k) => w - (e.chosen[k] ?? 0)));
    const tooLong = eps.flatMap((e) => e.waits.map((w, k) => ({ w, k }))).filter(({ w, k }) => w > ceiling(k) + EVENT_LOOP_SLACK_MS);
    check(
      `every observed wait is within its ceiling + ${EVENT_LOOP_SLACK_MS} ms (event loop)`,
      tooLong.length === 0,
      tooLong.length ? `${tooLong.length} too long, e.g. ${JSON.stringify(tooLong[0])}` : undefined,
    );
    // The spread checks count attempts when they really started. This one event loop serves all
    // N clients, so timers fire late by varying amounts: an attempt seen in a bucket of width w
    // was due within w + lag before it, lag = p99 − min of the lateness (the slowest 1 % may land
    // anywhere and are allowed on top). Too few clients, and one bucket may hold them all by
    // chance: not measurable. Too much lag for the policy to show: this harness failed.
    const sortedLate = [...lateness].sort((a, b) => a - b);
    const lagMs = sortedLate.length ? Math.max(0, percentile(sortedLate, 99) - sortedLate[0]) : 0;
    const stray = (count) => Math.ceil(0.01 * count);
    const spreadCheck = (name, peak, bound, boundWithoutLag, expected) => {
      if (boundWithoutLag >= N) return check(name, true, `not measurable with ${N} clients and ${BUCKET_MS} ms buckets`);
      if (bound >= N) return check(name, false, `cannot tell: with ${round(lagMs)} ms of timer lag here the bound reaches N`);
      return check(
        `${name}: busiest ${BUCKET_MS} ms bucket ≤ ${Math.floor(bound)} (policy's expected max ${round(expected)}, ` +
          `lag ${round(lagMs)} ms; without jitter ${N})`,
        peak <= bound,
        `busiest ${peak}`,
      );
    };
    // First waits are uniform on [0, BASE): a window of width x holds Binomial(N, x/BASE) of them.
    const binomialBound = (x) => {
      const p = Math.min(1, x / BASE);
      return N * p + SIGMAS * Math.sqrt(N * p * (1 - p)) + 1;
    };
    const firstHist = histogram(firstWaits, 0);
    spreadCheck(
      `first waits spread over [0, ${BASE}) ms`,
      peakOf(firstHist),
      binomialBound(BUCKET_MS + lagMs) + stray(N),
      binomialBound(BUCKET_MS),
      N * Math.min(1, BUCKET_MS / BASE),
    );
    // Attempt k starts at (its previous failure) + uniform(0, ceiling(k)): a window of width x holds
    // at most N·x/ceiling(k) of them on average, all attempts together at most N·x·Σ 1/ceiling(k).
    let sumInv = 0;
    for (let k = 0; k <= maxK; k += 1) sumInv += 1 / ceiling(k);
    const poissonBound = (x) => {
      const mu = N * x * sumInv;
      return mu + SIGMAS * Math.sqrt(mu) + 1;
    };
    spreadCheck(
      'all attempts spread',
      peakOf(h.attempts),
      poissonBound(BUCKET_MS + lagMs) + stray(allAttempts.length),
      poissonBound(BUCKET_MS),
      N * BUCKET_MS * sumInv,
    );

    // ------------------------------------------------ report
    const report = {
      clients: N,
      bucketMs: BUCKET_MS,
      policy: { baseMs: BASE, capMs: CAP, formula: 'delay = random(0, min(cap, base * 2^attempt))' },
      restart: {
        oldServerExitMs: round(exitAt - termAt),
        newServerSpawnMs: round(spawnAt - termAt),
        newServerListeningMs: round(upAt - termAt),
        newServerHealthyMs: round(healthyAt - termAt),
      },
      reconnected: reconnected.length,
      closeCodes,
      delayFromCloseMs: {
        min: round(delays[0]),
        p50: round(percentile(delays, 50)),
        p90: round(percentile(delays, 90)),
        p99: round(percentile(delays, 99)),
        max: round(delays[delays.length - 1]),
      },
      attempts: {
        total: allAttempts.length,
        failed: allAttempts.filter((a) => a.outcome === 'failed').length,
        refusedBeforeOpen: allAttempts.filter((a) => a.refusedBeforeOpen).length,
        failedAfterNewServerListening: allAttempts.filter((a) => a.outcome === 'failed' && a.at >= upAt).length,
        perClient: attemptsPerClient,
      },
      timerLatenessMs: {
        min: round(sortedLate[0] ?? null),
        p50: round(percentile(sortedLate, 50)),
        p99: round(percentile(sortedLate, 99)),
        max: round(sortedLate[sortedLate.length - 1] ?? null),
      },
      peakPerBucket: {
        attempts: peakOf(h.attempts),
        reconnects: peakOf(h.reconnects),
        serverTicketRequests: peakOf(h.serverTicketRequests),
        serverUpgrades: peakOf(h.serverUpgrades),
        withoutJitter: N,
      },
      oldServerWhileDraining: {
        ticketRequests: drain.filter((e) => e.path === '/api/v1/ws-ticket').length,
        upgradesRefused: drain.filter((e) => e.path === '/ws' && e.status !== 101).length,
      },
      histogram: { originMs: 'SIGTERM', ...h },
      /** Observed first waits (close → first attempt), per bucket from 0. */
      firstWaitHistogram: firstHist,
      checks,
      // Per client, ms after the SIGTERM: close, attempt starts, observed waits and the delays
      // the code chose for them, reconnect; and when the restarted server accepted upgrades.
      perClient: eps.map((e) => ({
        closeMs: rel(e.closeAt),
        attemptsMs: e.attempts.map((a) => rel(a.at)),
        waitsMs: e.waits.map((w) => round(w)),
        chosenDelaysMs: e.chosen,
        reconnectMs: rel(e.reconnectAt),
      })),
      serverAcceptsMs: run2.filter((e) => e.path === '/ws' && e.status === 101).map((e) => rel(e.at)),
    };
    const file = path.join(outDir, 'reconnect-spread.json');
    fs.writeFileSync(file, `${JSON.stringify(report, null, 2)}\n`);
    printSummary(report, file);
    return checks.every((c) => c.ok);
  } finally {
    for (const c of clients) c.socket.stop();
    await server.dispose();
  }
}

function printSummary(r, file) {
  const d = r.delayFromCloseMs;
  const p = r.peakPerBucket;
  console.log('');
  console.log(`clients ${r.clients}; reconnected ${r.reconnected}; close codes ${JSON.stringify(r.closeCodes)}`);
  console.log(
    `restart: old server exited ${r.restart.oldServerExitMs} ms after SIGTERM, new one listening at ${r.restart.newServerListeningMs} ms`,
  );
  console.log(`close → reconnected (ms): min ${d.min}  p50 ${d.p50}  p90 ${d.p90}  p99 ${d.p99}  max ${d.max}`);
  console.log(
    `attempts ${r.attempts.total} (failed ${r.attempts.failed}, of which ${r.attempts.refusedBeforeOpen} refused before open; ` +
      `${r.attempts.failedAfterNewServerListening} failed after the new server listened); per client ${JSON.stringify(r.attempts.perClient)}`,
  );
  const late = r.timerLatenessMs;
  console.log(`timers fired late by p50 ${late.p50} ms, p99 ${late.p99} ms, max ${late.max} ms (this process's event loop)`);
  console.log(
    `busiest ${r.bucketMs} ms: ${p.attempts} attempts, ${p.reconnects} reconnects; restarted server: ${p.serverTicketRequests} ticket requests, ` +
      `${p.serverUpgrades} upgrades (without jitter: all ${p.withoutJitter} in one)`,
  );
  console.log(`\n   t (ms)  attempts  failed  reconnects  srv-tickets  srv-upgrades`);
  const h = r.histogram;
  let skipped = 0;
  for (let i = 0; i < h.attempts.length; i += 1) {
    const row = [h.attempts[i], h.failedAttempts[i], h.reconnects[i], h.serverTicketRequests[i], h.serverUpgrades[i]];
    if (row.every((x) => x === 0)) {
      skipped += 1;
      continue;
    }
    if (skipped) console.log(`   … ${skipped} empty bucket(s)`);
    skipped = 0;
    const bar = '#'.repeat(Math.ceil((60 * h.attempts[i]) / Math.max(1, r.clients)));
    console.log(
      `${String(i * r.bucketMs).padStart(9)}  ${row.map((x, j) => String(x).padStart([8, 6, 10, 11, 12][j])).join('  ')}  ${bar}`,
    );
  }
  console.log(`\n${r.checks.filter((c) => c.ok).length}/${r.checks.length} checks passed; figures in ${path.relative(process.cwd(), file)}`);
}

let ok = false;
try {
  ok = await main();
} catch (err) {
  log(`FATAL: ${err?.stack || err}`);
}
process.exit(ok ? 0 : 1);
