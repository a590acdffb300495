export class NatterError extends Error {
    /**
     * @param {number} status HTTP status, or 0 when the server was not reached
     * @param {string} code the stable error code (`not_a_member`, ...), or `network` / `disconnected`
     * @param {string} message for humans
     */
    constructor(status: number, code: string, message: string);
    status: number;
    code: string;
    /** Worth trying again later unchanged: not reached, rate limited, or the server's fault. */
    get retryable(): boolean;
}
