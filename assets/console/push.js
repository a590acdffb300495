// Web Push for the console: a service worker (sw.js) and a subscription registered as a device
// (POST /v1/me/devices), so Natter wakes this browser while no console tab is connected; and a
// notification for messages arriving while the tab is hidden (the user is still online then, so
// the server sends no push).

const supported = () => 'serviceWorker' in navigator && 'PushManager' in window && 'Notification' in window;

/** The VAPID key as pushManager.subscribe takes it. */
function keyBytes(base64url) {
  const text = atob(base64url.replace(/-/g, '+').replace(/_/g, '/') + '='.repeat((4 - (base64url.length % 4)) % 4));
  return Uint8Array.from(text, (c) => c.charCodeAt(0));
}

/** Resolves once the registration has an active worker (`serviceWorker.ready` never does here:
 * the page at `/` is outside the worker's scope, `/console/`). */
function activated(registration) {
  if (registration.active) return Promise.resolve();
  const worker = registration.installing || registration.waiting;
  return new Promise((resolve) => {
    worker?.addEventListener('statechange', () => {
      if (worker.state === 'activated') resolve();
    });
  });
}

/**
 * Asks for permission, subscribes this browser with the app's VAPID key and registers the
 * subscription as the user's device. `api(method, path, body)` is the console's authenticated call.
 * Resolves to a sentence saying what happened.
 */
export async function enablePush(api) {
  if (!supported()) return 'This browser cannot receive push notifications.';
  const permission = await Notification.requestPermission();
  if (permission !== 'granted') return 'Notifications are blocked for this site.';
  let key;
  try {
    key = (await api('GET', '/v1/push/vapid')).public_key;
  } catch {
    return 'Web Push is not set up for this app (no VAPID key): notifications only while this tab is open.';
  }
  const registration = await navigator.serviceWorker.register('/console/sw.js', { scope: '/console/' });
  await activated(registration);
  let subscription = await registration.pushManager.getSubscription();
  if (!subscription) {
    // A browser without a reachable push service (headless, some privacy builds) never answers.
    const subscribing = registration.pushManager.subscribe({ userVisibleOnly: true, applicationServerKey: keyBytes(key) });
    const silence = new Promise((resolve) => setTimeout(resolve, 15000, null));
    subscription = await Promise.race([subscribing, silence]);
    if (!subscription) return "This browser's push service did not answer: notifications only while this tab is open.";
  }
  await api('POST', '/v1/me/devices', { platform: 'webpush', subscription: subscription.toJSON() });
  return 'Notifications on: this browser is woken when you are away.';
}

/** Shows a message that arrived while the tab is hidden (when notifications are allowed). */
export async function notifyIfHidden(title, body, tag) {
  if (!document.hidden || !('Notification' in window) || Notification.permission !== 'granted') return;
  const registration = 'serviceWorker' in navigator ? await navigator.serviceWorker.getRegistration('/console/') : null;
  if (registration) await registration.showNotification(title, { body, tag, renotify: true });
  else new Notification(title, { body, tag });
}
