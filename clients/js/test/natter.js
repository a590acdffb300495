// A real Natter node for the tests: the binary at NATTER_BIN (default: target/debug/natter),
// embedded (SQLite in a temporary directory, the in-process bus), on a port of its own. It can be
// killed and started again on the same port and database, as a crash and restart would.

import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
const bin = process.env.NATTER_BIN || path.join(root, 'target', 'debug', 'natter');

/** The caller's environment without anything that would point natter at another store or bus. */
function ownEnv() {
  const env = { ...process.env };
  for (const k of Object.keys(env)) {
    if (k.startsWith('NATTER_') || k === 'DATABASE_URL' || k === 'NATS_URL') delete env[k];
  }
  return env;
}

export class Natter {
  /** @param {Record<string, string>} [env] extra NATTER_… settings */
  constructor(env = {}) {
    this.dir = fs.mkdtempSync(path.join(os.tmpdir(), 'natter-client-'));
    this.env = env;
    this.port = 0;
    this.child = null;
  }

  get url() {
    return `http://127.0.0.1:${this.port}`;
  }

  async start() {
    const child = spawn(bin, ['serve'], {
      env: {
        ...ownEnv(),
        NATTER_DATABASE__URL: `sqlite://${this.dir}/natter.db`,
        NATTER_HTTP__BIND: `127.0.0.1:${this.port}`,
        NATTER_HTTP__WORKERS: '2',
        NATTER_LOG__FORMAT: 'json',
        NATTER_LOG__LEVEL: 'warn,natter::server=info',
        NATTER_NATS__URL: '',
        ...this.env,
      },
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    this.child = child;
    const addr = await new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('natter did not start in 30 s')), 30000);
      readline.createInterface({ input: child.stderr }).on('line', (line) => {
        let v;
        try {
          v = JSON.parse(line);
        } catch {
          return;
        }
        if (v.addr) {
          clearTimeout(timer);
          resolve(v.addr);
        } else if (v.level === 'ERROR') {
          console.error('natter:', line);
        }
      });
      child.on('exit', (code) => {
        clearTimeout(timer);
        reject(new Error(`natter exited with ${code}`));
      });
    });
    this.port = Number(String(addr).split(':').pop());
  }

  /** SIGKILL: no drain, no goodbye to the sockets. */
  async kill() {
    const child = this.child;
    if (!child || child.exitCode !== null) return;
    const exited = new Promise((resolve) => child.once('exit', resolve));
    child.kill('SIGKILL');
    await exited;
    this.child = null;
  }

  async stop() {
    await this.kill();
    fs.rmSync(this.dir, { recursive: true, force: true });
  }
}

/**
 * Waits (bounded) until `check` returns something truthy.
 * @template T
 * @param {() => T | Promise<T>} check
 * @param {string} what
 * @param {number} [ms]
 * @returns {Promise<T>}
 */
export async function until(check, what, ms = 10000) {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await check();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

let counter = 0;
/** A unique email for this run. */
export function email(name) {
  counter += 1;
  return `${name}-${process.pid}-${Date.now()}-${counter}@example.com`;
}
