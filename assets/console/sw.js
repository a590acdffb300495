// The console's service worker: shows the pushes Natter sends while no console tab is open
// (docs/push.md, "The notice"), and opens the console when one is clicked.

self.addEventListener('install', () => self.skipWaiting());
self.addEventListener('activate', (event) => event.waitUntil(self.clients.claim()));

self.addEventListener('push', (event) => {
  let notice;
  try {
    notice = event.data ? event.data.json() : null;
  } catch {
    notice = null;
  }
  event.waitUntil(
    (async () => {
      // A console tab in view shows the message itself.
      const windows = await self.clients.matchAll({ type: 'window', includeUncontrolled: true });
      if (windows.some((w) => w.visibilityState === 'visible')) return;
      const title = notice?.title || 'Natter';
      await self.registration.showNotification(title, {
        body: notice?.body || 'New message',
        // One notification per conversation: the newest replaces the older.
        tag: notice?.conversation?.id || 'natter',
        renotify: true,
        data: notice,
      });
    })(),
  );
});

self.addEventListener('notificationclick', (event) => {
  event.notification.close();
  event.waitUntil(
    (async () => {
      const windows = await self.clients.matchAll({ type: 'window', includeUncontrolled: true });
      const open = windows.find((w) => new URL(w.url).pathname === '/');
      if (open) return open.focus();
      return self.clients.openWindow('/');
    })(),
  );
});
