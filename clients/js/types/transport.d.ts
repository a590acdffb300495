export class Transport {
    /** @param {TransportOptions} options */
    constructor(options: TransportOptions);
    options: TransportOptions;
    WebSocket: any;
    nextId: number;
    /** @type {Map<string, {resolve: (frame: any) => void, reject: (e: NatterError) => void, timer: any}>} */
    waiting: Map<string, {
        resolve: (frame: any) => void;
        reject: (e: NatterError) => void;
        timer: any;
    }>;
    attempt: number;
    stopped: boolean;
    /** @type {any} */
    ws: any;
    ready: boolean;
    /** @type {any} */
    timer: any;
    start(): void;
    stop(): void;
    /** @param {ConnectionState} state @param {number} [retryInMs] */
    state(state: ConnectionState, retryInMs?: number | undefined): void;
    connect(): void;
    /**
     * One connection ended: tell the waiting requests, then reconnect unless told not to.
     * @param {any} ws
     * @param {number} code
     * @param {string} reason
     */
    closed(ws: any, code: number, reason: string): void;
    /** @param {string} why */
    failWaiting(why: string): void;
    /**
     * Sends a frame with a fresh id; resolves with the success reply, rejects with the error.
     * @param {Record<string, unknown>} frame
     * @param {any} [ws]
     * @returns {Promise<any>}
     */
    request(frame: Record<string, unknown>, ws?: any): Promise<any>;
    /**
     * An action (docs/protocol.md, "Client → server").
     * @param {string} action
     * @param {unknown} [data]
     * @returns {Promise<any>} the reply frame (`data`, and `cursor` for lists)
     */
    action(action: string, data?: unknown): Promise<any>;
}
export type ConnectionState = "connecting" | "online" | "offline";
export type Backoff = {
    /**
     * the first retry's delay (500)
     */
    initialMs?: number | undefined;
    /**
     * the cap (10,000)
     */
    maxMs?: number | undefined;
};
export type TransportOptions = {
    /**
     * the WebSocket URL (`ws://host/ws?app=...`)
     */
    url: string;
    /**
     * the access token to log in with, asked at every connect
     */
    token: () => string | Promise<string>;
    /**
     * a WebSocket implementation (default: the global one)
     */
    WebSocket?: any;
    backoff?: Backoff | undefined;
    /**
     * a request unanswered this long fails as `timeout` (15,000)
     */
    replyTimeoutMs?: number | undefined;
    /**
     * a connect not open this long is given up and retried (10,000)
     */
    connectTimeoutMs?: number | undefined;
    /**
     * after each successful login
     */
    onOpen?: (() => void | Promise<void>) | undefined;
    /**
     * every frame that is not a reply to a request
     */
    onFrame?: ((frame: any) => void) | undefined;
    onState?: ((state: ConnectionState, retryInMs?: number) => void) | undefined;
    /**
     * the token was refused; no reconnect follows
     */
    onAuthFailed?: ((error: NatterError) => void) | undefined;
};
import { NatterError } from './errors.js';
