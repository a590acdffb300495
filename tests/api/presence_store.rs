//! Batched presence in the store, on real PostgreSQL and SQLite: one transition per user however
//! the changes of several nodes are batched and interleaved.

use crate::common;

use std::collections::HashMap;

use natter::{
    config::{AppSettings, DatabaseConfig, Secret},
    domain::{AppId, Name, UserId, UserKey, UserKind},
    store::{
        Store,
        outbox::Hooks,
        presence::{Change, MAX_CHANGES},
        users::NewUser,
    },
};

const LEASE_MS: i64 = 60_000;

async fn store_at(url: String) -> Store {
    let store = Store::connect(&DatabaseConfig {
        url: Secret::new(url),
        max_connections: 8,
        sqlite_synchronous: natter::config::SqliteSync::Full,
    })
    .await
    .expect("store connects");
    store.migrate().await.expect("migrations apply");
    store.renew_lease("n1", LEASE_MS).await.unwrap();
    store.renew_lease("n2", LEASE_MS).await.unwrap();
    store
}

async fn users(store: &Store, app: &AppId, n: usize) -> Vec<UserKey> {
    store.create_app(app, &AppSettings::default()).await.unwrap();
    let mut keys = Vec::with_capacity(n);
    for i in 0..n {
        let id = UserId::parse(format!("{}-u{i}", app.as_str())).unwrap();
        let name = Name::parse("Test").unwrap();
        let user = store
            .insert_user(NewUser {
                app,
                id: &id,
                email: None,
                password_hash: None,
                first_name: &name,
                last_name: &name,
                kind: UserKind::User,
                hooks: &Hooks::default(),
                via: "import",
            })
            .await
            .unwrap();
        keys.push(user.key);
    }
    keys
}

fn changes(app: &AppId, keys: &[UserKey], online: bool) -> Vec<Change> {
    keys.iter().map(|k| Change { app: app.clone(), user: *k, online }).collect()
}

async fn apply(store: &Store, node: &str, changes: &[Change]) -> Vec<bool> {
    let now = natter::domain::now_millis();
    store.apply_presence(node, now, changes, &HashMap::new()).await.expect("presence batch applies")
}

fn count(transitions: &[bool]) -> usize {
    transitions.iter().filter(|t| **t).count()
}

/// The whole story on one store: batches from two nodes, a concurrent storm, another app's user.
async fn batches_report_each_transition_once(store: Store) {
    let app = AppId::parse("acme").unwrap();
    let keys = users(&store, &app, 120).await;
    let (first, second) = keys.split_at(60);

    // Node 1 brings everyone online in one batch: every change is a transition.
    let all = changes(&app, &keys, true);
    assert_eq!(count(&apply(&store, "n1", &all).await), 120);
    assert_eq!(store.online_users(&app, &keys).await.unwrap().len(), 120);

    // The same users arriving on node 2 are not news.
    assert_eq!(count(&apply(&store, "n2", &changes(&app, first, true)).await), 0);

    // Node 1 lets everyone go: only those node 2 does not hold go offline, with a last-seen time.
    let gone = apply(&store, "n1", &changes(&app, &keys, false)).await;
    assert!(gone[..60].iter().all(|t| !t), "users still on node 2 stay online");
    assert!(gone[60..].iter().all(|t| *t), "users on no other node go offline");
    let online = store.online_users(&app, &keys).await.unwrap();
    assert_eq!(online.len(), 60);
    assert!(first.iter().all(|k| online.contains(k)));
    let seen = store.user_by_key(&app, second[0]).await.unwrap().unwrap();
    assert!(seen.last_seen_at.is_some(), "a user who went offline has a last-seen time");
    assert_eq!(count(&apply(&store, "n2", &changes(&app, first, false)).await), 60);
    assert!(store.online_users(&app, &keys).await.unwrap().is_empty());

    // Both nodes bring the same users online at once: exactly one of them sees each transition.
    let (a, b) = tokio::join!(apply(&store, "n1", &all), apply(&store, "n2", &all));
    for (i, (x, y)) in a.iter().zip(&b).enumerate() {
        assert!(x ^ y, "user {i}: node 1 saw {x}, node 2 saw {y}; exactly one must");
    }

    // A key of another app changes nothing in this one, and is no transition.
    let other = AppId::parse("other").unwrap();
    let stranger = users(&store, &other, 1).await;
    let wrong_app = vec![Change { app: app.clone(), user: stranger[0], online: true }];
    assert_eq!(apply(&store, "n1", &wrong_app).await, vec![false]);
    assert!(store.online_users(&other, &stranger).await.unwrap().is_empty());
    assert!(store.online_users(&app, &stranger).await.unwrap().is_empty());

    // The largest batch the workers form fits every placeholder limit.
    let many = users(&store, &AppId::parse("big").unwrap(), MAX_CHANGES).await;
    let big = changes(&AppId::parse("big").unwrap(), &many, true);
    assert_eq!(count(&apply(&store, "n1", &big).await), MAX_CHANGES);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_batches_on_postgres_report_each_transition_once() {
    let (url, name) = common::fresh_postgres();
    let store = store_at(url).await;
    tokio::time::timeout(std::time::Duration::from_secs(60), batches_report_each_transition_once(store.clone()))
        .await
        .expect("finishes within a minute");
    store.close().await;
    common::drop_postgres(&name);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_batches_on_sqlite_report_each_transition_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_at(format!("sqlite://{}", dir.path().join("p.db").display())).await;
    tokio::time::timeout(std::time::Duration::from_secs(60), batches_report_each_transition_once(store.clone()))
        .await
        .expect("finishes within a minute");
    store.close().await;
}
