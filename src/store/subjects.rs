//! What a new connection reads of its token's subject, batched across connections.
//!
//! Every socket that opens needs its user, whether its token's session still stands, and the
//! conversations it is in. In a connect storm each of those reads spent most of its time waiting
//! for a database backend to be scheduled, twice per round trip, with the node's connections
//! all busy waiting. Readers here take whatever queued while their previous statement ran and
//! answer it with one statement (the same group-commit idea as the message writer), so a storm
//! costs a round trip per batch, not per connection.

use std::{
    collections::HashMap,
    sync::{Arc, OnceLock},
    time::Instant,
};

use sqlx::{AnyPool, Row};
use tokio::sync::{mpsc, oneshot};

use super::{
    Dialect, Store,
    conversations::Active,
    held::Held,
    observe,
    sql::Sql,
    users::{USER_COLUMNS, UserRecord, row_to_user},
};
use crate::batching;
use crate::domain::{AppId, UserKey};

/// The subject of a token as a connection needs it: the user, whether the token's session (if
/// any) is unrevoked, and the conversations the user is in.
pub type Subject = (UserRecord, bool, Vec<Active>);

/// Requests answered by one statement at most.
const MAX_BATCH: usize = 64;

/// Statements are padded to these sizes (see [`statement`]).
const SIZES: [usize; 4] = [1, 4, 16, MAX_BATCH];

/// Readers per node: one batch is read while the next gathers.
const READERS: usize = 2;

struct Request {
    app: AppId,
    key: UserKey,
    session: Option<String>,
    reply: oneshot::Sender<Result<Option<Subject>, sqlx::Error>>,
}

/// The queue the readers serve; started on first use, and again if its runtime went away.
#[derive(Default)]
pub(super) struct Batcher {
    tx: std::sync::Mutex<Option<mpsc::UnboundedSender<Request>>>,
}

impl Batcher {
    fn sender(&self, pool: &AnyPool, held: &Arc<Held>, dialect: Dialect) -> Option<mpsc::UnboundedSender<Request>> {
        let mut slot = self.tx.lock().ok()?;
        if let Some(tx) = slot.as_ref().filter(|tx| !tx.is_closed()) {
            return Some(tx.clone());
        }
        // On the runtime of the first connection to ask (the readers' runtime going away closes
        // the queue, and the next connection starts them anew).
        let runtime = tokio::runtime::Handle::try_current().ok()?;
        let (tx, rx) = mpsc::unbounded_channel();
        let (pool, held) = (pool.clone(), held.clone());
        let policy = batching::Policy { lanes: READERS, max: MAX_BATCH };
        runtime.spawn(batching::serve(rx, policy, batching::never, move |batch| {
            read_and_answer(pool.clone(), held.clone(), dialect, batch)
        }));
        *slot = Some(tx.clone());
        Some(tx)
    }
}

async fn read_and_answer(pool: AnyPool, held: Arc<Held>, dialect: Dialect, batch: Vec<Request>) {
    let started = Instant::now();
    let result = read_batch(&pool, &held, dialect, &batch).await;
    observe("connect_subject_batch", started);
    metrics::histogram!("natter_connect_subject_batch_size").record(batch.len() as f64);
    match result {
        Ok(mut found) => {
            for (i, request) in batch.into_iter().enumerate() {
                let _ = request.reply.send(Ok(found.remove(&i)));
            }
        }
        Err(e) => {
            let message = e.to_string();
            for request in batch {
                let _ = request.reply.send(Err(sqlx::Error::Protocol(message.clone())));
            }
        }
    }
}

/// The statement for a batch: padded to the next of [`SIZES`] with rows that name no user (keys
/// are positive), so each connection prepares a handful of statements rather than one per size.
fn statement(dialect: Dialect, batch: &[Request]) -> Sql<'_> {
    static USER_COLUMNS_OF_U: OnceLock<String> = OnceLock::new();
    let user_columns = USER_COLUMNS_OF_U
        .get_or_init(|| USER_COLUMNS.split(',').map(|c| format!("u.{}", c.trim())).collect::<Vec<_>>().join(", "));
    let size = SIZES.iter().copied().find(|s| *s >= batch.len()).unwrap_or(MAX_BATCH);
    let mut sql = Sql::new(dialect, "SELECT v.column1 AS req, ");
    sql.push(user_columns).push(
        ", s.id AS session_found, s.revoked_at AS session_revoked_at, \
         m.conversation_id AS conv_id, c.kind AS conv_kind, c.last_seq AS conv_head FROM (VALUES ",
    );
    sql.push_tuples(0..size, |row, i| {
        match batch.get(i) {
            Some(r) => {
                row.push_bind(i as i64).push_bind(r.app.as_str()).push_bind(r.key.0).push_bind(r.session.as_deref())
            }
            None => row.push_bind(i as i64).push_bind("").push_bind(-1_i64).push_bind(None::<&str>),
        };
    });
    // Joined by primary key per request row: no plan here depends on an app's size.
    sql.push(
        ") v JOIN users u ON u.user_key = v.column3 AND u.app_id = v.column2 \
         LEFT JOIN auth_sessions s ON s.id = v.column4 AND s.user_key = u.user_key \
         LEFT JOIN members m ON m.app_id = u.app_id AND m.user_key = u.user_key AND m.left_seq IS NULL \
         LEFT JOIN conversations c ON c.app_id = m.app_id AND c.id = m.conversation_id",
    );
    sql
}

async fn read_batch(
    pool: &AnyPool,
    held: &Held,
    dialect: Dialect,
    batch: &[Request],
) -> Result<HashMap<usize, Subject>, sqlx::Error> {
    let mut sql = statement(dialect, batch);
    let query = sql.build()?;
    let mut conn = held.take(pool).await?;
    let rows = query.fetch_all(&mut *conn).await;
    let rows = conn.finish(rows)?;

    let mut found: HashMap<usize, Subject> = HashMap::with_capacity(batch.len());
    for row in &rows {
        let req: i64 = row.try_get("req")?;
        let Some(request) = usize::try_from(req).ok().and_then(|i| batch.get(i).map(|r| (i, r))) else { continue };
        let (i, request) = request;
        let subject = match found.entry(i) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => {
                let user = row_to_user(row)?;
                let session_ok = match request.session {
                    None => true,
                    Some(_) => {
                        let session: Option<String> = row.try_get("session_found")?;
                        let revoked_at: Option<i64> = row.try_get("session_revoked_at")?;
                        session.is_some() && revoked_at.is_none()
                    }
                };
                e.insert((user, session_ok, Vec::new()))
            }
        };
        let id: Option<String> = row.try_get("conv_id")?;
        let kind: Option<String> = row.try_get("conv_kind")?;
        if let (Some(id), Some(kind)) = (id, kind) {
            subject.2.push(Active { id, group: kind == "group", head: row.try_get("conv_head")? });
        }
    }
    Ok(found)
}

impl Store {
    /// The token subject of a connection (see [`Subject`]), read in a batch with other
    /// connections' (module docs). `None` when the user does not exist in this app.
    pub async fn connect_subject(
        &self,
        app: &AppId,
        key: UserKey,
        session_id: Option<&str>,
    ) -> Result<Option<Subject>, sqlx::Error> {
        let started = Instant::now();
        let (reply, answer) = oneshot::channel();
        let request = Request { app: app.clone(), key, session: session_id.map(str::to_string), reply };
        let stopped = || sqlx::Error::Protocol("the connection reader stopped".into());
        let tx = self.subjects.sender(&self.pool, &self.held, self.dialect).ok_or_else(stopped)?;
        tx.send(request).map_err(|_| stopped())?;
        let result = answer.await.map_err(|_| stopped())?;
        observe("connect_subject", started);
        result
    }
}
