// @natter/client against a real node: accounts and refresh, chat with unread counts, groups,
// presence and typing, a message's life, the outbox across a lost acknowledgement, and a server
// killed and restarted in the middle of a conversation (nothing missing, nothing twice).

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import { NatterClient, NatterError } from '../src/index.js';
import { Natter, email, until } from './natter.js';

const PASSWORD = 'correct horse battery';

/** A signed-up client of `node`, not yet connected. */
async function person(node, name, options = {}) {
  const client = new NatterClient({ url: node.url, backoff: { initialMs: 50, maxMs: 400 }, ...options });
  await client.register({ email: email(name), password: PASSWORD, first_name: name, last_name: 'Test' });
  return client;
}

/** Every message `client` has been given through `message` events, as conversation:seq keys. */
function recorder(client) {
  const seen = [];
  client.on('message', (m) => seen.push(`${m.conversation}:${m.seq}`));
  return seen;
}

function assertNoDuplicates(keys, who) {
  assert.equal(new Set(keys).size, keys.length, `${who} was given a message twice: ${keys}`);
}

describe('@natter/client', () => {
  const node = new Natter();
  before(() => node.start());
  after(() => node.stop());

  test('signs up, refreshes its tokens, and signs out', async () => {
    const sessions = [];
    const ada = await person(node, 'ada', { onSession: (s) => sessions.push(s) });
    assert.equal(ada.user.first_name, 'ada');
    const first = ada.session.access_token;
    await ada.refresh();
    assert.notEqual(ada.session.access_token, first, 'a new access token');
    assert.equal((await ada.api('GET', '/v1/me')).id, ada.user.id);
    const again = new NatterClient({ url: node.url });
    await again.login({ email: ada.user.email, password: PASSWORD });
    assert.equal(again.user.id, ada.user.id);
    // A message written while offline waits in the outbox; signing out fails it, not hangs it.
    const waiting = ada.send({ recipient: 'u_nobody' }, 'never sent');
    assert.equal(ada.pending().length, 1);
    await ada.logout();
    await assert.rejects(waiting, (e) => e instanceof NatterError && e.code === 'unauthorized');
    assert.equal(ada.pending().length, 0);
    assert.equal(ada.session, null);
    assert.equal(sessions.at(-1), null, 'the app was told the session ended');
    await assert.rejects(
      new NatterClient({ url: node.url, session: { access_token: first } }).api('GET', '/v1/me'),
      (e) => e instanceof NatterError && e.status === 401,
    );
    const bad = new NatterClient({ url: node.url });
    await assert.rejects(bad.login({ email: 'nobody@example.com', password: 'wrong password!' }), (e) => e.code === 'invalid_credentials');
  });

  test('two people chat: each message once, unread counts from the server, read markers', async () => {
    const alice = await person(node, 'alice');
    const bob = await person(node, 'bob');
    const bobSaw = recorder(bob);
    await Promise.all([alice.connect(), bob.connect()]);
    assert.equal(alice.state, 'online');

    const sent = await alice.send({ recipient: bob.user.id }, 'hello bob');
    assert.equal(sent.seq, 1);
    await alice.send({ recipient: bob.user.id }, 'are you there?');
    const conv = sent.conversation;
    await until(() => bob.store.messages(conv).length === 2, 'bob to get both messages');
    await until(() => bob.store.get(conv).unread === 2, "bob's unread count to reach 2");
    assert.equal(bob.store.total, 2);
    assert.deepEqual(bob.store.messages(conv).map((m) => m.content), ['hello bob', 'are you there?']);

    await bob.read(conv, 2);
    await until(() => bob.store.get(conv).unread === 0, 'the count to drop after reading');
    await until(() => alice.store.get(conv).messages.size === 2, 'alice holding her own messages');
    assertNoDuplicates(bobSaw, 'bob');

    // A reply that mentions, a reaction, an edit and a recall reach the other side.
    const reply = await bob.send({ recipient: alice.user.id }, '@alice yes', { reply_to: 1, mentions: [alice.user.id] });
    await until(() => alice.store.get(conv).messages.get(reply.seq), 'alice to get the reply');
    assert.equal(alice.store.get(conv).messages.get(reply.seq).reply_to, 1);
    await alice.react(conv, reply.seq, '👍');
    await until(() => bob.store.get(conv).messages.get(reply.seq).reactions['👍']?.count === 1, 'the reaction to reach bob');
    await alice.edit(conv, 1, 'hello, bob');
    await until(() => bob.store.get(conv).messages.get(1).content === 'hello, bob', 'the edit to reach bob');
    await alice.recall(conv, 2);
    await until(() => bob.store.get(conv).messages.get(2).recalled, 'the recall to reach bob');

    // History pages, oldest first.
    const older = await bob.history(conv, { before_seq: 3, limit: 2 });
    assert.deepEqual(older.map((m) => m.seq), [1, 2]);
    alice.close();
    bob.close();
  });

  test('groups, typing and presence', async () => {
    const owner = await person(node, 'owner');
    const member = await person(node, 'member');
    await Promise.all([owner.connect(), member.connect()]);
    const group = await owner.createGroup({ name: 'Team', members: [member.user.id] });
    assert.equal(group.members.length, 2);
    const typing = new Promise((resolve) => member.on('typing', resolve));
    await owner.typing(group.id);
    assert.equal((await typing).user, owner.user.id);
    await owner.send({ group: group.id }, 'welcome');
    await until(() => member.store.messages(group.id).length === 1, 'the group message');
    assert.equal((await member.groups()).find((g) => g.id === group.id).role, 'member');

    const [now] = await member.watchPresence([owner.user.id]);
    assert.equal(now.status, 'online');
    const offline = new Promise((resolve) => member.on('presence', (p) => p.status === 'offline' && resolve(p)));
    owner.close();
    assert.equal((await offline).user, owner.user.id);
    member.close();
  });

  test('a message whose acknowledgement is lost is resent with the same id and stored once', async () => {
    let dropped = false;
    // A socket that loses the first reply to a message frame, then the connection: the server
    // stored it, the client never heard.
    class LossySocket extends WebSocket {
      constructor(url) {
        super(url);
        this.messageIds = new Set();
      }
      send(text) {
        const frame = JSON.parse(text);
        if (frame.type === 'message') this.messageIds.add(String(frame.id));
        super.send(text);
      }
      set onmessage(handler) {
        super.onmessage = (ev) => {
          const frame = JSON.parse(ev.data);
          if (!dropped && frame.type === 'reply' && this.messageIds.has(String(frame.id))) {
            dropped = true;
            this.close();
            return;
          }
          handler(ev);
        };
      }
      get onmessage() {
        return super.onmessage;
      }
    }
    const sender = await person(node, 'sender', { WebSocket: LossySocket });
    const reader = await person(node, 'reader');
    await Promise.all([sender.connect(), reader.connect()]);
    const sent = await sender.send({ recipient: reader.user.id }, 'exactly once', { client_msg_id: 'once-1' });
    assert.ok(dropped, 'the first acknowledgement was lost');
    assert.equal(sent.seq, 1);
    const history = await reader.api('GET', `/v1/conversations/${sent.conversation}/messages`);
    assert.deepEqual(history.messages.map((m) => m.client_msg_id), ['once-1']);
    assert.equal(sender.pending().length, 0);
    sender.close();
    reader.close();
  });

  test('registers devices for push; bad ones are refused; signing out removes its own', async () => {
    const eve = await person(node, 'eve');
    const phone = await eve.registerDevice({ platform: 'fcm', token: 'eve-phone:APA91b', app_version: '1.2.0' });
    assert.equal(phone.platform, 'fcm');
    assert.equal(phone.app_version, '1.2.0');
    const again = await eve.registerDevice({ platform: 'fcm', token: 'eve-phone:APA91b' });
    assert.equal(again.id, phone.id, 'the same token renews, never duplicates');
    await assert.rejects(
      eve.registerDevice({ platform: 'webpush', subscription: { endpoint: 'https://127.0.0.1/x', keys: { p256dh: 'x', auth: 'y' } } }),
      (e) => e instanceof NatterError && e.status === 400,
    );
    await assert.rejects(eve.vapidKey(), (e) => e.code === 'not_found', 'no VAPID key on this node');
    assert.deepEqual((await eve.devices()).map((d) => d.id), [phone.id]);
    await eve.removeDevice(phone.id);
    assert.deepEqual(await eve.devices(), []);
    await eve.registerDevice({ platform: 'apns', token: 'ab'.repeat(32) });
    const other = new NatterClient({ url: node.url });
    await other.login({ email: eve.user.email, password: PASSWORD });
    await eve.logout();
    assert.deepEqual(await other.devices(), [], "the signed-out session's device went with it");
  });

  test('a refused message is not retried', async () => {
    const lonely = await person(node, 'lonely');
    await lonely.connect();
    await assert.rejects(lonely.send({ group: 'no-such-group' }, 'hi'), (e) => e instanceof NatterError && e.status === 404);
    assert.equal(lonely.pending().length, 0);
    lonely.close();
  });
});

describe('@natter/client across a server restart', () => {
  const node = new Natter();
  before(() => node.start());
  after(() => node.stop());

  test('nothing is missing and nothing is duplicated', async () => {
    const alice = await person(node, 'alice');
    const bob = await person(node, 'bob');
    const bobSaw = recorder(bob);
    const aliceSaw = recorder(alice);
    await Promise.all([alice.connect(), bob.connect()]);
    const to = { recipient: bob.user.id };
    for (let i = 1; i <= 5; i++) await alice.send(to, `before ${i}`);
    const conv = (await alice.send(to, 'before 6')).conversation;
    await until(() => bob.store.messages(conv).length === 6, 'bob to hold the first six');

    await node.kill();
    await until(() => alice.state !== 'online' && bob.state !== 'online', 'both to notice');
    // Written while the server is down: they wait in the outbox.
    const queued = [1, 2, 3, 4].map((i) => alice.send(to, `while down ${i}`));
    assert.equal(alice.pending().length, 4);
    await node.start();

    const sent = await Promise.all(queued);
    assert.deepEqual(sent.map((s) => s.seq), [7, 8, 9, 10], 'stored once each, in order');
    await until(() => bob.store.messages(conv).length === 10, 'bob to catch up', 20000);

    // Bob is away while more arrives; sync brings it when he is back.
    bob.close();
    for (let i = 1; i <= 3; i++) await alice.send(to, `while bob is away ${i}`);
    await bob.connect();
    await until(() => bob.store.messages(conv).length === 13, 'sync to bring what bob missed');
    assert.deepEqual(
      bob.store.messages(conv).map((m) => m.seq),
      Array.from({ length: 13 }, (_, i) => i + 1),
      'every seq once, none missing',
    );
    await until(() => bob.store.get(conv).unread === 13, "bob's unread count");
    assertNoDuplicates(bobSaw, 'bob');
    assertNoDuplicates(aliceSaw, 'alice');
    const stored = await bob.api('GET', `/v1/conversations/${conv}/messages?limit=200`);
    assert.equal(stored.messages.length, 13, 'the server stored each message once');
    alice.close();
    bob.close();
  });
});

describe('@natter/client with short-lived access tokens', () => {
  const node = new Natter({ NATTER_AUTH__ACCESS_TTL_SECS: '1' });
  before(() => node.start());
  after(() => node.stop());

  test('refreshes before it calls and before it connects', async () => {
    const ada = await person(node, 'ada');
    // The token expires within the client's refresh margin: it is renewed before it is used.
    const first = ada.session.access_token;
    const firstRefresh = ada.session.refresh_token;
    assert.ok(ada.session.expires_at - Date.now() <= 1000);
    assert.equal((await ada.api('GET', '/v1/me')).id, ada.user.id);
    assert.notEqual(ada.session.access_token, first);
    assert.notEqual(ada.session.refresh_token, firstRefresh, 'the refresh token rotates');
    const beforeConnect = ada.session.access_token;
    await ada.connect();
    assert.equal(ada.state, 'online');
    assert.notEqual(ada.session.access_token, beforeConnect);
    // The spent refresh token is refused (and ends that device session on the server).
    await assert.rejects(ada.rest.call('POST', '/v1/auth/refresh', { body: { refresh_token: firstRefresh } }), (e) => e.code === 'refresh_token_reused');
    ada.close();
  });
});
