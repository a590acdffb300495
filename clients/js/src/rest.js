// REST calls: JSON in, `{data}` out, failures as NatterError with the server's code.

import { NatterError } from './errors.js';

/**
 * @typedef {object} RestOptions
 * @property {string} [url] the node's base URL (`http://127.0.0.1:8080`); '' for the page's origin
 * @property {string} [app] the app unauthenticated calls name (`X-App-Id`); absent: `default`
 * @property {typeof fetch} [fetch] a fetch implementation (default: the global one)
 */

/**
 * @typedef {object} CallOptions
 * @property {string} [token] a bearer token
 * @property {unknown} [body] a JSON body
 */

export class Rest {
  /** @param {RestOptions} [options] */
  constructor({ url = '', app, fetch: fetchImpl } = {}) {
    this.url = url.replace(/\/+$/, '');
    this.app = app;
    /** @type {typeof fetch} */
    this.fetch = fetchImpl ?? ((input, init) => globalThis.fetch(input, init));
  }

  /**
   * One call; resolves with the response's `data`.
   * @param {string} method
   * @param {string} path e.g. `/v1/groups`
   * @param {CallOptions} [options]
   * @returns {Promise<any>}
   */
  async call(method, path, options) {
    return (await this.request(method, path, options)).data;
  }

  /**
   * A call that answers one page of a list: its items and the cursor of the next (null: the last).
   * @param {string} method
   * @param {string} path
   * @param {CallOptions} [options]
   * @returns {Promise<{data: any[], cursor: string | null}>}
   */
  async page(method, path, options) {
    const payload = await this.request(method, path, options);
    return { data: payload.data, cursor: payload.cursor ?? null };
  }

  /**
   * @param {string} method
   * @param {string} path
   * @param {CallOptions} [options]
   * @returns {Promise<any>} the whole body of a success
   */
  async request(method, path, { token, body } = {}) {
    /** @type {Record<string, string>} */
    const headers = { Accept: 'application/json' };
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    if (token) headers.Authorization = `Bearer ${token}`;
    else if (this.app) headers['X-App-Id'] = this.app;
    let res;
    try {
      res = await this.fetch(this.url + path, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    } catch (e) {
      throw new NatterError(0, 'network', `The server cannot be reached (${errorText(e)}).`);
    }
    let payload;
    try {
      payload = await res.json();
    } catch {
      throw new NatterError(res.status, 'invalid_json', `The server answered ${res.status} without JSON.`);
    }
    if (!res.ok) {
      const err = payload?.error ?? {};
      throw new NatterError(res.status, err.code ?? 'error', err.message ?? `HTTP ${res.status}`);
    }
    return payload;
  }
}

/** @param {unknown} e */
export function errorText(e) {
  return e instanceof Error ? e.message : String(e);
}
