// What a client holds: its conversations (the list's fields, unread counts, the change number
// `sync` continues from) and their messages, deduplicated by (conversation, seq).

/**
 * @typedef {object} Message a message as the server sends it (push, history, sync)
 * @property {string} id
 * @property {string} conversation
 * @property {number} seq
 * @property {string | null} sender null: a system message from the app
 * @property {string | null} [recipient] direct messages
 * @property {string} [group] group messages
 * @property {string} content
 * @property {string} client_msg_id
 * @property {number} created_at unix ms
 * @property {string} [kind]
 * @property {Record<string, unknown>} [meta]
 * @property {number | null} edited_at
 * @property {boolean} recalled
 * @property {boolean} deleted
 * @property {number | null} reply_to
 * @property {string[]} mentions
 * @property {Record<string, {count: number, me: boolean}>} reactions
 */

/**
 * @typedef {object} Conversation
 * @property {string} id
 * @property {'direct' | 'group'} kind
 * @property {string} [name]
 * @property {number} last_seq
 * @property {number} read_seq
 * @property {number} unread
 * @property {boolean} mentioned
 * @property {number} change_seq the number to give back as `sync`'s `changes`
 * @property {number} seen every message up to this seq is held (or was never visible)
 * @property {boolean} active false once you left or were removed
 * @property {boolean} pinned
 * @property {boolean} archived
 * @property {number | null} muted_until
 * @property {number} last_activity
 * @property {number | null} dissolved_at
 * @property {Map<number, Message>} messages by seq
 */

export class ConversationStore {
  constructor() {
    /** @type {Map<string, Conversation>} */
    this.byId = new Map();
    /** Unread over conversations you have not muted (the server's `total`). */
    this.total = 0;
  }

  /**
   * The conversation, created empty when unknown.
   * @param {string} id
   * @param {'direct' | 'group'} [kind]
   * @returns {Conversation}
   */
  get(id, kind) {
    let c = this.byId.get(id);
    if (!c) {
      c = {
        id,
        kind: kind ?? (id.startsWith('dm_') ? 'direct' : 'group'),
        last_seq: 0,
        read_seq: 0,
        unread: 0,
        mentioned: false,
        change_seq: 0,
        seen: 0,
        active: true,
        pinned: false,
        archived: false,
        muted_until: null,
        last_activity: 0,
        dissolved_at: null,
        messages: new Map(),
      };
      this.byId.set(id, c);
    }
    return c;
  }

  /**
   * Takes the fields of a list item or of a `sync` conversation (the server's word wins).
   * @param {any} item
   * @param {{caughtUp?: boolean}} [options] caughtUp: treat everything up to `last_seq` as held
   *   (the first listing: history loads on demand)
   */
  merge(item, { caughtUp = false } = {}) {
    const c = this.get(item.id, item.kind);
    for (const key of ['name', 'read_seq', 'unread', 'mentioned', 'active', 'pinned', 'archived', 'muted_until', 'last_activity']) {
      if (item[key] !== undefined) /** @type {any} */ (c)[key] = item[key];
    }
    c.last_seq = Math.max(c.last_seq, item.last_seq ?? 0);
    c.dissolved_at = item.dissolved_at ?? c.dissolved_at;
    if (caughtUp) {
      c.seen = Math.max(c.seen, c.last_seq);
      c.change_seq = Math.max(c.change_seq, item.change_seq ?? 0);
    }
    return c;
  }

  /**
   * Adds a message unless held already.
   * @param {Message} m
   * @returns {boolean} whether it was new
   */
  add(m) {
    const c = this.get(m.conversation, m.group ? 'group' : 'direct');
    if (c.messages.has(m.seq)) return false;
    c.messages.set(m.seq, m);
    c.last_seq = Math.max(c.last_seq, m.seq);
    c.last_activity = Math.max(c.last_activity, m.created_at);
    while (c.messages.has(c.seen + 1)) c.seen += 1;
    return true;
  }

  /**
   * A held message's new state (edits, recalls, deletions, reactions).
   * @param {Message} m
   * @returns {Message}
   */
  replace(m) {
    const c = this.get(m.conversation, m.group ? 'group' : 'direct');
    c.messages.set(m.seq, m);
    return m;
  }

  /**
   * Conversations as a list shows them: pinned first, then newest activity first.
   * @returns {Conversation[]}
   */
  list() {
    return [...this.byId.values()].sort(
      (a, b) => Number(b.pinned) - Number(a.pinned) || b.last_activity - a.last_activity || a.id.localeCompare(b.id),
    );
  }

  /**
   * A conversation's held messages, oldest first.
   * @param {string} id
   * @returns {Message[]}
   */
  messages(id) {
    const c = this.byId.get(id);
    return c ? [...c.messages.values()].sort((a, b) => a.seq - b.seq) : [];
  }
}
