// One error type for REST and WebSocket refusals: the server's stable code (docs/protocol.md,
// "Error codes"), its HTTP status (the WebSocket reply's `code` is the same number) and message.

export class NatterError extends Error {
  /**
   * @param {number} status HTTP status, or 0 when the server was not reached
   * @param {string} code the stable error code (`not_a_member`, ...), or `network` / `disconnected`
   * @param {string} message for humans
   */
  constructor(status, code, message) {
    super(message);
    this.name = 'NatterError';
    this.status = status;
    this.code = code;
  }

  /** Worth trying again later unchanged: not reached, rate limited, or the server's fault. */
  get retryable() {
    return this.status === 0 || this.status === 429 || this.status >= 500;
  }
}
