//! The hub's maps, as plain data: sessions by id, users by (app, key) with their sessions and
//! groups, groups by (app, id) with their local members, presence watchers, and the bus subject
//! each subscription serves. Every change that starts or ends the node's need for a subject, or a
//! user's first or last local session, is reported as an [`Effect`] for the Router to carry out.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
};

use crate::bus::Subjects;

/// A user of an app on this node: (app, user key).
pub type Slot = (Arc<str>, i64);

/// What a subscribed subject carries, and so who gets its deliveries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    User(Slot),
    Group(Arc<str>, String),
    Control(Arc<str>),
    /// A user some local session watches: their presence transitions.
    Presence(Slot),
}

/// Something the Router must do because the registry changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    Subscribe(String),
    Unsubscribe(String),
    /// A user's first local session arrived (`online`) or their last one left.
    Presence {
        app: Arc<str>,
        user: i64,
        id: String,
        online: bool,
    },
}

/// A registered session: its handle (whatever the Router reaches it with) and what it holds.
pub struct SessionEntry<H> {
    pub handle: H,
    pub slot: Slot,
    pub auth_session: Option<String>,
    watching: HashSet<i64>,
}

struct UserEntry {
    id: String,
    sessions: Vec<u64>,
    groups: HashSet<String>,
}

/// A session to register.
pub struct Joining<H> {
    pub id: u64,
    pub app: String,
    pub user: i64,
    pub user_id: String,
    pub auth_session: Option<String>,
    pub groups: Vec<String>,
    pub handle: H,
}

pub struct Registry<H> {
    subjects: Subjects,
    max_per_user: usize,
    sessions: HashMap<u64, SessionEntry<H>>,
    users: HashMap<Slot, UserEntry>,
    groups: HashMap<(Arc<str>, String), HashSet<i64>>,
    watchers: HashMap<Slot, HashSet<u64>>,
    apps: HashMap<Arc<str>, usize>,
    targets: HashMap<String, Target>,
}

impl<H> Registry<H> {
    pub fn new(subjects: Subjects, max_per_user: usize) -> Self {
        Self {
            subjects,
            max_per_user,
            sessions: HashMap::new(),
            users: HashMap::new(),
            groups: HashMap::new(),
            watchers: HashMap::new(),
            apps: HashMap::new(),
            targets: HashMap::new(),
        }
    }

    /// Sessions registered.
    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    pub fn session(&self, id: u64) -> Option<&SessionEntry<H>> {
        self.sessions.get(&id)
    }

    /// What a subscribed subject serves.
    pub fn target(&self, subject: &str) -> Option<&Target> {
        self.targets.get(subject)
    }

    /// Up to `n` session ids (for draining a batch at a time).
    pub fn some_sessions(&self, n: usize) -> Vec<u64> {
        self.sessions.keys().copied().take(n).collect()
    }

    /// The app's shared name, so every map keys the same allocation.
    fn intern(&self, app: &str) -> Arc<str> {
        match self.apps.get_key_value(app) {
            Some((k, _)) => k.clone(),
            None => Arc::from(app),
        }
    }

    fn subscribe(&mut self, subject: String, target: Target, fx: &mut Vec<Effect>) {
        self.targets.insert(subject.clone(), target);
        fx.push(Effect::Subscribe(subject));
    }

    fn unsubscribe(&mut self, subject: String, fx: &mut Vec<Effect>) {
        self.targets.remove(&subject);
        fx.push(Effect::Unsubscribe(subject));
    }

    /// Registers a session; gives the handle back when the user already holds the most sessions
    /// a node allows.
    pub fn connect(&mut self, joining: Joining<H>, fx: &mut Vec<Effect>) -> Result<(), H> {
        let app = self.intern(&joining.app);
        let slot: Slot = (app.clone(), joining.user);
        if self.users.get(&slot).is_some_and(|u| u.sessions.len() >= self.max_per_user) {
            return Err(joining.handle);
        }
        let count = self.apps.entry(app.clone()).or_insert(0);
        *count += 1;
        if *count == 1 {
            let subject = self.subjects.control(&app);
            self.subscribe(subject, Target::Control(app.clone()), fx);
        }
        let came_online = !self.users.contains_key(&slot);
        if came_online {
            let subject = self.subjects.user(&app, joining.user);
            self.subscribe(subject, Target::User(slot.clone()), fx);
            self.users.insert(
                slot.clone(),
                UserEntry { id: joining.user_id.clone(), sessions: Vec::new(), groups: HashSet::new() },
            );
        }
        for group in &joining.groups {
            self.join_group(&app, group, joining.user, fx);
        }
        if let Some(user) = self.users.get_mut(&slot) {
            user.sessions.push(joining.id);
            user.groups.extend(joining.groups);
        }
        self.sessions.insert(
            joining.id,
            SessionEntry { handle: joining.handle, slot, auth_session: joining.auth_session, watching: HashSet::new() },
        );
        if came_online {
            fx.push(Effect::Presence { app, user: joining.user, id: joining.user_id, online: true });
        }
        Ok(())
    }

    /// Forgets a session and whatever only it needed.
    pub fn disconnect(&mut self, id: u64, fx: &mut Vec<Effect>) -> Option<SessionEntry<H>> {
        let entry = self.sessions.remove(&id)?;
        for watched in &entry.watching {
            self.unwatch(&(entry.slot.0.clone(), *watched), id, fx);
        }
        let slot = entry.slot.clone();
        let now_empty = match self.users.get_mut(&slot) {
            Some(user) => {
                user.sessions.retain(|s| *s != id);
                user.sessions.is_empty()
            }
            None => false,
        };
        if now_empty && let Some(user) = self.users.remove(&slot) {
            for group in &user.groups {
                self.leave_group(&slot.0, group, slot.1, fx);
            }
            let subject = self.subjects.user(&slot.0, slot.1);
            self.unsubscribe(subject, fx);
            fx.push(Effect::Presence { app: slot.0.clone(), user: slot.1, id: user.id, online: false });
        }
        let app = slot.0.clone();
        if let Some(count) = self.apps.get_mut(&app) {
            *count -= 1;
            if *count == 0 {
                self.apps.remove(&app);
                let subject = self.subjects.control(&app);
                self.unsubscribe(subject, fx);
            }
        }
        Some(entry)
    }

    /// Starts (or stops) a session's watch of users' presence.
    pub fn watch(&mut self, id: u64, users: &[i64], subscribe: bool, fx: &mut Vec<Effect>) {
        let Some(entry) = self.sessions.get_mut(&id) else { return };
        let app = entry.slot.0.clone();
        let changed: Vec<i64> = users
            .iter()
            .copied()
            .filter(|u| if subscribe { entry.watching.insert(*u) } else { entry.watching.remove(u) })
            .collect();
        for user in changed {
            let slot = (app.clone(), user);
            if subscribe {
                let set = self.watchers.entry(slot.clone()).or_default();
                set.insert(id);
                if set.len() == 1 {
                    let subject = self.subjects.presence(&slot.0, slot.1);
                    self.subscribe(subject, Target::Presence(slot), fx);
                }
            } else {
                self.unwatch(&slot, id, fx);
            }
        }
    }

    fn unwatch(&mut self, slot: &Slot, session: u64, fx: &mut Vec<Effect>) {
        if let Some(set) = self.watchers.get_mut(slot) {
            set.remove(&session);
            if set.is_empty() {
                self.watchers.remove(slot);
                let subject = self.subjects.presence(&slot.0, slot.1);
                self.unsubscribe(subject, fx);
            }
        }
    }

    fn join_group(&mut self, app: &Arc<str>, group: &str, user: i64, fx: &mut Vec<Effect>) {
        let members = self.groups.entry((app.clone(), group.to_string())).or_default();
        let first = members.is_empty();
        members.insert(user);
        if first {
            let subject = self.subjects.group(app, group);
            self.subscribe(subject, Target::Group(app.clone(), group.to_string()), fx);
        }
    }

    fn leave_group(&mut self, app: &Arc<str>, group: &str, user: i64, fx: &mut Vec<Effect>) {
        let key = (app.clone(), group.to_string());
        if let Some(members) = self.groups.get_mut(&key) {
            members.remove(&user);
            if members.is_empty() {
                self.groups.remove(&key);
                let subject = self.subjects.group(app, group);
                self.unsubscribe(subject, fx);
            }
        }
    }

    /// Users of this node who joined a group: their sessions now hear it.
    pub fn add_to_group(&mut self, app: &Arc<str>, group: &str, users: &[i64], fx: &mut Vec<Effect>) {
        for user in users {
            if let Some(entry) = self.users.get_mut(&(app.clone(), *user)) {
                entry.groups.insert(group.to_string());
                self.join_group(app, group, *user, fx);
            }
        }
    }

    /// Users of this node who left a group: their sessions stop hearing it.
    pub fn remove_from_group(&mut self, app: &Arc<str>, group: &str, users: &[i64], fx: &mut Vec<Effect>) {
        for user in users {
            if let Some(entry) = self.users.get_mut(&(app.clone(), *user)) {
                entry.groups.remove(group);
                self.leave_group(app, group, *user, fx);
            }
        }
    }

    /// A user's new public id.
    pub fn rename(&mut self, slot: &Slot, id: &str) {
        if let Some(entry) = self.users.get_mut(slot) {
            entry.id = id.to_string();
        }
    }

    /// The local sessions of a user.
    pub fn user_sessions(&self, slot: &Slot) -> Vec<u64> {
        self.users.get(slot).map_or_else(Vec::new, |u| u.sessions.clone())
    }

    /// The local users a user or group subject reaches (none for control and presence subjects).
    pub fn target_users(&self, target: &Target) -> Vec<Slot> {
        match target {
            Target::User(slot) if self.users.contains_key(slot) => vec![slot.clone()],
            Target::Group(app, group) => self
                .groups
                .get(&(app.clone(), group.clone()))
                .map(|members| members.iter().map(|user| (app.clone(), *user)).collect())
                .unwrap_or_default(),
            _ => Vec::new(),
        }
    }

    /// The local sessions of a group's members.
    pub fn group_sessions(&self, app: &Arc<str>, group: &str) -> Vec<u64> {
        let Some(members) = self.groups.get(&(app.clone(), group.to_string())) else {
            return Vec::new();
        };
        members.iter().flat_map(|user| self.user_sessions(&(app.clone(), *user))).collect()
    }

    /// The local sessions watching a user's presence.
    pub fn watchers_of(&self, slot: &Slot) -> Vec<u64> {
        self.watchers.get(slot).map_or_else(Vec::new, |s| s.iter().copied().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry(max: usize) -> Registry<&'static str> {
        Registry::new(Subjects::new("t"), max)
    }

    fn joining(id: u64, app: &str, user: i64, groups: &[&str]) -> Joining<&'static str> {
        Joining {
            id,
            app: app.into(),
            user,
            user_id: format!("u{user}"),
            auth_session: None,
            groups: groups.iter().map(|g| g.to_string()).collect(),
            handle: "h",
        }
    }

    /// The subjects subscribed (`true`) or unsubscribed (`false`) by these effects, in order.
    fn subjects(fx: &[Effect], subscribe: bool) -> Vec<&str> {
        fx.iter()
            .filter_map(|e| match e {
                Effect::Subscribe(s) if subscribe => Some(s.as_str()),
                Effect::Unsubscribe(s) if !subscribe => Some(s.as_str()),
                _ => None,
            })
            .collect()
    }

    fn subscribed(fx: &[Effect]) -> Vec<&str> {
        subjects(fx, true)
    }

    fn unsubscribed(fx: &[Effect]) -> Vec<&str> {
        subjects(fx, false)
    }

    #[test]
    fn a_users_first_session_subscribes_and_goes_online_and_the_second_changes_nothing() {
        let mut r = registry(5);
        let mut fx = Vec::new();
        r.connect(joining(1, "a", 7, &["g"]), &mut fx).unwrap();
        assert_eq!(subscribed(&fx), vec!["t.a.control", "t.a.user.7", "t.a.group.g"]);
        assert!(fx.contains(&Effect::Presence { app: Arc::from("a"), user: 7, id: "u7".into(), online: true }));
        let mut fx = Vec::new();
        r.connect(joining(2, "a", 7, &["g"]), &mut fx).unwrap();
        assert!(fx.is_empty(), "{fx:?}");
        assert_eq!(r.user_sessions(&(Arc::from("a"), 7)), vec![1, 2]);
        assert_eq!(r.target("t.a.group.g"), Some(&Target::Group(Arc::from("a"), "g".into())));
    }

    #[test]
    fn the_last_session_of_a_user_unsubscribes_what_only_it_needed_and_goes_offline() {
        let mut r = registry(5);
        let mut fx = Vec::new();
        r.connect(joining(1, "a", 7, &["g"]), &mut fx).unwrap();
        r.connect(joining(2, "a", 8, &["g"]), &mut fx).unwrap();
        let mut fx = Vec::new();
        r.disconnect(1, &mut fx).unwrap();
        assert_eq!(unsubscribed(&fx), vec!["t.a.user.7"], "the group and app stay for user 8");
        assert!(fx.contains(&Effect::Presence { app: Arc::from("a"), user: 7, id: "u7".into(), online: false }));
        let mut fx = Vec::new();
        r.disconnect(2, &mut fx).unwrap();
        assert_eq!(unsubscribed(&fx), vec!["t.a.group.g", "t.a.user.8", "t.a.control"]);
        assert!(r.is_empty() && r.target("t.a.control").is_none());
        assert!(r.disconnect(2, &mut Vec::new()).is_none(), "twice is harmless");
    }

    #[test]
    fn a_subject_reaches_its_local_users_once_each() {
        let mut r = registry(5);
        let mut fx = Vec::new();
        r.connect(joining(1, "a", 7, &["g"]), &mut fx).unwrap();
        r.connect(joining(2, "a", 7, &["g"]), &mut fx).unwrap();
        r.connect(joining(3, "a", 8, &["g"]), &mut fx).unwrap();
        let group = r.target("t.a.group.g").unwrap().clone();
        let mut users: Vec<i64> = r.target_users(&group).into_iter().map(|s| s.1).collect();
        users.sort_unstable();
        assert_eq!(users, vec![7, 8], "two sessions of user 7 are one reader");
        let user = r.target("t.a.user.8").unwrap().clone();
        assert_eq!(r.target_users(&user), vec![(Arc::from("a"), 8)]);
        assert!(r.target_users(&Target::Control(Arc::from("a"))).is_empty());
        r.disconnect(3, &mut fx);
        assert!(r.target_users(&user).is_empty(), "a user with no session left reaches nobody");
    }

    #[test]
    fn a_user_past_the_per_node_limit_is_refused_with_its_handle_back() {
        let mut r = registry(2);
        let mut fx = Vec::new();
        r.connect(joining(1, "a", 7, &[]), &mut fx).unwrap();
        r.connect(joining(2, "a", 7, &[]), &mut fx).unwrap();
        assert_eq!(r.connect(joining(3, "a", 7, &[]), &mut fx).err(), Some("h"));
        assert_eq!(r.len(), 2);
    }

    #[test]
    fn presence_watches_are_reference_counted_per_watched_user() {
        let mut r = registry(5);
        let mut fx = Vec::new();
        r.connect(joining(1, "a", 7, &[]), &mut fx).unwrap();
        r.connect(joining(2, "a", 8, &[]), &mut fx).unwrap();
        let mut fx = Vec::new();
        r.watch(1, &[9], true, &mut fx);
        r.watch(2, &[9], true, &mut fx);
        r.watch(2, &[9], true, &mut fx);
        assert_eq!(subscribed(&fx), vec!["t.a.presence.9"]);
        assert_eq!(r.watchers_of(&(Arc::from("a"), 9)).len(), 2);
        let mut fx = Vec::new();
        r.watch(1, &[9], false, &mut fx);
        assert!(fx.is_empty());
        r.disconnect(2, &mut fx);
        assert!(unsubscribed(&fx).contains(&"t.a.presence.9"), "the last watcher's end unsubscribes");
    }

    #[test]
    fn group_membership_changes_follow_local_users_only() {
        let mut r = registry(5);
        let app: Arc<str> = Arc::from("a");
        let mut fx = Vec::new();
        r.connect(joining(1, "a", 7, &[]), &mut fx).unwrap();
        let mut fx = Vec::new();
        r.add_to_group(&app, "g", &[7, 99], &mut fx);
        assert_eq!(subscribed(&fx), vec!["t.a.group.g"], "user 99 is not on this node");
        assert_eq!(r.group_sessions(&app, "g"), vec![1]);
        let mut fx = Vec::new();
        r.remove_from_group(&app, "g", &[7], &mut fx);
        assert_eq!(unsubscribed(&fx), vec!["t.a.group.g"]);
        assert!(r.group_sessions(&app, "g").is_empty());
        // Leaving later does not unsubscribe the group twice.
        let mut fx = Vec::new();
        r.disconnect(1, &mut fx);
        assert!(!unsubscribed(&fx).contains(&"t.a.group.g"));
    }

    #[test]
    fn apps_never_share_users_groups_or_subjects() {
        let mut r = registry(5);
        let mut fx = Vec::new();
        r.connect(joining(1, "a", 7, &["g"]), &mut fx).unwrap();
        r.connect(joining(2, "b", 7, &["g"]), &mut fx).unwrap();
        assert_eq!(r.user_sessions(&(Arc::from("a"), 7)), vec![1]);
        assert_eq!(r.group_sessions(&Arc::from("b"), "g"), vec![2]);
        assert!(r.target("t.b.user.7").is_some() && r.target("t.a.user.7").is_some());
    }
}
