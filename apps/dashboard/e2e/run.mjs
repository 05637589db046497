#!/usr/bin/env node
// End-to-end test of the Pulse dashboard against the REAL server binary.
//
//   PULSE_SERVER_BIN=/path/to/server node e2e/run.mjs
//
// Starts the server on a free port with a fresh SQLite database, drives the built
// dashboard in Debian's Chromium through playwright-core, and prints
// `N passed, N failed, N not run` as its last line (exit 1 on a failure). The tests of a contract
// section the server may not have yet (8, 9: detected from the server's OpenAPI document or by
// probing) are reported as not run when it lacks it; for a section named in PULSE_E2E_REQUIRE
// (default `2`: the user lifecycle, which the server has) that is a failure. Screenshots go to
// <repo>/target/e2e/.
//
// Where the browser loads the dashboard from:
// - default: the server itself, serving the dashboard it embeds at build time (or the folder
//   named by PULSE_DASHBOARD_DIR, when set);
// - PULSE_E2E_UI=vite-preview: `vite preview` serves dist/ on its own port and proxies
//   /api, /healthz and /ws to the server (for testing a new build with an older binary).
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import { NoWebSocketProxy } from './no-ws-proxy.mjs';
import { PulseServer, freePort, sleep } from './server.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const appDir = path.resolve(here, '..');
const repoRoot = path.resolve(appDir, '..', '..');
const outDir = path.join(repoRoot, 'target', 'e2e');
const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
const SERVER_BIN = process.env.PULSE_SERVER_BIN;
const HEADLESS = process.env.HEADFUL ? false : true;
const IDLE_MS = Number(process.env.E2E_IDLE_MS || 35_000);
/** The contract sections whose browser tests are reported as not run when the server lacks them. */
const OPTIONAL_SECTIONS = ['2', '8', '9'];
/**
 * The sections whose tests must run: for these a "not run" (the server lacks the section, or the run lacks
 * what the test needs, e.g. nginx) is a failure. `PULSE_E2E_REQUIRE`: a comma-separated list of 2, 8, 9,
 * `all` or `none`; default `2` (the server has the user lifecycle). `PULSE_E2E_REQUIRE_ALL=1` means `all`.
 */
function requiredSections(list = process.env.PULSE_E2E_REQUIRE, all = process.env.PULSE_E2E_REQUIRE_ALL) {
  if (['1', 'true'].includes(all ?? '')) return new Set(OPTIONAL_SECTIONS);
  const words = (list ?? '2')
    .split(',')
    .map((w) => w.trim().toLowerCase())
    .filter(Boolean);
  if (words.includes('all')) return new Set(OPTIONAL_SECTIONS);
  if (words.length === 0 || (words.length === 1 && words[0] === 'none')) return new Set();
  const unknown = words.filter((w) => !OPTIONAL_SECTIONS.includes(w));
  if (unknown.length > 0) {
    throw new Error(`PULSE_E2E_REQUIRE=${list}: unknown section(s) ${unknown.join(', ')} (use a list of ${OPTIONAL_SECTIONS.join(', ')}, all or none)`);
  }
  return new Set(words);
}
const REQUIRED = requiredSections();
/**
 * The base URL of a proxy in front of this run's server that refuses WebSocket upgrades (e.g. the
 * nginx of deploy/). Unset: the run starts nginx itself with such a configuration (e2e/no-ws-proxy.mjs)
 * when nginx is installed; without either the SSE fallback test is not run.
 */
const NO_WS_URL = process.env.PULSE_E2E_NO_WS_URL || '';
/** TASK_SLA_SECONDS of the server the section 9 tests start (short: a task is overdue within seconds). */
const SLA_SECONDS = Number(process.env.E2E_SLA_SECONDS || 4);
const UI_MODE = process.env.PULSE_E2E_UI || 'server';
const DIST = path.join(appDir, 'dist');

const STATS_RE = /\/api\/v1\/(tasks|approvals|conversations)\/stats(\?|$)/;
/** axe-core from node_modules, evaluated in the page (not a <script>: the dashboard's CSP forbids inline scripts). */
const AXE_SOURCE = fs.readFileSync(createRequire(import.meta.url).resolve('axe-core/axe.min.js'), 'utf8');
/**
 * axe-core's rules for WCAG 2.0, 2.1 and 2.2, levels A and AA, and its best practices (an empty
 * table header or a page without a main landmark are reported only by those).
 */
const AXE_TAGS = ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa', 'wcag22a', 'wcag22aa', 'best-practice'];
const WS_RE = /\/ws(\?|$)/;

fs.mkdirSync(outDir, { recursive: true });
// Free port, fresh SQLite database in a temporary folder, known admin password (see server.mjs).
const pulse = new PulseServer({ bin: SERVER_BIN, logPath: path.join(outDir, 'server.log') });
const ADMIN_PASSWORD = pulse.adminPassword;

const t0 = Date.now();
const log = (...a) => console.log(`[${((Date.now() - t0) / 1000).toFixed(1).padStart(5)}s]`, ...a);

// ---------------------------------------------------------------- server
/** The server (API calls from the test). */
let base = '';
/** Where the browser loads the dashboard: the server, or vite preview in front of it. */
let ui = '';
let preview = null;
/** What the section 8 and 9 tests start besides (a proxy, a second server, a second preview): killed at exit. */
const extras = [];

const startServer = () => pulse.start();
const waitHealthy = (timeoutMs) => pulse.waitHealthy(timeoutMs);
const killServer = (signal = 'SIGKILL') => pulse.stop(signal);

function killServerSync() {
  pulse.killSync();
  for (const x of extras) x.killSync();
  if (preview && preview.exitCode === null && preview.signalCode === null) {
    try {
      preview.kill('SIGKILL');
    } catch {
      /* ignore */
    }
  }
}

/** `vite preview` of dist/ on its own port, proxying the API and the WebSocket to the server (`target`). */
async function startPreview(target = base, logName = 'preview.log') {
  const previewPort = await freePort();
  const viteBin = path.join(appDir, 'node_modules', 'vite', 'bin', 'vite.js');
  const child = spawn(process.execPath, [viteBin, 'preview', '--host', '127.0.0.1', '--port', String(previewPort), '--strictPort'], {
    cwd: appDir,
    env: { ...process.env, PULSE_API_TARGET: target },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const previewLog = fs.createWriteStream(path.join(outDir, logName), { flags: 'w' });
  child.stdout.on('data', (d) => previewLog.write(d));
  child.stderr.on('data', (d) => previewLog.write(d));
  child.on('exit', (code, signal) => previewLog.write(`\n--- vite preview exited code=${code} signal=${signal}\n`));
  if (target === base) preview = child;
  else
    extras.push({
      killSync: () => {
        if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      },
    });
  const url = `http://127.0.0.1:${previewPort}`;
  const deadline = Date.now() + 30_000;
  while (Date.now() < deadline) {
    if (child.exitCode !== null) throw new Error('vite preview exited early; see target/e2e/preview.log');
    try {
      const res = await fetch(`${url}/healthz`);
      if (res.status === 200) return url;
    } catch {
      /* not yet */
    }
    await sleep(150);
  }
  throw new Error('vite preview did not come up within 30 s');
}

/** Default mode: warn when the server serves another build than dist/ (an older embedded one). */
async function checkServedBuild() {
  try {
    const served = await (await fetch(`${base}/`)).text();
    const built = fs.readFileSync(path.join(DIST, 'index.html'), 'utf8');
    const assets = (html) => [...html.matchAll(/assets\/[\w.-]+/g)].map((m) => m[0]).sort().join(',');
    if (assets(served) !== assets(built)) {
      log('WARNING: the server serves a different dashboard build than dist/ (it embeds an older one and ignores');
      log('         PULSE_DASHBOARD_DIR?). Rebuild the server, or run with PULSE_E2E_UI=vite-preview.');
    }
  } catch (e) {
    log(`could not compare the served dashboard with dist/: ${e.message}`);
  }
}
process.on('exit', killServerSync);
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
  process.on(sig, () => {
    killServerSync();
    process.exit(130);
  });
}

// ---------------------------------------------------------------- helpers
/** Calls the API of this run's server, or of the server at `at`. */
async function api(method, p, body, token, at = base) {
  const headers = { Accept: 'application/json' };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  if (token) headers.Authorization = `Bearer ${token}`;
  const res = await fetch(`${at}${p}`, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await res.text();
  let json;
  try {
    json = text ? JSON.parse(text) : undefined;
  } catch {
    json = text;
  }
  if (!res.ok) throw new Error(`${method} ${p} → ${res.status} ${text.slice(0, 200)}`);
  return json;
}

async function apiStats(token) {
  const [tasks, approvals, conversations] = await Promise.all([
    api('GET', '/api/v1/tasks/stats', undefined, token),
    api('GET', '/api/v1/approvals/stats', undefined, token),
    api('GET', '/api/v1/conversations/stats', undefined, token),
  ]);
  return {
    pendingTasks: tasks.pending,
    pendingApprovals: approvals.stats.pending,
    escalatedConversations: conversations.escalated,
  };
}

async function badges(page) {
  return page.evaluate(() => {
    const num = (id) => {
      const el = document.querySelector(`[data-testid="${id}"]`);
      const n = el ? Number(el.textContent.trim()) : NaN;
      return Number.isFinite(n) ? n : null;
    };
    return {
      pendingTasks: num('badge-pending-tasks'),
      pendingApprovals: num('badge-pending-approvals'),
      escalatedConversations: num('badge-escalated-conversations'),
    };
  });
}

async function expectBadgesEqualApi(page, token, timeoutMs = 5000) {
  const deadline = Date.now() + timeoutMs;
  let want;
  let got;
  while (Date.now() < deadline) {
    want = await apiStats(token);
    got = await badges(page);
    if (JSON.stringify(want) === JSON.stringify(got)) return want;
    await sleep(150);
  }
  throw new Error(`badges ${JSON.stringify(got)} != API ${JSON.stringify(want)}`);
}

async function waitText(page, testId, expected, timeoutMs) {
  await page.waitForFunction(
    ([id, want]) => document.querySelector(`[data-testid="${id}"]`)?.textContent?.trim() === want,
    [testId, String(expected)],
    { timeout: timeoutMs, polling: 50 },
  );
}

async function statusOf(page) {
  return page.evaluate(() => document.querySelector('[data-testid="connection-status"]')?.textContent?.trim() ?? null);
}

async function loginThroughForm(page, username, password, at = ui) {
  await page.goto(`${at}/login`);
  await page.fill('[data-testid="login-username"]', username);
  await page.fill('[data-testid="login-password"]', password);
  await page.click('[data-testid="login-submit"]');
  await page.waitForURL((u) => u.pathname === '/tasks', { timeout: 10_000 });
}

function newTask(token, description = 'e2e task') {
  return api('POST', '/api/v1/tasks', { type: 'housekeeping', department: 'housekeeping', description }, token);
}

async function shot(page, name, fullPage = true) {
  await page.evaluate(() => window.scrollTo(0, 0));
  await page.screenshot({ path: path.join(outDir, `${name}.png`), fullPage });
}

function assert(cond, message) {
  if (!cond) throw new Error(message);
}

/** Every WebSocket URL any page of any context opened (see trackWebSockets). */
const wsUrls = [];
function trackWebSockets(context) {
  context.on('page', (p) => p.on('websocket', (ws) => wsUrls.push(ws.url())));
  return context;
}

/**
 * The dashboard connects with a single-use ticket from POST /api/v1/ws-ticket, never with the
 * JWT in the URL: every /ws URL has `ticket=` and no `token=`, and no ticket is used twice.
 */
function assertTicketUrls(urls, { min = 1 } = {}) {
  const ws = urls.filter((u) => WS_RE.test(new URL(u).pathname + '?'));
  assert(ws.length >= min, `expected at least ${min} WebSocket(s), saw ${ws.length}`);
  for (const u of ws) {
    const q = new URL(u).searchParams;
    assert(q.has('ticket') && /^[0-9a-f]{64}$/.test(q.get('ticket')), `WebSocket URL without a ticket: ${u}`);
    assert(!q.has('token') && !u.includes('token='), `WebSocket URL carries token=: ${u}`);
  }
  const tickets = ws.map((u) => new URL(u).searchParams.get('ticket'));
  assert(new Set(tickets).size === tickets.length, `a ticket was used twice: ${tickets.join(', ')}`);
  return ws.length;
}

/** Whether the server has the user lifecycle of contract section 2 (its OpenAPI document lists it). */
async function serverHasUserLifecycle() {
  try {
    const doc = await (await fetch(`${base}/api/v1/openapi.json`)).json();
    return Boolean(doc.paths?.['/api/v1/users/{id}']?.patch && doc.paths?.['/api/v1/me/password']?.post);
  } catch {
    return false;
  }
}

// ---------------------------------------------------------------- accessibility
/** Every page state axe checked, with its violations (reported at the end). */
const axeChecked = [];

/**
 * Runs axe-core's WCAG 2 A/AA rules (and best practices) on the page as it is now and fails listing every
 * violation (rule, impact, what to fix, the elements).
 */
async function expectAccessible(page, label) {
  await page.evaluate(() => document.fonts?.ready);
  const hasAxe = await page.evaluate(() => typeof window.axe === 'object');
  if (!hasAxe) await page.evaluate(AXE_SOURCE);
  const result = await page.evaluate(
    (tags) => window.axe.run(document, { runOnly: { type: 'tag', values: tags }, resultTypes: ['violations'] }),
    AXE_TAGS,
  );
  const violations = result.violations.map((v) => ({
    id: v.id,
    impact: v.impact,
    help: v.help,
    nodes: v.nodes.map((n) => ({ target: n.target.join(' '), summary: n.failureSummary })),
  }));
  axeChecked.push({ label, path: new URL(page.url()).pathname, violations: violations.length });
  if (violations.length > 0) {
    const lines = violations.flatMap((v) => [
      `  ${v.id} (${v.impact}): ${v.help}`,
      ...v.nodes.map((n) => `    - ${n.target}: ${(n.summary || '').replace(/\s+/g, ' ').slice(0, 240)}`),
    ]);
    throw new Error(`axe: ${violations.length} violation(s) on ${label}:\n${lines.join('\n')}`);
  }
}

// ---------------------------------------------------------------- keyboard
/** What has the focus, for messages. */
function describeFocus(page) {
  return page.evaluate(() => {
    const el = document.activeElement;
    if (!el || el === document.body) return 'body';
    const id = el.getAttribute('data-testid');
    return `${el.tagName.toLowerCase()}${id ? `[data-testid=${id}]` : ''} "${(el.textContent || el.getAttribute('aria-label') || '').trim().slice(0, 40)}"`;
  });
}

/** Presses Tab (Shift+Tab with `back`) until the focused element matches `selector`; fails after `max` presses. */
async function tabTo(page, selector, { max = 80, back = false } = {}) {
  for (let i = 0; i < max; i++) {
    if (await page.evaluate((sel) => document.activeElement?.matches(sel) ?? false, selector)) return;
    await page.keyboard.press(back ? 'Shift+Tab' : 'Tab');
  }
  throw new Error(`keyboard: ${selector} not reached with ${max} × ${back ? 'Shift+Tab' : 'Tab'} (focus on ${await describeFocus(page)})`);
}

/** The focused element matches `selector` (a widget moved the focus where the user needs it). */
async function expectFocus(page, selector, timeoutMs = 2000) {
  try {
    await page.waitForFunction((sel) => document.activeElement?.matches(sel) ?? false, selector, { timeout: timeoutMs, polling: 50 });
  } catch {
    throw new Error(`keyboard: expected the focus on ${selector}, it is on ${await describeFocus(page)}`);
  }
}

// ---------------------------------------------------------------- test runner
const results = [];
async function test(name, fn, { page, timeoutMs = 90_000 } = {}) {
  const started = Date.now();
  try {
    let timer;
    await Promise.race([
      fn(),
      new Promise((_, reject) => {
        timer = setTimeout(() => reject(new Error(`timed out after ${timeoutMs} ms`)), timeoutMs);
      }),
    ]).finally(() => clearTimeout(timer));
    results.push({ name, ok: true });
    log(`PASS ${name} (${Date.now() - started} ms)`);
  } catch (err) {
    results.push({ name, ok: false, err });
    log(`FAIL ${name}: ${err?.stack || err}`);
    const p = typeof page === 'function' ? page() : page;
    if (p && !p.isClosed()) {
      const file = path.join(outDir, `failure-${name.replace(/[^a-z0-9]+/gi, '-').toLowerCase()}.png`);
      await p.screenshot({ path: file, fullPage: true }).catch(() => {});
    }
  }
}

/**
 * A test of contract section `section` that cannot run here (the server lacks the section, or the run lacks
 * what it needs): reported, and a failure when the section is required (PULSE_E2E_REQUIRE).
 */
function notRun(section, name, why) {
  const required = REQUIRED.has(section);
  const because = required ? `${why} — and section ${section} is required (PULSE_E2E_REQUIRE)` : why;
  results.push({ name, ok: required ? false : null, err: new Error(`not run: ${because}`) });
  log(`${required ? 'FAIL' : 'NOT RUN'} ${name}: not run: ${because}`);
}

// ---------------------------------------------------------------- what the server has (contract 8 and 9)
async function openApiDoc(at = base) {
  try {
    return await (await fetch(`${at}/api/v1/openapi.json`)).json();
  } catch {
    return null;
  }
}

/** Server-Sent Events (contract 8): the realtime POST in the OpenAPI document, or `/sse` refusing a bad ticket with 401. */
async function serverHasSse(at = base) {
  if ((await openApiDoc(at))?.paths?.['/api/v1/realtime/{connectionId}']) return true;
  try {
    const res = await fetch(`${at}/sse?ticket=e2e-probe`);
    await res.body?.cancel();
    return res.status === 401;
  } catch {
    return false;
  }
}

/** Live operations insight (contract 9): its three REST routes in the OpenAPI document. */
async function serverHasInsight(at = base) {
  const paths = (await openApiDoc(at))?.paths ?? {};
  return Boolean(
    paths['/api/v1/tasks/stats/departments']?.get && paths['/api/v1/stats/sla']?.get && paths['/api/v1/stats/history']?.get,
  );
}

/** The status a WebSocket upgrade request gets at `at` (101 when it gets through). */
function upgradeStatus(at) {
  return new Promise((resolve, reject) => {
    const req = http.request(`${at}/ws?ticket=e2e-probe`, {
      headers: {
        Connection: 'Upgrade',
        Upgrade: 'websocket',
        'Sec-WebSocket-Version': '13',
        'Sec-WebSocket-Key': randomBytes(16).toString('base64'),
      },
    });
    req.on('upgrade', (res, socket) => {
      socket.destroy();
      resolve(res.statusCode);
    });
    req.on('response', (res) => {
      res.resume();
      resolve(res.statusCode);
    });
    req.on('error', reject);
    req.setTimeout(5000, () => req.destroy(new Error('no answer to the upgrade request')));
    req.end();
  });
}

// ---------------------------------------------------------------- the SSE fallback behind a proxy (contract 8, issue 16)
const SSE_IDLE_MS = Math.min(IDLE_MS, 30_000);
const SSE_TESTS = [
  'behind a proxy that refuses WebSocket upgrades: after signing in, live over SSE within 10 s, said in words ("live (fallback)")',
  'over SSE: a change made through the API shows within 1 s; client messages go as POSTs (202) and take effect (presence)',
  `over SSE: ${Math.round(SSE_IDLE_MS / 1000)} s without a polling request (no GET, the one stream stays, only heartbeat POSTs)`,
];

async function sseFallbackTests(browser, token) {
  if (!(await serverHasSse())) {
    for (const name of SSE_TESTS) {
      notRun('8', name, 'the server has no Server-Sent Events yet (contract section 8: GET /sse, POST /api/v1/realtime/{connectionId}; issue 16, server side)');
    }
    return;
  }
  let proxyBase = NO_WS_URL.replace(/\/+$/, '');
  let proxy = null;
  if (!proxyBase) {
    if (!NoWebSocketProxy.available()) {
      for (const name of SSE_TESTS) notRun('8', name, 'no proxy that refuses WebSocket upgrades: set PULSE_E2E_NO_WS_URL, or install nginx');
      return;
    }
    proxy = new NoWebSocketProxy({ upstream: new URL(ui).host, logDir: outDir });
    extras.push(proxy);
    await proxy.start();
    proxyBase = proxy.base;
    log(`nginx refusing WebSocket upgrades on ${proxyBase} → ${ui}`);
  }
  try {
    await sseFallbackTestsBehind(browser, token, proxyBase);
  } finally {
    await proxy?.stop();
  }
}

async function sseFallbackTestsBehind(browser, token, proxyBase) {
  const ctx = trackWebSockets(await browser.newContext({ viewport: { width: 1366, height: 900 } }));
  const page = await ctx.newPage();
  const requests = [];
  const wsAttempts = [];
  page.on('request', (r) => requests.push({ at: Date.now(), url: r.url(), method: r.method(), body: r.postData() }));
  page.on('websocket', (ws) => wsAttempts.push({ at: Date.now(), url: ws.url() }));
  page.on('pageerror', (e) => log('page error:', e.message));
  const streams = () => requests.filter((r) => new URL(r.url).pathname === '/sse');
  const liveOverSse = () =>
    page.evaluate(
      () =>
        document.querySelector('[data-testid="connection-status"]')?.textContent?.trim() === 'live' &&
        document.querySelector('[data-testid="connection-transport"]')?.textContent?.trim() === '(fallback)',
    );
  let live = false;
  try {
    await test(
      SSE_TESTS[0],
      async () => {
        const refusal = await upgradeStatus(proxyBase);
        assert(refusal !== 101, `the proxy at ${proxyBase} lets WebSocket upgrades through: this test would prove nothing`);
        await page.goto(`${proxyBase}/login`);
        await page.fill('[data-testid="login-username"]', 'admin');
        await page.fill('[data-testid="login-password"]', ADMIN_PASSWORD);
        const started = Date.now();
        await page.click('[data-testid="login-submit"]');
        await page.waitForURL((u) => u.pathname === '/tasks', { timeout: 10_000 });
        await page.waitForFunction(
          () =>
            document.querySelector('[data-testid="connection-status"]')?.textContent?.trim() === 'live' &&
            document.querySelector('[data-testid="connection-transport"]')?.textContent?.trim() === '(fallback)',
          null,
          { timeout: Math.max(1, started + 10_000 - Date.now()), polling: 50 },
        );
        const took = Date.now() - started;
        log(`  live over SSE ${took} ms after signing in (${wsAttempts.length} WebSocket attempt(s) refused first)`);
        assert(took <= 10_000, `live over SSE only after ${took} ms`);
        assert(wsAttempts.length >= 1, 'the dashboard did not try WebSocket first');
        const sse = streams();
        assert(sse.length >= 1, 'no /sse request');
        for (const r of sse) {
          const q = new URL(r.url).searchParams;
          assert(q.has('ticket') && !q.has('token') && !r.url.includes('token='), `SSE URL without a ticket or with a token: ${r.url}`);
        }
        const tickets = sse.map((r) => new URL(r.url).searchParams.get('ticket'));
        assert(new Set(tickets).size === tickets.length, `an SSE ticket was used twice: ${tickets.join(', ')}`);
        await expectBadgesEqualApi(page, token);
        await expectAccessible(page, 'tasks, live over the SSE fallback');
        await shot(page, 'sse-fallback', false);
        live = true;
      },
      { page },
    );

    await test(
      SSE_TESTS[1],
      async () => {
        assert(live, 'not live over SSE');
        const before = (await apiStats(token)).pendingTasks;
        await waitText(page, 'badge-pending-tasks', before, 3000);
        await newTask(token, 'Over SSE: fresh towels, room 7');
        const t = Date.now();
        await waitText(page, 'badge-pending-tasks', before + 1, 1000);
        log(`  badge updated over SSE ${Date.now() - t} ms after the POST returned`);
        // `viewing` goes as a POST for the connection; presence (on the stream) shows it arrived.
        const posted = page.waitForResponse(
          (r) => r.url().includes('/api/v1/realtime/') && (r.request().postData() ?? '').includes('/approvals'),
          { timeout: 5000 },
        );
        await page.click('[data-testid="nav-approvals"]');
        const res = await posted;
        assert(res.status() === 202, `POST /api/v1/realtime/… answered ${res.status()}`);
        await page.waitForSelector('[data-testid="presence-entry"][data-username="admin"][data-viewing="/approvals"]', {
          state: 'attached',
          timeout: 5000,
        });
        assert(await liveOverSse(), 'not live over SSE any more');
      },
      { page },
    );

    await test(
      SSE_TESTS[2],
      async () => {
        assert(live, 'not live over SSE');
        await page.waitForFunction(() => document.querySelector('[data-testid="connection-status"]')?.textContent?.trim() === 'live', null, {
          timeout: 5000,
        });
        const start = Date.now();
        const streamsBefore = streams().length;
        const socketsBefore = wsAttempts.length;
        await sleep(SSE_IDLE_MS);
        const during = requests.filter((r) => r.at >= start);
        const gets = during.filter((r) => r.method === 'GET');
        assert(gets.length === 0, `GET requests while idle over SSE (polling?): ${gets.map((r) => r.url).join(', ')}`);
        assert(streams().length === streamsBefore, 'a new /sse stream was opened while idle');
        const posts = during.filter((r) => r.method === 'POST');
        for (const r of posts) {
          const ping = new URL(r.url).pathname.startsWith('/api/v1/realtime/') && JSON.parse(r.body ?? '{}').type === 'ping';
          assert(ping, `a POST other than the heartbeat while idle: ${r.url} ${r.body}`);
        }
        const maxPings = Math.ceil(SSE_IDLE_MS / 25_000) + 1;
        assert(posts.length <= maxPings, `${posts.length} heartbeat POSTs in ${SSE_IDLE_MS} ms (at most ${maxPings})`);
        assert(wsAttempts.length === socketsBefore, 'WebSocket tried again while idle (the probe is minutes apart)');
        assert(await liveOverSse(), 'not live over SSE after idling');
        log(`  ${during.length} request(s) in ${SSE_IDLE_MS} ms, all heartbeat POSTs`);
      },
      { page, timeoutMs: SSE_IDLE_MS + 30_000 },
    );
  } finally {
    await ctx.close();
  }
}

// ---------------------------------------------------------------- live operations insight (contract 9, issue 17)
const INSIGHT_TESTS = [
  'overview: the department table equals GET /api/v1/tasks/stats/departments, follows a change within 1 s and says who is behind',
  `SLA: a task crossing TASK_SLA_SECONDS=${SLA_SECONDS} turns the overdue count red (and says "overdue") within 1 s, with no request from the page`,
  'charts: the day’s history loads once per topic since local midnight and continues live; it survives a reload and a server restart',
  'accessibility (axe) and keyboard: the overview with an overdue task; a chart’s table opened by keyboard',
];

async function insightTests(browser) {
  if (!(await serverHasInsight())) {
    for (const name of INSIGHT_TESTS) {
      notRun(
        '9',
        name,
        'the server has no live operations insight yet (contract section 9: GET /api/v1/tasks/stats/departments, /api/v1/stats/sla, /api/v1/stats/history; issue 17, server side)',
      );
    }
    return;
  }
  // A server of its own: a short TASK_SLA_SECONDS, a database with nothing overdue from the tests above.
  const srv = new PulseServer({
    bin: SERVER_BIN,
    logPath: path.join(outDir, 'insight-server.log'),
    env: { TASK_SLA_SECONDS: String(SLA_SECONDS) },
  });
  extras.push(srv);
  await srv.init();
  srv.start();
  await srv.waitHealthy();
  const at = UI_MODE === 'vite-preview' ? await startPreview(srv.base, 'insight-preview.log') : srv.base;
  const call = (method, p, body, tok) => api(method, p, body, tok, srv.base);
  const { token: tok } = await call('POST', '/api/v1/auth/login', { username: 'admin', password: srv.adminPassword });
  const task = (department, description) => call('POST', '/api/v1/tasks', { type: 'housekeeping', department, description }, tok);

  const ctx = trackWebSockets(await browser.newContext({ viewport: { width: 1366, height: 1000 } }));
  const page = await ctx.newPage();
  const requests = [];
  page.on('request', (r) => requests.push({ at: Date.now(), url: r.url(), method: r.method() }));
  page.on('pageerror', (e) => log('page error:', e.message));
  const row = (d) => `[data-testid="department-row"][data-department="${d}"]`;
  const historyRequests = () => requests.filter((r) => new URL(r.url).pathname === '/api/v1/stats/history');
  let ready = false;
  try {
    await test(
      INSIGHT_TESTS[0],
      async () => {
        await task('housekeeping', 'Towels, room 1');
        await task('housekeeping', 'Towels, room 2');
        await task('front_desk', 'Late checkout, room 3');
        await loginThroughForm(page, 'admin', srv.adminPassword, at);
        await waitText(page, 'connection-status', 'live', 10_000);
        await page.click('[data-testid="nav-overview"]');
        await page.waitForURL((u) => u.pathname === '/overview', { timeout: 5000 });
        await page.waitForSelector('[data-testid="department-table"]', { timeout: 5000 });
        ready = true;
        const shown = () =>
          page.$$eval('[data-testid="department-row"]', (rows) =>
            rows.map((r) => {
              const cells = [...r.querySelectorAll('td')].map((c) => c.textContent.trim());
              return [r.dataset.department, ...cells.slice(1, 5).map(Number)];
            }),
          );
        const rest = await call('GET', '/api/v1/tasks/stats/departments', undefined, tok);
        const want = rest.departments.map((d) => [d.department, d.pending, d.inProgress, d.completed, d.total]);
        assert(JSON.stringify(await shown()) === JSON.stringify(want), `table ${JSON.stringify(await shown())} != REST ${JSON.stringify(want)}`);
        assert((await page.getAttribute(row('housekeeping'), 'data-behind')) === 'true', 'housekeeping (2 open) is not marked behind');
        assert(((await page.textContent(row('housekeeping'))) ?? '').includes('Behind'), 'the row does not say "Behind"');
        // Three open tasks in a new department: it is behind now, within 1 s.
        await task('e2e-kitchen', 'Breakfast tray, room 4');
        await task('e2e-kitchen', 'Breakfast tray, room 5');
        await task('e2e-kitchen', 'Breakfast tray, room 6');
        const t = Date.now();
        await page.waitForSelector(`${row('e2e-kitchen')}[data-open="3"][data-behind="true"]`, { state: 'attached', timeout: 1000 });
        log(`  department table updated ${Date.now() - t} ms after the last POST returned`);
        assert((await page.getAttribute(row('housekeeping'), 'data-behind')) === 'false', 'housekeeping still marked behind');
        await shot(page, 'overview');
      },
      { page },
    );

    await test(
      INSIGHT_TESTS[1],
      async () => {
        assert(ready, 'the overview did not load');
        // Nothing open, nothing overdue: the card is not red.
        for (const status of ['pending', 'in_progress']) {
          const { items } = await call('GET', `/api/v1/tasks?status=${status}&limit=200`, undefined, tok);
          for (const t of items) await call('POST', `/api/v1/tasks/${t.id}/complete`, undefined, tok);
        }
        await page.waitForSelector('[data-testid="sla-card"][data-overdue="false"]', { state: 'attached', timeout: 5000 });
        await waitText(page, 'sla-overdue', 0, 5000);
        const created = await task('housekeeping', 'Overdue soon, room 9');
        const deadline = Date.parse(created.createdAt) + SLA_SECONDS * 1000;
        const from = requests.length;
        await sleep(Math.max(0, deadline - Date.now() - 700));
        assert((await page.getAttribute('[data-testid="sla-card"]', 'data-overdue')) === 'false', 'overdue before its deadline');
        await page.waitForFunction(
          () => document.querySelector('[data-testid="sla-card"]')?.getAttribute('data-overdue') === 'true',
          null,
          { timeout: Math.max(2500, deadline + 2500 - Date.now()), polling: 50 },
        );
        const late = Date.now() - deadline;
        log(`  red ${late} ms after the task's deadline (createdAt + ${SLA_SECONDS} s)`);
        const during = requests.slice(from);
        assert(during.length === 0, `the page made requests while the task became overdue: ${during.map((r) => `${r.method} ${r.url}`).join(', ')}`);
        assert(late <= 1200, `turned red ${late} ms after the deadline (within 1 s wanted)`);
        assert(((await page.textContent('[data-testid="sla-overdue"]')) ?? '').trim() === '1', 'overdue count is not 1');
        assert(/overdue/.test((await page.textContent('[data-testid="sla-overdue-text"]')) ?? ''), 'the card does not say "overdue"');
        assert(((await page.textContent('[data-testid="sla-state"]')) ?? '').trim() === 'Overdue', 'the state pill does not say Overdue');
        const color = await page.$eval('[data-testid="sla-overdue"]', (el) => getComputedStyle(el).color);
        assert(color === 'rgb(190, 18, 60)', `the overdue count is not red: ${color}`);
        await shot(page, 'overview-overdue');
      },
      { page },
    );

    await test(
      INSIGHT_TESTS[2],
      async () => {
        assert(ready, 'the overview did not load');
        // History is kept per minute: let the minute of the changes above end (and be written).
        const minuteEnd = Math.ceil(Date.now() / 60_000) * 60_000;
        await sleep(minuteEnd - Date.now() + 3000);
        const pending = (await call('GET', '/api/v1/tasks/stats', undefined, tok)).pending;
        const firstLoad = historyRequests().length;
        await page.reload();
        await page.waitForSelector('[data-testid="day-chart-tasks"][data-history="ready"]', { timeout: 10_000 });
        await page.waitForSelector('[data-testid="day-chart-sla"][data-history="ready"]', { timeout: 10_000 });
        const loaded = historyRequests().slice(firstLoad);
        const topics = loaded.map((r) => new URL(r.url).searchParams.get('topic')).sort();
        assert(
          JSON.stringify(topics) === JSON.stringify(['stats:approvals', 'stats:conversations', 'stats:sla', 'stats:tasks']),
          `history requests after the reload: ${JSON.stringify(topics)} (one per charted topic wanted)`,
        );
        const midnight = await page.evaluate(() => {
          const d = new Date();
          d.setHours(0, 0, 0, 0);
          return d.toISOString().replace(/\.\d{3}Z$/, 'Z');
        });
        for (const r of loaded) assert(new URL(r.url).searchParams.get('since') === midnight, `since is not local midnight (${midnight}): ${r.url}`);
        const points = Number(await page.getAttribute('[data-testid="day-chart-tasks"]', 'data-history-points'));
        assert(points >= 1, 'no history point for stats:tasks after the reload');
        const summary = () => page.textContent('[data-testid="day-chart-tasks-summary"]');
        assert(((await summary()) ?? '').startsWith(`Now ${pending}.`), `chart summary: ${await summary()} (pending is ${pending})`);
        // Live from there: a new task moves the chart within 1 s, without fetching history again.
        const n = historyRequests().length;
        await task('housekeeping', 'After the reload, room 10');
        await page.waitForFunction(
          (want) => document.querySelector('[data-testid="day-chart-tasks"]')?.getAttribute('data-current') === String(want),
          pending + 1,
          { timeout: 1000, polling: 50 },
        );
        assert(((await summary()) ?? '').startsWith(`Now ${pending + 1}.`), `chart summary after a push: ${await summary()}`);
        assert(historyRequests().length === n, 'history was fetched again after a push');
        // A server restart: the history is the server's, so a reload still has it.
        await srv.stop('SIGTERM');
        srv.start();
        await srv.waitHealthy();
        await waitText(page, 'connection-status', 'live', 30_000);
        await page.reload();
        await page.waitForSelector('[data-testid="day-chart-tasks"][data-history="ready"]', { timeout: 10_000 });
        const after = Number(await page.getAttribute('[data-testid="day-chart-tasks"]', 'data-history-points'));
        assert(after >= points, `history points after a restart: ${after} (before: ${points})`);
        log(`  stats:tasks history: ${points} point(s) after a reload, ${after} after a restart`);
      },
      { page, timeoutMs: 150_000 },
    );

    await test(
      INSIGHT_TESTS[3],
      async () => {
        assert(ready, 'the overview did not load');
        await waitText(page, 'connection-status', 'live', 10_000);
        await page.waitForSelector('[data-testid="sla-card"][data-overdue="true"]', { state: 'attached', timeout: SLA_SECONDS * 1000 + 5000 });
        await expectAccessible(page, 'the overview, a task overdue');
        // Keyboard: from the tasks page back to the overview, then a chart's table.
        await page.click('[data-testid="nav-tasks"]');
        await page.waitForURL((u) => u.pathname === '/tasks');
        await tabTo(page, '[data-testid="nav-overview"]', { back: true });
        await page.keyboard.press('Enter');
        await page.waitForURL((u) => u.pathname === '/overview', { timeout: 5000 });
        await expectFocus(page, 'main h1');
        await page.waitForSelector('[data-testid="day-chart-tasks"] details summary', { timeout: 5000 });
        await tabTo(page, '[data-testid="day-chart-tasks"] details summary', { max: 120 });
        await page.keyboard.press('Enter');
        await page.waitForSelector('[data-testid="day-chart-tasks"] details[open] table', { timeout: 2000 });
        await expectAccessible(page, 'the overview, a chart as a table');
        await shot(page, 'overview-chart-table');
      },
      { page },
    );
  } finally {
    await ctx.close();
    await srv.dispose();
  }
}

// ---------------------------------------------------------------- main
async function main() {
  if (!SERVER_BIN) throw new Error('PULSE_SERVER_BIN is not set (path to the Pulse server executable)');
  if (!fs.existsSync(SERVER_BIN)) throw new Error(`PULSE_SERVER_BIN does not exist: ${SERVER_BIN}`);
  if (!fs.existsSync(CHROMIUM)) throw new Error(`Chromium not found at ${CHROMIUM} (apt-get install -y --no-install-recommends chromium)`);

  log(`sections whose tests must run (PULSE_E2E_REQUIRE): ${[...REQUIRED].join(', ') || 'none'}`);
  await pulse.init();
  base = pulse.base;
  log(`starting ${SERVER_BIN} on ${base} (db ${pulse.databaseUrl})`);
  startServer();
  await waitHealthy();
  log('server healthy');
  if (UI_MODE === 'vite-preview') {
    if (!fs.existsSync(path.join(DIST, 'index.html'))) throw new Error('dist/ is missing: run `npm run build` first');
    ui = await startPreview();
    log(`vite preview of dist/ on ${ui} (proxying to ${base})`);
  } else if (UI_MODE === 'server') {
    ui = base;
    await checkServedBuild();
  } else {
    throw new Error(`unknown PULSE_E2E_UI=${UI_MODE} (use vite-preview, or leave it unset)`);
  }

  const { token } = await api('POST', '/api/v1/auth/login', { username: 'admin', password: ADMIN_PASSWORD });
  assert(typeof token === 'string' && token.length > 0, 'API login returned no token');

  // Playwright launches with a fresh temporary profile (--user-data-dir) of its own.
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: HEADLESS,
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-background-networking',
      '--disable-quic',
      '--no-first-run',
      '--disable-component-update',
      '--disable-sync',
      '--disable-dev-shm-usage',
    ],
  });

  try {
    // ------------------------------------------------ one tab: login, badges, live update
    const ctx = trackWebSockets(await browser.newContext({ viewport: { width: 1366, height: 900 } }));
    const page = await ctx.newPage();
    const requests = [];
    const sockets = [];
    page.on('request', (r) => requests.push({ at: Date.now(), url: r.url(), method: r.method() }));
    page.on('websocket', (ws) => {
      if (WS_RE.test(new URL(ws.url()).pathname + '?')) sockets.push({ at: Date.now(), ws, closed: false });
      ws.on('close', () => {
        const s = sockets.find((x) => x.ws === ws);
        if (s) s.closed = true;
      });
    });
    page.on('pageerror', (e) => log('page error:', e.message));

    let loggedIn = false;
    await test(
      'unauthenticated / redirects to /login',
      async () => {
        await page.goto(`${ui}/`);
        await page.waitForURL((u) => u.pathname === '/login', { timeout: 10_000 });
        await page.waitForSelector('[data-testid="login-submit"]');
        await shot(page, 'login', false);
      },
      { page },
    );

    await test('accessibility (axe, WCAG 2 A/AA): the login page', () => expectAccessible(page, 'the login page'), { page });

    await test(
      'wrong password shows a plain error',
      async () => {
        await page.fill('[data-testid="login-username"]', 'admin');
        await page.fill('[data-testid="login-password"]', 'definitely-wrong');
        await page.click('[data-testid="login-submit"]');
        await page.waitForSelector('[data-testid="login-error"]', { timeout: 5000 });
        const text = await page.textContent('[data-testid="login-error"]');
        assert(/wrong username or password/i.test(text), `unexpected error text: ${text}`);
        assert(new URL(page.url()).pathname === '/login', 'left the login page');
        await expectAccessible(page, 'the login page with an error');
      },
      { page },
    );

    await test(
      'login through the form → /tasks, live',
      async () => {
        await loginThroughForm(page, 'admin', ADMIN_PASSWORD);
        await waitText(page, 'connection-status', 'live', 10_000);
        const stored = await page.evaluate(() => Object.keys(localStorage).join(','));
        assert(stored.length > 0, 'token not kept in localStorage');
        assertTicketUrls(wsUrls);
        loggedIn = true;
      },
      { page },
    );

    await test(
      'badges equal the API stats',
      async () => {
        assert(loggedIn, 'not logged in');
        await expectBadgesEqualApi(page, token);
      },
      { page },
    );

    await test(
      'a task created through the API shows in the pending badge within 1 s',
      async () => {
        assert(loggedIn, 'not logged in');
        const before = (await apiStats(token)).pendingTasks;
        await waitText(page, 'badge-pending-tasks', before, 3000);
        const created = await newTask(token, 'Fresh towels, room 101');
        assert(created && created.status === 'pending', `unexpected task: ${JSON.stringify(created)}`);
        const t = Date.now();
        await waitText(page, 'badge-pending-tasks', before + 1, 1000);
        log(`  badge updated ${Date.now() - t} ms after the POST returned`);
      },
      { page },
    );

    await test(
      'sample data, pages and screenshots (tasks, approvals, conversations)',
      async () => {
        assert(loggedIn, 'not logged in');
        await newTask(token, 'Fix dripping tap, room 214');
        const assigned = await api(
          'POST',
          '/api/v1/tasks',
          { type: 'maintenance', department: 'maintenance', description: 'Replace light bulb in lobby', assignee: 'admin' },
          token,
        );
        assert(assigned.status === 'in_progress', 'task with assignee is not in_progress');
        await api('POST', '/api/v1/approvals', { kind: 'refund', summary: 'Refund one night, room 208 (AC broken)' }, token);
        const approval = await api('POST', '/api/v1/approvals', { kind: 'upgrade', summary: 'Suite upgrade for anniversary' }, token);
        await api('POST', `/api/v1/approvals/${approval.id}/decide`, { decision: 'approved' }, token);
        await api('POST', '/api/v1/conversations', { guestName: 'Ada Lovelace', channel: 'chat', subject: 'Late checkout?' }, token);
        const conv = await api('POST', '/api/v1/conversations', { guestName: 'Alan Turing', channel: 'phone', subject: 'Noise complaint, room 305' }, token);
        await api('POST', `/api/v1/conversations/${conv.id}/escalate`, { reason: 'Guest very upset' }, token);
        await expectBadgesEqualApi(page, token);

        // Create a task through the UI form as well.
        await page.fill('[data-testid="task-description"]', 'Extra pillows, room 512');
        await page.click('[data-testid="task-create-submit"]');
        await page.waitForSelector('[data-testid="task-row"] >> text=Extra pillows, room 512', { timeout: 5000 });
        await expectBadgesEqualApi(page, token);
        await page.waitForSelector('[data-testid="task-row"] >> text=Fix dripping tap, room 214', { timeout: 5000 });
        await shot(page, 'tasks');

        await page.click('[data-testid="nav-approvals"]');
        await page.waitForURL((u) => u.pathname === '/approvals');
        await page.waitForSelector('[data-testid="approval-row"]', { timeout: 5000 });
        await shot(page, 'approvals');

        await page.click('[data-testid="nav-conversations"]');
        await page.waitForURL((u) => u.pathname === '/conversations');
        await page.waitForSelector('[data-testid="conversation-row"]', { timeout: 5000 });
        // Escalating needs a reason: an empty reason is refused in the UI.
        const active = page.locator('[data-testid="conversation-row"][data-state="active"]').first();
        await active.locator('[data-testid="conversation-escalate"]').click();
        await active.locator('[data-testid="conversation-escalate-confirm"]').click();
        await page.waitForSelector('text=A reason is required', { timeout: 3000 });
        await active.locator('[data-testid="conversation-escalate-reason"]').fill('Wants the manager');
        // The UI changes at once (optimistic); the API is asked once the request has answered.
        const escalated = page.waitForResponse((r) => /\/api\/v1\/conversations\/\d+\/escalate$/.test(r.url()), {
          timeout: 5000,
        });
        await active.locator('[data-testid="conversation-escalate-confirm"]').click();
        assert((await escalated).status() === 200, 'escalation refused');
        const want = (await apiStats(token)).escalatedConversations;
        assert(want === 2, `expected 2 escalated conversations, API says ${want}`);
        await waitText(page, 'badge-escalated-conversations', 2, 3000);
        await shot(page, 'conversations');

        await page.setViewportSize({ width: 820, height: 1180 });
        await page.click('[data-testid="nav-tasks"]');
        await page.waitForSelector('[data-testid="task-row"]');
        await shot(page, 'tasks-tablet');
        await page.setViewportSize({ width: 1366, height: 900 });
      },
      { page },
    );

    await test(
      'accessibility (axe, WCAG 2 A/AA): every page and its open forms and menus',
      async () => {
        assert(loggedIn, 'not logged in');
        await api('POST', '/api/v1/conversations', { guestName: 'Mary Shelley', channel: 'email', subject: 'Extra blanket' }, token);
        // In-app navigation only: the idle test below counts stats requests and sockets.
        await page.click('[data-testid="nav-tasks"]');
        await page.waitForSelector('[data-testid="task-row"]');
        await expectAccessible(page, 'tasks');
        const taskRow = page.locator('[data-testid="task-row"][data-status="pending"]').first();
        await taskRow.locator('[data-testid="task-assign"]').click();
        await expectAccessible(page, 'tasks, assigning');
        await taskRow.locator('button', { hasText: 'Cancel' }).click();

        // The overview (contract 9): with figures, or — on a server without section 9 — plain words instead.
        await page.click('[data-testid="nav-overview"]');
        await page.waitForFunction(
          () => {
            const done = (id) => {
              const el = document.querySelector(`[data-testid="${id}"]`);
              return el && !/Loading|…/.test(el.textContent ?? '');
            };
            return done('sla-card') && done('departments');
          },
          null,
          { timeout: 5000 },
        );
        await expectAccessible(page, 'overview');

        await page.click('[data-testid="nav-approvals"]');
        await page.waitForSelector('[data-testid="approval-row"]');
        await expectAccessible(page, 'approvals');
        const pending = page.locator('[data-testid="approval-row"][data-status="pending"]').first();
        await pending.locator('[data-testid="approval-reject"]').click();
        await expectAccessible(page, 'approvals, rejecting');
        await pending.locator('button', { hasText: 'Cancel' }).click();

        await page.click('[data-testid="nav-conversations"]');
        await page.waitForSelector('[data-testid="conversation-row"]');
        await expectAccessible(page, 'conversations');
        const active = page.locator('[data-testid="conversation-row"][data-state="active"]').first();
        await active.locator('[data-testid="conversation-escalate"]').click();
        await active.locator('[data-testid="conversation-escalate-confirm"]').click();
        await page.waitForSelector('text=A reason is required');
        await expectAccessible(page, 'conversations, escalating (reason missing)');
        await active.locator('button', { hasText: 'Cancel' }).click();

        await page.locator('[data-testid="conversation-open"]').first().click();
        await page.waitForSelector('[data-testid="conversation-detail"]');
        await expectAccessible(page, 'a conversation');

        await page.click('[data-testid="presence-toggle"]');
        await page.waitForSelector('[data-testid="presence-entry"] >> visible=true');
        await expectAccessible(page, 'a conversation, presence list open');
        await page.keyboard.press('Escape');

        await page.evaluate(() => {
          window.history.pushState(null, '', '/no-such-page');
          window.dispatchEvent(new PopStateEvent('popstate'));
        });
        await page.waitForSelector('text=Page not found');
        await expectAccessible(page, 'page not found');
        await page.click('[data-testid="nav-tasks"]');
        await page.waitForSelector('[data-testid="task-row"]');
      },
      { page },
    );

    await test(
      'an API error body is shown in plain words',
      async () => {
        assert(loggedIn, 'not logged in');
        await page.click('[data-testid="nav-tasks"]');
        const task = await newTask(token, 'Error display check');
        const row = page.locator(`[data-testid="task-row"][data-id="${task.id}"]`);
        await row.waitFor({ timeout: 5000 });
        // Answer this one request with the contract's error body, whatever the server would say.
        await page.route(`**/api/v1/tasks/${task.id}/complete`, (route) =>
          route.fulfill({
            status: 409,
            contentType: 'application/json',
            body: JSON.stringify({ error: { code: 'conflict', message: 'task is already completed' } }),
          }),
        );
        await row.locator('[data-testid="task-complete"]').click();
        const banner = page.locator('[data-testid="error-banner"]').first();
        await banner.waitFor({ timeout: 3000 });
        const text = ((await banner.textContent()) || '').trim();
        assert(/task is already completed/i.test(text) && !/[{}]|"code"/.test(text), `error not in plain words: ${text}`);
        await expectAccessible(page, 'tasks with an error banner');
        await page.unroute(`**/api/v1/tasks/${task.id}/complete`);
        // And the real thing works.
        await row.locator('[data-testid="task-complete"]').click();
        await page.waitForSelector(`[data-testid="task-row"][data-id="${task.id}"][data-status="completed"]`, { timeout: 5000 });
      },
      { page },
    );

    await test(
      `idle ${Math.round(IDLE_MS / 1000)} s: no stats request after the initial load, no second WebSocket`,
      async () => {
        assert(loggedIn, 'not logged in');
        await waitText(page, 'connection-status', 'live', 5000);
        const statsSoFar = requests.filter((r) => STATS_RE.test(r.url));
        const perEndpoint = {};
        for (const r of statsSoFar) perEndpoint[new URL(r.url).pathname] = (perEndpoint[new URL(r.url).pathname] || 0) + 1;
        assert(
          Object.values(perEndpoint).every((n) => n === 1) && Object.keys(perEndpoint).length === 3,
          `each stats endpoint should have been fetched exactly once so far: ${JSON.stringify(perEndpoint)}`,
        );
        const wsBefore = sockets.length;
        assert(wsBefore === 1, `expected 1 WebSocket so far, saw ${wsBefore}`);
        const start = Date.now();
        await sleep(IDLE_MS);
        const statsDuring = requests.filter((r) => r.at >= start && STATS_RE.test(r.url));
        assert(statsDuring.length === 0, `stats requests while idle: ${statsDuring.map((r) => r.url).join(', ')}`);
        assert(sockets.length === wsBefore, `new WebSocket(s) opened while idle: ${sockets.length - wsBefore}`);
        assert(!sockets[0].closed, 'the WebSocket closed while idle');
        assert((await statusOf(page)) === 'live', 'not live after idling');
      },
      { page, timeoutMs: IDLE_MS + 30_000 },
    );

    await test(
      'server killed (SIGKILL) and restarted → reconnecting, then live, badges right',
      async () => {
        assert(loggedIn, 'not logged in');
        await killServer('SIGKILL');
        log('  server killed');
        await waitText(page, 'connection-status', 'reconnecting', 10_000);
        log('  indicator: reconnecting');
        await sleep(1000);
        assert((await statusOf(page)) === 'reconnecting', 'indicator must stay on reconnecting while the server is down');
        startServer();
        await waitHealthy();
        log('  server restarted');
        await waitText(page, 'connection-status', 'live', 40_000);
        log('  indicator: live');
        assert(new URL(page.url()).pathname !== '/login', 'was sent to the login page after a restart');
        await expectBadgesEqualApi(page, token);
        const before = (await apiStats(token)).pendingTasks;
        await newTask(token, 'After restart');
        await waitText(page, 'badge-pending-tasks', before + 1, 2000);
        const statsAfterLoad = requests.filter((r) => STATS_RE.test(r.url)).length;
        assert(statsAfterLoad === 3, `stats endpoints were refetched (${statsAfterLoad} requests in total)`);
        // The reconnect after the restart used a fresh ticket of its own.
        assertTicketUrls(wsUrls, { min: 2 });
      },
      { page, timeoutMs: 90_000 },
    );

    await test(
      'logout closes the socket and shows the login page',
      async () => {
        assert(loggedIn, 'not logged in');
        await page.click('[data-testid="logout"]');
        await page.waitForURL((u) => u.pathname === '/login', { timeout: 5000 });
        const deadline = Date.now() + 3000;
        while (sockets.some((s) => !s.closed) && Date.now() < deadline) await sleep(100);
        assert(sockets.every((s) => s.closed), 'socket still open after logout');
        const count = sockets.length;
        await sleep(1500);
        assert(sockets.length === count, 'reconnected after logout');
        const stored = await page.evaluate(() => Object.keys(localStorage).length);
        assert(stored === 0, 'session still in localStorage after logout');
      },
      { page },
    );
    await ctx.close();

    // ------------------------------------------------ three tabs share one WebSocket
    const ctx3 = trackWebSockets(await browser.newContext({ viewport: { width: 1200, height: 850 } }));
    const tabSockets = [];
    const watch = (p) => {
      p.on('websocket', (ws) => {
        if (WS_RE.test(new URL(ws.url()).pathname + '?')) tabSockets.push({ page: p, ws, at: Date.now() });
      });
      p.on('pageerror', (e) => log('page error:', e.message));
    };
    ctx3.on('page', watch);
    let tabs = [];
    let leader = null;
    await test(
      'three tabs all update while the browser holds ONE WebSocket',
      async () => {
        const a = await ctx3.newPage();
        await loginThroughForm(a, 'admin', ADMIN_PASSWORD);
        await waitText(a, 'connection-status', 'live', 10_000);
        const b = await ctx3.newPage();
        await b.goto(`${ui}/approvals`);
        const c = await ctx3.newPage();
        await c.goto(`${ui}/conversations`);
        tabs = [a, b, c];
        for (const p of tabs) await waitText(p, 'connection-status', 'live', 10_000);
        for (const p of tabs) await expectBadgesEqualApi(p, token);
        const before = (await apiStats(token)).pendingTasks;
        await newTask(token, 'Three tabs');
        for (const p of tabs) await waitText(p, 'badge-pending-tasks', before + 1, 2000);
        assert(tabSockets.length === 1, `expected ONE WebSocket across the tabs, saw ${tabSockets.length}`);
        leader = tabSockets[0].page;
      },
      { page: () => tabs[0] },
    );

    await test(
      'closing the leader tab hands over: the remaining tabs keep updating',
      async () => {
        assert(leader, 'no leader found');
        const rest = tabs.filter((p) => p !== leader);
        await leader.close();
        const before = (await apiStats(token)).pendingTasks;
        await newTask(token, 'After the leader left');
        for (const p of rest) await waitText(p, 'badge-pending-tasks', before + 1, 3000);
        for (const p of rest) await waitText(p, 'connection-status', 'live', 3000);
        assert(tabSockets.length === 2, `expected exactly one new WebSocket after the handover, saw ${tabSockets.length - 1}`);
        assert(rest.includes(tabSockets[1].page), 'the new WebSocket is not from a remaining tab');
        await expectBadgesEqualApi(rest[0], token);
      },
      { page: () => tabs.find((p) => !p.isClosed()) },
    );
    await ctx3.close();

    // ------------------------------------------------ staff cannot decide approvals
    await test(
      'staff role: approve/reject/execute hidden',
      async () => {
        const password = `staff-${randomBytes(12).toString('hex')}`;
        await api('POST', '/api/v1/users', { username: 'e2e-staff', password, role: 'staff' }, token);
        const sctx = trackWebSockets(await browser.newContext({ viewport: { width: 1200, height: 850 } }));
        try {
          const p = await sctx.newPage();
          await loginThroughForm(p, 'e2e-staff', password);
          await p.click('[data-testid="nav-approvals"]');
          await p.waitForSelector('[data-testid="approval-row"][data-status="pending"]', { timeout: 5000 });
          const buttons = await p.locator('[data-testid="approval-approve"], [data-testid="approval-reject"], [data-testid="approval-execute"]').count();
          assert(buttons === 0, `staff sees ${buttons} decision buttons`);
          await expectAccessible(p, 'approvals as staff');
        } finally {
          await sctx.close();
        }
      },
    );

    // ------------------------------------------------ keyboard only
    const kctx = trackWebSockets(await browser.newContext({ viewport: { width: 1280, height: 900 } }));
    let kp = null;
    await test(
      'keyboard only: sign in, create a task, assign it and complete it',
      async () => {
        kp = await kctx.newPage();
        kp.on('pageerror', (e) => log('page error:', e.message));
        await kp.goto(`${ui}/login`);
        await expectFocus(kp, '[data-testid="login-username"]');
        await kp.keyboard.type('admin');
        await kp.keyboard.press('Tab');
        await expectFocus(kp, '[data-testid="login-password"]');
        await kp.keyboard.type(ADMIN_PASSWORD);
        await kp.keyboard.press('Enter');
        await kp.waitForURL((u) => u.pathname === '/tasks', { timeout: 10_000 });
        await waitText(kp, 'connection-status', 'live', 10_000);

        await tabTo(kp, '[data-testid="task-description"]');
        await kp.keyboard.type('Keyboard: an iron for room 9');
        await kp.keyboard.press('Enter');
        const row = kp.locator('[data-testid="task-row"]', { hasText: 'Keyboard: an iron for room 9' });
        await row.and(kp.locator(':not([data-saving])')).waitFor({ timeout: 5000 });
        const id = await row.getAttribute('data-id');
        const sel = `[data-testid="task-row"][data-id="${id}"]`;

        await tabTo(kp, `${sel} [data-testid="task-assign"]`);
        await kp.keyboard.press('Enter');
        await expectFocus(kp, `${sel} [data-testid="task-assign-input"]`);
        await kp.keyboard.type('admin');
        await kp.keyboard.press('Enter');
        await kp.waitForSelector(`${sel}[data-status="in_progress"]:not([data-saving])`, { timeout: 5000 });
        // The focus comes back to the row, not to the top of the page.
        await expectFocus(kp, `${sel} [data-testid="task-assign"]`);

        await tabTo(kp, `${sel} [data-testid="task-complete"]`);
        await kp.keyboard.press('Space');
        await kp.waitForSelector(`${sel}[data-status="completed"]`, { timeout: 5000 });
        const task = await api('GET', `/api/v1/tasks/${id}`, undefined, token);
        assert(task.status === 'completed' && task.assignee === 'admin', `task after the keyboard flow: ${JSON.stringify(task)}`);
      },
      { page: () => kp },
    );

    await test(
      'keyboard only: go to approvals, approve one, reject one with a reason',
      async () => {
        assert(kp, 'no page');
        const a1 = await api('POST', '/api/v1/approvals', { kind: 'refund', summary: 'Keyboard: refund room 11' }, token);
        const a2 = await api('POST', '/api/v1/approvals', { kind: 'discount', summary: 'Keyboard: discount room 12' }, token);
        await tabTo(kp, '[data-testid="nav-approvals"]', { back: true });
        await kp.keyboard.press('Enter');
        await kp.waitForURL((u) => u.pathname === '/approvals', { timeout: 5000 });
        // A route change puts the focus on the new page's heading (screen readers announce it).
        await expectFocus(kp, 'main h1');
        const r1 = `[data-testid="approval-row"][data-id="${a1.id}"]`;
        const r2 = `[data-testid="approval-row"][data-id="${a2.id}"]`;
        await kp.waitForSelector(r1, { timeout: 5000 });
        await tabTo(kp, `${r1} [data-testid="approval-approve"]`);
        await kp.keyboard.press('Enter');
        await kp.waitForSelector(`${r1}[data-status="approved"]:not([data-saving])`, { timeout: 5000 });
        await tabTo(kp, `${r2} [data-testid="approval-reject"]`);
        await kp.keyboard.press('Enter');
        await expectFocus(kp, `${r2} [data-testid="approval-reject-reason"]`);
        await kp.keyboard.type('Not our policy');
        await kp.keyboard.press('Enter');
        await kp.waitForSelector(`${r2}[data-status="rejected"]:not([data-saving])`, { timeout: 5000 });
        const got = await api('GET', `/api/v1/approvals/${a2.id}`, undefined, token);
        assert(got.status === 'rejected' && got.decisionReason === 'Not our policy', `approval: ${JSON.stringify(got)}`);
        await tabTo(kp, `${r1} [data-testid="approval-execute"]`);
        await kp.keyboard.press('Enter');
        await kp.waitForSelector(`${r1}[data-status="executed"]:not([data-saving])`, { timeout: 5000 });
      },
      { page: () => kp },
    );

    await test(
      'keyboard only: open a conversation, escalate it with a reason, resolve it; the presence list opens and closes',
      async () => {
        assert(kp, 'no page');
        const conv = await api('POST', '/api/v1/conversations', { guestName: 'Kay Board', channel: 'email', subject: 'Keyboard: late arrival' }, token);
        await tabTo(kp, '[data-testid="nav-conversations"]', { back: true });
        await kp.keyboard.press('Enter');
        await kp.waitForURL((u) => u.pathname === '/conversations', { timeout: 5000 });
        const row = `[data-testid="conversation-row"][data-id="${conv.id}"]`;
        await kp.waitForSelector(row, { timeout: 5000 });
        await tabTo(kp, `${row} [data-testid="conversation-open"]`);
        await kp.keyboard.press('Enter');
        await kp.waitForURL((u) => u.pathname === `/conversations/${conv.id}`, { timeout: 5000 });
        await kp.waitForSelector('[data-testid="conversation-detail"]');
        await tabTo(kp, '[data-testid="conversation-escalate"]');
        await kp.keyboard.press('Enter');
        await expectFocus(kp, '[data-testid="conversation-escalate-reason"]');
        await kp.keyboard.type('Guest asked for the manager');
        await kp.keyboard.press('Enter');
        await kp.waitForSelector('[data-testid="conversation-detail"][data-state="escalated"]', { timeout: 5000 });
        await tabTo(kp, '[data-testid="conversation-resolve"]');
        await kp.keyboard.press('Enter');
        await kp.waitForSelector('[data-testid="conversation-detail"][data-state="resolved"]', { timeout: 5000 });
        const got = await api('GET', `/api/v1/conversations/${conv.id}`, undefined, token);
        assert(got.state === 'resolved' && got.escalationReason === 'Guest asked for the manager', `conversation: ${JSON.stringify(got)}`);

        await tabTo(kp, '[data-testid="presence-toggle"]', { back: true });
        await kp.keyboard.press('Enter');
        await kp.waitForSelector('[data-testid="presence-entry"] >> visible=true', { timeout: 2000 });
        await kp.keyboard.press('Escape');
        await kp.waitForSelector('[data-testid="presence-entry"] >> visible=false', { state: 'attached', timeout: 2000 });
        await expectFocus(kp, '[data-testid="presence-toggle"]');
      },
      { page: () => kp },
    );
    await kctx.close();

    // ------------------------------------------------ two users, two browsers: presence, typing, notifications
    const SAM = 'e2e-sam';
    const samPassword = `sam-${randomBytes(12).toString('hex')}`;
    let pa = null; // admin
    let pb = null; // sam
    const ctxA = trackWebSockets(await browser.newContext({ viewport: { width: 1280, height: 860 } }));
    const ctxB = trackWebSockets(await browser.newContext({ viewport: { width: 1280, height: 860 } }));
    const socketsOf = new Map();
    const watchSockets = (p) => {
      socketsOf.set(p, []);
      p.on('websocket', (ws) => {
        if (!WS_RE.test(new URL(ws.url()).pathname + '?')) return;
        const entry = { url: ws.url(), sent: [], closed: false };
        ws.on('framesent', (f) => entry.sent.push(String(f.payload)));
        ws.on('close', () => (entry.closed = true));
        socketsOf.get(p).push(entry);
      });
      p.on('pageerror', (e) => log('page error:', e.message));
    };
    const presenceEntry = (p, username, viewing) =>
      p.waitForSelector(`[data-testid="presence-entry"][data-username="${username}"][data-viewing="${viewing}"]`, {
        state: 'attached',
        timeout: 5000,
      });
    const typingText = (p) =>
      p.evaluate(() => document.querySelector('[data-testid="typing-indicator"]')?.textContent?.trim() ?? null);

    await test(
      'presence: two users in two browsers see each other and the page each is on',
      async () => {
        await api('POST', '/api/v1/users', { username: SAM, password: samPassword, role: 'staff' }, token);
        pa = await ctxA.newPage();
        pb = await ctxB.newPage();
        watchSockets(pa);
        watchSockets(pb);
        await loginThroughForm(pa, 'admin', ADMIN_PASSWORD);
        await loginThroughForm(pb, SAM, samPassword);
        await waitText(pa, 'connection-status', 'live', 10_000);
        await waitText(pb, 'connection-status', 'live', 10_000);
        await pb.click('[data-testid="nav-approvals"]');
        await presenceEntry(pa, SAM, '/approvals');
        await presenceEntry(pa, 'admin', '/tasks');
        await presenceEntry(pb, 'admin', '/tasks');
        await presenceEntry(pb, SAM, '/approvals');
        await waitText(pa, 'presence-count', '2 online', 5000);
        const url = socketsOf.get(pa)[0]?.url ?? '';
        const topics = decodeURIComponent(new URL(url).searchParams.get('topics') ?? '');
        assert(
          ['stats:tasks', 'stats:approvals', 'stats:conversations', 'presence'].every((t) => topics.split(',').includes(t)),
          `WebSocket URL topics: ${topics}`,
        );
        await pa.click('[data-testid="presence-toggle"]');
        await pa.waitForSelector('[data-testid="presence-entry"] >> visible=true', { timeout: 2000 });
        await shot(pa, 'presence', false);
        await pa.keyboard.press('Escape');
      },
      { page: () => pa },
    );

    let conv = null;
    await test(
      'typing: A sees "e2e-sam is typing…" on a conversation page while B types; it goes away when B stops',
      async () => {
        assert(pa && pb, 'pages not open');
        conv = await api('POST', '/api/v1/conversations', { guestName: 'Grace Hopper', channel: 'chat', subject: 'Wake-up call at 6' }, token);
        // In-app navigation: the topic is subscribed on the open socket, no reconnect.
        for (const p of [pa, pb]) {
          await p.click('[data-testid="nav-conversations"]');
          await p.click(`[data-testid="conversation-row"][data-id="${conv.id}"] [data-testid="conversation-open"]`);
          await p.waitForURL((u) => u.pathname === `/conversations/${conv.id}`, { timeout: 5000 });
          await p.waitForSelector('[data-testid="conversation-reply"]', { timeout: 5000 });
        }
        for (const p of [pa, pb]) {
          const socks = socketsOf.get(p);
          assert(socks.length === 1, `expected one WebSocket for the page, saw ${socks.length}`);
          const deadline = Date.now() + 3000;
          const want = `conversation:${conv.id}`;
          while (!socks[0].sent.some((f) => f.includes('"subscribe"') && f.includes(want)) && Date.now() < deadline) await sleep(50);
          assert(socks[0].sent.some((f) => f.includes('"subscribe"') && f.includes(want)), `no subscribe to ${want} sent`);
        }
        await presenceEntry(pa, SAM, `/conversations/${conv.id}`);
        assert((await typingText(pa)) === '', `typing shown before anyone typed: ${await typingText(pa)}`);

        // B types (without awaiting the whole text) → A sees it while B is still typing.
        const box = pb.locator('[data-testid="conversation-reply"]');
        await box.click();
        const typing = box.pressSequentially('We will call you at 6 sharp.', { delay: 60 });
        await waitText(pa, 'typing-indicator', `${SAM} is typing…`, 3000);
        await typing;
        await shot(pa, 'typing');
        // B leaves the box (blur) → typing: false → gone at once.
        await pb.click('h1');
        await waitText(pa, 'typing-indicator', '', 2000);

        // Again, and this time B just stops: after 3 s without a keystroke the indicator goes away.
        await box.click();
        await box.pressSequentially(' Thanks!', { delay: 60 });
        await waitText(pa, 'typing-indicator', `${SAM} is typing…`, 3000);
        const stopped = Date.now();
        await waitText(pa, 'typing-indicator', '', 6000);
        log(`  indicator cleared ${Date.now() - stopped} ms after the last keystroke`);
        // Leaving the page unsubscribes (on the same socket).
        await pb.click('[data-testid="nav-tasks"]');
        const sent = socketsOf.get(pb)[0].sent;
        const deadline = Date.now() + 3000;
        while (!sent.some((f) => f.includes('"unsubscribe"') && f.includes(`conversation:${conv.id}`)) && Date.now() < deadline) await sleep(50);
        assert(sent.some((f) => f.includes('"unsubscribe"') && f.includes(`conversation:${conv.id}`)), 'no unsubscribe sent on leaving');
        assert(socketsOf.get(pb).length === 1, 'the route changes opened another WebSocket');
      },
      { page: () => pa },
    );

    await test(
      'a task assigned to B (through the API) raises a notification in B’s page, not in A’s',
      async () => {
        assert(pa && pb, 'pages not open');
        const task = await newTask(token, 'Bring a crib to room 808');
        await api('POST', `/api/v1/tasks/${task.id}/assign`, { assignee: SAM }, token);
        const toast = `[data-testid="toast"][data-kind="task-assigned"][data-task-id="${task.id}"]`;
        await pb.waitForSelector(toast, { timeout: 3000 });
        const text = await pb.textContent(`${toast} [data-testid="toast-text"]`);
        assert(/Bring a crib to room 808/.test(text), `toast text: ${text}`);
        await expectAccessible(pb, 'tasks with a toast');
        await shot(pb, 'notification', false);
        await sleep(1500);
        const inA = await pa.locator('[data-testid="toast"]').count();
        assert(inA === 0, `A (admin) sees ${inA} notification(s)`);
        // The toast goes away by itself after a few seconds.
        await pb.waitForSelector(toast, { state: 'detached', timeout: 12_000 });
      },
      { page: () => pb },
    );
    await ctxA.close();
    await ctxB.close();

    // ------------------------------------------------ sign-in limits and user lifecycle (contract sections 2 and 7)
    await test('login 429: after too many failures the login page says how long to wait, and sign-in waits', async () => {
      const lctx = await browser.newContext({ viewport: { width: 1100, height: 800 } });
      try {
        const lp = await lctx.newPage();
        const who = 'e2e-locked-out';
        // More failures for one username than the limit allows (contract 7), through the API.
        let limited = null;
        for (let i = 0; i < 30 && !limited; i++) {
          const res = await fetch(`${base}/api/v1/auth/login`, {
            method: 'POST',
            headers: { 'Content-Type': 'application/json' },
            body: JSON.stringify({ username: who, password: `wrong-${i}` }),
          });
          if (res.status === 429) limited = res;
          else assert(res.status === 401, `bad login answered ${res.status}`);
        }
        assert(limited, 'no 429 after 30 bad logins for one username');
        const retryAfter = Number(limited.headers.get('retry-after'));
        assert(retryAfter > 0, `429 without a usable Retry-After: ${limited.headers.get('retry-after')}`);
        await lp.goto(`${ui}/login`);
        await lp.fill('[data-testid="login-username"]', who);
        await lp.fill('[data-testid="login-password"]', 'one-more-try');
        await lp.press('[data-testid="login-password"]', 'Enter');
        const error = lp.locator('[data-testid="login-error"]');
        await error.waitFor({ timeout: 5000 });
        const text = (await error.textContent()) ?? '';
        assert(/Too many sign-in attempts\. Try again in \d+ (second|minute)/.test(text), `login error: ${text}`);
        const button = lp.locator('[data-testid="login-submit"]');
        assert((await button.getAttribute('aria-disabled')) === 'true', 'sign-in is not held back during the wait');
        assert(/^Wait \d+:\d\d$/.test(((await button.textContent()) ?? '').trim()), `button: ${await button.textContent()}`);
        await expectAccessible(lp, 'the login page, waiting after a 429');
        await shot(lp, 'login-429', false);
      } finally {
        await lctx.close();
      }
    });

    const lifecycle = await serverHasUserLifecycle();
    const lifecycleTests = [
      'users page: an admin adds a user, changes a role (keyboard only) and resets a password; the user is signed out (4401) and back in',
      'deactivate: the user’s open dashboard says so, stops reconnecting and shows the login page; reactivate lets them in again',
      'the last active admin cannot be demoted or deactivated: the page says why and nothing changes',
      'change your own password: a wrong current password is refused at the field; the right one signs out and the new one works',
    ];
    if (!lifecycle) {
      for (const name of lifecycleTests) {
        notRun('2', name, 'the server’s OpenAPI document has no user lifecycle (contract section 2: PATCH /api/v1/users/{id}, POST /api/v1/me/password)');
      }
    } else {
      const actx = trackWebSockets(await browser.newContext({ viewport: { width: 1280, height: 900 } }));
      const uctx = trackWebSockets(await browser.newContext({ viewport: { width: 1280, height: 900 } }));
      let ap = null; // admin
      let up = null; // the managed user
      const KIM = 'e2e-kim';
      let kimPassword = `kim-${randomBytes(9).toString('hex')}`;
      const userSockets = [];
      const row = (username) => `[data-testid="user-row"][data-username="${username}"]`;
      // The close codes the user's page receives (the server's, not the test's inference from the page):
      // a wrapper installed before the app's scripts (an init script: the CSP does not apply to it).
      await uctx.addInitScript(() => {
        const Native = window.WebSocket;
        window.__pulseCloses = [];
        window.WebSocket = class extends Native {
          constructor(...args) {
            super(...args);
            this.addEventListener('close', (e) => window.__pulseCloses.push({ code: e.code, at: Date.now() }));
          }
        };
      });
      const signedOutWith = async (p, pattern) => {
        await p.waitForURL((u) => u.pathname === '/login', { timeout: 5000 });
        const text = (await p.locator('[data-testid="login-error"]').textContent({ timeout: 3000 })) ?? '';
        assert(pattern.test(text), `login page says: ${text}`);
      };
      /** The token of the session a page holds (localStorage, as auth.ts keeps it). */
      const sessionToken = (p) => p.evaluate(() => JSON.parse(localStorage.getItem('pulse.session') ?? 'null')?.token ?? null);
      /** `GET /api/v1/me` with `tok` answers `status`. */
      const meAnswers = async (tok, status, what) => {
        const res = await fetch(`${base}/api/v1/me`, { headers: { Authorization: `Bearer ${tok}` } });
        await res.body?.cancel();
        assert(res.status === status, `${what}: GET /api/v1/me answered ${res.status}, not ${status}`);
      };
      /** `PATCH /api/v1/users/{kim}` as the admin's page sends it: resolves with the time its answer arrived. */
      const patchAnswered = () =>
        ap
          .waitForResponse((r) => r.request().method() === 'PATCH' && /\/api\/v1\/users\/\d+$/.test(r.url()), { timeout: 5000 })
          .then((r) => {
            assert(r.status() === 200, `PATCH answered ${r.status()}`);
            return Date.now();
          });
      /**
       * The user's open socket was closed with `code` soon after the change's answer. Contract 2 says the
       * server closes within 1 s; the page's `close` event comes later: Chromium fires it once the server
       * drops the TCP connection, which the server does up to ~1 s after its Close frame (measured 0.6–0.93 s
       * while a Node client that drops it itself sees the frame in < 50 ms). Hence 2 s here, measured and logged;
       * the frame's own timing is the integration suites' to check.
       */
      const CLOSE_SEEN_WITHIN_MS = 2000;
      const closedWith = async (code, answeredAt) => {
        const closes = await up.evaluate(() => window.__pulseCloses);
        const last = closes.at(-1);
        assert(last, 'the user’s page saw no WebSocket close');
        assert(last.code === code, `the user’s socket was closed with ${last.code}, not ${code} (closes: ${JSON.stringify(closes)})`);
        const after = last.at - answeredAt;
        log(`  close ${code} ${after} ms after the change was answered`);
        assert(after <= CLOSE_SEEN_WITHIN_MS, `close ${code} came ${after} ms after the change was answered (at most ${CLOSE_SEEN_WITHIN_MS} ms)`);
      };

      await test(
        lifecycleTests[0],
        async () => {
          ap = await actx.newPage();
          ap.on('pageerror', (e) => log('page error:', e.message));
          await loginThroughForm(ap, 'admin', ADMIN_PASSWORD);
          await ap.click('[data-testid="nav-users"]');
          await ap.waitForSelector(row('admin'), { timeout: 5000 });
          await ap.fill('[data-testid="user-create-username"]', KIM);
          await ap.fill('[data-testid="user-create-password"]', kimPassword);
          await ap.click('[data-testid="user-create-submit"]');
          await ap.waitForSelector(`${row(KIM)}[data-role="staff"][data-active="true"]`, { timeout: 5000 });
          await expectAccessible(ap, 'users');

          up = await uctx.newPage();
          up.on('pageerror', (e) => log('page error:', e.message));
          up.on('websocket', (ws) => userSockets.push({ at: Date.now(), url: ws.url() }));
          await loginThroughForm(up, KIM, kimPassword);
          await waitText(up, 'connection-status', 'live', 10_000);

          // Keyboard only: change kim's role to manager.
          await tabTo(ap, `${row(KIM)} [data-testid="user-role-edit"]`);
          await ap.keyboard.press('Enter');
          await expectFocus(ap, `${row(KIM)} [data-testid="user-role-select"]`);
          await ap.keyboard.press('ArrowDown');
          assert((await ap.inputValue(`${row(KIM)} [data-testid="user-role-select"]`)) === 'manager', 'ArrowDown did not pick manager');
          await expectAccessible(ap, 'users, changing a role');
          // Enter on a <select> submits nothing (implicit submission is for text fields): on to Save.
          await ap.keyboard.press('Tab');
          await expectFocus(ap, `${row(KIM)} [data-testid="user-role-save"]`);
          let answered = patchAnswered();
          await ap.keyboard.press('Enter');
          await ap.waitForSelector(`${row(KIM)}[data-role="manager"]:not([data-saving])`, { timeout: 5000 });
          await expectFocus(ap, `${row(KIM)} [data-testid="user-role-edit"]`);
          // Kim's older token is retired: the open dashboard is closed with 4401 and asks to sign in again.
          await signedOutWith(up, /session has ended/i);
          await closedWith(4401, await answered);
          await loginThroughForm(up, KIM, kimPassword);
          await up.waitForSelector('[data-testid="current-user"] >> text=manager', { timeout: 5000 });

          // Reset kim's password: too short is refused on the spot, then a good one.
          await ap.click(`${row(KIM)} [data-testid="user-password-reset"]`);
          await ap.fill(`${row(KIM)} [data-testid="user-password-input"]`, 'short');
          await ap.click(`${row(KIM)} [data-testid="user-password-save"]`);
          await ap.waitForSelector(`${row(KIM)} [data-testid="user-password-error"]`, { timeout: 2000 });
          await expectAccessible(ap, 'users, a refused password');
          kimPassword = `kim-${randomBytes(9).toString('hex')}`;
          await ap.fill(`${row(KIM)} [data-testid="user-password-input"]`, kimPassword);
          answered = patchAnswered();
          await ap.click(`${row(KIM)} [data-testid="user-password-save"]`);
          await ap.waitForSelector(`${row(KIM)} [data-testid="user-password-input"]`, { state: 'detached', timeout: 5000 });
          await signedOutWith(up, /session has ended/i);
          await closedWith(4401, await answered);
          await loginThroughForm(up, KIM, kimPassword);
          await waitText(up, 'connection-status', 'live', 10_000);
        },
        { page: () => ap },
      );

      await test(
        lifecycleTests[1],
        async () => {
          assert(ap && up, 'pages not open');
          const kimToken = await sessionToken(up);
          assert(kimToken, 'kim has no session');
          await meAnswers(kimToken, 200, 'kim’s token before the deactivation');
          const answered = patchAnswered();
          await ap.click(`${row(KIM)} [data-testid="user-deactivate"]`);
          await ap.waitForSelector(`${row(KIM)}[data-active="false"]`, { timeout: 5000 });
          await ap.waitForSelector(`${row(KIM)} [data-testid="user-reactivate"]`);
          await signedOutWith(up, /account has been deactivated/i);
          await closedWith(4403, await answered);
          await meAnswers(kimToken, 401, 'a deactivated user’s token');
          await expectAccessible(up, 'the login page after a deactivation');
          const sockets = userSockets.length;
          await sleep(2500);
          assert(userSockets.length === sockets, `the deactivated user's page reconnected (${userSockets.length - sockets} new sockets)`);
          // A deactivated user cannot sign in (401, the same answer as bad credentials).
          await up.fill('[data-testid="login-username"]', KIM);
          await up.fill('[data-testid="login-password"]', kimPassword);
          await up.click('[data-testid="login-submit"]');
          await up.waitForSelector('[data-testid="login-error"] >> text=/wrong username or password/i', { timeout: 5000 });

          await ap.click(`${row(KIM)} [data-testid="user-reactivate"]`);
          await ap.waitForSelector(`${row(KIM)}[data-active="true"]`, { timeout: 5000 });
          await loginThroughForm(up, KIM, kimPassword);
          await waitText(up, 'connection-status', 'live', 10_000);
        },
        { page: () => up },
      );

      await test(
        lifecycleTests[2],
        async () => {
          assert(ap, 'page not open');
          // kim is a manager: admin is the only active admin.
          await ap.click(`${row('admin')} [data-testid="user-role-edit"]`);
          await ap.selectOption(`${row('admin')} [data-testid="user-role-select"]`, 'staff');
          await ap.click(`${row('admin')} [data-testid="user-role-save"]`);
          const banner = ap.locator('[data-testid="error-banner"]').first();
          await banner.waitFor({ timeout: 5000 });
          const text = (await banner.textContent()) ?? '';
          assert(/admin is the last active admin/.test(text), `banner: ${text}`);
          await expectAccessible(ap, 'users, last-admin refusal');
          await ap.click(`${row('admin')} [data-testid="user-deactivate"]`);
          await ap.waitForSelector('[data-testid="error-banner"] >> text=/cannot be deactivated/', { timeout: 5000 });
          const me = await api('GET', '/api/v1/me', undefined, token);
          assert(me.role === 'admin', `the last admin changed: ${JSON.stringify(me)}`);
          assert(await ap.locator(`${row('admin')}[data-role="admin"][data-active="true"]`).count() === 1, 'the row changed');
        },
        { page: () => ap },
      );

      await test(
        lifecycleTests[3],
        async () => {
          assert(up, 'page not open');
          await up.click('[data-testid="current-user"]');
          await up.waitForURL((u) => u.pathname === '/account', { timeout: 5000 });
          await expectAccessible(up, 'your account');
          const next = `kim-${randomBytes(9).toString('hex')}`;
          await up.fill('[data-testid="account-current-password"]', 'not-my-password');
          await up.fill('[data-testid="account-new-password"]', next);
          await up.fill('[data-testid="account-confirm-password"]', next);
          await up.click('[data-testid="account-submit"]');
          await up.waitForSelector('[data-testid="account-error"] >> text=/current password is not right/', { timeout: 5000 });
          await expectAccessible(up, 'your account, wrong current password');
          assert(new URL(up.url()).pathname === '/account', 'a refused change signed the user out');
          const oldToken = await sessionToken(up);
          await meAnswers(oldToken, 200, 'kim’s token before the change');
          await up.fill('[data-testid="account-current-password"]', kimPassword);
          await up.click('[data-testid="account-submit"]');
          await signedOutWith(up, /password was changed/i);
          // The user's own older tokens go too (contract 2): the one the page held is refused.
          await meAnswers(oldToken, 401, 'the token held before one’s own password change');
          kimPassword = next;
          await loginThroughForm(up, KIM, kimPassword);
          await waitText(up, 'connection-status', 'live', 10_000);
        },
        { page: () => up },
      );
      await actx.close();
      await uctx.close();
    }

    // ------------------------------------------------ contract 8: the SSE fallback; contract 9: live operations insight
    await sseFallbackTests(browser, token);
    await insightTests(browser);

    await test('every WebSocket URL the browser opened has ticket= (a new one each) and no token=', async () => {
      const n = assertTicketUrls(wsUrls, { min: 4 });
      log(`  ${n} WebSocket URLs checked`);
    });
  } finally {
    await browser.close().catch(() => {});
  }
}

let fatal = null;
try {
  await main();
  if (axeChecked.length > 0) {
    const clean = axeChecked.filter((c) => c.violations === 0).length;
    log(`axe (${AXE_TAGS.join(', ')}): ${axeChecked.length} page states checked, ${clean} without violations`);
  }
} catch (err) {
  fatal = err;
  log(`FATAL: ${err?.stack || err}`);
} finally {
  await pulse.dispose();
  if (preview && preview.exitCode === null) preview.kill('SIGKILL');
}
const passed = results.filter((r) => r.ok === true).length;
const failed = results.filter((r) => r.ok === false).length + (fatal ? 1 : 0);
const notRunCount = results.filter((r) => r.ok === null).length;
for (const r of results.filter((x) => x.ok === null)) log(`not run: ${r.name}`);
log(`total ${((Date.now() - t0) / 1000).toFixed(1)} s; screenshots in ${path.relative(process.cwd(), outDir) || outDir}`);
console.log(`${passed} passed, ${failed} failed, ${notRunCount} not run`);
process.exit(failed > 0 || passed === 0 ? 1 : 0);
