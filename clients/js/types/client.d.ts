export class NatterClient {
    /** @param {ClientOptions} [options] */
    constructor(options?: ClientOptions | undefined);
    options: ClientOptions;
    app: string;
    rest: Rest;
    /** @type {Session | null} */
    session: Session | null;
    store: ConversationStore;
    /** @type {Map<string, Pending>} */
    outbox: Map<string, Pending>;
    /** @type {Map<string, Set<(data: any) => void>>} */
    listeners: Map<string, Set<(data: any) => void>>;
    /** @type {Transport | null} */
    transport: Transport | null;
    /** @type {ConnectionState} */
    state: ConnectionState;
    listed: boolean;
    /** @type {Promise<void> | null} */
    refreshing: Promise<void> | null;
    /** @returns {User | null} */
    get user(): User | null;
    /**
     * Listens to one kind of event (`ClientEvents` lists them with what listeners receive).
     * @template {keyof ClientEvents} K
     * @param {K} type
     * @param {(data: ClientEvents[K]) => void} listener
     * @returns {() => void} stops listening
     */
    on<K extends keyof ClientEvents>(type: K, listener: (data: ClientEvents[K]) => void): () => void;
    /** @param {string} type @param {unknown} data */
    emit(type: string, data: unknown): void;
    /** @param {Session | null} session */
    setSession(session: Session | null): void;
    /** @param {any} auth the server's `{access_token, refresh_token, expires_at, user}` */
    signedIn(auth: any): User;
    /**
     * @param {{email: string, password: string, first_name: string, last_name: string, device_id?: string}} body
     * @returns {Promise<User>}
     */
    register(body: {
        email: string;
        password: string;
        first_name: string;
        last_name: string;
        device_id?: string;
    }): Promise<User>;
    /**
     * @param {{email: string, password: string, device_id?: string}} body
     * @returns {Promise<User>}
     */
    login(body: {
        email: string;
        password: string;
        device_id?: string;
    }): Promise<User>;
    /**
     * @param {{first_name?: string, device_id?: string}} [body]
     * @returns {Promise<User>}
     */
    guest(body?: {
        first_name?: string;
        device_id?: string;
    } | undefined): Promise<User>;
    /**
     * A guest becomes a user, keeping its id and history.
     * @param {{email: string, password: string, first_name: string, last_name: string}} body
     * @returns {Promise<User>}
     */
    upgrade(body: {
        email: string;
        password: string;
        first_name: string;
        last_name: string;
    }): Promise<User>;
    /**
     * Uses a token your app server got for the user (`/v1/server/users/token`) or signed itself.
     * @param {string} token
     */
    useToken(token: string): void;
    /** A new token pair (once at a time, however many callers ask). */
    refresh(): Promise<void>;
    /** An access token that is not about to expire. */
    token(): Promise<string>;
    /** Ends this device's session on the server and here; messages still in the outbox fail. */
    logout(): Promise<void>;
    /**
     * An authenticated REST call, refreshing an expired access token once.
     * @param {string} method
     * @param {string} path
     * @param {unknown} [body]
     * @returns {Promise<any>}
     */
    api(method: string, path: string, body?: unknown): Promise<any>;
    /**
     * Connects (and keeps reconnecting until `close`); resolves once online and caught up.
     * @returns {Promise<void>}
     */
    connect(): Promise<void>;
    /**
     * @param {NatterError} e
     * @param {((e: NatterError) => void) | undefined} reject
     */
    signedOut(e: NatterError, reject: ((e: NatterError) => void) | undefined): void;
    /** Disconnects and stops reconnecting; unacknowledged messages stay in the outbox. */
    close(): void;
    /**
     * Any action of the protocol (docs/protocol.md).
     * @param {string} action
     * @param {unknown} [data]
     * @returns {Promise<any>} the reply's `data`
     */
    action(action: string, data?: unknown): Promise<any>;
    /** After every (re)connect: the list the first time, `sync` after; gaps are filled. */
    catchUp(): Promise<void>;
    /** @param {any} frame */
    onFrame(frame: any): void;
    /** @param {Message} m */
    received(m: Message): void;
    /**
     * Fetches what is missing below the newest message held.
     * @param {string} id
     */
    repair(id: string): Promise<void>;
    /** @param {string} event @param {any} data */
    applyEvent(event: string, data: any): void;
    /**
     * Sends a message; it waits in the outbox while offline and is resent after each reconnect
     * with the same `client_msg_id` until acknowledged, so it is stored exactly once.
     * @param {Target} to `{recipient: userId}` or `{group: groupId}`
     * @param {string} content
     * @param {SendOptions} [options]
     * @returns {Promise<Sent>}
     */
    send(to: Target, content: string, options?: SendOptions | undefined): Promise<Sent>;
    /** Messages waiting for the server's acknowledgement. */
    pending(): Record<string, unknown>[];
    /** Sends every outbox message not already on its way. */
    flush(): void;
    /**
     * @param {Record<string, any>} data
     * @param {Sent} sent
     */
    ownMessage(data: Record<string, any>, sent: Sent): void;
    /**
     * A page of history, oldest first; the messages are held too.
     * @param {string} conversation
     * @param {{before_seq?: number, after_seq?: number, limit?: number}} [page]
     * @returns {Promise<Message[]>}
     */
    history(conversation: string, page?: {
        before_seq?: number;
        after_seq?: number;
        limit?: number;
    } | undefined): Promise<Message[]>;
    /**
     * Moves your read marker; the server answers the marker it keeps.
     * @param {string} conversation
     * @param {number} seq
     */
    read(conversation: string, seq: number): Promise<any>;
    /** @param {string} conversation */
    typing(conversation: string): Promise<any>;
    /** @param {string} conversation @param {number} seq @param {string} content @param {Record<string, unknown>} [meta] */
    edit(conversation: string, seq: number, content: string, meta?: Record<string, unknown> | undefined): Promise<any>;
    /** @param {string} conversation @param {number} seq */
    recall(conversation: string, seq: number): Promise<any>;
    /** @param {string} conversation @param {number} seq @param {'me' | 'all'} [scope] */
    delete(conversation: string, seq: number, scope?: "me" | "all" | undefined): Promise<any>;
    /** @param {string} conversation @param {number} seq @param {string} key @param {boolean} [on] */
    react(conversation: string, seq: number, key: string, on?: boolean | undefined): Promise<any>;
    /**
     * Your own settings of a conversation.
     * @param {string} conversation
     * @param {{pinned?: boolean, archived?: boolean, muted_until?: number | null}} prefs
     */
    setConversation(conversation: string, prefs: {
        pinned?: boolean;
        archived?: boolean;
        muted_until?: number | null;
    }): Promise<any>;
    /**
     * Presence of these users now, and `presence` events as it changes.
     * @param {string[]} users
     * @returns {Promise<Presence[]>}
     */
    watchPresence(users: string[]): Promise<Presence[]>;
    /** @param {string[]} users */
    unwatchPresence(users: string[]): Promise<any>;
    /** @param {{email?: string, id?: string, first_name?: string, last_name?: string}} query @returns {Promise<User[]>} */
    findUsers(query: {
        email?: string;
        id?: string;
        first_name?: string;
        last_name?: string;
    }): Promise<User[]>;
    /**
     * @param {{name: string, members?: string[], id?: string}} group
     * @returns {Promise<Group>}
     */
    createGroup(group: {
        name: string;
        members?: string[];
        id?: string;
    }): Promise<Group>;
    /** @returns {Promise<{id: string, name: string, role: 'owner' | 'admin' | 'member', last_seq: number, read_seq: number}[]>} */
    groups(): Promise<{
        id: string;
        name: string;
        role: "owner" | "admin" | "member";
        last_seq: number;
        read_seq: number;
    }[]>;
    /**
     * @param {string} group
     * @returns {Promise<Group>}
     */
    group(group: string): Promise<Group>;
    /** @param {string} group @param {string[]} members */
    addMembers(group: string, members: string[]): Promise<any>;
    /** @param {string} group @param {string} member */
    removeMember(group: string, member: string): Promise<any>;
    /** @param {string} group */
    leaveGroup(group: string): Promise<any>;
    /** @param {string} group @param {{name?: string, avatar_url?: string | null, announcement?: string | null, muted?: boolean}} changes */
    updateGroup(group: string, changes: {
        name?: string;
        avatar_url?: string | null;
        announcement?: string | null;
        muted?: boolean;
    }): Promise<any>;
    /** @param {string} group @param {string} member @param {{role?: 'owner' | 'admin' | 'member', muted_until?: number | null}} changes */
    updateMember(group: string, member: string, changes: {
        role?: "owner" | "admin" | "member";
        muted_until?: number | null;
    }): Promise<any>;
    /** @param {string} group */
    dissolveGroup(group: string): Promise<any>;
    /** @param {string} user */
    block(user: string): Promise<any>;
    /** @param {string} user */
    unblock(user: string): Promise<any>;
    /**
     * Registers this device for push while the user is away: an FCM or APNs token, or a browser's
     * `PushSubscription` (`subscription.toJSON()`). Registering it again renews it; signing out
     * removes it.
     * @param {DeviceRegistration} device
     * @returns {Promise<Device>}
     */
    registerDevice(device: DeviceRegistration): Promise<Device>;
    /** @returns {Promise<Device[]>} */
    devices(): Promise<Device[]>;
    /** @param {string} id */
    removeDevice(id: string): Promise<any>;
    /**
     * The app's VAPID public key, for `pushManager.subscribe({applicationServerKey})`.
     * @returns {Promise<string>}
     */
    vapidKey(): Promise<string>;
}
export type Message = import("./store.js").Message;
export type Conversation = import("./store.js").Conversation;
export type ConnectionState = import("./transport.js").ConnectionState;
export type Backoff = import("./transport.js").Backoff;
export type User = {
    id: string;
    email?: string | undefined;
    first_name: string;
    last_name: string;
    nickname?: string | undefined;
    avatar_url?: string | undefined;
    kind: "user" | "guest" | "service";
    created_at: number;
};
/**
 * what to keep to resume without signing in again
 */
export type Session = {
    access_token: string;
    /**
     * absent for tokens your app server issued
     */
    refresh_token?: string | undefined;
    /**
     * unix ms
     */
    expires_at?: number | undefined;
    user?: User | undefined;
};
export type ClientOptions = {
    /**
     * the node's base URL; '' or absent: the page's own origin
     */
    url?: string | undefined;
    /**
     * the app id (`default`)
     */
    app?: string | undefined;
    /**
     * a WebSocket implementation (default: the global one)
     */
    WebSocket?: any;
    /**
     * a fetch implementation (default: the global one)
     */
    fetch?: typeof fetch | undefined;
    /**
     * resume this session
     */
    session?: Session | undefined;
    /**
     * called whenever the session changes (store it)
     */
    onSession?: ((session: Session | null) => void) | undefined;
    /**
     * reconnect delays
     */
    backoff?: import("./transport.js").Backoff | undefined;
    /**
     * a request unanswered this long fails (15,000)
     */
    replyTimeoutMs?: number | undefined;
};
export type Target = {
    recipient: string;
} | {
    group: string;
};
export type Presence = {
    user: string;
    status: "online" | "offline";
    last_seen?: number | undefined;
};
export type GroupMember = {
    id: string;
    role: "owner" | "admin" | "member";
    muted_until?: number | undefined;
};
export type Group = {
    id: string;
    name: string;
    avatar_url: string | null;
    announcement: string | null;
    muted: boolean;
    dissolved_at: number | null;
    last_seq: number;
    members: GroupMember[];
};
/**
 * a device registered for push notifications
 */
export type Device = {
    id: string;
    platform: "webpush" | "fcm" | "apns";
    /**
     * the FCM / APNs token, or the Web Push endpoint
     */
    token: string;
    app_version: string | null;
    created_at: number;
};
export type DeviceRegistration = {
    platform: "fcm" | "apns";
    token: string;
    app_version?: string;
} | {
    platform: "webpush";
    subscription: {
        endpoint: string;
        expirationTime?: number | null;
        keys: {
            p256dh: string;
            auth: string;
        };
    };
    app_version?: string;
};
/**
 * what every `message.*` event names
 */
export type MessageEvent = {
    conversation: string;
    seq: number;
    /**
     * null when the app acted
     */
    by: string | null;
    at: number;
};
/**
 * Every event `on` takes, with what its listeners receive (docs/protocol.md, "Events"):
 * `message` (once per message, live or caught up), `update` (a held message in its new state),
 * `synced` (caught up after a (re)connect), `event` (every server event), `signed_out` (the
 * session ended: revoked, banned, refresh refused), `error` (a failure with no caller to tell),
 * and the server's events by name.
 */
export type ClientEvents = {
    "message": Message;
    "update": Message;
    "state": {
        state: ConnectionState;
        retryInMs?: number;
    };
    "synced": undefined;
    "event": {
        event: string;
        data: any;
    };
    "session": Session | null;
    "signed_out": NatterError;
    "error": unknown;
    "unread": {
        conversation: string;
        unread: number;
        total: number;
    };
    "read": {
        conversation: string;
        user: string;
        seq: number;
    };
    "typing": {
        conversation: string;
        user: string;
    };
    "presence": Presence;
    "group.created": Group;
    "group.member_added": {
        group: string;
        members: string[];
        by: string | null;
    };
    "group.member_removed": {
        group: string;
        members: string[];
        by: string | null;
    };
    "group.updated": {
        group: string;
        name: string;
        avatar_url: string | null;
        announcement: string | null;
        muted: boolean;
        by: string | null;
    };
    "group.member_updated": {
        group: string;
        members: GroupMember[];
        by: string | null;
    };
    "group.dissolved": {
        group: string;
        dissolved_at: number;
        by: string | null;
    };
    "message.edited": MessageEvent & {
        content: string;
        edited_at?: number;
        meta?: Record<string, unknown>;
    };
    "message.recalled": MessageEvent;
    "message.deleted": MessageEvent & {
        scope: "me" | "all";
    };
    "message.reaction": MessageEvent & {
        key: string;
        user: string;
        on: boolean;
        count: number;
    };
};
export type SendOptions = {
    /**
     * your own idempotency key (default: a random UUID)
     */
    client_msg_id?: string | undefined;
    kind?: string | undefined;
    meta?: Record<string, unknown> | undefined;
    reply_to?: number | undefined;
    mentions?: string[] | undefined;
};
export type Sent = {
    message_id: string;
    conversation: string;
    seq: number;
    created_at: number;
    /**
     * the app's before-send hook dropped it silently
     */
    dropped?: boolean | undefined;
};
/**
 * a message in the outbox, until the server acknowledges it
 */
export type Pending = {
    client_msg_id: string;
    /**
     * the message frame's data
     */
    data: Record<string, unknown>;
    resolve: (sent: Sent) => void;
    reject: (e: NatterError) => void;
    inFlight: boolean;
};
import { Rest } from './rest.js';
import { ConversationStore } from './store.js';
import { Transport } from './transport.js';
import { NatterError } from './errors.js';
