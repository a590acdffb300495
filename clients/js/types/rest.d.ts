/** @param {unknown} e */
export function errorText(e: unknown): string;
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
    constructor({ url, app, fetch: fetchImpl }?: RestOptions | undefined);
    url: string;
    app: string | undefined;
    /** @type {typeof fetch} */
    fetch: typeof fetch;
    /**
     * One call; resolves with the response's `data`.
     * @param {string} method
     * @param {string} path e.g. `/v1/groups`
     * @param {CallOptions} [options]
     * @returns {Promise<any>}
     */
    call(method: string, path: string, options?: CallOptions | undefined): Promise<any>;
    /**
     * A call that answers one page of a list: its items and the cursor of the next (null: the last).
     * @param {string} method
     * @param {string} path
     * @param {CallOptions} [options]
     * @returns {Promise<{data: any[], cursor: string | null}>}
     */
    page(method: string, path: string, options?: CallOptions | undefined): Promise<{
        data: any[];
        cursor: string | null;
    }>;
    /**
     * @param {string} method
     * @param {string} path
     * @param {CallOptions} [options]
     * @returns {Promise<any>} the whole body of a success
     */
    request(method: string, path: string, { token, body }?: CallOptions | undefined): Promise<any>;
}
export type RestOptions = {
    /**
     * the node's base URL (`http://127.0.0.1:8080`); '' for the page's origin
     */
    url?: string | undefined;
    /**
     * the app unauthenticated calls name (`X-App-Id`); absent: `default`
     */
    app?: string | undefined;
    /**
     * a fetch implementation (default: the global one)
     */
    fetch?: typeof fetch | undefined;
};
export type CallOptions = {
    /**
     * a bearer token
     */
    token?: string | undefined;
    /**
     * a JSON body
     */
    body?: unknown;
};
