// The client an app imports: accounts and token refresh, one socket that reconnects by itself and
// catches up with `sync` after every reconnect, an outbox that resends what was not acknowledged
// with the same `client_msg_id` (so nothing is sent twice), and a conversation store that holds
// each message once, with the unread counts the server keeps.

import { NatterError } from './errors.js';
import { Rest } from './rest.js';
import { ConversationStore } from './store.js';
import { Transport } from './transport.js';

/** @typedef {import('./store.js').Message} Message */
/** @typedef {import('./store.js').Conversation} Conversation */
/** @typedef {import('./transport.js').ConnectionState} ConnectionState */
/** @typedef {import('./transport.js').Backoff} Backoff */

/**
 * @typedef {object} User
 * @property {string} id
 * @property {string} [email]
 * @property {string} first_name
 * @property {string} last_name
 * @property {string} [nickname]
 * @property {string} [avatar_url]
 * @property {'user' | 'guest' | 'service'} kind
 * @property {number} created_at
 */

/**
 * @typedef {object} Session what to keep to resume without signing in again
 * @property {string} access_token
 * @property {string} [refresh_token] absent for tokens your app server issued
 * @property {number} [expires_at] unix ms
 * @property {User} [user]
 */

/**
 * @typedef {object} ClientOptions
 * @property {string} [url] the node's base URL; '' or absent: the page's own origin
 * @property {string} [app] the app id (`default`)
 * @property {any} [WebSocket] a WebSocket implementation (default: the global one)
 * @property {typeof fetch} [fetch] a fetch implementation (default: the global one)
 * @property {Session} [session] resume this session
 * @property {(session: Session | null) => void} [onSession] called whenever the session changes (store it)
 * @property {Backoff} [backoff] reconnect delays
 * @property {number} [replyTimeoutMs] a request unanswered this long fails (15,000)
 */

/** @typedef {{recipient: string} | {group: string}} Target */

/**
 * @typedef {object} Presence
 * @property {string} user
 * @property {'online' | 'offline'} status
 * @property {number} [last_seen]
 */

/**
 * @typedef {object} GroupMember
 * @property {string} id
 * @property {'owner' | 'admin' | 'member'} role
 * @property {number} [muted_until]
 */

/**
 * @typedef {object} Group
 * @property {string} id
 * @property {string} name
 * @property {string | null} avatar_url
 * @property {string | null} announcement
 * @property {boolean} muted
 * @property {number | null} dissolved_at
 * @property {number} last_seq
 * @property {GroupMember[]} members
 */

/**
 * @typedef {object} Device a device registered for push notifications
 * @property {string} id
 * @property {'webpush' | 'fcm' | 'apns'} platform
 * @property {string} token the FCM / APNs token, or the Web Push endpoint
 * @property {string | null} app_version
 * @property {number} created_at
 */

/**
 * @typedef {{platform: 'fcm' | 'apns', token: string, app_version?: string}
 *   | {platform: 'webpush', subscription: {endpoint: string, expirationTime?: number | null,
 *      keys: {p256dh: string, auth: string}}, app_version?: string}} DeviceRegistration
 */

/**
 * @typedef {object} MessageEvent what every `message.*` event names
 * @property {string} conversation
 * @property {number} seq
 * @property {string | null} by null when the app acted
 * @property {number} at
 */

/**
 * Every event `on` takes, with what its listeners receive (docs/protocol.md, "Events"):
 * `message` (once per message, live or caught up), `update` (a held message in its new state),
 * `synced` (caught up after a (re)connect), `event` (every server event), `signed_out` (the
 * session ended: revoked, banned, refresh refused), `error` (a failure with no caller to tell),
 * and the server's events by name.
 * @typedef {{
 *   'message': Message,
 *   'update': Message,
 *   'state': {state: ConnectionState, retryInMs?: number},
 *   'synced': undefined,
 *   'event': {event: string, data: any},
 *   'session': Session | null,
 *   'signed_out': NatterError,
 *   'error': unknown,
 *   'unread': {conversation: string, unread: number, total: number},
 *   'read': {conversation: string, user: string, seq: number},
 *   'typing': {conversation: string, user: string},
 *   'presence': Presence,
 *   'group.created': Group,
 *   'group.member_added': {group: string, members: string[], by: string | null},
 *   'group.member_removed': {group: string, members: string[], by: string | null},
 *   'group.updated': {group: string, name: string, avatar_url: string | null, announcement: string | null, muted: boolean, by: string | null},
 *   'group.member_updated': {group: string, members: GroupMember[], by: string | null},
 *   'group.dissolved': {group: string, dissolved_at: number, by: string | null},
 *   'message.edited': MessageEvent & {content: string, edited_at?: number, meta?: Record<string, unknown>},
 *   'message.recalled': MessageEvent,
 *   'message.deleted': MessageEvent & {scope: 'me' | 'all'},
 *   'message.reaction': MessageEvent & {key: string, user: string, on: boolean, count: number}
 * }} ClientEvents
 */

/**
 * @typedef {object} SendOptions
 * @property {string} [client_msg_id] your own idempotency key (default: a random UUID)
 * @property {string} [kind]
 * @property {Record<string, unknown>} [meta]
 * @property {number} [reply_to]
 * @property {string[]} [mentions]
 */

/**
 * @typedef {object} Sent
 * @property {string} message_id
 * @property {string} conversation
 * @property {number} seq
 * @property {number} created_at
 * @property {boolean} [dropped] the app's before-send hook dropped it silently
 */

/**
 * @typedef {object} Pending a message in the outbox, until the server acknowledges it
 * @property {string} client_msg_id
 * @property {Record<string, unknown>} data the message frame's data
 * @property {(sent: Sent) => void} resolve
 * @property {(e: NatterError) => void} reject
 * @property {boolean} inFlight
 */

const REFRESH_AHEAD_MS = 60_000;
const SYNC_PAGES = 1000;
const LIST_PAGES = 100;

export class NatterClient {
  /** @param {ClientOptions} [options] */
  constructor(options = {}) {
    this.options = options;
    this.app = options.app ?? 'default';
    this.rest = new Rest({ url: options.url ?? '', app: this.app, fetch: options.fetch });
    /** @type {Session | null} */
    this.session = options.session ?? null;
    this.store = new ConversationStore();
    /** @type {Map<string, Pending>} */
    this.outbox = new Map();
    /** @type {Map<string, Set<(data: any) => void>>} */
    this.listeners = new Map();
    /** @type {Transport | null} */
    this.transport = null;
    /** @type {ConnectionState} */
    this.state = 'offline';
    this.listed = false;
    /** @type {Promise<void> | null} */
    this.refreshing = null;
  }

  /** @returns {User | null} */
  get user() {
    return this.session?.user ?? null;
  }

  // ── events ──────────────────────────────────────────────────────────────────────────────────

  /**
   * Listens to one kind of event (`ClientEvents` lists them with what listeners receive).
   * @template {keyof ClientEvents} K
   * @param {K} type
   * @param {(data: ClientEvents[K]) => void} listener
   * @returns {() => void} stops listening
   */
  on(type, listener) {
    let set = this.listeners.get(type);
    if (!set) this.listeners.set(type, (set = new Set()));
    const untyped = /** @type {(data: any) => void} */ (listener);
    set.add(untyped);
    return () => set.delete(untyped);
  }

  /** @param {string} type @param {unknown} data */
  emit(type, data) {
    for (const listener of this.listeners.get(type) ?? []) {
      try {
        listener(data);
      } catch (e) {
        if (type !== 'error') this.emit('error', e);
      }
    }
  }

  // ── accounts ────────────────────────────────────────────────────────────────────────────────

  /** @param {Session | null} session */
  setSession(session) {
    this.session = session;
    this.options.onSession?.(session);
    this.emit('session', session);
  }

  /** @param {any} auth the server's `{access_token, refresh_token, expires_at, user}` */
  signedIn(auth) {
    this.setSession({
      access_token: auth.access_token,
      refresh_token: auth.refresh_token,
      expires_at: auth.expires_at,
      user: auth.user,
    });
    return /** @type {User} */ (auth.user);
  }

  /**
   * @param {{email: string, password: string, first_name: string, last_name: string, device_id?: string}} body
   * @returns {Promise<User>}
   */
  async register(body) {
    return this.signedIn(await this.rest.call('POST', '/v1/auth/register', { body }));
  }

  /**
   * @param {{email: string, password: string, device_id?: string}} body
   * @returns {Promise<User>}
   */
  async login(body) {
    return this.signedIn(await this.rest.call('POST', '/v1/auth/login', { body }));
  }

  /**
   * @param {{first_name?: string, device_id?: string}} [body]
   * @returns {Promise<User>}
   */
  async guest(body = {}) {
    return this.signedIn(await this.rest.call('POST', '/v1/auth/guest', { body }));
  }

  /**
   * A guest becomes a user, keeping its id and history.
   * @param {{email: string, password: string, first_name: string, last_name: string}} body
   * @returns {Promise<User>}
   */
  async upgrade(body) {
    return this.signedIn(await this.api('POST', '/v1/auth/upgrade', body));
  }

  /**
   * Uses a token your app server got for the user (`/v1/server/users/token`) or signed itself.
   * @param {string} token
   */
  useToken(token) {
    this.setSession({ access_token: token });
  }

  /** A new token pair (once at a time, however many callers ask). */
  refresh() {
    if (!this.refreshing) {
      this.refreshing = (async () => {
        const refresh_token = this.session?.refresh_token;
        if (!refresh_token) throw new NatterError(401, 'token_expired', 'the token expired and there is no refresh token');
        const auth = await this.rest.call('POST', '/v1/auth/refresh', { body: { refresh_token } });
        this.signedIn({ ...auth, user: auth.user ?? this.session?.user });
      })().finally(() => {
        this.refreshing = null;
      });
    }
    return this.refreshing;
  }

  /** An access token that is not about to expire. */
  async token() {
    if (!this.session) throw new NatterError(401, 'unauthorized', 'not signed in');
    const { expires_at, refresh_token } = this.session;
    if (refresh_token && expires_at && expires_at - Date.now() < REFRESH_AHEAD_MS) await this.refresh();
    return /** @type {Session} */ (this.session).access_token;
  }

  /** Ends this device's session on the server and here; messages still in the outbox fail. */
  async logout() {
    try {
      if (this.session) await this.rest.call('POST', '/v1/auth/logout', { token: this.session.access_token });
    } finally {
      this.close();
      this.setSession(null);
      const signedOut = new NatterError(401, 'unauthorized', 'signed out');
      for (const p of this.outbox.values()) p.reject(signedOut);
      this.outbox.clear();
    }
  }

  /**
   * An authenticated REST call, refreshing an expired access token once.
   * @param {string} method
   * @param {string} path
   * @param {unknown} [body]
   * @returns {Promise<any>}
   */
  async api(method, path, body) {
    try {
      return await this.rest.call(method, path, { token: await this.token(), body });
    } catch (e) {
      if (e instanceof NatterError && e.code === 'token_expired' && this.session?.refresh_token) {
        await this.refresh();
        return this.rest.call(method, path, { token: await this.token(), body });
      }
      throw e;
    }
  }

  // ── the connection ──────────────────────────────────────────────────────────────────────────

  /**
   * Connects (and keeps reconnecting until `close`); resolves once online and caught up.
   * @returns {Promise<void>}
   */
  connect() {
    if (!this.session) return Promise.reject(new NatterError(401, 'unauthorized', 'sign in first'));
    this.transport?.stop();
    const base = this.options.url || (typeof location === 'undefined' ? '' : location.origin);
    const wsUrl = `${base.replace(/^http/, 'ws').replace(/\/+$/, '')}/ws?app=${encodeURIComponent(this.app)}`;
    return new Promise((resolve, reject) => {
      let first = true;
      const transport = new Transport({
        url: wsUrl,
        WebSocket: this.options.WebSocket,
        backoff: this.options.backoff,
        replyTimeoutMs: this.options.replyTimeoutMs,
        token: () => this.token(),
        onState: (state, retryInMs) => {
          this.state = state;
          this.emit('state', { state, retryInMs });
        },
        onFrame: (frame) => this.onFrame(frame),
        onOpen: async () => {
          try {
            await this.catchUp();
            this.flush();
            this.emit('synced', undefined);
            if (first) resolve();
          } catch (e) {
            this.emit('error', e);
            // A socket that could not catch up is dropped and retried.
            if (transport.ws) transport.ws.close(4000, 'sync failed');
          }
          first = false;
        },
        onAuthFailed: (e) => {
          if (e.code === 'token_expired' && this.session?.refresh_token) {
            this.refresh().then(
              () => transport.start(),
              (err) => this.signedOut(err, first ? reject : undefined),
            );
            return;
          }
          this.signedOut(e, first ? reject : undefined);
        },
      });
      this.transport = transport;
      transport.start();
    });
  }

  /**
   * @param {NatterError} e
   * @param {((e: NatterError) => void) | undefined} reject
   */
  signedOut(e, reject) {
    for (const p of this.outbox.values()) p.reject(e);
    this.outbox.clear();
    this.emit('signed_out', e);
    reject?.(e);
  }

  /** Disconnects and stops reconnecting; unacknowledged messages stay in the outbox. */
  close() {
    this.transport?.stop();
    this.transport = null;
  }

  /**
   * Any action of the protocol (docs/protocol.md).
   * @param {string} action
   * @param {unknown} [data]
   * @returns {Promise<any>} the reply's `data`
   */
  async action(action, data) {
    if (!this.transport?.ready) throw new NatterError(0, 'disconnected', 'not connected');
    return (await this.transport.action(action, data)).data;
  }

  /** After every (re)connect: the list the first time, `sync` after; gaps are filled. */
  async catchUp() {
    const transport = /** @type {Transport} */ (this.transport);
    if (!this.listed) {
      /** @type {string | undefined} */
      let cursor;
      for (let page = 0; page < LIST_PAGES; page++) {
        const reply = await transport.action('conversations', cursor ? { limit: 200, cursor } : { limit: 200 });
        for (const item of reply.data) this.store.merge(item, { caughtUp: true });
        if (!reply.cursor) break;
        cursor = reply.cursor;
      }
      this.listed = true;
      return;
    }
    /** @type {string | undefined} */
    let cursor;
    for (let page = 0; page < SYNC_PAGES; page++) {
      /** @type {Record<string, number>} */
      const conversations = {};
      /** @type {Record<string, number>} */
      const changes = {};
      for (const c of this.store.byId.values()) {
        conversations[c.id] = c.seen;
        changes[c.id] = c.change_seq;
      }
      const reply = await transport.action('sync', cursor ? { conversations, changes, cursor } : { conversations, changes });
      const data = reply.data;
      for (const item of data.conversations) this.store.merge(item);
      for (const m of data.messages) this.received(m);
      for (const m of data.updates) this.emit('update', this.store.replace(m));
      for (const [id, n] of Object.entries(data.changes)) {
        const c = this.store.get(id);
        c.change_seq = Math.max(c.change_seq, Number(n));
      }
      if (data.complete) break;
      cursor = data.cursor;
    }
    // Counts that moved while away.
    const list = await transport.action('conversations', { limit: 200 });
    for (const item of list.data) this.store.merge(item);
  }

  /** @param {any} frame */
  onFrame(frame) {
    if (frame.type === 'message') {
      const m = /** @type {Message} */ (frame.data);
      const c = this.store.byId.get(m.conversation);
      const gap = c !== undefined && this.listed && m.seq > c.seen + 1;
      this.received(m);
      if (gap) this.repair(m.conversation).catch((e) => this.emit('error', e));
    } else if (frame.type === 'event') {
      this.applyEvent(frame.event, frame.data);
      this.emit(frame.event, frame.data);
      this.emit('event', { event: frame.event, data: frame.data });
    }
  }

  /** @param {Message} m */
  received(m) {
    if (this.store.add(m)) this.emit('message', m);
  }

  /**
   * Fetches what is missing below the newest message held.
   * @param {string} id
   */
  async repair(id) {
    const c = this.store.get(id);
    for (let page = 0; page < SYNC_PAGES && c.seen < c.last_seq; page++) {
      const { messages } = await this.action('history', { conversation: id, after_seq: c.seen, limit: 200 });
      if (messages.length === 0) break;
      const before = c.seen;
      for (const m of messages) this.received(m);
      if (c.seen === before) c.seen = Math.max(c.seen, messages[messages.length - 1].seq);
    }
  }

  /** @param {string} event @param {any} data */
  applyEvent(event, data) {
    const me = this.user?.id;
    if (event === 'unread') {
      const c = this.store.get(data.conversation);
      c.unread = data.unread;
      this.store.total = data.total;
    } else if (event === 'read' && data.user === me) {
      const c = this.store.get(data.conversation);
      c.read_seq = Math.max(c.read_seq, data.seq);
    } else if (event === 'group.dissolved') {
      this.store.get(data.group, 'group').dissolved_at = data.dissolved_at;
    } else if (event === 'group.member_removed' && me && data.members?.includes(me)) {
      this.store.get(data.group, 'group').active = false;
    } else if (event === 'group.member_added' && me && data.members?.includes(me)) {
      this.store.get(data.group, 'group').active = true;
    } else if (event.startsWith('message.')) {
      const c = this.store.byId.get(data.conversation);
      const held = c?.messages.get(data.seq);
      if (!held) return;
      const m = { ...held };
      if (event === 'message.edited') {
        m.content = data.content;
        m.edited_at = data.edited_at ?? data.at;
        if (data.meta !== undefined) m.meta = data.meta;
      } else if (event === 'message.recalled') {
        Object.assign(m, { recalled: true, content: '', meta: undefined });
      } else if (event === 'message.deleted') {
        Object.assign(m, { deleted: true, content: '', meta: undefined });
      } else if (event === 'message.reaction') {
        const reactions = { ...m.reactions };
        const mine = data.user === me ? data.on : (reactions[data.key]?.me ?? false);
        if (data.count > 0) reactions[data.key] = { count: data.count, me: mine };
        else delete reactions[data.key];
        m.reactions = reactions;
      }
      this.emit('update', this.store.replace(m));
    }
  }

  // ── messages ────────────────────────────────────────────────────────────────────────────────

  /**
   * Sends a message; it waits in the outbox while offline and is resent after each reconnect
   * with the same `client_msg_id` until acknowledged, so it is stored exactly once.
   * @param {Target} to `{recipient: userId}` or `{group: groupId}`
   * @param {string} content
   * @param {SendOptions} [options]
   * @returns {Promise<Sent>}
   */
  send(to, content, options = {}) {
    const { client_msg_id = randomId(), ...rest } = options;
    return new Promise((resolve, reject) => {
      const data = { ...to, content, client_msg_id, ...rest };
      this.outbox.set(client_msg_id, { client_msg_id, data, resolve, reject, inFlight: false });
      this.flush();
    });
  }

  /** Messages waiting for the server's acknowledgement. */
  pending() {
    return [...this.outbox.values()].map((p) => p.data);
  }

  /** Sends every outbox message not already on its way. */
  flush() {
    if (!this.transport?.ready) return;
    const transport = this.transport;
    for (const p of this.outbox.values()) {
      if (p.inFlight) continue;
      p.inFlight = true;
      transport.request({ type: 'message', data: p.data }).then(
        (reply) => {
          this.outbox.delete(p.client_msg_id);
          const sent = /** @type {Sent} */ (reply.data);
          if (!sent.dropped) this.ownMessage(p.data, sent);
          p.resolve(sent);
        },
        (/** @type {NatterError} */ e) => {
          p.inFlight = false;
          // Not reached, throttled or the server's fault: kept, and resent after the next
          // (re)connect. A refusal (403, 404, 400 ...) is final.
          if (e.retryable) {
            if (e.status === 429) setTimeout(() => this.flush(), 1000);
            return;
          }
          this.outbox.delete(p.client_msg_id);
          p.reject(e);
        },
      );
    }
  }

  /**
   * @param {Record<string, any>} data
   * @param {Sent} sent
   */
  ownMessage(data, sent) {
    /** @type {Message} */
    const m = {
      id: sent.message_id,
      conversation: sent.conversation,
      seq: sent.seq,
      sender: this.user?.id ?? null,
      content: data.content,
      client_msg_id: data.client_msg_id,
      created_at: sent.created_at,
      edited_at: null,
      recalled: false,
      deleted: false,
      reply_to: data.reply_to ?? null,
      mentions: data.mentions ?? [],
      reactions: {},
    };
    if (data.group) m.group = data.group;
    else m.recipient = data.recipient;
    if (data.kind) m.kind = data.kind;
    if (data.meta) m.meta = data.meta;
    const c = this.store.get(m.conversation, data.group ? 'group' : 'direct');
    // Sending moves your read marker to what you sent.
    c.read_seq = Math.max(c.read_seq, m.seq);
    this.received(m);
  }

  /**
   * A page of history, oldest first; the messages are held too.
   * @param {string} conversation
   * @param {{before_seq?: number, after_seq?: number, limit?: number}} [page]
   * @returns {Promise<Message[]>}
   */
  async history(conversation, page = {}) {
    const { messages } = await this.action('history', { conversation, ...page });
    for (const m of messages) this.received(m);
    return messages;
  }

  /**
   * Moves your read marker; the server answers the marker it keeps.
   * @param {string} conversation
   * @param {number} seq
   */
  async read(conversation, seq) {
    const data = await this.action('read', { conversation, seq });
    const c = this.store.get(conversation);
    c.read_seq = Math.max(c.read_seq, data.read_seq);
    return data;
  }

  /** @param {string} conversation */
  typing(conversation) {
    return this.action('typing', { conversation });
  }

  /** @param {string} conversation @param {number} seq @param {string} content @param {Record<string, unknown>} [meta] */
  edit(conversation, seq, content, meta) {
    return this.action('edit', meta === undefined ? { conversation, seq, content } : { conversation, seq, content, meta });
  }

  /** @param {string} conversation @param {number} seq */
  recall(conversation, seq) {
    return this.action('recall', { conversation, seq });
  }

  /** @param {string} conversation @param {number} seq @param {'me' | 'all'} [scope] */
  delete(conversation, seq, scope = 'me') {
    return this.action('delete', { conversation, seq, scope });
  }

  /** @param {string} conversation @param {number} seq @param {string} key @param {boolean} [on] */
  react(conversation, seq, key, on = true) {
    return this.action('react', { conversation, seq, key, on });
  }

  /**
   * Your own settings of a conversation.
   * @param {string} conversation
   * @param {{pinned?: boolean, archived?: boolean, muted_until?: number | null}} prefs
   */
  async setConversation(conversation, prefs) {
    const item = await this.action('conversation.set', { conversation, ...prefs });
    this.store.merge(item);
    return item;
  }

  /**
   * Presence of these users now, and `presence` events as it changes.
   * @param {string[]} users
   * @returns {Promise<Presence[]>}
   */
  watchPresence(users) {
    return this.action('presence', { subscribe: users });
  }

  /** @param {string[]} users */
  unwatchPresence(users) {
    return this.action('presence', { unsubscribe: users });
  }

  // ── people and groups ───────────────────────────────────────────────────────────────────────

  /** @param {{email?: string, id?: string, first_name?: string, last_name?: string}} query @returns {Promise<User[]>} */
  findUsers(query) {
    return this.action('query', query);
  }

  /**
   * @param {{name: string, members?: string[], id?: string}} group
   * @returns {Promise<Group>}
   */
  createGroup(group) {
    return this.action('group.create', group);
  }

  /** @returns {Promise<{id: string, name: string, role: 'owner' | 'admin' | 'member', last_seq: number, read_seq: number}[]>} */
  groups() {
    return this.action('group.list');
  }

  /**
   * @param {string} group
   * @returns {Promise<Group>}
   */
  group(group) {
    return this.action('group.show', { group });
  }

  /** @param {string} group @param {string[]} members */
  addMembers(group, members) {
    return this.action('group.add', { group, members });
  }

  /** @param {string} group @param {string} member */
  removeMember(group, member) {
    return this.action('group.remove', { group, member });
  }

  /** @param {string} group */
  leaveGroup(group) {
    return this.action('group.leave', { group });
  }

  /** @param {string} group @param {{name?: string, avatar_url?: string | null, announcement?: string | null, muted?: boolean}} changes */
  updateGroup(group, changes) {
    return this.action('group.update', { group, ...changes });
  }

  /** @param {string} group @param {string} member @param {{role?: 'owner' | 'admin' | 'member', muted_until?: number | null}} changes */
  updateMember(group, member, changes) {
    return this.action('group.member', { group, member, ...changes });
  }

  /** @param {string} group */
  dissolveGroup(group) {
    return this.action('group.dissolve', { group });
  }

  /** @param {string} user */
  block(user) {
    return this.action('block', { user });
  }

  /** @param {string} user */
  unblock(user) {
    return this.action('unblock', { user });
  }

  // ── push notifications (docs/push.md) ────────────────────────────────────────────────────────

  /**
   * Registers this device for push while the user is away: an FCM or APNs token, or a browser's
   * `PushSubscription` (`subscription.toJSON()`). Registering it again renews it; signing out
   * removes it.
   * @param {DeviceRegistration} device
   * @returns {Promise<Device>}
   */
  registerDevice(device) {
    return this.api('POST', '/v1/me/devices', device);
  }

  /** @returns {Promise<Device[]>} */
  devices() {
    return this.api('GET', '/v1/me/devices');
  }

  /** @param {string} id */
  removeDevice(id) {
    return this.api('DELETE', `/v1/me/devices/${encodeURIComponent(id)}`);
  }

  /**
   * The app's VAPID public key, for `pushManager.subscribe({applicationServerKey})`.
   * @returns {Promise<string>}
   */
  async vapidKey() {
    return (await this.api('GET', '/v1/push/vapid')).public_key;
  }
}

function randomId() {
  const c = globalThis.crypto;
  if (c?.randomUUID) return c.randomUUID();
  return `${Date.now().toString(36)}-${Math.random().toString(36).slice(2)}-${Math.random().toString(36).slice(2)}`;
}

