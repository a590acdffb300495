// @natter/client: a client for Natter's client API (docs/protocol.md), for browsers and Node 20+.

export { NatterClient } from './client.js';
export { ConversationStore } from './store.js';
export { NatterError } from './errors.js';
export { Rest } from './rest.js';
export { Transport } from './transport.js';

/** @typedef {import('./client.js').ClientOptions} ClientOptions */
/** @typedef {import('./client.js').Session} Session */
/** @typedef {import('./client.js').User} User */
/** @typedef {import('./client.js').Target} Target */
/** @typedef {import('./client.js').SendOptions} SendOptions */
/** @typedef {import('./client.js').Sent} Sent */
/** @typedef {import('./client.js').ClientEvents} ClientEvents */
/** @typedef {import('./client.js').Group} Group */
/** @typedef {import('./client.js').GroupMember} GroupMember */
/** @typedef {import('./client.js').Presence} Presence */
/** @typedef {import('./client.js').Device} Device */
/** @typedef {import('./client.js').DeviceRegistration} DeviceRegistration */
/** @typedef {import('./store.js').Message} Message */
/** @typedef {import('./store.js').Conversation} Conversation */
/** @typedef {import('./transport.js').ConnectionState} ConnectionState */
/** @typedef {import('./transport.js').Backoff} Backoff */
