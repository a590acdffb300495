// The WebSocket: logs in with a first `login` frame (never a token in the URL), matches replies
// to requests by id, and reconnects with capped, jittered backoff until stopped.

import { NatterError } from './errors.js';

/** @typedef {'connecting' | 'online' | 'offline'} ConnectionState */

/**
 * @typedef {object} Backoff
 * @property {number} [initialMs] the first retry's delay (500)
 * @property {number} [maxMs] the cap (10,000)
 */

/**
 * @typedef {object} TransportOptions
 * @property {string} url the WebSocket URL (`ws://host/ws?app=...`)
 * @property {() => string | Promise<string>} token the access token to log in with, asked at every connect
 * @property {any} [WebSocket] a WebSocket implementation (default: the global one)
 * @property {Backoff} [backoff]
 * @property {number} [replyTimeoutMs] a request unanswered this long fails as `timeout` (15,000)
 * @property {number} [connectTimeoutMs] a connect not open this long is given up and retried (10,000)
 * @property {() => void | Promise<void>} [onOpen] after each successful login
 * @property {(frame: any) => void} [onFrame] every frame that is not a reply to a request
 * @property {(state: ConnectionState, retryInMs?: number) => void} [onState]
 * @property {(error: NatterError) => void} [onAuthFailed] the token was refused; no reconnect follows
 */

const CLOSE_UNAUTHORIZED = 4501;
const CLOSE_REVOKED = 4502;
const CLOSE_BANNED = 4503;

export class Transport {
  /** @param {TransportOptions} options */
  constructor(options) {
    this.options = options;
    this.WebSocket = options.WebSocket ?? globalThis.WebSocket;
    if (!this.WebSocket) throw new TypeError('no WebSocket implementation: pass one as `WebSocket`');
    this.nextId = 1;
    /** @type {Map<string, {resolve: (frame: any) => void, reject: (e: NatterError) => void, timer: any}>} */
    this.waiting = new Map();
    this.attempt = 0;
    this.stopped = true;
    /** @type {any} */
    this.ws = null;
    this.ready = false;
    /** @type {any} */
    this.timer = null;
  }

  start() {
    this.stopped = false;
    this.attempt = 0;
    this.connect();
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    if (this.ws) this.ws.close(1000, 'bye');
  }

  /** @param {ConnectionState} state @param {number} [retryInMs] */
  state(state, retryInMs) {
    this.options.onState?.(state, retryInMs);
  }

  connect() {
    if (this.stopped) return;
    this.state('connecting');
    const ws = new this.WebSocket(this.options.url);
    this.ws = ws;
    ws.onopen = async () => {
      try {
        const token = await this.options.token();
        await this.request({ type: 'action', action: 'login', data: { token } }, ws);
      } catch (e) {
        this.ready = false;
        if (e instanceof NatterError && e.status === 401) {
          this.stopped = true;
          ws.close(1000, 'login refused');
          this.state('offline');
          this.options.onAuthFailed?.(e);
        } else {
          ws.close(4000, 'login failed');
        }
        return;
      }
      this.attempt = 0;
      this.ready = true;
      this.state('online');
      try {
        await this.options.onOpen?.();
      } catch (e) {
        this.options.onFrame?.({ type: 'local_error', error: e });
      }
    };
    ws.onmessage = (/** @type {{data: any}} */ ev) => {
      let frame;
      try {
        frame = JSON.parse(String(ev.data));
      } catch {
        return;
      }
      const id = frame.type === 'reply' && frame.id !== undefined ? String(frame.id) : null;
      const waiter = id === null ? undefined : this.waiting.get(id);
      if (id !== null && waiter) {
        this.waiting.delete(id);
        clearTimeout(waiter.timer);
        if (frame.code >= 200 && frame.code < 300) waiter.resolve(frame);
        else waiter.reject(new NatterError(frame.code, frame.error ?? 'error', frame.msg || frame.error || 'refused'));
        return;
      }
      this.options.onFrame?.(frame);
    };
    // Some implementations (Node 20's) report a refused connection with `error` alone, no
    // `close`: either ends this attempt, once.
    let ended = false;
    const end = (/** @type {number} */ code, /** @type {string} */ reason) => {
      if (ended) return;
      ended = true;
      clearTimeout(opening);
      this.closed(ws, code, reason);
    };
    // A connect that neither opens nor fails (a black-holed address) is given up and retried.
    const opening = setTimeout(() => {
      if (ws.readyState !== 1) {
        ws.close();
        end(1006, 'connect timed out');
      }
    }, this.options.connectTimeoutMs ?? 10000);
    ws.onclose = (/** @type {{code: number, reason: string}} */ ev) => end(ev.code, ev.reason);
    ws.onerror = () => {
      if (ws.readyState !== 1) end(1006, 'connect failed');
    };
  }

  /**
   * One connection ended: tell the waiting requests, then reconnect unless told not to.
   * @param {any} ws
   * @param {number} code
   * @param {string} reason
   */
  closed(ws, code, reason) {
    this.ready = false;
    this.failWaiting('connection lost');
    if (this.ws !== ws) return;
    if (code === CLOSE_UNAUTHORIZED || code === CLOSE_REVOKED || code === CLOSE_BANNED) {
      this.stopped = true;
      this.state('offline');
      const errorCode = (reason || '').split(':')[0] || String(code);
      this.options.onAuthFailed?.(new NatterError(code === CLOSE_BANNED ? 403 : 401, errorCode, reason || 'signed out'));
      return;
    }
    if (this.stopped) {
      this.state('offline');
      return;
    }
    // Capped exponential backoff with jitter, so a restarted server is not stampeded.
    const { initialMs = 500, maxMs = 10000 } = this.options.backoff ?? {};
    const base = Math.min(maxMs, initialMs * 2 ** this.attempt);
    const delay = base / 2 + (Math.random() * base) / 2;
    this.attempt += 1;
    this.state('offline', delay);
    this.timer = setTimeout(() => this.connect(), delay);
  }

  /** @param {string} why */
  failWaiting(why) {
    for (const { reject, timer } of this.waiting.values()) {
      clearTimeout(timer);
      reject(new NatterError(0, 'disconnected', why));
    }
    this.waiting.clear();
  }

  /**
   * Sends a frame with a fresh id; resolves with the success reply, rejects with the error.
   * @param {Record<string, unknown>} frame
   * @param {any} [ws]
   * @returns {Promise<any>}
   */
  request(frame, ws = this.ws) {
    return new Promise((resolve, reject) => {
      if (!ws || ws.readyState !== 1) {
        reject(new NatterError(0, 'disconnected', 'not connected'));
        return;
      }
      const id = String(this.nextId++);
      const timeout = this.options.replyTimeoutMs ?? 15000;
      const timer = setTimeout(() => {
        if (this.waiting.delete(id)) reject(new NatterError(0, 'timeout', `no reply in ${timeout} ms`));
      }, timeout);
      this.waiting.set(id, { resolve, reject, timer });
      ws.send(JSON.stringify({ ...frame, id }));
    });
  }

  /**
   * An action (docs/protocol.md, "Client → server").
   * @param {string} action
   * @param {unknown} [data]
   * @returns {Promise<any>} the reply frame (`data`, and `cursor` for lists)
   */
  action(action, data) {
    return this.request({ type: 'action', action, data });
  }
}
