// The Natter console: accounts, conversations, messages, presence and typing over the public
// REST API and WebSocket protocol (docs/protocol.md). No framework, no build step.

import { NatterError as ApiError, Rest, Transport } from './client/index.js';
import { enablePush, notifyIfHidden } from './push.js';
import { $, el, formData, show, time } from './view.js';

const PAGE = 30;
const STORE = 'natter.console.session';

const state = {
  app: 'default',
  session: null, // { access_token, refresh_token, user }
  socket: null,
  everOnline: false,
  convs: new Map(), // id → conversation
  current: null, // conversation id, or { draft: peerId }
  presence: new Map(), // user id → 'online' | 'offline'
  names: new Map(), // user id → display name
  typingSent: 0,
  nextLocal: 1,
  compose: null, // { mode: 'reply' | 'edit', conv, seq }
  blocked: new Set(), // user ids this user blocks
};

// ── errors ──────────────────────────────────────────────────────────────────────────────────────

function showError(err) {
  const text = typeof err === 'string' ? err : explain(err);
  $('error-text').textContent = text;
  show('error', true);
}

function explain(err) {
  const messages = {
    invalid_credentials: 'Wrong email or password.',
    email_taken: 'That email already has an account: log in instead.',
    rate_limited: 'Too many attempts. ',
    guest_signup_disabled: 'Guest sign-up is turned off for this app.',
    user_not_found: 'No such user.',
    edit_window_passed: 'Too late to edit that message.',
    recall_window_passed: 'Too late to recall that message.',
    message_gone: 'That message was recalled or deleted.',
    blocked: 'They do not accept your messages.',
    muted: 'You cannot send here right now: ',
    group_dissolved: 'This group was dissolved.',
    admin_only: 'Only the owner or an admin can do that.',
    owner_only: 'Only the owner can do that.',
    outranked: 'Admins can only act on plain members.',
    owner_protected: 'The owner cannot be kicked, muted or demoted; hand the group over first.',
    banned: 'This account is banned: ',
    network: 'The server cannot be reached.',
  };
  const known = messages[err?.code];
  const detail = err?.message ?? String(err);
  if (known && ['rate_limited', 'banned', 'muted'].includes(err.code)) return known + detail;
  return known ?? detail;
}

$('error-close').addEventListener('click', () => show('error', false));

/** A REST call to this origin through @natter/client's Rest (the app may change at each sign-in). */
function call(method, path, { token, app, body } = {}) {
  return new Rest({ app }).call(method, path, { token, body });
}

// ── session ─────────────────────────────────────────────────────────────────────────────────────

function saveSession() {
  if (state.session) sessionStorage.setItem(STORE, JSON.stringify({ app: state.app, ...state.session }));
  else sessionStorage.removeItem(STORE);
}

async function refreshTokens() {
  const data = await call('POST', '/v1/auth/refresh', {
    app: state.app,
    body: { refresh_token: state.session.refresh_token },
  });
  state.session = { ...state.session, ...data };
  saveSession();
}

/** An authenticated REST call, refreshing an expired access token once. */
async function api(method, path, body) {
  try {
    return await call(method, path, { token: state.session.access_token, body });
  } catch (e) {
    if (e instanceof ApiError && e.code === 'token_expired') {
      await refreshTokens();
      return call(method, path, { token: state.session.access_token, body });
    }
    throw e;
  }
}

function signedIn(data) {
  state.session = { access_token: data.access_token, refresh_token: data.refresh_token, user: data.user };
  saveSession();
  enterChat();
}

function signOut() {
  state.socket?.stop();
  state.socket = null;
  state.session = null;
  state.everOnline = false;
  state.convs.clear();
  state.current = null;
  saveSession();
  show('chat', false);
  show('me', false);
  show('auth', true);
  setConn('offline');
}

function authForm(id, path, fields) {
  $(id).addEventListener('submit', async (ev) => {
    ev.preventDefault();
    show('error', false);
    state.app = $('app-id').value.trim() || 'default';
    const body = fields(formData(ev.target));
    try {
      signedIn(await call('POST', path, { app: state.app, body }));
      ev.target.reset();
    } catch (e) {
      showError(e);
    }
  });
}

authForm('login-form', '/v1/auth/login', (f) => ({ email: f.email, password: f.password, device_id: 'console' }));
authForm('signup-form', '/v1/auth/register', (f) => ({
  email: f.email,
  password: f.password,
  first_name: f.first_name,
  last_name: f.last_name,
  device_id: 'console',
}));
authForm('guest-form', '/v1/auth/guest', (f) => ({ first_name: f.first_name || undefined, device_id: 'console' }));

$('logout').addEventListener('click', async () => {
  try {
    await api('POST', '/v1/auth/logout');
  } catch {
    // Logging out locally is what matters; the token expires anyway.
  }
  signOut();
});

$('push-enable').addEventListener('click', async () => {
  try {
    const said = await enablePush(api);
    $('push-enable').title = said;
    if (said.startsWith('Notifications on')) $('push-enable').textContent = 'Notifications on';
    else showError(said);
  } catch (e) {
    showError(e);
  }
});

$('upgrade-open').addEventListener('click', () => $('upgrade-dialog').showModal());
$('upgrade-cancel').addEventListener('click', () => $('upgrade-dialog').close());
$('upgrade-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const f = formData(ev.target);
  try {
    const data = await api('POST', '/v1/auth/upgrade', {
      email: f.email,
      password: f.password,
      first_name: f.first_name,
      last_name: f.last_name,
    });
    $('upgrade-dialog').close();
    ev.target.reset();
    state.session = { access_token: data.access_token, refresh_token: data.refresh_token, user: data.user };
    saveSession();
    renderMe();
    // The socket's token was the guest's: log in again with the new one.
    restartSocket();
  } catch (e) {
    $('upgrade-dialog').close();
    showError(e);
  }
});

function renderMe() {
  const u = state.session.user;
  state.names.set(u.id, u.first_name || u.id);
  $('me-name').textContent = `${u.first_name || 'You'} (${u.id}${u.kind === 'guest' ? ', guest' : ''})`;
  show('upgrade-open', u.kind === 'guest');
  show('me', true);
}

// ── connection ──────────────────────────────────────────────────────────────────────────────────

function setConn(s, retryMs) {
  if (s === 'offline' && state.presence.size > 0) {
    // What we knew of others is stale until the server answers again.
    state.presence.clear();
    render();
  }
  const c = $('conn');
  c.dataset.state = s;
  c.textContent =
    s === 'online' ? 'Online' : s === 'connecting' ? 'Connecting…' : retryMs ? `Offline, retrying in ${Math.ceil(retryMs / 1000)} s` : 'Offline';
}

function enterChat() {
  show('auth', false);
  show('chat', true);
  renderMe();
  restartSocket();
  render();
}

function restartSocket() {
  state.socket?.stop();
  const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
  state.socket = new Transport({
    url: `${scheme}://${location.host}/ws?app=${encodeURIComponent(state.app)}`,
    token: () => state.session.access_token,
    onState: setConn,
    onOpen,
    onFrame,
    onAuthFailed: async (e) => {
      if (String(e.message).startsWith('token_expired') || e.code === 'token_expired') {
        try {
          await refreshTokens();
          restartSocket();
          return;
        } catch {
          // fall through: the session is over
        }
      }
      showError(`Signed out: ${e.message}`);
      signOut();
    },
  });
  state.socket.start();
}

/** After every (re)connect: catch up with `sync`, refresh the list, resend what was not sent. */
async function onOpen() {
  if (state.everOnline) {
    await catchUp();
  } else {
    const reply = await state.socket.action('conversations', { limit: 200 });
    mergeConversations(reply.data);
  }
  state.everOnline = true;
  try {
    const blocks = await state.socket.action('blocks');
    state.blocked = new Set(blocks.data.map((b) => b.user));
  } catch {
    // The list shows what it can; the block button still works.
  }
  await resolvePeers();
  subscribePresence();
  for (const conv of state.convs.values()) {
    for (const m of conv.pending.values()) if (m.state !== 'failed') sendPending(conv, m);
  }
  for (const d of draftsPending) sendDraft(d);
  render();
}

/** Messages after what each conversation holds, and the final state of those it holds that
 * changed meanwhile (edits, recalls, deletions, reactions): `changes` is the cursor of the latter. */
async function catchUp() {
  let cursor;
  for (let page = 0; page < 100; page++) {
    const known = {};
    const changes = {};
    for (const c of state.convs.values()) {
      known[c.id] = c.seen;
      changes[c.id] = c.change_seq;
    }
    const data = { conversations: known, changes };
    if (cursor) data.cursor = cursor;
    const reply = await state.socket.action('sync', data);
    for (const m of reply.data.messages) addMessage(m);
    for (const m of reply.data.updates) updateMessage(m);
    mergeConversations(reply.data.conversations);
    for (const [id, n] of Object.entries(reply.data.changes)) {
      const c = state.convs.get(id);
      if (c) c.change_seq = n;
    }
    if (reply.data.complete) break;
    cursor = reply.data.cursor;
  }
  // Counts that moved while away.
  const list = await state.socket.action('conversations', { limit: 200 });
  mergeConversations(list.data);
}

function conversation(id, kind) {
  let c = state.convs.get(id);
  if (!c) {
    c = {
      id,
      kind,
      name: null,
      peer: null,
      last_seq: 0,
      read_seq: 0,
      seen: 0,
      unread: 0,
      mentioned: false,
      change_seq: 0,
      active: true,
      messages: new Map(),
      pending: new Map(),
      oldest: null,
      loaded: false,
      hasOlder: false,
      members: [],
      // Groups: id → { role, muted_until }, the profile, and whether it was dissolved.
      roles: new Map(),
      announcement: null,
      muted: false,
      dissolved: false,
      readBy: new Map(),
      typing: new Map(),
    };
    state.convs.set(id, c);
  }
  return c;
}

function mergeConversations(list) {
  for (const v of list) {
    const c = conversation(v.id, v.kind);
    c.name = v.name ?? c.name;
    c.last_seq = Math.max(c.last_seq, v.last_seq);
    c.read_seq = Math.max(c.read_seq, v.read_seq);
    c.active = v.active;
    if (v.dissolved_at) c.dissolved = true;
    if (v.unread !== undefined) {
      c.unread = v.unread;
      c.mentioned = v.mentioned;
    }
    // The change cursor moves with `sync` only: it says which changes this page has applied.
    if (!c.loaded && v.change_seq !== undefined) c.change_seq = Math.max(c.change_seq, v.change_seq);
    // Nothing of an unopened conversation is shown, so nothing before its end needs fetching.
    if (!c.loaded) c.seen = Math.max(c.seen, v.last_seq);
  }
}

/** DMs name no peer in the list: the newest message does. */
async function resolvePeers() {
  const jobs = [];
  for (const c of state.convs.values()) {
    if (c.kind === 'direct' && !c.peer) {
      jobs.push(
        state.socket.action('history', { conversation: c.id, limit: 1 }).then((r) => {
          const m = r.data.messages[0];
          if (m) c.peer = m.sender === me() ? m.recipient : m.sender;
        }),
      );
    }
    if (c.kind === 'group' && c.members.length === 0 && c.active) {
      jobs.push(
        state.socket.action('group.show', { group: c.id }).then((r) => applyGroup(c, r.data)),
      );
    }
  }
  await Promise.allSettled(jobs);
  await learnNames([...state.convs.values()].flatMap((c) => (c.peer ? [c.peer] : c.members)));
}

async function learnNames(ids) {
  const unknown = [...new Set(ids)].filter((id) => id && !state.names.has(id));
  await Promise.allSettled(
    unknown.map(async (id) => {
      const users = await api('GET', `/v1/users?id=${encodeURIComponent(id)}`);
      state.names.set(id, users[0]?.first_name || id);
    }),
  );
}

function subscribePresence() {
  const ids = new Set();
  for (const c of state.convs.values()) {
    if (c.peer) ids.add(c.peer);
    for (const m of c.members) if (m !== me()) ids.add(m);
  }
  if (typeof state.current === 'object' && state.current?.draft) ids.add(state.current.draft);
  const list = [...ids];
  if (list.length === 0 || !state.socket?.ready) return;
  state.socket
    .action('presence', { subscribe: list })
    .then((r) => {
      for (const p of r.data) state.presence.set(p.user, p.status);
      render();
    })
    .catch(showError);
}

const me = () => state.session?.user.id;
const nameOf = (id) => (id === me() ? 'You' : state.names.get(id) || id);

// ── frames from the server ──────────────────────────────────────────────────────────────────────

function onFrame(frame) {
  if (frame.type === 'message') {
    const m = frame.data;
    const fresh = !state.convs.has(m.conversation);
    addMessage(m);
    if (fresh) resolvePeers().then(() => {
      subscribePresence();
      render();
    });
    const c = state.convs.get(m.conversation);
    if (c) {
      c.typing.delete(m.sender);
      if (m.sender !== me() && m.seq > c.read_seq) {
        c.unread += 1;
        if ((m.mentions ?? []).includes(me())) c.mentioned = true;
        const who = m.sender ? nameOf(m.sender) : 'App';
        const title = c.kind === 'group' ? c.name || 'Group' : who;
        const body = c.kind === 'group' ? `${who}: ${m.content}` : m.content;
        notifyIfHidden(title, body, m.conversation).catch(() => {});
      }
    }
    markReadIfVisible(c);
    render();
  } else if (frame.type === 'event') {
    onEvent(frame.event, frame.data);
  } else if (frame.type === 'local_error') {
    showError(frame.error);
  }
}

function onEvent(event, d) {
  if (event === 'presence') {
    state.presence.set(d.user, d.status);
  } else if (event === 'typing') {
    const c = state.convs.get(d.conversation);
    if (!c || d.user === me()) return;
    clearTimeout(c.typing.get(d.user));
    c.typing.set(
      d.user,
      setTimeout(() => {
        c.typing.delete(d.user);
        render();
      }, 4000),
    );
  } else if (event === 'read') {
    const c = state.convs.get(d.conversation);
    if (!c) return;
    if (d.user === me()) c.read_seq = Math.max(c.read_seq, d.seq);
    else c.readBy.set(d.user, Math.max(c.readBy.get(d.user) ?? 0, d.seq));
  } else if (event === 'unread') {
    const c = state.convs.get(d.conversation);
    if (c) {
      c.unread = d.unread;
      if (d.unread === 0) c.mentioned = false;
    }
  } else if (event.startsWith('message.')) {
    onMessageEvent(event, d);
  } else if (event === 'group.created') {
    const c = conversation(d.id, 'group');
    applyGroup(c, d);
    learnNames(c.members).then(render);
    subscribePresence();
  } else if (event === 'group.member_added' || event === 'group.member_removed') {
    const c = conversation(d.group, 'group');
    if (event === 'group.member_added') c.members = [...new Set([...c.members, ...d.members])];
    else {
      c.members = c.members.filter((m) => !d.members.includes(m));
      for (const m of d.members) c.roles.delete(m);
      if (d.members.includes(me())) c.active = false;
    }
    if (event === 'group.member_added') for (const m of d.members) c.roles.set(m, { role: 'member' });
    learnNames(d.members).then(render);
    subscribePresence();
  } else if (event === 'group.updated') {
    const c = conversation(d.group, 'group');
    Object.assign(c, { name: d.name, announcement: d.announcement, muted: d.muted });
  } else if (event === 'group.member_updated') {
    const c = conversation(d.group, 'group');
    for (const m of d.members) c.roles.set(m.id, { role: m.role, muted_until: m.muted_until });
  } else if (event === 'group.dissolved') {
    conversation(d.group, 'group').dissolved = true;
  }
  if (event.startsWith('group.') && $('group-dialog').open) renderGroupDialog();
  render();
}

/** Applies an edit, recall, deletion or reaction to the message it names, if this page holds it. */
function onMessageEvent(event, d) {
  const c = state.convs.get(d.conversation);
  const m = c?.messages.get(d.seq);
  if (!m) return;
  if (event === 'message.edited') {
    m.content = d.content;
    m.edited_at = d.edited_at;
    if (d.meta !== undefined) m.meta = d.meta;
  } else if (event === 'message.recalled' || event === 'message.deleted') {
    const wasUnread = m.sender !== me() && m.seq > c.read_seq && !m.recalled && !m.deleted;
    if (event === 'message.recalled') m.recalled = true;
    else m.deleted = true;
    m.content = '';
    m.reactions = {};
    // A group sends no fresh count after a removal: one unread message fewer.
    if (wasUnread && c.kind === 'group' && d.scope !== 'me') c.unread = Math.max(0, c.unread - 1);
  } else if (event === 'message.reaction') {
    const reactions = { ...(m.reactions ?? {}) };
    const mine = d.user === me() ? d.on : Boolean(reactions[d.key]?.me);
    if (d.count > 0) reactions[d.key] = { count: d.count, me: mine };
    else delete reactions[d.key];
    m.reactions = reactions;
  }
}

/** A message read again (sync updates): its state now replaces what the page had. */
function updateMessage(m) {
  const c = state.convs.get(m.conversation);
  if (c?.messages.has(m.seq)) c.messages.set(m.seq, m);
}

function addMessage(m) {
  const c = conversation(m.conversation, m.group ? 'group' : 'direct');
  if (c.kind === 'direct' && !c.peer) c.peer = m.sender === me() ? m.recipient : m.sender;
  c.messages.set(m.seq, m);
  c.last_seq = Math.max(c.last_seq, m.seq);
  c.seen = Math.max(c.seen, m.seq);
  // The same message sent from this page: it is no longer pending.
  if (m.sender === me()) {
    c.pending.delete(m.client_msg_id);
    c.read_seq = Math.max(c.read_seq, m.seq);
  }
}

// ── sending ─────────────────────────────────────────────────────────────────────────────────────

const draftsPending = new Set();

function newPending(content) {
  return {
    client_msg_id: `console-${Date.now().toString(36)}-${state.nextLocal++}-${Math.random().toString(36).slice(2, 8)}`,
    content,
    state: 'sending',
    created_at: Date.now(),
  };
}

/** `@id` words naming someone in the conversation become mentions. */
function mentionsIn(conv, text) {
  const people = new Set(conv.kind === 'group' ? conv.members : [conv.peer, me()]);
  const found = [...text.matchAll(/@([A-Za-z0-9_.@-]+)/g)].map((x) => x[1]).filter((id) => people.has(id));
  return [...new Set(found)];
}

async function sendPending(conv, m) {
  const data = { content: m.content, client_msg_id: m.client_msg_id };
  if (m.reply_to) data.reply_to = m.reply_to;
  const mentions = mentionsIn(conv, m.content);
  if (mentions.length) data.mentions = mentions;
  if (conv.kind === 'group') data.group = conv.id;
  else data.recipient = conv.peer;
  m.state = 'sending';
  render();
  try {
    const reply = await state.socket.request({ type: 'message', data });
    acked(conv.id, m, reply.data);
  } catch (e) {
    failed(m, e);
  }
}

function acked(convId, m, data) {
  const c = conversation(convId, data.conversation.startsWith('dm_') ? 'direct' : 'group');
  c.pending.delete(m.client_msg_id);
  addMessage({
    id: data.message_id,
    conversation: data.conversation,
    seq: data.seq,
    sender: me(),
    content: m.content,
    client_msg_id: m.client_msg_id,
    created_at: data.created_at,
    reply_to: m.reply_to ?? null,
    mentions: mentionsIn(c, m.content),
    reactions: {},
    group: c.kind === 'group' ? c.id : undefined,
    recipient: c.kind === 'direct' ? c.peer : undefined,
  });
  markReadIfVisible(c);
  render();
}

function failed(m, e) {
  // Not connected: the message waits and goes out after the reconnect.
  m.state = e.code === 'disconnected' ? 'waiting' : 'failed';
  m.error = e.message;
  if (m.state === 'failed') showError(`Message not sent: ${e.message}`);
  render();
}

/** The first message to someone: the conversation exists once the server has stored it. */
async function sendDraft(d) {
  try {
    const reply = await state.socket.request({
      type: 'message',
      data: { recipient: d.peer, content: d.m.content, client_msg_id: d.m.client_msg_id },
    });
    draftsPending.delete(d);
    const c = conversation(reply.data.conversation, 'direct');
    c.peer = d.peer;
    c.loaded = true;
    acked(c.id, d.m, reply.data);
    if (typeof state.current === 'object' && state.current?.draft === d.peer) state.current = c.id;
    render();
  } catch (e) {
    failed(d.m, e);
    if (d.m.state === 'failed') draftsPending.delete(d);
  }
}

$('composer').addEventListener('submit', (ev) => {
  ev.preventDefault();
  const text = $('text').value;
  if (!text.trim()) return;
  $('text').value = '';
  const m = newPending(text);
  if (typeof state.current === 'object' && state.current?.draft) {
    const d = { peer: state.current.draft, m };
    draftsPending.add(d);
    render();
    if (state.socket?.ready) sendDraft(d);
    else m.state = 'waiting';
    return;
  }
  const c = state.convs.get(state.current);
  if (!c) return;
  const mode = state.compose?.conv === c.id ? state.compose : null;
  setCompose(null);
  if (mode?.mode === 'edit') {
    act('edit', { conversation: c.id, seq: mode.seq, content: text });
    return;
  }
  if (mode?.mode === 'reply') m.reply_to = mode.seq;
  c.pending.set(m.client_msg_id, m);
  if (state.socket?.ready) sendPending(c, m);
  else m.state = 'waiting';
  render();
});

$('text').addEventListener('keydown', (ev) => {
  if (ev.key === 'Enter' && !ev.shiftKey && !ev.isComposing) {
    ev.preventDefault();
    $('composer').requestSubmit();
  }
});

$('text').addEventListener('input', () => {
  const c = state.convs.get(state.current);
  if (!c || !state.socket?.ready || Date.now() - state.typingSent < 3000) return;
  state.typingSent = Date.now();
  state.socket.action('typing', { conversation: c.id }).catch(() => {});
});

// ── a message's life: reply, edit, recall, delete, react ─────────────────────────────────────────

function setCompose(mode) {
  state.compose = mode;
  const c = mode && state.convs.get(mode.conv);
  const m = c?.messages.get(mode.seq);
  show('compose-mode', Boolean(m));
  if (!m) return;
  const preview = m.content.length > 40 ? `${m.content.slice(0, 40)}…` : m.content;
  $('compose-mode-text').textContent = mode.mode === 'edit' ? `Editing #${m.seq}` : `Replying to ${nameOf(m.sender)}: ${preview}`;
  if (mode.mode === 'edit') $('text').value = m.content;
  $('text').focus();
}

$('compose-cancel').addEventListener('click', () => {
  if (state.compose?.mode === 'edit') $('text').value = '';
  setCompose(null);
});

/** A message action over the socket; the server's event updates every page, this one included. */
async function act(action, data) {
  try {
    await state.socket.action(action, data);
  } catch (e) {
    showError(e);
  }
}

function react(c, m, key) {
  const on = !m.reactions?.[key]?.me;
  act('react', { conversation: c.id, seq: m.seq, key, on });
}

$('block-toggle').addEventListener('click', async () => {
  const draft = typeof state.current === 'object' && state.current?.draft;
  const peer = draft || state.convs.get(state.current)?.peer;
  if (!peer) return;
  const blocking = !state.blocked.has(peer);
  try {
    await state.socket.action(blocking ? 'block' : 'unblock', { user: peer });
    if (blocking) state.blocked.add(peer);
    else state.blocked.delete(peer);
    render();
  } catch (e) {
    showError(e);
  }
});

// ── opening conversations ───────────────────────────────────────────────────────────────────────

async function resolveUser(who) {
  const q = who.includes('@') ? `email=${encodeURIComponent(who)}` : `id=${encodeURIComponent(who)}`;
  const users = await api('GET', `/v1/users?${q}`);
  if (users.length === 0) throw Object.assign(new Error(`No user ${who}.`), { code: 'user_not_found' });
  state.names.set(users[0].id, users[0].first_name || users[0].id);
  return users[0].id;
}

$('dm-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  show('error', false);
  const who = formData(ev.target).who.trim();
  try {
    const id = await resolveUser(who);
    if (id === me()) throw new Error('That is you: pick someone else.');
    ev.target.reset();
    const existing = [...state.convs.values()].find((c) => c.kind === 'direct' && c.peer === id);
    if (existing) open(existing.id);
    else {
      state.current = { draft: id };
      subscribePresence();
      render();
      $('text').focus();
    }
  } catch (e) {
    showError(e);
  }
});

$('group-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  show('error', false);
  const f = formData(ev.target);
  try {
    const wanted = f.members.split(',').map((s) => s.trim()).filter(Boolean);
    const members = [];
    for (const w of wanted) members.push(await resolveUser(w));
    const reply = await state.socket.action('group.create', { name: f.name.trim(), members });
    ev.target.reset();
    const g = reply.data;
    const c = conversation(g.id, 'group');
    applyGroup(c, g);
    c.loaded = true;
    subscribePresence();
    open(c.id);
  } catch (e) {
    showError(e);
  }
});

$('add-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const c = state.convs.get(state.current);
  if (!c) return;
  try {
    const id = await resolveUser(formData(ev.target).who.trim());
    await state.socket.action('group.add', { group: c.id, members: [id] });
    c.members = [...new Set([...c.members, id])];
    ev.target.reset();
    subscribePresence();
    render();
  } catch (e) {
    showError(e);
  }
});

// ── group settings ──────────────────────────────────────────────────────────────────────────────

function applyGroup(c, g) {
  c.name = g.name;
  c.members = g.members.map((m) => m.id);
  c.roles = new Map(g.members.map((m) => [m.id, { role: m.role, muted_until: m.muted_until }]));
  c.announcement = g.announcement ?? null;
  c.muted = Boolean(g.muted);
  c.dissolved = g.dissolved_at != null;
}

const RANK = { owner: 3, admin: 2, member: 1 };

function currentGroup() {
  const c = state.convs.get(state.current);
  return c && c.kind === 'group' ? c : null;
}

async function groupAct(action, data, done) {
  const c = currentGroup();
  if (!c) return;
  try {
    const reply = await state.socket.action(action, { group: c.id, ...data });
    if (done) done(c, reply.data);
    render();
    renderGroupDialog();
  } catch (e) {
    showError(e);
  }
}

// The buttons follow the rank rule of docs/protocol.md's "Group roles"; the server decides.
function renderGroupDialog() {
  const c = currentGroup();
  if (!c) return;
  const mine = c.roles.get(me())?.role ?? 'member';
  const manages = RANK[mine] >= RANK.admin && !c.dissolved;
  const form = $('group-profile');
  form.elements.name.value = c.name ?? '';
  form.elements.announcement.value = c.announcement ?? '';
  form.elements.muted.checked = c.muted;
  for (const field of form.elements) field.disabled = !manages;
  const now = Date.now();
  $('group-members').replaceChildren(
    ...c.members.map((id) => {
      const { role = 'member', muted_until: until } = c.roles.get(id) ?? {};
      const muted = until && until > now;
      const over = RANK[mine] > RANK[role] && !c.dissolved && id !== me();
      const buttons = [];
      if (over && mine === 'owner') {
        if (role === 'member') buttons.push(['Make admin', () => groupAct('group.member', { member: id, role: 'admin' }, setMember)]);
        if (role === 'admin') buttons.push(['Remove admin', () => groupAct('group.member', { member: id, role: 'member' }, setMember)]);
        buttons.push(['Make owner', () => groupAct('group.member', { member: id, role: 'owner' }, () => {
          c.roles.set(id, { role: 'owner' });
          c.roles.set(me(), { ...c.roles.get(me()), role: 'admin' });
        })]);
      }
      if (over) {
        buttons.push(muted
          ? ['Unmute', () => groupAct('group.member', { member: id, muted_until: null }, setMember)]
          : ['Mute 10 min', () => groupAct('group.member', { member: id, muted_until: Date.now() + 600_000 }, setMember)]);
        buttons.push(['Kick', () => groupAct('group.remove', { member: id }, () => {
          c.members = c.members.filter((m) => m !== id);
          c.roles.delete(id);
        })]);
      }
      return el(
        'li',
        { 'data-member': id },
        el('span', { class: 'who', text: nameOf(id) }),
        el('span', { class: 'role', text: role + (muted ? ` · muted until ${time(until)}` : '') }),
        ...buttons.map(([label, onclick]) => el('button', { type: 'button', text: label, onclick })),
      );
    }),
  );
  show('group-dissolve', mine === 'owner' && !c.dissolved);
  show('group-leave', c.active);
}

function setMember(c, m) {
  c.roles.set(m.id, { role: m.role, muted_until: m.muted_until });
}

$('group-settings-open').addEventListener('click', async () => {
  const c = currentGroup();
  if (!c) return;
  try {
    applyGroup(c, (await state.socket.action('group.show', { group: c.id })).data);
  } catch (e) {
    showError(e);
    return;
  }
  renderGroupDialog();
  $('group-dialog').showModal();
});
$('group-dialog-close').addEventListener('click', () => $('group-dialog').close());

$('group-profile').addEventListener('submit', (ev) => {
  ev.preventDefault();
  const f = ev.target.elements;
  const data = { name: f.name.value.trim(), announcement: f.announcement.value || null, muted: f.muted.checked };
  groupAct('group.update', data, (c, g) => applyGroup(c, g));
});

$('group-leave').addEventListener('click', () =>
  groupAct('group.leave', {}, (c) => {
    c.active = false;
    c.members = c.members.filter((m) => m !== me());
    $('group-dialog').close();
  }),
);

$('group-dissolve').addEventListener('click', () => {
  if (!confirm('Dissolve this group for everyone? Its history stays readable.')) return;
  groupAct('group.dissolve', {}, (c) => {
    c.dissolved = true;
  });
});

async function open(id) {
  if (state.compose && state.compose.conv !== id) setCompose(null);
  state.current = id;
  const c = state.convs.get(id);
  render();
  $('text').focus();
  if (c && !c.loaded) {
    try {
      await loadHistory(c);
      c.loaded = true;
    } catch (e) {
      showError(e);
    }
  }
  markReadIfVisible(c);
  render();
  scrollToEnd();
}

async function loadHistory(c, before) {
  const data = { conversation: c.id, limit: PAGE };
  if (before) data.before_seq = before;
  const reply = await state.socket.action('history', data);
  const list = reply.data.messages;
  for (const m of list) addMessage(m);
  if (list.length > 0) c.oldest = Math.min(c.oldest ?? Infinity, list[0].seq);
  c.hasOlder = list.length === PAGE && list[0].seq > 1;
}

$('older').addEventListener('click', async () => {
  const c = state.convs.get(state.current);
  if (!c) return;
  const list = $('messages');
  const fromBottom = list.scrollHeight - list.scrollTop;
  try {
    await loadHistory(c, c.oldest);
  } catch (e) {
    showError(e);
  }
  render();
  list.scrollTop = list.scrollHeight - fromBottom;
});

function markReadIfVisible(c) {
  if (!c || state.current !== c.id || document.hidden || !state.socket?.ready) return;
  if (c.last_seq > c.read_seq) {
    const seq = c.last_seq;
    c.read_seq = seq;
    c.unread = 0;
    c.mentioned = false;
    state.socket.action('read', { conversation: c.id, seq }).catch(() => {});
  }
}

document.addEventListener('visibilitychange', () => {
  markReadIfVisible(state.convs.get(state.current));
  render();
});

// ── rendering ───────────────────────────────────────────────────────────────────────────────────

function title(c) {
  if (c.kind === 'group') return (c.name || c.id) + (c.dissolved ? ' (dissolved)' : '');
  return c.peer ? nameOf(c.peer) : 'Direct message';
}

function unread(c) {
  return c.unread;
}

function render() {
  if (!state.session) return;
  const list = $('convs');
  const sorted = [...state.convs.values()].sort((a, b) => latest(b) - latest(a));
  list.replaceChildren(
    ...sorted.map((c) => {
      const n = unread(c);
      const status = c.kind === 'direct' && c.peer ? state.presence.get(c.peer) ?? 'offline' : null;
      return el(
        'li',
        {},
        el(
          'button',
          {
            type: 'button',
            class: 'conv',
            'aria-current': state.current === c.id ? 'true' : undefined,
            'data-conversation': c.id,
            onclick: () => open(c.id),
          },
          status ? el('span', { class: 'dot', 'data-status': status, 'aria-label': status, role: 'img' }) : null,
          el('span', { class: 'name', text: title(c) + (c.active ? '' : ' (left)') }),
          c.mentioned && n > 0 ? el('span', { class: 'mention', 'aria-label': 'you were mentioned', text: '@' }) : null,
          n > 0 ? el('span', { class: 'unread', 'aria-label': `${n} unread`, text: String(n) }) : null,
        ),
      );
    }),
  );
  renderPane();
}

function latest(c) {
  let t = 0;
  for (const m of c.messages.values()) t = Math.max(t, m.created_at);
  return t || c.last_seq;
}

let lastRendered = null;

function renderPane() {
  const draft = typeof state.current === 'object' && state.current?.draft;
  const c = draft ? null : state.convs.get(state.current);
  show('composer', Boolean(draft || (c && c.active && !c.dissolved)));
  show('add-form', Boolean(c && c.kind === 'group' && c.active && !c.dissolved));
  show('group-settings-open', Boolean(c && c.kind === 'group' && c.active));
  show('pane-announcement', Boolean(c && c.announcement));
  if (c && c.announcement) $('pane-announcement').textContent = c.announcement;
  if (!draft && !c) show('block-toggle', false);
  show('older', Boolean(c && c.hasOlder));
  if (!draft && !c) {
    $('pane-title').textContent = 'Pick a conversation';
    $('pane-sub').textContent = 'Or start one on the left.';
    $('messages').replaceChildren();
    $('typing').textContent = '';
    return;
  }
  const peer = draft || (c.kind === 'direct' ? c.peer : null);
  show('block-toggle', Boolean(peer));
  if (peer) $('block-toggle').textContent = state.blocked.has(peer) ? 'Unblock' : 'Block';
  $('pane-title').replaceChildren(
    peer ? el('span', { class: 'dot', 'data-status': state.presence.get(peer) ?? 'offline', role: 'img', 'aria-label': state.presence.get(peer) ?? 'offline' }) : '',
    ' ',
    draft ? nameOf(draft) : title(c),
  );
  $('pane-sub').textContent = peer
    ? `${peer} · ${state.presence.get(peer) ?? 'offline'}`
    : `${c.members.length} members: ${c.members.map(nameOf).join(', ')}`;

  const list = $('messages');
  const nearEnd = list.scrollHeight - list.scrollTop - list.clientHeight < 60 || lastRendered !== state.current;
  const items = [];
  const readers = c ? [...c.readBy.entries()] : [];
  const rows = c ? [...c.messages.values()].sort((a, b) => a.seq - b.seq) : [];
  for (const m of rows) {
    const mine = m.sender === me();
    let status = null;
    if (mine) {
      const by = readers.filter(([, seq]) => seq >= m.seq).map(([u]) => nameOf(u));
      status = `#${m.seq} · ${by.length ? `read by ${by.join(', ')}` : 'sent'}`;
    }
    items.push(messageItem(m, mine, status, undefined, c));
  }
  const pending = c ? [...c.pending.values()] : [...draftsPending].filter((d) => d.peer === draft).map((d) => d.m);
  for (const m of pending) {
    const label = m.state === 'failed' ? `not sent: ${m.error}` : m.state === 'waiting' ? 'waiting for connection…' : 'sending…';
    items.push(messageItem({ ...m, sender: me() }, true, label, m.state));
  }
  list.replaceChildren(...items);
  if (nearEnd) scrollToEnd();
  lastRendered = state.current;
  const typers = c ? [...c.typing.keys()].map(nameOf) : [];
  $('typing').textContent = typers.length ? `${typers.join(', ')} ${typers.length > 1 ? 'are' : 'is'} typing…` : '';
}

function messageItem(m, mine, status, pendingState, c) {
  if (m.sender === null && m.seq !== undefined && !m.recalled && !m.deleted) {
    return el('li', { class: 'msg system', 'data-seq': m.seq, text: m.content });
  }
  const gone = m.recalled || m.deleted;
  const body = gone
    ? el('div', { class: 'body tombstone', text: m.recalled ? 'Message recalled' : 'Message deleted' })
    : el('div', { class: 'body', text: m.content });
  const original = m.reply_to ? c?.messages.get(m.reply_to) : null;
  const quote = m.reply_to && !gone
    ? el('div', {
        class: 'quote',
        text: original
          ? `↪ ${nameOf(original.sender)}: ${original.recalled || original.deleted ? '(removed)' : original.content.slice(0, 60)}`
          : `↪ #${m.reply_to}`,
      })
    : null;
  const sent = c && !pendingState && m.seq !== undefined;
  const reactions = Object.entries(m.reactions ?? {});
  return el(
    'li',
    {
      class: `msg${mine ? ' mine' : ''}${(m.mentions ?? []).includes(me()) ? ' mentions-me' : ''}`,
      'data-testid': 'message',
      'data-seq': m.seq,
      'data-client-msg-id': m.client_msg_id,
      'data-state': pendingState ?? (m.recalled ? 'recalled' : m.deleted ? 'deleted' : 'sent'),
    },
    el('div', { class: 'who', text: `${nameOf(m.sender)} · ${time(m.created_at)}${m.edited_at && !gone ? ' · edited' : ''}` }),
    quote,
    body,
    reactions.length && !gone
      ? el(
          'div',
          { class: 'reactions' },
          ...reactions.map(([key, r]) =>
            el('button', {
              type: 'button',
              'aria-pressed': r.me ? 'true' : 'false',
              'aria-label': `${key} ${r.count}`,
              text: `${key} ${r.count}`,
              onclick: () => react(c, m, key),
            }),
          ),
        )
      : null,
    sent && !gone
      ? el(
          'div',
          { class: 'actions' },
          // A dissolved group's messages stay as they ended: only hiding one is left.
          ...(c.dissolved ? [] : [
            el('button', { type: 'button', text: 'Reply', onclick: () => setCompose({ mode: 'reply', conv: c.id, seq: m.seq }) }),
            el('button', { type: 'button', text: '👍', 'aria-label': 'React 👍', onclick: () => react(c, m, '👍') }),
            mine ? el('button', { type: 'button', text: 'Edit', onclick: () => setCompose({ mode: 'edit', conv: c.id, seq: m.seq }) }) : null,
            mine ? el('button', { type: 'button', text: 'Recall', onclick: () => act('recall', { conversation: c.id, seq: m.seq }) }) : null,
          ]),
          el('button', { type: 'button', text: 'Delete for me', onclick: () => act('delete', { conversation: c.id, seq: m.seq, scope: 'me' }) }),
        )
      : null,
    status ? el('div', { class: `state${pendingState === 'failed' ? ' failed' : ''}`, text: status }) : null,
  );
}

function scrollToEnd() {
  const list = $('messages');
  list.scrollTop = list.scrollHeight;
}

// ── start ───────────────────────────────────────────────────────────────────────────────────────

const saved = sessionStorage.getItem(STORE);
if (saved) {
  try {
    const s = JSON.parse(saved);
    state.app = s.app || 'default';
    $('app-id').value = state.app;
    state.session = { access_token: s.access_token, refresh_token: s.refresh_token, user: s.user };
    enterChat();
  } catch {
    sessionStorage.removeItem(STORE);
  }
}
