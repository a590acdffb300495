//! Group commit for message appends: concurrent sends (from every session of the node) share one
//! transaction and a handful of set-based statements, whatever the batch size. Each send is
//! answered only after the transaction holding it has committed, so "acked means committed"
//! holds exactly as with one transaction per message.
//!
//! The writer runs on its own thread, runtime and connections: its statements must not wait in
//! line behind thousands of socket tasks on an HTTP worker between every round trip (measured:
//! ~9 ms per batch there, whatever its size). At low load every message is its own batch (no
//! added latency); under load, messages queue while earlier batches commit and batches grow.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::{AnyPool, Row};
use tokio::sync::{mpsc, oneshot};

use super::conversations::{AppendError, Appended, Job, SYSTEM_SENDER, StoredMessage};
use super::sql::Sql;
use super::{Dialect, Store, WriteTx, begin_write_on, observe, pool_options};
use crate::batching;
use crate::domain::{ConversationKind, Role, UserKey};

/// Messages per transaction at most (13 bound values each: well under every placeholder limit).
pub const MAX_BATCH: usize = 256;

type Answer = Result<Appended, AppendError>;
type Queued = (Job, oneshot::Sender<Answer>);

/// The handle sessions send to; the writer thread ends when the last handle is dropped.
pub struct Appender {
    tx: mpsc::UnboundedSender<Queued>,
}

/// Batches in flight at once. Two: one is built and sent while the other waits for its commit
/// (PostgreSQL, 100 DM pairs saturated on the 2-core machine: 1 batch 5,632/s with ~33 per
/// batch, 2 batches 6,308/s with ~15; 4 batches measured worse earlier, when every query also
/// paid a pool ping). Batches in flight may commit in either order, which is safe because a
/// session has one send in flight at a time. SQLite has a single writer: one batch.
const BATCHES_IN_FLIGHT: usize = 2;

/// What the writer thread needs of the store (not the store itself, whose handles keep the
/// writer alive).
#[derive(Clone)]
struct Writer {
    dialect: Dialect,
    sqlite_sync: crate::config::SqliteSync,
    write_gate: Option<Arc<tokio::sync::Mutex<()>>>,
    /// The push coalescing window; None when push is off on this node.
    push_window_ms: Option<i64>,
}

fn abandoned() -> AppendError {
    AppendError::Db(sqlx::Error::Protocol("the message writer stopped".into()))
}

impl Store {
    /// Queues the message and waits until the batch that holds it has committed.
    pub(super) async fn append_batched(&self, job: Job) -> Answer {
        let appender = match self.appender.get() {
            Some(a) => a,
            None => {
                let started = Appender::start(
                    self.url.as_str().to_string(),
                    Writer {
                        dialect: self.dialect,
                        sqlite_sync: self.sqlite_sync,
                        write_gate: self.write_gate.clone(),
                        push_window_ms: self.push_window_ms,
                    },
                )
                .map_err(|e| AppendError::Db(sqlx::Error::Io(e)))?;
                // Two first sends may race: the loser's writer ends with its unused handle.
                let _ = self.appender.set(started);
                self.appender.get().ok_or_else(abandoned)?
            }
        };
        let (tx, rx) = oneshot::channel();
        appender.tx.send((job, tx)).map_err(|_| abandoned())?;
        rx.await.unwrap_or_else(|_| Err(abandoned()))
    }
}

impl Appender {
    fn start(url: String, writer: Writer) -> std::io::Result<Appender> {
        let (tx, rx) = mpsc::unbounded_channel();
        std::thread::Builder::new().name("natter-append".into()).spawn(move || {
            match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(rt) => rt.block_on(run(url, writer, rx)),
                Err(e) => tracing::error!(error = %e, "cannot start the message writer's runtime"),
            }
        })?;
        Ok(Appender { tx })
    }
}

async fn run(url: String, writer: Writer, mut rx: mpsc::UnboundedReceiver<Queued>) {
    // SQLite writes one transaction at a time whatever is in flight.
    let slots = if writer.dialect == Dialect::Sqlite { 1 } else { BATCHES_IN_FLIGHT };
    let pool = loop {
        match pool_options(writer.dialect, slots as u32, writer.sqlite_sync).connect(&url).await {
            Ok(pool) => break pool,
            Err(e) => {
                tracing::warn!(error = %e, "the message writer cannot reach the database; retrying");
                // Refuse what is queued (senders retry with the same client_msg_id) and wait.
                while let Ok((_, reply)) = rx.try_recv() {
                    let _ = reply.send(Err(AppendError::Db(sqlx::Error::Protocol(e.to_string()))));
                }
                if rx.is_closed() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    };
    let policy = batching::Policy { lanes: slots, max: MAX_BATCH };
    batching::serve(rx, policy, batching::never, |batch| write_and_answer(&pool, &writer, batch)).await;
    pool.close().await;
}

async fn write_and_answer(pool: &AnyPool, writer: &Writer, batch: Vec<Queued>) {
    let started = Instant::now();
    let (jobs, replies): (Vec<Job>, Vec<oneshot::Sender<Answer>>) = batch.into_iter().unzip();
    metrics::histogram!("natter_append_batch_size").record(jobs.len() as f64);
    let answers = write_isolating(pool, writer, &jobs).await;
    for (reply, answer) in replies.into_iter().zip(answers) {
        let _ = reply.send(answer);
    }
    observe("message_append_batch", started);
}

/// Writes a batch; when the database refuses it, halves it until the refused message stands
/// alone, so one sender's bad message (whatever slipped past validation) never fails the others
/// it happened to share a transaction with, in any app. A refused transaction wrote nothing, so
/// writing its parts again is safe. Failures that are not the database's verdict on the
/// statements (the connection is gone) fail the whole batch at once.
fn write_isolating<'a>(
    pool: &'a AnyPool,
    writer: &'a Writer,
    jobs: &'a [Job],
) -> std::pin::Pin<Box<dyn std::future::Future<Output = Vec<Answer>> + Send + 'a>> {
    Box::pin(async move {
        match write_with_retries(pool, writer, jobs).await {
            Ok(answers) => answers,
            Err(e) if jobs.len() > 1 && e.as_database_error().is_some() => {
                tracing::warn!(error = %e, messages = jobs.len(), "append batch refused; isolating the culprit");
                metrics::counter!("natter_append_batch_splits_total").increment(1);
                let (left, right) = jobs.split_at(jobs.len() / 2);
                let mut answers = write_isolating(pool, writer, left).await;
                answers.extend(write_isolating(pool, writer, right).await);
                answers
            }
            Err(e) => {
                crate::error::count_db_error(&e);
                tracing::warn!(error = %e, messages = jobs.len(), "append refused");
                let text = e.to_string();
                jobs.iter().map(|_| Err(AppendError::Db(sqlx::Error::Protocol(text.clone())))).collect()
            }
        }
    })
}

async fn write_with_retries(pool: &AnyPool, writer: &Writer, jobs: &[Job]) -> Result<Vec<Answer>, sqlx::Error> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        match write_batch(pool, writer, jobs).await {
            // PostgreSQL chose this transaction as a deadlock or serialization victim: nothing of
            // it was written, so writing it again is safe.
            Err(e) if attempt < 3 && is_retryable(&e) => {
                tracing::debug!(error = %e, attempt, "append batch retried");
                continue;
            }
            other => return other,
        }
    }
}

pub(super) fn is_retryable(e: &sqlx::Error) -> bool {
    e.as_database_error().and_then(|d| d.code()).is_some_and(|c| c == "40P01" || c == "40001")
}

/// Writes one batch in one transaction; one answer per job, in order.
async fn write_batch(pool: &AnyPool, writer: &Writer, jobs: &[Job]) -> Result<Vec<Answer>, sqlx::Error> {
    let mut tx = begin_write_on(pool, writer.dialect, writer.write_gate.as_ref()).await?;
    let mut answers: Vec<Option<Answer>> = (0..jobs.len()).map(|_| None).collect();

    let mut seqs = lock_conversations(&mut tx, writer.dialect, jobs).await?;
    // Known client_msg_ids (answered with the original below) and direct messages to someone who
    // blocks the sender (refused, and no conversation is created for them), in one statement.
    let (mut known, blocked) = known_and_blocked(&mut tx, writer.dialect, jobs).await?;
    for (i, j) in jobs.iter().enumerate() {
        let key = (j.app.clone(), j.conversation.clone(), j.sender.0, j.client_msg_id.clone());
        // A resend of what was stored before the block still answers with the original.
        if blocked.contains(&key) && !known.contains_key(&key) {
            answers[i] = Some(Err(AppendError::Blocked));
        }
    }
    // Direct conversations are created by their first message, in key order: two nodes
    // creating the same two conversations in opposite orders would deadlock.
    let mut missing: Vec<usize> =
        (0..jobs.len()).filter(|i| answers[*i].is_none() && !seqs.contains_key(&jobs[*i].conversation_key())).collect();
    missing.sort_by(|a, b| (&jobs[*a].app, &jobs[*a].conversation).cmp(&(&jobs[*b].app, &jobs[*b].conversation)));
    missing.dedup_by(|a, b| (&jobs[*a].app, &jobs[*a].conversation) == (&jobs[*b].app, &jobs[*b].conversation));
    let mut created_any = false;
    for i in missing {
        let j = &jobs[i];
        match (j.kind, j.recipient) {
            (ConversationKind::Direct, Some(recipient)) => {
                create_direct(&mut tx, j, recipient).await?;
                created_any = true;
            }
            _ => answers[i] = Some(Err(AppendError::NotFound)),
        }
    }
    if created_any {
        seqs = lock_conversations(&mut tx, writer.dialect, jobs).await?;
        // Creating waited for any concurrent batch that created the same conversation first;
        // what that batch stored was invisible to the read above, and a resend from another
        // device must still find it (measured: 1 run in 3 answered a three-device resend with a
        // unique violation before this second read).
        known = known_and_blocked(&mut tx, writer.dialect, jobs).await?.0;
    }
    for (i, j) in jobs.iter().enumerate() {
        if answers[i].is_none() && !seqs.contains_key(&j.conversation_key()) {
            answers[i] = Some(Err(AppendError::NotFound));
        }
    }

    // A group's sends, checked under its row lock: ended groups take none, then only members
    // send, as their mutes allow (the app's own sends, and the server API's, pass every mute).
    let members = active_members(&mut tx, writer.dialect, jobs, &answers).await?;
    let now = crate::domain::now_millis();
    for (i, j) in jobs.iter().enumerate() {
        if answers[i].is_some() || j.kind != ConversationKind::Group {
            continue;
        }
        let Some(head) = seqs.get(&j.conversation_key()) else { continue };
        if head.dissolved {
            answers[i] = Some(Err(AppendError::Dissolved));
            continue;
        }
        if j.sender == SYSTEM_SENDER {
            continue;
        }
        match members.get(&(j.app.clone(), j.conversation.clone(), j.sender.0)) {
            None => answers[i] = Some(Err(AppendError::NotAMember)),
            Some(_) if j.bypass_mutes => {}
            Some((role, silenced_until)) => {
                if let Err(refusal) = crate::roles::may_send(*role, head.muted, *silenced_until, now) {
                    answers[i] = Some(Err(AppendError::Muted(refusal)));
                }
            }
        }
    }

    // Known client_msg_ids answer with the original; so does a repeat inside the batch.
    let mut fresh: Vec<(usize, String, i64)> = Vec::new();
    for (i, j) in jobs.iter().enumerate() {
        if answers[i].is_some() {
            continue;
        }
        let key = (j.app.clone(), j.conversation.clone(), j.sender.0, j.client_msg_id.clone());
        if let Some(found) = known.get(&key) {
            answers[i] = Some(Ok(Appended { created: false, ..found.clone() }));
            continue;
        }
        let Some(head) = seqs.get_mut(&j.conversation_key()) else { continue };
        let seq = head.append(j.sender.0);
        let id = uuid::Uuid::now_v7().simple().to_string();
        let appended = Appended { id: id.clone(), seq, created_at: now, created: true };
        known.insert(key, appended.clone());
        fresh.push((i, id, seq));
        answers[i] = Some(Ok(appended));
    }

    if !fresh.is_empty() {
        insert_messages(&mut tx, writer.dialect, jobs, &fresh, now).await?;
        bump_conversations(&mut tx, writer.dialect, jobs, &fresh, &seqs).await?;
        group_senders_have_read(&mut tx, writer.dialect, jobs, &fresh).await?;
        insert_mentions(&mut tx, writer.dialect, jobs, &fresh).await?;
        if let Some(window) = writer.push_window_ms {
            enqueue_pushes(&mut tx, writer.dialect, jobs, &fresh, &seqs, now, window).await?;
        }
        for (i, id, seq) in &fresh {
            let j = &jobs[*i];
            if j.hook {
                let event = StoredMessage {
                    id: id.clone(),
                    conversation_id: j.conversation.clone(),
                    conversation_kind: j.kind,
                    seq: *seq,
                    sender: j.sender_id.clone(),
                    recipient: j.recipient_id.clone(),
                    client_msg_id: j.client_msg_id.clone(),
                    kind: j.message_kind.clone(),
                    content: j.content.clone(),
                    meta: j.meta.clone(),
                    created_at: now,
                    edited_at: None,
                    recalled: false,
                    deleted: false,
                    reply_to: j.reply_to,
                    mentions: j.mentions.iter().map(|(_, id)| id.clone()).collect(),
                    reactions: Vec::new(),
                    change_seq: 0,
                };
                super::outbox::enqueue(&mut tx, &j.app, "message.sent", &event).await?;
            }
        }
    }
    tx.commit().await?;
    Ok(answers
        .into_iter()
        .map(|a| a.unwrap_or_else(|| Err(AppendError::Db(sqlx::Error::Protocol("message not answered".into())))))
        .collect())
}

/// Locks the batch's conversations in a fixed order (no deadlock between nodes) and reads their
/// last seq. SQLite needs no row lock: its write gate already serialises writers.
/// A conversation's end as the batch sees it: its last seq, and who sent the run of messages
/// that ends it (from which seq).
#[derive(Debug, Clone, Copy)]
struct Head {
    last_seq: i64,
    last_sender: Option<i64>,
    run_start: i64,
    /// A group's switches, read under the same lock as the seq.
    muted: bool,
    dissolved: bool,
    /// Some device of the app is registered for push: only then are push jobs looked for (an
    /// app without devices pays one index probe per batch, inside a statement it runs anyway).
    may_push: bool,
}

impl Head {
    /// The next seq, sent by `sender`.
    fn append(&mut self, sender: i64) -> i64 {
        self.last_seq += 1;
        if self.last_sender != Some(sender) {
            self.last_sender = Some(sender);
            self.run_start = self.last_seq;
        }
        self.last_seq
    }
}

async fn lock_conversations(
    tx: &mut WriteTx,
    dialect: Dialect,
    jobs: &[Job],
) -> Result<HashMap<(String, String), Head>, sqlx::Error> {
    let mut keys: Vec<(&str, &str)> = jobs.iter().map(|j| (j.app.as_str(), j.conversation.as_str())).collect();
    keys.sort_unstable();
    keys.dedup();
    let mut sql = Sql::new(
        dialect,
        "SELECT app_id, id, last_seq, last_sender, run_start, muted, dissolved_at, \
         CAST(CASE WHEN EXISTS (SELECT 1 FROM devices d WHERE d.app_id = conversations.app_id) THEN 1 ELSE 0 END \
         AS BIGINT) AS may_push FROM conversations WHERE (app_id, id) IN (",
    );
    sql.push_tuples(keys, |row, (app, conv)| {
        row.push_bind(app).push_bind(conv);
    });
    sql.push(") ORDER BY app_id, id");
    if dialect == Dialect::Postgres {
        sql.push(" FOR UPDATE");
    }
    let rows = sql.build()?.fetch_all(&mut ***tx).await?;
    rows.iter()
        .map(|r| {
            let head = Head {
                last_seq: r.try_get("last_seq")?,
                last_sender: r.try_get("last_sender")?,
                run_start: r.try_get("run_start")?,
                muted: r.try_get::<i64, _>("muted")? != 0,
                dissolved: r.try_get::<Option<i64>, _>("dissolved_at")?.is_some(),
                may_push: r.try_get::<i64, _>("may_push")? != 0,
            };
            Ok(((r.try_get::<String, _>("app_id")?, r.try_get::<String, _>("id")?), head))
        })
        .collect()
}

async fn create_direct(tx: &mut WriteTx, j: &Job, recipient: UserKey) -> Result<(), sqlx::Error> {
    let now = crate::domain::now_millis();
    sqlx::query(
        "INSERT INTO conversations (app_id, id, kind, created_by, last_seq, created_at) \
         VALUES ($1, $2, 'direct', $3, 0, $4) ON CONFLICT (app_id, id) DO NOTHING",
    )
    .bind(&j.app)
    .bind(&j.conversation)
    .bind(j.sender.0)
    .bind(now)
    .execute(&mut ***tx)
    .await?;
    for user in [j.sender, recipient] {
        sqlx::query(
            "INSERT INTO members (app_id, conversation_id, user_key, role, joined_seq, joined_at) \
             VALUES ($1, $2, $3, 'member', 0, $4) ON CONFLICT (app_id, conversation_id, user_key) DO NOTHING",
        )
        .bind(&j.app)
        .bind(&j.conversation)
        .bind(user.0)
        .bind(now)
        .execute(&mut ***tx)
        .await?;
    }
    Ok(())
}

/// The batch's group senders who are current members, with their role and mute.
async fn active_members(
    tx: &mut WriteTx,
    dialect: Dialect,
    jobs: &[Job],
    answers: &[Option<Answer>],
) -> Result<HashMap<(String, String, i64), (Role, Option<i64>)>, sqlx::Error> {
    let mut keys: Vec<(&str, &str, i64)> = jobs
        .iter()
        .zip(answers)
        .filter(|(j, a)| a.is_none() && j.kind == ConversationKind::Group && j.sender != SYSTEM_SENDER)
        .map(|(j, _)| (j.app.as_str(), j.conversation.as_str(), j.sender.0))
        .collect();
    keys.sort_unstable();
    keys.dedup();
    if keys.is_empty() {
        return Ok(Default::default());
    }
    // A join on VALUES, not a row-value IN list: the planner then probes the index per key.
    let mut sql = Sql::new(
        dialect,
        "SELECT m.app_id, m.conversation_id, m.user_key, m.role, m.silenced_until FROM members m JOIN (VALUES ",
    );
    sql.push_tuples(keys, |row, (app, conv, user)| {
        row.push_bind(app).push_bind(conv).push_bind(user);
    });
    sql.push(
        ") v ON m.app_id = v.column1 AND m.conversation_id = v.column2 AND m.user_key = v.column3 \
         WHERE m.left_seq IS NULL",
    );
    let rows = sql.build()?.fetch_all(&mut ***tx).await?;
    rows.iter()
        .map(|r| {
            let role: String = r.try_get("role")?;
            let role = Role::parse(&role).map_err(|e| sqlx::Error::Decode(Box::new(e)))?;
            let key = (r.try_get("app_id")?, r.try_get("conversation_id")?, r.try_get("user_key")?);
            Ok((key, (role, r.try_get("silenced_until")?)))
        })
        .collect()
}

type IdemKey = (String, String, i64, String);

/// Messages already stored under the batch's client_msg_ids, and the batch's direct messages
/// whose recipient blocks their sender.
async fn known_and_blocked(
    tx: &mut WriteTx,
    dialect: Dialect,
    jobs: &[Job],
) -> Result<(HashMap<IdemKey, Appended>, HashSet<IdemKey>), sqlx::Error> {
    let mut keys: Vec<(&str, &str, i64, &str, Option<i64>)> = jobs
        .iter()
        .map(|j| {
            let recipient = (j.kind == ConversationKind::Direct && j.sender != SYSTEM_SENDER)
                .then_some(j.recipient.map(|r| r.0))
                .flatten();
            (j.app.as_str(), j.conversation.as_str(), j.sender.0, j.client_msg_id.as_str(), recipient)
        })
        .collect();
    keys.sort_unstable();
    keys.dedup();
    // From VALUES, one row per job: PostgreSQL plans a row-value IN list over the primary key's
    // prefix and reads every message of the conversation; the joins probe the idempotency index
    // and the blocks' primary key instead.
    let mut sql = Sql::new(
        dialect,
        "SELECT v.column1 AS app_id, v.column2 AS conversation_id, v.column3 AS sender_key, \
         v.column4 AS client_msg_id, m.id, m.seq, m.created_at, b.user_key AS blocked_by FROM (VALUES ",
    );
    sql.push_tuples(keys, |row, (app, conv, sender, cmid, recipient)| {
        row.push_bind(app).push_bind(conv).push_bind(sender).push_bind(cmid).push_bind(recipient);
    });
    sql.push(
        ") v LEFT JOIN messages m ON m.app_id = v.column1 AND m.conversation_id = v.column2 \
         AND m.sender_key = v.column3 AND m.client_msg_id = v.column4 \
         LEFT JOIN blocks b ON b.app_id = v.column1 AND b.user_key = v.column5 AND b.blocked_key = v.column3",
    );
    let rows = sql.build()?.fetch_all(&mut ***tx).await?;
    let (mut known, mut blocked) = (HashMap::new(), HashSet::new());
    for r in &rows {
        let key: IdemKey = (
            r.try_get("app_id")?,
            r.try_get("conversation_id")?,
            r.try_get("sender_key")?,
            r.try_get("client_msg_id")?,
        );
        if let Some(id) = r.try_get::<Option<String>, _>("id")? {
            let appended =
                Appended { id, seq: r.try_get("seq")?, created_at: r.try_get("created_at")?, created: false };
            known.insert(key.clone(), appended);
        }
        if r.try_get::<Option<i64>, _>("blocked_by")?.is_some() {
            blocked.insert(key);
        }
    }
    Ok((known, blocked))
}

async fn insert_messages(
    tx: &mut WriteTx,
    dialect: Dialect,
    jobs: &[Job],
    fresh: &[(usize, String, i64)],
    now: i64,
) -> Result<(), sqlx::Error> {
    let mut sql = Sql::new(
        dialect,
        "INSERT INTO messages (app_id, conversation_id, seq, id, sender_key, recipient_key, client_msg_id, kind, \
         content, meta, created_at, reply_to, mentions) VALUES ",
    );
    sql.push_tuples(fresh, |row, (i, id, seq)| {
        let j = &jobs[*i];
        row.push_bind(j.app.as_str())
            .push_bind(j.conversation.as_str())
            .push_bind(*seq)
            .push_bind(id.as_str())
            .push_bind(j.sender.0)
            .push_bind(j.recipient.map(|k| k.0))
            .push_bind(j.client_msg_id.as_str())
            .push_bind(j.message_kind.clone())
            .push_bind(j.content.as_str())
            .push_bind(j.meta.clone())
            .push_bind(now)
            .push_bind(j.reply_to)
            .push_bind(mentions_text(&j.mentions));
    });
    sql.build()?.execute(&mut ***tx).await?;
    Ok(())
}

/// One statement per app sets every touched conversation's last seq.
async fn bump_conversations(
    tx: &mut WriteTx,
    dialect: Dialect,
    jobs: &[Job],
    fresh: &[(usize, String, i64)],
    heads: &HashMap<(String, String), Head>,
) -> Result<(), sqlx::Error> {
    let mut by_app: HashMap<&str, Vec<(&str, Head)>> = HashMap::new();
    for (i, _, _) in fresh {
        let j = &jobs[*i];
        let entry = by_app.entry(j.app.as_str()).or_default();
        if !entry.iter().any(|(c, _)| *c == j.conversation)
            && let Some(head) = heads.get(&j.conversation_key())
        {
            entry.push((j.conversation.as_str(), *head));
        }
    }
    for (app, convs) in by_app {
        let mut sql = Sql::new(dialect, "UPDATE conversations SET last_seq = CASE id");
        for (conv, head) in &convs {
            sql.push(" WHEN ").push_bind(*conv).push(" THEN ").push_bind(head.last_seq);
        }
        sql.push(" END, last_sender = CASE id");
        for (conv, head) in &convs {
            sql.push(" WHEN ").push_bind(*conv).push(" THEN ").push_bind(head.last_sender);
        }
        sql.push(" END, run_start = CASE id");
        for (conv, head) in &convs {
            sql.push(" WHEN ").push_bind(*conv).push(" THEN ").push_bind(head.run_start);
        }
        sql.push(" END WHERE app_id = ").push_bind(app).push(" AND id IN (");
        sql.push_list(convs.iter().map(|(conv, _)| *conv)).push(")");
        sql.build()?.execute(&mut ***tx).await?;
    }
    Ok(())
}

/// The mentioned ids as stored for rendering: a JSON array of strings, `None` when there are none.
fn mentions_text(mentions: &[(UserKey, String)]) -> Option<String> {
    if mentions.is_empty() {
        return None;
    }
    let mut text = String::from("[");
    for (n, (_, id)) in mentions.iter().enumerate() {
        if n > 0 {
            text.push(',');
        }
        // Ids are parsed `UserId`s (A-Z a-z 0-9 _ . @ -): nothing in them needs escaping.
        text.push('"');
        text.push_str(id);
        text.push('"');
    }
    text.push(']');
    Some(text)
}

/// A group sender has read what they sent: their read marker moves to their newest message of
/// the batch (never back). Direct conversations keep this on their own row (`Head`).
async fn group_senders_have_read(
    tx: &mut WriteTx,
    dialect: Dialect,
    jobs: &[Job],
    fresh: &[(usize, String, i64)],
) -> Result<(), sqlx::Error> {
    let mut newest: HashMap<(&str, &str, i64), i64> = HashMap::new();
    for (i, _, seq) in fresh {
        let j = &jobs[*i];
        if j.kind == ConversationKind::Group && j.sender != SYSTEM_SENDER {
            let entry = newest.entry((j.app.as_str(), j.conversation.as_str(), j.sender.0)).or_insert(*seq);
            *entry = (*entry).max(*seq);
        }
    }
    if newest.is_empty() {
        return Ok(());
    }
    let mut sql = Sql::new(dialect, "UPDATE members SET read_seq = v.column4 FROM (VALUES ");
    sql.push_tuples(newest, |row, ((app, conv, user), seq)| {
        row.push_bind(app).push_bind(conv).push_bind(user).push_bind(seq);
    });
    sql.push(
        ") v WHERE members.app_id = v.column1 AND members.conversation_id = v.column2 \
         AND members.user_key = v.column3 AND members.read_seq < v.column4",
    );
    sql.build()?.execute(&mut ***tx).await?;
    Ok(())
}

/// Push jobs for the batch's conversations whose app has devices: one row per conversation (its
/// newest message and how many the batch holds), so a conversation's burst inside one batch
/// coalesces like one across batches.
async fn enqueue_pushes(
    tx: &mut WriteTx,
    dialect: Dialect,
    jobs: &[Job],
    fresh: &[(usize, String, i64)],
    heads: &HashMap<(String, String), Head>,
    now: i64,
    window_ms: i64,
) -> Result<(), sqlx::Error> {
    let mut newest: HashMap<(&str, &str), super::push::Stored<'_>> = HashMap::new();
    for (i, _, seq) in fresh {
        let j = &jobs[*i];
        if !heads.get(&j.conversation_key()).is_some_and(|h| h.may_push) {
            continue;
        }
        let entry = newest.entry((j.app.as_str(), j.conversation.as_str())).or_insert(super::push::Stored {
            app: j.app.as_str(),
            conversation: j.conversation.as_str(),
            seq: *seq,
            sender: j.sender.0,
            messages: 0,
        });
        entry.messages += 1;
        if *seq >= entry.seq {
            entry.seq = *seq;
            entry.sender = j.sender.0;
        }
    }
    let stored: Vec<super::push::Stored<'_>> = newest.into_values().collect();
    super::push::enqueue(tx, dialect, &stored, now, window_ms).await?;
    Ok(())
}

async fn insert_mentions(
    tx: &mut WriteTx,
    dialect: Dialect,
    jobs: &[Job],
    fresh: &[(usize, String, i64)],
) -> Result<(), sqlx::Error> {
    let rows: Vec<(&str, i64, &str, i64)> = fresh
        .iter()
        .flat_map(|(i, _, seq)| {
            let j = &jobs[*i];
            j.mentions.iter().map(move |(key, _)| (j.app.as_str(), key.0, j.conversation.as_str(), *seq))
        })
        .collect();
    if rows.is_empty() {
        return Ok(());
    }
    let mut sql = Sql::new(dialect, "INSERT INTO mentions (app_id, user_key, conversation_id, seq) VALUES ");
    sql.push_tuples(rows, |row, (app, user, conv, seq)| {
        row.push_bind(app).push_bind(user).push_bind(conv).push_bind(seq);
    });
    sql.push(" ON CONFLICT (app_id, user_key, conversation_id, seq) DO NOTHING");
    sql.build()?.execute(&mut ***tx).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::Head;

    #[test]
    fn a_head_tracks_who_sent_the_last_run_and_where_it_began() {
        let mut head =
            Head { last_seq: 0, last_sender: None, run_start: 0, muted: false, dissolved: false, may_push: false };
        assert_eq!(head.append(1), 1);
        assert_eq!((head.last_sender, head.run_start), (Some(1), 1));
        head.append(1);
        assert_eq!((head.last_sender, head.run_start), (Some(1), 1), "the same sender extends the run");
        head.append(2);
        head.append(2);
        assert_eq!((head.last_seq, head.last_sender, head.run_start), (4, Some(2), 3), "user 1 has read up to 2");
    }
}
