// The WebSocket: logs in with a first `login` frame (never a token in the URL), matches replies
// to requests by id, and reconnects with capped, jittered backoff until told to stop.

export class Socket {
  constructor({ app, token, onOpen, onFrame, onState, onAuthFailed }) {
    this.app = app;
    this.token = token;
    this.onOpen = onOpen;
    this.onFrame = onFrame;
    this.onState = onState;
    this.onAuthFailed = onAuthFailed;
    this.nextId = 1;
    this.waiting = new Map();
    this.attempt = 0;
    this.stopped = false;
    this.ws = null;
    this.ready = false;
  }

  start() {
    this.stopped = false;
    this.connect();
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    if (this.ws) this.ws.close(1000, 'bye');
  }

  connect() {
    if (this.stopped) return;
    this.onState('connecting');
    const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
    const ws = new WebSocket(`${scheme}://${location.host}/ws?app=${encodeURIComponent(this.app)}`);
    this.ws = ws;
    ws.onopen = async () => {
      try {
        await this.request({ type: 'action', action: 'login', data: { token: this.token } }, ws);
      } catch (e) {
        this.ready = false;
        ws.close(4000, 'login failed');
        if (e.status === 401) this.onAuthFailed(e);
        return;
      }
      this.attempt = 0;
      this.ready = true;
      this.onState('online');
      try {
        await this.onOpen();
      } catch (e) {
        this.onFrame({ type: 'local_error', error: e });
      }
    };
    ws.onmessage = (ev) => {
      let frame;
      try {
        frame = JSON.parse(ev.data);
      } catch {
        return;
      }
      if (frame.type === 'reply' && this.waiting.has(String(frame.id))) {
        const { resolve, reject } = this.waiting.get(String(frame.id));
        this.waiting.delete(String(frame.id));
        if (frame.code >= 200 && frame.code < 300) resolve(frame);
        else reject(Object.assign(new Error(frame.msg || frame.error), { status: frame.code, code: frame.error }));
        return;
      }
      this.onFrame(frame);
    };
    ws.onclose = (ev) => {
      this.ready = false;
      for (const { reject } of this.waiting.values()) {
        reject(Object.assign(new Error('connection lost'), { status: 0, code: 'disconnected' }));
      }
      this.waiting.clear();
      if (this.ws !== ws) return;
      if (ev.code === 4501 || ev.code === 4502) {
        this.onState('offline');
        this.onAuthFailed(Object.assign(new Error(ev.reason || 'signed out'), { status: 401, code: ev.code }));
        return;
      }
      if (this.stopped) {
        this.onState('offline');
        return;
      }
      // 0.5 s, 1 s, 2 s … capped at 10 s, with jitter so a restarted server is not stampeded.
      const base = Math.min(10000, 500 * 2 ** this.attempt);
      const delay = base / 2 + Math.random() * base / 2;
      this.attempt += 1;
      this.onState('offline', delay);
      this.timer = setTimeout(() => this.connect(), delay);
    };
  }

  /** Sends a frame with a fresh id; resolves with the success reply, rejects with the error. */
  request(frame, ws = this.ws) {
    return new Promise((resolve, reject) => {
      if (!ws || ws.readyState !== WebSocket.OPEN) {
        reject(Object.assign(new Error('not connected'), { status: 0, code: 'disconnected' }));
        return;
      }
      const id = String(this.nextId++);
      this.waiting.set(id, { resolve, reject });
      ws.send(JSON.stringify({ ...frame, id }));
    });
  }

  action(action, data) {
    return this.request({ type: 'action', action, data });
  }
}
