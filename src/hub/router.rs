//! The node-local Router actor: it owns the [`Registry`], keeps the bus subscribed to exactly
//! the subjects its sessions need, and hands each bus payload to the local sessions it concerns
//! with `try_send`: a full session mailbox, or more than `ws.outbound_queue_bytes` not yet
//! written, gets that session closed with 4002 instead of blocking anyone else.

use std::{collections::HashMap, sync::Arc};

use actix::{Actor, Context, Handler, Message, ResponseFuture};
use bytestring::ByteString;

use super::{
    Push, SessionHandle, ToSession,
    registry::{Effect, Joining, Registry, Slot, Target},
};
use crate::{
    bus::{Bus, BusDelivery, Envelope, Subjects, decode},
    domain::{AppId, UserKey},
    error::CloseCode,
    presence::Presence,
};

pub struct Router {
    node_id: String,
    bus: Arc<dyn Bus>,
    presence: Presence,
    max_queued_bytes: usize,
    registry: Registry<SessionHandle>,
    /// Conversations whose readers' unread counts changed since the counts were last pushed,
    /// by the subject that carried the change, and who sent into them meanwhile (taken by
    /// `inbox::push_unread` with [`TakeUnread`], which expands them to the local users then).
    /// One entry per conversation and window, not one per recipient and message: a
    /// 1,000-member group at 100 msg/s was 100,000 inserts a second on the delivery path.
    unread: HashMap<String, HashMap<Arc<str>, Senders>>,
}

/// Who sent into a conversation during an unread window: the one sender's own count did not
/// change (sending moves one's marker); with more than one, everyone's did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Senders {
    One(i64),
    Many,
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
        let registry = Registry::new(subjects, max_per_user);
        Self { node_id, bus, presence, max_queued_bytes, registry, unread: HashMap::new() }
    }

    /// Notes that the readers of `conv` this subject reaches (but `sender`) have a new unread
    /// count.
    fn unread_changed(&mut self, subject: &str, sender: i64, conv: &Arc<str>) {
        // Looked up by `&str` first: a window's later messages allocate nothing.
        let convs = match self.unread.get_mut(subject) {
            Some(convs) => convs,
            None => self.unread.entry(subject.to_string()).or_default(),
        };
        let noted = convs.entry(conv.clone()).or_insert(Senders::One(sender));
        if *noted != Senders::One(sender) {
            *noted = Senders::Many;
        }
    }

    /// Carries out what a registry change requires: bus subscriptions, and a user's first or last
    /// local session handed to the presence worker (which decides whether it is a cluster-wide
    /// transition).
    fn apply(&self, effects: Vec<Effect>) {
        for effect in effects {
            match effect {
                Effect::Subscribe(subject) => self.bus.subscribe(&subject),
                Effect::Unsubscribe(subject) => self.bus.unsubscribe(&subject),
                Effect::Presence { app, user, id, online } => {
                    if let Ok(app) = AppId::parse(app.to_string()) {
                        self.presence.report(app, UserKey(user), id, online);
                    }
                }
            }
        }
    }

    /// Once the node's subscription to the group is in force, the added members' local sessions
    /// read what they may have missed before it was.
    fn catch_up(&self, app: &Arc<str>, group: &str, added: &[i64]) {
        let handles: Vec<SessionHandle> = added
            .iter()
            .flat_map(|user| self.registry.user_sessions(&(app.clone(), *user)))
            .filter_map(|id| self.registry.session(id).map(|entry| entry.handle.clone()))
            .collect();
        if handles.is_empty() {
            return;
        }
        let conv: Arc<str> = Arc::from(group);
        let synced = self.bus.synced();
        actix_rt::spawn(async move {
            synced.await;
            for handle in handles {
                handle.mailbox.do_send(ToSession::CatchUp { conv: conv.clone() });
            }
        });
    }

    fn remove_session(&mut self, id: u64) {
        let mut fx = Vec::new();
        if self.registry.disconnect(id, &mut fx).is_some() {
            metrics::gauge!("natter_ws_connections").decrement(1.0);
        }
        self.apply(fx);
    }

    /// Hands a push to a session. A full mailbox, or more than `ws.outbound_queue_bytes` not
    /// yet written, means the client reads too slowly: it is closed (4002) rather than buffered.
    fn push(&self, id: u64, push: Push, slow: &mut Vec<u64>) {
        use std::sync::atomic::Ordering;
        let Some(entry) = self.registry.session(id) else { return };
        let size = push.len();
        if entry.handle.queued_bytes() + size > self.max_queued_bytes {
            slow.push(id);
            return;
        }
        match entry.handle.mailbox.try_send(ToSession::Push(push)) {
            Ok(()) => {
                entry.handle.queued.fetch_add(size, Ordering::Relaxed);
            }
            Err(_) => slow.push(id),
        }
    }

    fn drop_slow(&mut self, slow: Vec<u64>) {
        for id in slow {
            if let Some(entry) = self.registry.session(id) {
                metrics::counter!("natter_ws_slow_consumer_drops_total").increment(1);
                entry.handle.close(CloseCode::TooSlow, "too slow reading; reconnect");
            }
            self.remove_session(id);
        }
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
pub struct Connect(pub Joining<SessionHandle>);

impl Handler<Connect> for Router {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, msg: Connect, _ctx: &mut Self::Context) -> Self::Result {
        self.connect(msg);
        self.bus.synced()
    }
}

impl Router {
    fn connect(&mut self, Connect(joining): Connect) {
        let mut fx = Vec::new();
        match self.registry.connect(joining, &mut fx) {
            Ok(()) => metrics::gauge!("natter_ws_connections").increment(1.0),
            Err(handle) => {
                metrics::counter!("natter_ws_connects_total", "result" => "too_many_connections").increment(1);
                handle.close(CloseCode::RateLimited, "too many connections for this user");
            }
        }
        self.apply(fx);
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
        let users: Vec<i64> = msg.users.iter().map(|u| u.0).collect();
        let mut fx = Vec::new();
        self.registry.watch(msg.id, &users, msg.subscribe, &mut fx);
        self.apply(fx);
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
        for id in self.registry.some_sessions(msg.batch) {
            if let Some(entry) = self.registry.session(id) {
                entry.handle.close(CloseCode::ServerShutdown, "server shutting down; reconnect");
            }
            self.remove_session(id);
        }
        self.registry.len()
    }
}

/// No user key: everyone's count is noted.
const NOBODY: i64 = -1;

/// The local users whose unread counts changed since the last call, with the conversations.
#[derive(Message)]
#[rtype(result = "Vec<UnreadDue>")]
pub struct TakeUnread;

/// A local user whose unread count changed in these conversations.
pub struct UnreadDue {
    pub user: Slot,
    pub conversations: Vec<Arc<str>>,
}

impl Handler<TakeUnread> for Router {
    type Result = Vec<UnreadDue>;

    fn handle(&mut self, _: TakeUnread, _ctx: &mut Self::Context) -> Self::Result {
        let mut due: HashMap<Slot, Vec<Arc<str>>> = HashMap::new();
        for (subject, noted) in std::mem::take(&mut self.unread) {
            let Some(target) = self.registry.target(&subject) else { continue };
            let users = self.registry.target_users(target);
            for (conv, senders) in noted {
                for user in users.iter().filter(|u| senders != Senders::One(u.1)) {
                    let convs = due.entry(user.clone()).or_default();
                    if !convs.contains(&conv) {
                        convs.push(conv.clone());
                    }
                }
            }
        }
        due.into_iter().map(|(user, conversations)| UnreadDue { user, conversations }).collect()
    }
}

/// `unread` events for every local session of some users (each user with the frame meant for
/// them); a session writes them with its next frame, or within `UNREAD_HOLD`.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ToLocalUsers {
    pub events: Vec<(Slot, ByteString)>,
}

impl Handler<ToLocalUsers> for Router {
    type Result = ();

    fn handle(&mut self, msg: ToLocalUsers, _ctx: &mut Self::Context) {
        let mut slow = Vec::new();
        for (user, frame) in msg.events {
            for id in self.registry.user_sessions(&user) {
                self.push(id, Push::Unread { frame: frame.clone() }, &mut slow);
            }
        }
        self.drop_slow(slow);
    }
}

impl Handler<BusDelivery> for Router {
    type Result = ();

    fn handle(&mut self, msg: BusDelivery, _ctx: &mut Self::Context) {
        let Some(target) = self.registry.target(&msg.subject) else {
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
            Target::User(slot) => (self.registry.user_sessions(slot), None),
            Target::Group(app, group) => (self.registry.group_sessions(app, group), None),
            Target::Control(app) => (Vec::new(), Some(app.clone())),
            Target::Presence(slot) => (self.registry.watchers_of(slot), None),
        };
        let mut slow = Vec::new();
        match (envelope, control_app) {
            (Envelope::Message { conv, seq, origin, at, sender }, None) => {
                if at > 0 {
                    let took = (crate::domain::now_millis() - at).max(0) as f64 / 1000.0;
                    metrics::histogram!("natter_delivery_duration_seconds").record(took);
                }
                let origin = origin.filter(|o| o.node == self.node_id).map(|o| o.session);
                let conv: Arc<str> = Arc::from(conv);
                self.unread_changed(&msg.subject, sender, &conv);
                for id in recipients {
                    let push = Push::Message { conv: conv.clone(), seq, origin, frame: frame.clone() };
                    self.push(id, push, &mut slow);
                }
            }
            (Envelope::Event { origin, unread_in }, None) => {
                if let Some(conv) = unread_in {
                    // The actor's own count changes too when they removed another's unread message.
                    self.unread_changed(&msg.subject, NOBODY, &Arc::from(conv));
                }
                let own = origin.filter(|o| o.node == self.node_id).map(|o| o.session);
                for id in recipients.into_iter().filter(|id| Some(*id) != own) {
                    self.push(id, Push::Event { frame: frame.clone() }, &mut slow);
                }
            }
            (Envelope::Membership { group, added, removed }, Some(app)) => {
                let mut fx = Vec::new();
                self.registry.add_to_group(&app, &group, &added, &mut fx);
                // The removed members hear of their own removal, then stop hearing the group.
                let mut targets = self.registry.group_sessions(&app, &group);
                for user in &removed {
                    for id in self.registry.user_sessions(&(app.clone(), *user)) {
                        if !targets.contains(&id) {
                            targets.push(id);
                        }
                    }
                }
                for id in targets {
                    self.push(id, Push::Event { frame: frame.clone() }, &mut slow);
                }
                self.registry.remove_from_group(&app, &group, &removed, &mut fx);
                self.apply(fx);
                self.catch_up(&app, &group, &added);
            }
            (Envelope::Kick { user, session, code }, Some(app)) => {
                let code = CloseCode::from_code(code).unwrap_or(CloseCode::TokenRevoked);
                for id in self.registry.user_sessions(&(app.clone(), user)) {
                    let Some(entry) = self.registry.session(id) else { continue };
                    if session.is_some() && entry.auth_session != session {
                        continue;
                    }
                    let reason = if code == CloseCode::Banned { "banned" } else { "token revoked" };
                    entry.handle.close(code, reason);
                }
            }
            (Envelope::Presence { .. }, None) => {
                for id in recipients {
                    self.push(id, Push::Event { frame: frame.clone() }, &mut slow);
                }
            }
            // Nodes of earlier versions announce presence on the control subject.
            (Envelope::Presence { user, .. }, Some(app)) => {
                for id in self.registry.watchers_of(&(app.clone(), user)) {
                    self.push(id, Push::Event { frame: frame.clone() }, &mut slow);
                }
            }
            (Envelope::Renamed { user, id }, Some(app)) => {
                let slot: Slot = (app.clone(), user);
                self.registry.rename(&slot, &id);
                for session in self.registry.user_sessions(&slot) {
                    if let Some(entry) = self.registry.session(session) {
                        entry.handle.mailbox.do_send(ToSession::Renamed { id: id.clone() });
                    }
                }
            }
            (Envelope::Unwatch { user, target }, Some(app)) => {
                let mut fx = Vec::new();
                for session in self.registry.user_sessions(&(app.clone(), user)) {
                    self.registry.watch(session, &[target], false, &mut fx);
                }
                self.apply(fx);
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
