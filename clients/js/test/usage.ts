// What an app written in TypeScript sees of the published declarations (types/): checked by
// `tsc -p tsconfig.usage.json` in the tests; a type that loosens to `any` fails the expectations.
import { NatterClient, NatterError, type Message, type Sent } from '../types/index.js';

const client = new NatterClient({ url: 'http://127.0.0.1:8080', app: 'shop', onSession: (s) => s?.access_token });

client.on('message', (m: Message) => {
  const text: string = m.content;
  const seq: number = m.seq;
  // @ts-expect-error content is a string
  const wrong: number = m.content;
  void [text, seq, wrong];
});
client.on('unread', ({ conversation, unread, total }) => void [conversation.length, unread + total]);
client.on('group.member_added', (e) => void e.members.map((id) => id.toUpperCase()));
client.on('message.reaction', (e) => void (e.on ? e.count : -e.count));
client.on('state', ({ state }) => void (state === 'online'));
client.on('signed_out', (e: NatterError) => void e.code);
// @ts-expect-error not an event
client.on('no.such.event', () => {});

async function chat(): Promise<void> {
  await client.guest({ first_name: 'Ada' });
  await client.connect();
  const sent: Sent = await client.send({ recipient: 'u_bob' }, 'hi', { reply_to: 1, mentions: ['u_bob'] });
  const older: Message[] = await client.history(sent.conversation, { before_seq: sent.seq, limit: 50 });
  const group = await client.createGroup({ name: 'Team', members: ['u_bob'] });
  const role: 'owner' | 'admin' | 'member' = group.members[0].role;
  const unread: number = client.store.get(sent.conversation).unread;
  // @ts-expect-error a target names a recipient or a group
  await client.send({ user: 'u_bob' }, 'hi');
  void [older, role, unread];
}
void chat;
