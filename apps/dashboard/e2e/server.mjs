// The real Pulse server as a child process, for the scripts in this folder (run.mjs,
// reconnect-spread.mjs): a free port, a fresh SQLite database in a temporary folder, known
// admin credentials and JWT secret, start / health check / stop, output into a log file.
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** A TCP port that was free a moment ago on 127.0.0.1. */
export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

/** `PULSE_SERVER_BIN`, checked: the server executable built by cargo. */
export function serverBinFromEnv() {
  const bin = process.env.PULSE_SERVER_BIN;
  if (!bin) throw new Error('PULSE_SERVER_BIN is not set (path to the Pulse server executable)');
  if (!fs.existsSync(bin)) throw new Error(`PULSE_SERVER_BIN does not exist: ${bin}`);
  return bin;
}

/**
 * One Pulse server on a fixed port and database, which can be stopped and started again
 * (same port, same database, same secrets: a restart as an operator would do it).
 */
export class PulseServer {
  /**
   * @param {object} o
   * @param {string} o.bin the server executable
   * @param {string} o.logPath where the server's stdout and stderr go (all runs appended)
   * @param {Record<string,string>} [o.env] extra environment (e.g. LOG_FORMAT, limits)
   * @param {(line: string) => void} [o.onLine] called with every stdout line (e.g. to read JSON logs)
   */
  constructor({ bin, logPath, env = {}, onLine }) {
    this.bin = bin;
    this.logPath = logPath;
    this.extraEnv = env;
    this.onLine = onLine;
    this.tmpDir = fs.mkdtempSync(path.join(os.tmpdir(), 'pulse-e2e-'));
    this.adminPassword = `e2e-${randomBytes(18).toString('hex')}`;
    this.jwtSecret = randomBytes(48).toString('base64url').slice(0, 64);
    this.databaseUrl = `sqlite://${path.join(this.tmpDir, 'pulse.db')}`;
    this.port = 0;
    this.child = null;
    this.log = fs.createWriteStream(logPath, { flags: 'w' });
  }

  get base() {
    return `http://127.0.0.1:${this.port}`;
  }

  /** Picks the port (once: restarts keep it). */
  async init() {
    if (!this.port) this.port = await freePort();
    return this;
  }

  /** Spawns the server (does not wait for it: see waitHealthy). */
  start() {
    if (!this.port) throw new Error('PulseServer.init() first');
    const child = spawn(this.bin, [], {
      env: {
        ...process.env,
        BIND_ADDR: `127.0.0.1:${this.port}`,
        DATABASE_URL: this.databaseUrl,
        ADMIN_USERNAME: 'admin',
        ADMIN_PASSWORD: this.adminPassword,
        JWT_SECRET: this.jwtSecret,
        RUST_LOG: 'info',
        // By default the server serves the dashboard it embeds (what users get); set
        // PULSE_DASHBOARD_DIR to test a fresh `npm run build` without rebuilding the server.
        ...(process.env.PULSE_DASHBOARD_DIR ? { PULSE_DASHBOARD_DIR: process.env.PULSE_DASHBOARD_DIR } : {}),
        ...this.extraEnv,
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    child.stdout.on('data', (d) => this.log.write(d));
    child.stderr.on('data', (d) => this.log.write(d));
    if (this.onLine) readline.createInterface({ input: child.stdout }).on('line', this.onLine);
    child.on('exit', (code, signal) => this.log.write(`\n--- server exited code=${code} signal=${signal}\n`));
    this.child = child;
    return child;
  }

  /** Polls /healthz until it answers 200. */
  async waitHealthy(timeoutMs = 30_000) {
    const deadline = Date.now() + timeoutMs;
    let last = '';
    while (Date.now() < deadline) {
      const child = this.child;
      if (child && child.exitCode !== null) {
        throw new Error(`server exited early (code ${child.exitCode}); see ${this.logPath}`);
      }
      try {
        const res = await fetch(`${this.base}/healthz`);
        if (res.status === 200) return;
        last = `status ${res.status}`;
      } catch (e) {
        last = e.message;
      }
      await sleep(100);
    }
    throw new Error(`server not healthy within ${timeoutMs} ms (${last})`);
  }

  /** Sends `signal` and resolves once the process has exited (or after `timeoutMs`). */
  stop(signal = 'SIGKILL', timeoutMs = 5000) {
    return new Promise((resolve) => {
      const child = this.child;
      this.child = null;
      if (!child || child.exitCode !== null || child.signalCode !== null) return resolve();
      child.once('exit', () => resolve());
      child.kill(signal);
      setTimeout(resolve, timeoutMs).unref();
    });
  }

  /** For process exit handlers: SIGKILL without waiting. */
  killSync() {
    const child = this.child;
    if (child && child.exitCode === null && child.signalCode === null) {
      try {
        child.kill('SIGKILL');
      } catch {
        /* ignore */
      }
    }
  }

  /** Kills the server if running and removes the database folder. */
  async dispose() {
    await this.stop('SIGKILL');
    this.log.end();
    fs.rmSync(this.tmpDir, { recursive: true, force: true });
  }
}
