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
    /** @type {Map<string, Conversation>} */
    byId: Map<string, Conversation>;
    /** Unread over conversations you have not muted (the server's `total`). */
    total: number;
    /**
     * The conversation, created empty when unknown.
     * @param {string} id
     * @param {'direct' | 'group'} [kind]
     * @returns {Conversation}
     */
    get(id: string, kind?: "direct" | "group" | undefined): Conversation;
    /**
     * Takes the fields of a list item or of a `sync` conversation (the server's word wins).
     * @param {any} item
     * @param {{caughtUp?: boolean}} [options] caughtUp: treat everything up to `last_seq` as held
     *   (the first listing: history loads on demand)
     */
    merge(item: any, { caughtUp }?: {
        caughtUp?: boolean;
    } | undefined): Conversation;
    /**
     * Adds a message unless held already.
     * @param {Message} m
     * @returns {boolean} whether it was new
     */
    add(m: Message): boolean;
    /**
     * A held message's new state (edits, recalls, deletions, reactions).
     * @param {Message} m
     * @returns {Message}
     */
    replace(m: Message): Message;
    /**
     * Conversations as a list shows them: pinned first, then newest activity first.
     * @returns {Conversation[]}
     */
    list(): Conversation[];
    /**
     * A conversation's held messages, oldest first.
     * @param {string} id
     * @returns {Message[]}
     */
    messages(id: string): Message[];
}
/**
 * a message as the server sends it (push, history, sync)
 */
export type Message = {
    id: string;
    conversation: string;
    seq: number;
    /**
     * null: a system message from the app
     */
    sender: string | null;
    /**
     * direct messages
     */
    recipient?: string | null | undefined;
    /**
     * group messages
     */
    group?: string | undefined;
    content: string;
    client_msg_id: string;
    /**
     * unix ms
     */
    created_at: number;
    kind?: string | undefined;
    meta?: Record<string, unknown> | undefined;
    edited_at: number | null;
    recalled: boolean;
    deleted: boolean;
    reply_to: number | null;
    mentions: string[];
    reactions: Record<string, {
        count: number;
        me: boolean;
    }>;
};
export type Conversation = {
    id: string;
    kind: "direct" | "group";
    name?: string | undefined;
    last_seq: number;
    read_seq: number;
    unread: number;
    mentioned: boolean;
    /**
     * the number to give back as `sync`'s `changes`
     */
    change_seq: number;
    /**
     * every message up to this seq is held (or was never visible)
     */
    seen: number;
    /**
     * false once you left or were removed
     */
    active: boolean;
    pinned: boolean;
    archived: boolean;
    muted_until: number | null;
    last_activity: number;
    dissolved_at: number | null;
    /**
     * by seq
     */
    messages: Map<number, Message>;
};
