// End-to-end test of the browser console in headless Chromium (Debian's /usr/bin/chromium driven
// by playwright-core, which this script installs into target/e2e itself).
//
//   NATTER_BIN=target/debug/natter node tests/e2e/console.mjs
//
// Two people sign up, open a DM by email, talk both ways (read markers, typing, presence), a guest
// joins a group, the server is killed and restarted mid-conversation, and every page must show
// every message exactly once; then a message's life (a reply with a mention and its badge, a
// reaction, an edit, a recall, a deletion for one member) shows on every page, and a block
// refuses a direct message until it is lifted. Screenshots go to
// target/e2e-screenshots/.

import { execSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import { fileURLToPath, pathToFileURL } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const work = path.join(root, 'target', 'e2e');
const shots = path.join(root, 'target', 'e2e-screenshots');
const natterBin = process.env.NATTER_BIN || path.join(root, 'target', 'debug', 'natter');
const chromiumPath = process.env.CHROMIUM || '/usr/bin/chromium';
const STEP_TIMEOUT = 15000;

function log(...args) {
  console.log(`[e2e ${new Date().toISOString().slice(11, 23)}]`, ...args);
}

async function playwright() {
  const entry = path.join(work, 'node_modules', 'playwright-core', 'index.mjs');
  if (!fs.existsSync(entry)) {
    log('installing playwright-core into', work);
    fs.mkdirSync(work, { recursive: true });
    execSync('npm install --no-audit --no-fund --loglevel=error --prefix . playwright-core@1', { cwd: work, stdio: 'inherit' });
  }
  return import(pathToFileURL(entry).href);
}

/** The caller's environment without anything that would point natter at another store or bus. */
function ownEnv() {
  const env = { ...process.env };
  for (const k of Object.keys(env)) {
    if (k.startsWith('NATTER_') || ['DATABASE_URL', 'NATS_URL', 'DATABASE_URL_FILE', 'NATS_URL_FILE'].includes(k)) delete env[k];
  }
  return env;
}

/** A natter process on SQLite; `port` 0 picks one, a number reuses it (the restart). */
function startNatter(dir, port) {
  return new Promise((resolve, reject) => {
    const child = spawn(natterBin, ['serve'], {
      env: {
        ...ownEnv(),
        NATTER_DATABASE__URL: `sqlite://${dir}/natter.db`,
        NATTER_HTTP__BIND: `127.0.0.1:${port}`,
        NATTER_HTTP__WORKERS: '2',
        NATTER_LOG__FORMAT: 'json',
        NATTER_LOG__LEVEL: 'warn,natter::server=info',
        NATTER_NATS__URL: '',
      },
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    const timer = setTimeout(() => reject(new Error('natter did not start in 30 s')), 30000);
    const lines = readline.createInterface({ input: child.stderr });
    lines.on('line', (line) => {
      try {
        const v = JSON.parse(line);
        if (v.addr) {
          clearTimeout(timer);
          resolve({ child, addr: v.addr });
        }
        if (v.level === 'ERROR') log('natter:', line);
      } catch {
        log('natter:', line);
      }
    });
    child.on('exit', (code) => reject(new Error(`natter exited with ${code}`)));
  });
}

async function main() {
  if (!fs.existsSync(chromiumPath)) throw new Error(`${chromiumPath} is missing: apt-get install chromium`);
  if (!fs.existsSync(natterBin)) throw new Error(`${natterBin} is missing: cargo build`);
  fs.mkdirSync(shots, { recursive: true });
  const { chromium } = await playwright();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'natter-e2e-'));
  let server = await startNatter(dir, 0);
  const base = `http://${server.addr}`;
  const port = server.addr.split(':').pop();
  log('natter on', base);

  const browser = await chromium.launch({
    executablePath: chromiumPath,
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync'],
  });
  try {
    const page = async (name) => {
      const ctx = await browser.newContext({ viewport: { width: 1100, height: 760 } });
      const p = await ctx.newPage();
      p.setDefaultTimeout(STEP_TIMEOUT);
      p.on('pageerror', (e) => log(`${name} page error:`, e.message));
      p.on('console', (m) => m.type() === 'error' && log(`${name} console:`, m.text()));
      await p.goto(base + '/');
      return p;
    };
    const shot = (p, name) => p.screenshot({ path: path.join(shots, `${name}.png`) });
    const myId = async (p) => (await p.locator('#me-name').textContent()).match(/\(([^,)]+)/)[1];
    const messages = (p) => p.locator('[data-testid=message]');
    const expectOnce = async (p, text) => {
      const m = messages(p).filter({ hasText: text });
      await m.first().waitFor();
      const n = await m.count();
      if (n !== 1) throw new Error(`"${text}" shown ${n} times`);
    };
    const send = async (p, text) => {
      await p.fill('#text', text);
      await p.press('#text', 'Enter');
    };
    const openConv = (p, name) => p.locator('.conv', { hasText: name }).click();

    log('alice and bob sign up');
    const alice = await page('alice');
    const bob = await page('bob');
    for (const [p, email, name] of [[alice, 'alice@example.com', 'Alice'], [bob, 'bob@example.com', 'Bob']]) {
      const f = p.locator('#signup-form');
      await f.getByLabel('Email').fill(email);
      await f.getByLabel('Password').fill('correct horse battery');
      await f.getByLabel('First name').fill(name);
      await f.getByLabel('Last name').fill('Example');
      await f.getByRole('button', { name: 'Sign up' }).click();
      await p.locator('#conn[data-state=online]').waitFor();
    }
    await shot(alice, '01-signed-up');
    const bobId = await myId(bob);

    log('alice opens a DM by email and writes');
    await alice.getByLabel('Message a user').fill('bob@example.com');
    await alice.getByRole('button', { name: 'Open chat' }).click();
    await alice.locator('#pane-title', { hasText: 'Bob' }).waitFor();
    await alice.locator('#pane-title .dot[data-status=online]').waitFor();
    await send(alice, 'Hi Bob');
    await alice.locator('[data-testid=message][data-state=sent]', { hasText: 'Hi Bob' }).locator('.state', { hasText: '#1' }).waitFor();

    log('bob sees it with an unread count, reads, replies');
    await bob.locator('.conv', { hasText: 'Alice' }).locator('.unread', { hasText: '1' }).waitFor();
    await shot(bob, '02-unread');
    await openConv(bob, 'Alice');
    await expectOnce(bob, 'Hi Bob');
    await alice.locator('[data-testid=message]', { hasText: 'Hi Bob' }).locator('.state', { hasText: 'read by Bob' }).waitFor();
    await bob.locator('#text').pressSequentially('Hello Ali', { delay: 20 });
    await alice.locator('#typing', { hasText: 'Bob is typing' }).waitFor();
    await shot(alice, '03-typing');
    await bob.locator('#text').pressSequentially('ce', { delay: 20 });
    await bob.press('#text', 'Enter');
    await expectOnce(alice, 'Hello Alice');

    log('carol continues as a guest; alice makes a group with bob (by email) and carol (by id)');
    const carol = await page('carol');
    await carol.locator('#guest-form').getByLabel('Name (optional)').fill('Carol');
    await carol.getByRole('button', { name: 'Continue as guest' }).click();
    await carol.locator('#conn[data-state=online]').waitFor();
    const carolId = await myId(carol);
    await alice.getByLabel('New group').fill('Team');
    await alice.getByLabel('Members').fill(`bob@example.com, ${carolId}`);
    await alice.getByRole('button', { name: 'Create group' }).click();
    await alice.locator('#pane-title', { hasText: 'Team' }).waitFor();
    await send(alice, 'Hello team');
    await carol.locator('.conv', { hasText: 'Team' }).click();
    await expectOnce(carol, 'Hello team');
    await send(carol, 'Hi from Carol');
    await expectOnce(alice, 'Hi from Carol');
    await openConv(bob, 'Team');
    await expectOnce(bob, 'Hi from Carol');

    log('carol keeps her account: same id after the upgrade');
    await carol.getByRole('button', { name: 'Keep this account…' }).click();
    const up = carol.locator('#upgrade-form');
    await up.getByLabel('Email').fill('carol@example.com');
    await up.getByLabel('Password').fill('another good passphrase');
    await up.getByLabel('First name').fill('Carol');
    await up.getByLabel('Last name').fill('Guest');
    await up.getByRole('button', { name: 'Save' }).click();
    await carol.locator('#upgrade-open').waitFor({ state: 'hidden' });
    if ((await myId(carol)) !== carolId) throw new Error('the upgrade changed the user id');

    log('the server is killed mid-conversation; alice writes while it is down');
    server.child.kill('SIGKILL');
    await alice.locator('#conn[data-state=offline]').waitFor();
    await bob.locator('#conn[data-state=offline]').waitFor();
    await send(alice, 'Sent while down');
    await alice.locator('[data-testid=message][data-state=waiting]', { hasText: 'Sent while down' }).waitFor();
    await shot(alice, '04-offline');
    server = await startNatter(dir, port);
    log('natter restarted on', server.addr);
    for (const p of [alice, bob, carol]) await p.locator('#conn[data-state=online]').waitFor({ timeout: 30000 });
    await alice.locator('[data-testid=message][data-state=sent]', { hasText: 'Sent while down' }).waitFor();
    for (const p of [bob, carol]) {
      await expectOnce(p, 'Sent while down');
      await expectOnce(p, 'Hello team');
      await expectOnce(p, 'Hi from Carol');
    }
    await openConv(bob, 'Alice');
    await send(bob, 'After the restart');
    await openConv(alice, 'Bob');
    await expectOnce(alice, 'After the restart');
    for (const t of ['Hi Bob', 'Hello Alice']) {
      await expectOnce(alice, t);
      await expectOnce(bob, t);
    }
    await shot(alice, '05-after-restart');
    await openConv(alice, 'Team');
    await expectOnce(alice, 'Sent while down');
    await shot(alice, 'console');

    log("a message's life: a reply that mentions, a reaction, an edit, a recall, a deletion for me");
    const aliceId = await myId(alice);
    await openConv(bob, 'Team');
    await send(alice, 'Lunch at noon?');
    await expectOnce(bob, 'Lunch at noon?');
    await openConv(alice, 'Bob');
    const lunch = (p) => messages(p).filter({ hasText: 'Lunch at' });
    await lunch(bob).getByRole('button', { name: 'Reply' }).click();
    await bob.locator('#compose-mode', { hasText: 'Replying to Alice' }).waitFor();
    await send(bob, `Yes @${aliceId}`);
    const team = alice.locator('.conv', { hasText: 'Team' });
    await team.locator('.mention').waitFor();
    await team.locator('.unread', { hasText: '1' }).waitFor();
    await shot(alice, '07-mentioned');
    await openConv(alice, 'Team');
    const yes = (p) => messages(p).filter({ hasText: 'Yes @' });
    await yes(alice).and(alice.locator('.mentions-me')).locator('.quote', { hasText: 'Lunch at noon?' }).waitFor();
    await team.locator('.unread').waitFor({ state: 'detached' });
    await yes(alice).getByRole('button', { name: 'React 👍' }).click();
    for (const p of [bob, carol]) await yes(p).locator('.reactions button', { hasText: '👍 1' }).waitFor();
    await lunch(alice).getByRole('button', { name: 'Edit' }).click();
    await alice.locator('#compose-mode', { hasText: 'Editing #' }).waitFor();
    await alice.fill('#text', 'Lunch at 1pm?');
    await alice.press('#text', 'Enter');
    for (const p of [bob, carol]) {
      await lunch(p).filter({ hasText: 'Lunch at 1pm?' }).locator('.who', { hasText: 'edited' }).waitFor();
    }
    await yes(bob).getByRole('button', { name: 'Recall' }).click();
    for (const p of [alice, carol]) {
      await messages(p).and(p.locator('[data-state=recalled]')).filter({ hasText: 'Message recalled' }).waitFor();
      if ((await yes(p).count()) !== 0) throw new Error('a recalled message is still shown');
    }
    await lunch(carol).getByRole('button', { name: 'Delete for me' }).click();
    await messages(carol).and(carol.locator('[data-state=deleted]')).waitFor();
    if ((await lunch(carol).count()) !== 0) throw new Error('a message deleted for carol is still shown to her');
    await expectOnce(alice, 'Lunch at 1pm?');
    await shot(carol, '08-lifecycle');

    log('bob blocks alice: her direct message is refused; unblocked, they talk again');
    await openConv(bob, 'Alice');
    await bob.getByRole('button', { name: 'Block' }).click();
    await bob.getByRole('button', { name: 'Unblock' }).waitFor();
    await openConv(alice, 'Bob');
    await send(alice, 'Are you there?');
    await messages(alice).and(alice.locator('[data-state=failed]')).filter({ hasText: 'not accept' }).waitFor();
    await alice.locator('#error', { hasText: 'not sent' }).waitFor();
    await bob.getByRole('button', { name: 'Unblock' }).click();
    await bob.getByRole('button', { name: 'Block' }).waitFor();
    await send(alice, 'Hello again');
    await expectOnce(bob, 'Hello again');

    log('alice runs the group: renames it, makes bob an admin, mutes carol, then dissolves it');
    await openConv(alice, 'Team');
    await openConv(carol, 'Team');
    await alice.getByRole('button', { name: 'Group settings' }).click();
    const settings = alice.locator('#group-dialog');
    await settings.getByLabel('Name').fill('Team Lunch');
    await settings.getByLabel('Announcement').fill('Lunch is at 1pm');
    await settings.getByRole('button', { name: 'Save' }).click();
    await carol.locator('#pane-title', { hasText: 'Team Lunch' }).waitFor();
    await carol.locator('#pane-announcement', { hasText: 'Lunch is at 1pm' }).waitFor();
    const row = (id) => settings.locator(`[data-member="${id}"]`);
    await row(bobId).getByRole('button', { name: 'Make admin' }).click();
    await row(bobId).locator('.role', { hasText: 'admin' }).waitFor();
    await row(carolId).getByRole('button', { name: 'Mute 10 min' }).click();
    await row(carolId).locator('.role', { hasText: 'muted until' }).waitFor();
    await shot(alice, '10-group-settings');
    await send(carol, 'Can I still talk?');
    await messages(carol).and(carol.locator('[data-state=failed]')).filter({ hasText: 'muted' }).waitFor();
    alice.once('dialog', (d) => d.accept());
    await settings.getByRole('button', { name: 'Dissolve group' }).click();
    await settings.getByRole('button', { name: 'Close' }).click();
    await openConv(bob, 'Team Lunch');
    for (const p of [alice, bob, carol]) await p.locator('.conv', { hasText: 'Team Lunch (dissolved)' }).waitFor();
    await expectOnce(bob, 'Hello team');
    await bob.locator('#composer').waitFor({ state: 'hidden' });
    await shot(bob, '11-dissolved');

    log('a wrong password gets a clear error');
    const dave = await page('dave');
    const login = dave.locator('#login-form');
    await login.getByLabel('Email').fill('alice@example.com');
    await login.getByLabel('Password').fill('not the password');
    await login.getByRole('button', { name: 'Log in' }).click();
    await dave.locator('#error', { hasText: 'Wrong email or password' }).waitFor();
    await shot(dave, '09-error');
    log(`ok: bob ${bobId}, carol ${carolId}; screenshots in ${shots}`);
  } catch (e) {
    for (const [i, c] of browser.contexts().entries()) {
      for (const p of c.pages()) await p.screenshot({ path: path.join(shots, `failure-${i}.png`) }).catch(() => {});
    }
    throw e;
  } finally {
    await browser.close();
    server.child.kill('SIGKILL');
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

main().then(
  () => process.exit(0),
  (e) => {
    console.error('e2e failed:', e);
    process.exit(1);
  },
);
