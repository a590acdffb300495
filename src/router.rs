//! The node-local Router actor.
//!
//! It knows which sessions belong to which user and which local users are in which group, keeps
//! the node subscribed to exactly the subjects its sessions need, and hands each bus payload to
//! the local sessions it concerns with `try_send`: a full session mailbox gets that session closed
//! with 4002 instead of blocking anyone else.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
};

use actix::{Actor, Addr, Context, Handler, Message, ResponseFuture};
use bytestring::ByteString;

use crate::{
    bus::{Bus, BusDelivery, Envelope, Subjects, decode},
    domain::{AppId, UserKey},
    error::CloseCode,
    presence::Presence,
    ws::session::{Close, Push, Renamed, WsSession},
};

type Slot = (Arc<str>, i64);

enum Target {
    User(Slot),
    Group(Arc<str>, String),
    Control(Arc<str>),
    /// A user some local session watches: their presence transitions.
    Presence(Slot),
}

struct SessionEntry {
    addr: Addr<WsSession>,
    slot: Slot,
    auth_session: Option<String>,
    watching: HashSet<i64>,
    /// Bytes handed to the session and not yet written by it (shared with the session).
    queued: Arc<std::sync::atomic::AtomicUsize>,
}

struct UserEntry {
    id: String,
    sessions: Vec<u64>,
    groups: HashSet<String>,
}

pub struct Router {
    node_id: String,
    bus: Arc<dyn Bus>,
    subjects: Subjects,
    presence: Presence,
    max_per_user: usize,
    max_queued_bytes: usize,
    sessions: HashMap<u64, SessionEntry>,
    users: HashMap<Slot, UserEntry>,
    groups: HashMap<(Arc<str>, String), HashSet<i64>>,
    watchers: HashMap<Slot, HashSet<u64>>,
    apps: HashMap<Arc<str>, usize>,
    targets: HashMap<String, Target>,
}

impl Router {
    pub fn new(
        node_id: String,
        bus: Arc<dyn Bus>,
        subjects: Subjects,
        presence: Presence,
        max_per_user: usize,
        max_queued_bytes: usize,
    ) -> Self {
        Self {
            node_id,
            bus,
            subjects,
            presence,
            max_per_user,
            max_queued_bytes,
            sessions: HashMap::new(),
            users: HashMap::new(),
            groups: HashMap::new(),
            watchers: HashMap::new(),
            apps: HashMap::new(),
            targets: HashMap::new(),
        }
    }

    fn intern(&mut self, app: &str) -> Arc<str> {
        match self.apps.get_key_value(app) {
            Some((k, _)) => k.clone(),
            None => Arc::from(app),
        }
    }

    fn subscribe(&mut self, subject: String, target: Target) {
        self.bus.subscribe(&subject);
        self.targets.insert(subject, target);
    }

    fn unsubscribe(&mut self, subject: &str) {
        self.bus.unsubscribe(subject);
        self.targets.remove(subject);
    }

    /// Adds a watcher; the node subscribes to the user's presence with the first one.
    fn watch(&mut self, slot: Slot, session: u64) {
        let set = self.watchers.entry(slot.clone()).or_default();
        set.insert(session);
        if set.len() == 1 {
            let subject = self.subjects.presence(&slot.0, slot.1);
            self.subscribe(subject, Target::Presence(slot));
        }
    }

    /// Removes a watcher; the node unsubscribes with the last one.
    fn unwatch(&mut self, slot: &Slot, session: u64) {
        if let Some(set) = self.watchers.get_mut(slot) {
            set.remove(&session);
            if set.is_empty() {
                self.watchers.remove(slot);
                let subject = self.subjects.presence(&slot.0, slot.1);
                self.unsubscribe(&subject);
            }
        }
    }

    fn join_group(&mut self, app: &Arc<str>, group: &str, user: i64) {
        let key = (app.clone(), group.to_string());
        let members = self.groups.entry(key).or_default();
        let first = members.is_empty();
        members.insert(user);
        if first {
            let subject = self.subjects.group(app, group);
            self.subscribe(subject, Target::Group(app.clone(), group.to_string()));
        }
    }

    fn leave_group(&mut self, app: &Arc<str>, group: &str, user: i64) {
        let key = (app.clone(), group.to_string());
        if let Some(members) = self.groups.get_mut(&key) {
            members.remove(&user);
            if members.is_empty() {
                self.groups.remove(&key);
                let subject = self.subjects.group(app, group);
                self.unsubscribe(&subject);
            }
        }
    }

    /// Hands a user's first or last local session to the presence worker, which decides
    /// whether it is a cluster-wide transition.
    fn announce_presence(&self, slot: &Slot, id: &str, online: bool) {
        if let Ok(app) = AppId::parse(slot.0.to_string()) {
            self.presence.report(app, UserKey(slot.1), id.to_string(), online);
        }
    }

    fn remove_session(&mut self, id: u64) {
        let Some(entry) = self.sessions.remove(&id) else { return };
        for watched in &entry.watching {
            self.unwatch(&(entry.slot.0.clone(), *watched), id);
        }
        let slot = entry.slot;
        let now_empty = match self.users.get_mut(&slot) {
            Some(user) => {
                user.sessions.retain(|s| *s != id);
                user.sessions.is_empty()
            }
            None => false,
        };
        if now_empty && let Some(user) = self.users.remove(&slot) {
            for group in &user.groups {
                self.leave_group(&slot.0, group, slot.1);
            }
            let subject = self.subjects.user(&slot.0, slot.1);
            self.unsubscribe(&subject);
            self.announce_presence(&slot, &user.id, false);
        }
        let app = slot.0.clone();
        if let Some(count) = self.apps.get_mut(&app) {
            *count -= 1;
            if *count == 0 {
                self.apps.remove(&app);
                let subject = self.subjects.control(&app);
                self.unsubscribe(&subject);
            }
        }
        metrics::gauge!("natter_ws_connections").decrement(1.0);
    }

    /// Hands a push to a session; a full mailbox means the client reads too slowly.
    /// Hands a push to a session. A full mailbox, or more than `ws.outbound_queue_bytes` not
    /// yet written, means the client reads too slowly: it is closed (4002) rather than buffered.
    fn push(&mut self, id: u64, push: Push, slow: &mut Vec<u64>) {
        use std::sync::atomic::Ordering;
        let Some(entry) = self.sessions.get(&id) else { return };
        let size = push.len();
        if entry.queued.load(Ordering::Relaxed) + size > self.max_queued_bytes {
            slow.push(id);
            return;
        }
        match entry.addr.try_send(push) {
            Ok(()) => {
                entry.queued.fetch_add(size, Ordering::Relaxed);
            }
            Err(actix::dev::SendError::Full(_)) => slow.push(id),
            Err(actix::dev::SendError::Closed(_)) => slow.push(id),
        }
    }

    fn drop_slow(&mut self, slow: Vec<u64>) {
        for id in slow {
            if let Some(entry) = self.sessions.get(&id) {
                metrics::counter!("natter_ws_slow_consumer_drops_total").increment(1);
                entry.addr.do_send(Close { code: CloseCode::TooSlow, reason: "too slow reading; reconnect".into() });
            }
            self.remove_session(id);
        }
    }

    fn user_sessions(&self, slot: &Slot) -> Vec<u64> {
        self.users.get(slot).map(|u| u.sessions.clone()).unwrap_or_default()
    }

    fn group_sessions(&self, app: &Arc<str>, group: &str) -> Vec<u64> {
        let Some(members) = self.groups.get(&(app.clone(), group.to_string())) else {
            return Vec::new();
        };
        members.iter().flat_map(|user| self.user_sessions(&(app.clone(), *user))).collect()
    }
}

impl Actor for Router {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // The Router is the one consumer of bus deliveries; never let its mailbox refuse them.
        ctx.set_mailbox_capacity(usize::MAX);
    }
}

/// A session authenticated and wants its pushes. Answered once its subscriptions are in force
/// on the bus.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Connect {
    pub id: u64,
    pub addr: Addr<WsSession>,
    pub app: AppId,
    pub user: UserKey,
    pub user_id: String,
    pub auth_session: Option<String>,
    pub groups: Vec<String>,
    pub queued: Arc<std::sync::atomic::AtomicUsize>,
}

impl Handler<Connect> for Router {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, msg: Connect, _ctx: &mut Self::Context) -> Self::Result {
        self.connect(msg);
        self.bus.synced()
    }
}

impl Router {
    fn connect(&mut self, msg: Connect) {
        let app = self.intern(msg.app.as_str());
        let slot: Slot = (app.clone(), msg.user.0);
        if self.users.get(&slot).is_some_and(|u| u.sessions.len() >= self.max_per_user) {
            metrics::counter!("natter_ws_connects_total", "result" => "too_many_connections").increment(1);
            msg.addr
                .do_send(Close { code: CloseCode::RateLimited, reason: "too many connections for this user".into() });
            return;
        }
        let count = self.apps.entry(app.clone()).or_insert(0);
        *count += 1;
        if *count == 1 {
            let subject = self.subjects.control(&app);
            self.subscribe(subject, Target::Control(app.clone()));
        }
        let came_online = !self.users.contains_key(&slot);
        if came_online {
            let subject = self.subjects.user(&app, msg.user.0);
            self.subscribe(subject, Target::User(slot.clone()));
            self.users.insert(
                slot.clone(),
                UserEntry { id: msg.user_id.clone(), sessions: Vec::new(), groups: HashSet::new() },
            );
        }
        for group in &msg.groups {
            self.join_group(&app, group, msg.user.0);
        }
        if let Some(user) = self.users.get_mut(&slot) {
            user.sessions.push(msg.id);
            user.groups.extend(msg.groups);
        }
        self.sessions.insert(
            msg.id,
            SessionEntry {
                addr: msg.addr,
                slot: slot.clone(),
                auth_session: msg.auth_session,
                watching: HashSet::new(),
                queued: msg.queued,
            },
        );
        metrics::gauge!("natter_ws_connections").increment(1.0);
        if came_online {
            self.announce_presence(&slot, &msg.user_id, true);
        }
    }
}

#[derive(Message)]
#[rtype(result = "()")]
pub struct Disconnect {
    pub id: u64,
}

impl Handler<Disconnect> for Router {
    type Result = ();

    fn handle(&mut self, msg: Disconnect, _ctx: &mut Self::Context) {
        self.remove_session(msg.id);
    }
}

/// Starts or stops watching users' presence (transitions arrive as `presence` events).
/// Answered once the node's subscriptions to those users' presence are in force, so a state
/// read after it cannot miss a transition.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Watch {
    pub id: u64,
    pub users: Vec<UserKey>,
    pub subscribe: bool,
}

impl Handler<Watch> for Router {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, msg: Watch, _ctx: &mut Self::Context) -> Self::Result {
        if let Some(entry) = self.sessions.get_mut(&msg.id) {
            let app = entry.slot.0.clone();
            let changed: Vec<i64> = msg
                .users
                .iter()
                .map(|u| u.0)
                .filter(|u| if msg.subscribe { entry.watching.insert(*u) } else { entry.watching.remove(u) })
                .collect();
            for user in changed {
                let slot = (app.clone(), user);
                if msg.subscribe {
                    self.watch(slot, msg.id);
                } else {
                    self.unwatch(&slot, msg.id);
                }
            }
        }
        self.bus.synced()
    }
}

/// Closes every session with 4001 (drain), a batch at a time; answers how many remain.
#[derive(Message)]
#[rtype(result = "usize")]
pub struct DrainBatch {
    pub batch: usize,
}

impl Handler<DrainBatch> for Router {
    type Result = usize;

    fn handle(&mut self, msg: DrainBatch, _ctx: &mut Self::Context) -> usize {
        let ids: Vec<u64> = self.sessions.keys().copied().take(msg.batch).collect();
        for id in ids {
            if let Some(entry) = self.sessions.get(&id) {
                entry.addr.do_send(Close {
                    code: CloseCode::ServerShutdown,
                    reason: "server shutting down; reconnect".into(),
                });
            }
            self.remove_session(id);
        }
        self.sessions.len()
    }
}

impl Handler<BusDelivery> for Router {
    type Result = ();

    fn handle(&mut self, msg: BusDelivery, _ctx: &mut Self::Context) {
        let Some(target) = self.targets.get(&msg.subject) else {
            return;
        };
        let (envelope, frame) = match decode(&msg.payload) {
            Ok(parts) => parts,
            Err(e) => {
                tracing::warn!(subject = %msg.subject, error = %e, "undecodable bus payload dropped");
                return;
            }
        };
        let Ok(frame) = ByteString::try_from(frame) else {
            tracing::warn!(subject = %msg.subject, "bus frame is not UTF-8; dropped");
            return;
        };
        let (recipients, control_app) = match target {
            Target::User(slot) => (self.user_sessions(slot), None),
            Target::Group(app, group) => (self.group_sessions(app, group), None),
            Target::Control(app) => (Vec::new(), Some(app.clone())),
            Target::Presence(slot) => {
                (self.watchers.get(slot).map(|s| s.iter().copied().collect()).unwrap_or_default(), None)
            }
        };
        let mut slow = Vec::new();
        match (envelope, control_app) {
            (Envelope::Message { conv, seq, origin, at }, None) => {
                if at > 0 {
                    let took = (crate::domain::now_millis() - at).max(0) as f64 / 1000.0;
                    metrics::histogram!("natter_delivery_duration_seconds").record(took);
                }
                let own = origin.filter(|o| o.node == self.node_id).map(|o| o.session);
                let conv: Arc<str> = Arc::from(conv);
                for id in recipients {
                    let push = Push::Message { conv: conv.clone(), seq, own: own == Some(id), frame: frame.clone() };
                    self.push(id, push, &mut slow);
                }
            }
            (Envelope::Event { origin }, None) => {
                let own = origin.filter(|o| o.node == self.node_id).map(|o| o.session);
                for id in recipients.into_iter().filter(|id| Some(*id) != own) {
                    self.push(id, Push::Event { frame: frame.clone() }, &mut slow);
                }
            }
            (Envelope::Membership { group, added, removed }, Some(app)) => {
                for user in &added {
                    let slot = (app.clone(), *user);
                    if let Some(entry) = self.users.get_mut(&slot) {
                        entry.groups.insert(group.clone());
                        self.join_group(&app, &group, *user);
                    }
                }
                let mut targets = self.group_sessions(&app, &group);
                for user in &removed {
                    for id in self.user_sessions(&(app.clone(), *user)) {
                        if !targets.contains(&id) {
                            targets.push(id);
                        }
                    }
                }
                for id in targets {
                    self.push(id, Push::Event { frame: frame.clone() }, &mut slow);
                }
                for user in &removed {
                    let slot = (app.clone(), *user);
                    if let Some(entry) = self.users.get_mut(&slot) {
                        entry.groups.remove(&group);
                        self.leave_group(&app, &group, *user);
                    }
                }
            }
            (Envelope::Kick { user, session, code }, Some(app)) => {
                let code = CloseCode::from_code(code).unwrap_or(CloseCode::TokenRevoked);
                for id in self.user_sessions(&(app.clone(), user)) {
                    let Some(entry) = self.sessions.get(&id) else { continue };
                    if session.is_some() && entry.auth_session != session {
                        continue;
                    }
                    entry.addr.do_send(Close { code, reason: "token revoked".into() });
                }
            }
            (Envelope::Presence { .. }, None) => {
                for id in recipients {
                    self.push(id, Push::Event { frame: frame.clone() }, &mut slow);
                }
            }
            // Nodes of earlier versions announce presence on the control subject.
            (Envelope::Presence { user, .. }, Some(app)) => {
                let watchers: Vec<u64> =
                    self.watchers.get(&(app.clone(), user)).map(|s| s.iter().copied().collect()).unwrap_or_default();
                for id in watchers {
                    self.push(id, Push::Event { frame: frame.clone() }, &mut slow);
                }
            }
            (Envelope::Renamed { user, id }, Some(app)) => {
                if let Some(entry) = self.users.get_mut(&(app.clone(), user)) {
                    entry.id = id.clone();
                }
                for session in self.user_sessions(&(app.clone(), user)) {
                    if let Some(entry) = self.sessions.get(&session) {
                        entry.addr.do_send(Renamed { id: id.clone() });
                    }
                }
            }
            (other, _) => {
                tracing::warn!(subject = %msg.subject, envelope = ?other, "envelope on the wrong subject dropped")
            }
        }
        if !slow.is_empty() {
            self.drop_slow(slow);
        }
    }
}
