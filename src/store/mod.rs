//! The source of truth: sqlx over SQLite (embedded) or PostgreSQL (cluster).
//!
//! Both dialects run the same query text through sqlx's `Any` driver (`$1` placeholders work on
//! both); only the migrations differ. Statements with a variable number of values are built by
//! `sql` (the dialect's placeholders). Every query names its app. Timestamps are unix milliseconds.

/// A member's read marker as SQL over `members m` and `conversations c`: what they marked read,
/// or, in a direct conversation, further where sending moved it: everything when the last message
/// is theirs, else up to just before the other's current run of messages (see `batch::Head`).
macro_rules! read_seq_sql {
    () => {
        "(CASE WHEN c.kind = 'direct' AND c.last_sender = m.user_key THEN c.last_seq \
         WHEN c.kind = 'direct' AND c.run_start - 1 > m.read_seq THEN c.run_start - 1 \
         ELSE m.read_seq END)"
    };
}

pub mod apps;
pub mod audit;
mod batch;
pub mod blocks;
pub mod conversations;
pub mod devices;
pub mod groups;
mod held;
pub mod inbox;
pub mod keys;
pub mod lifecycle;
pub mod limits;
pub mod outbox;
pub mod presence;
pub mod push;
mod sql;
pub mod subjects;
pub mod users;

use std::{sync::Arc, time::Instant};

use anyhow::Context as _;
use sqlx::{Any, AnyPool, Connection, Executor, Transaction, any::AnyPoolOptions, migrate::Migrator};

use crate::config::{DatabaseConfig, SqliteSync};

static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/postgres");

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

/// A cheap-to-clone handle on the database.
#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    dialect: Dialect,
    /// SQLite has one writer at a time; queueing writers here instead of in SQLite's busy loop
    /// keeps latency flat under concurrent sends. PostgreSQL needs no gate.
    write_gate: Option<Arc<tokio::sync::Mutex<()>>>,
    /// Secret (credentials): never logged. The appender opens its own connections with it.
    url: Arc<String>,
    sqlite_sync: SqliteSync,
    /// The group-commit writer of messages, started by the first append.
    appender: Arc<std::sync::OnceLock<batch::Appender>>,
    /// Apps by id, read on every send: kept for `APP_CACHE_TTL`, dropped at once by this
    /// process's own changes (another process's `natter app set` applies within the TTL).
    apps: Arc<std::sync::RwLock<std::collections::HashMap<String, (std::time::Instant, apps::AppRecord)>>>,
    /// Which app each Tencent SDKAppID names, read on every UserSig: refreshed from the apps
    /// table at most once per `APP_CACHE_TTL`.
    sdkappids: Arc<apps::SdkAppIds>,
    /// Bumped by every change to an app this process makes: a read that began before a change
    /// does not cache what it read (the settings it saw may be the old ones).
    app_changes: Arc<Changes>,
    /// Users' internal keys by app and public id, read on every direct send.
    keys: Arc<users::KeyCache>,
    /// Presence changes this node applied since it last refreshed the table's statistics.
    presence_changes: Arc<std::sync::atomic::AtomicU64>,
    /// Connections kept for the hottest reads, past the pool's release ping.
    held: Arc<held::Held>,
    /// Connections' token subjects, read in batches.
    subjects: Arc<subjects::Batcher>,
    /// How long a push job gathers a conversation's messages; None: no push jobs are written.
    push_window_ms: Option<i64>,
}

/// How long a node trusts its copy of an app's settings (and of a user's key by public id).
pub const APP_CACHE_TTL: std::time::Duration = std::time::Duration::from_secs(1);

/// Changes a cache has been told of. A read notes [`Changes::seen`] before it goes to the
/// database and caches what it found only if [`Changes::none_since`]: a change committed while
/// it was under way (and forgotten by the cache before the read came back) must not be put back.
#[derive(Default)]
pub(crate) struct Changes(std::sync::atomic::AtomicU64);

/// When a read began, for [`Changes::none_since`].
#[derive(Clone, Copy)]
pub(crate) struct Seen(u64);

impl Changes {
    pub(crate) fn seen(&self) -> Seen {
        Seen(self.0.load(std::sync::atomic::Ordering::Acquire))
    }

    /// Counted before the cache forgets what changed, so that a read under way finds it.
    pub(crate) fn count(&self) {
        self.0.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    }

    pub(crate) fn none_since(&self, seen: Seen) -> bool {
        self.0.load(std::sync::atomic::Ordering::Acquire) == seen.0
    }
}

/// A write transaction; on SQLite it also holds the write gate until it ends.
pub struct WriteTx {
    pub tx: Transaction<'static, Any>,
    _gate: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl WriteTx {
    pub async fn commit(self) -> Result<(), sqlx::Error> {
        self.tx.commit().await
    }
}

impl std::ops::Deref for WriteTx {
    type Target = Transaction<'static, Any>;
    fn deref(&self) -> &Self::Target {
        &self.tx
    }
}

impl std::ops::DerefMut for WriteTx {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.tx
    }
}

impl Store {
    /// Connects (creating the SQLite file and its directory if missing).
    pub async fn connect(config: &DatabaseConfig) -> anyhow::Result<Self> {
        sqlx::any::install_default_drivers();
        let raw = config.url.expose();
        let (dialect, url) = if raw.starts_with("sqlite:") {
            (Dialect::Sqlite, prepare_sqlite_url(raw)?)
        } else {
            (Dialect::Postgres, raw.to_string())
        };
        let pool = pool_options(dialect, config.max_connections, config.sqlite_synchronous)
            .connect(&url)
            .await
            .with_context(|| format!("cannot open the {dialect:?} database"))?;
        let write_gate = (dialect == Dialect::Sqlite).then(|| Arc::new(tokio::sync::Mutex::new(())));
        Ok(Store {
            pool,
            dialect,
            write_gate,
            url: Arc::new(url),
            sqlite_sync: config.sqlite_synchronous,
            appender: Arc::default(),
            apps: Arc::default(),
            sdkappids: Arc::default(),
            app_changes: Arc::default(),
            keys: Arc::default(),
            presence_changes: Arc::default(),
            held: Arc::new(held::Held::new(config.max_connections)),
            subjects: Arc::default(),
            push_window_ms: None,
        })
    }

    /// Applies pending migrations. On PostgreSQL sqlx holds an advisory lock meanwhile, so nodes
    /// starting together apply each migration once.
    pub async fn migrate(&self) -> anyhow::Result<()> {
        let migrator = match self.dialect {
            Dialect::Sqlite => &SQLITE_MIGRATIONS,
            Dialect::Postgres => &POSTGRES_MIGRATIONS,
        };
        migrator.run(&self.pool).await.context("applying migrations")?;
        Ok(())
    }

    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// Writes push jobs with each stored message, gathering for `window_ms` (before the first
    /// send; the message writer reads it when it starts).
    pub fn with_push_window(mut self, window_ms: Option<i64>) -> Self {
        self.push_window_ms = window_ms;
        self
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Begins a write transaction (SQLite: `BEGIN IMMEDIATE` behind the write gate, so the
    /// transaction never has to upgrade a read lock and fail with SQLITE_BUSY).
    pub async fn begin_write(&self) -> Result<WriteTx, sqlx::Error> {
        begin_write_on(&self.pool, self.dialect, self.write_gate.as_ref()).await
    }

    /// Liveness of the database for `/readyz`.
    pub async fn ping(&self) -> Result<(), sqlx::Error> {
        sqlx::query("SELECT 1").execute(&self.pool).await.map(|_| ())
    }

    /// A connection for a hot read (see `store::held`). Run the read on it, then `finish` it with the
    /// read's result. Single statements only, never a transaction: a finished connection is
    /// handed to the next reader as it is.
    pub(crate) async fn read(&self) -> Result<held::Read<'_>, sqlx::Error> {
        let started = Instant::now();
        let read = self.held.take(&self.pool).await;
        metrics::histogram!("natter_db_pool_acquire_duration_seconds", "for" => "read")
            .record(started.elapsed().as_secs_f64());
        read
    }

    /// The pool's connections in use and idle (for `natter_db_pool_connections`).
    pub fn pool_connections(&self) -> (u32, usize) {
        let idle = self.pool.num_idle();
        (self.pool.size().saturating_sub(idle as u32), idle)
    }

    pub async fn close(&self) {
        self.held.close();
        self.pool.close().await;
    }
}

/// A write transaction on `pool`, behind the SQLite write gate when there is one.
async fn begin_write_on(
    pool: &AnyPool,
    dialect: Dialect,
    write_gate: Option<&Arc<tokio::sync::Mutex<()>>>,
) -> Result<WriteTx, sqlx::Error> {
    let gate = match write_gate {
        Some(gate) => Some(gate.clone().lock_owned().await),
        None => None,
    };
    // Waiting for a pooled connection (and, on SQLite, taking the write lock) is what saturation
    // looks like from here.
    let started = Instant::now();
    let tx = match dialect {
        Dialect::Sqlite => pool.begin_with("BEGIN IMMEDIATE").await?,
        Dialect::Postgres => pool.begin().await?,
    };
    metrics::histogram!("natter_db_pool_acquire_duration_seconds", "for" => "write")
        .record(started.elapsed().as_secs_f64());
    Ok(WriteTx { tx, _gate: gate })
}

/// How long a pooled connection may sit idle before it is pinged on its way out of the pool.
const IDLE_BEFORE_PING: std::time::Duration = std::time::Duration::from_secs(10);

/// Pool settings shared by the main pool and the appender's.
fn pool_options(dialect: Dialect, max_connections: u32, sync: SqliteSync) -> AnyPoolOptions {
    AnyPoolOptions::new()
        .max_connections(max_connections)
        // sqlx pings every connection it hands out by default: a second round trip for every
        // query (measured: DM on PostgreSQL 1.10 -> 1.53 x pgbench, 40,000 connects over 6
        // nodes 2,766 -> 3,185/s without it). A connection in steady use proves itself with
        // every query; only one idle long enough to have missed a database restart is checked.
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for >= IDLE_BEFORE_PING {
                    conn.ping().await?;
                }
                Ok(true)
            })
        })
        .after_connect(move |conn, _meta| {
            Box::pin(async move {
                if dialect == Dialect::Sqlite {
                    // WAL lets readers run beside the writer. FULL fsyncs the WAL at each
                    // commit (an ack survives power loss); NORMAL only at checkpoints (an ack
                    // survives a process crash). Group commit makes FULL one fsync per batch.
                    conn.execute("PRAGMA journal_mode = WAL").await?;
                    conn.execute(sync.pragma()).await?;
                    conn.execute("PRAGMA foreign_keys = ON").await?;
                    conn.execute("PRAGMA busy_timeout = 10000").await?;
                }
                Ok(())
            })
        })
}

/// Records how long a named query took (`natter_db_query_duration_seconds{op}`).
pub(crate) fn observe(op: &'static str, started: Instant) {
    metrics::histogram!("natter_db_query_duration_seconds", "op" => op).record(started.elapsed().as_secs_f64());
}

/// Adds `mode=rwc` and creates the parent directory, so a fresh checkout just runs.
fn prepare_sqlite_url(url: &str) -> anyhow::Result<String> {
    let rest = url.trim_start_matches("sqlite://").trim_start_matches("sqlite:");
    let (path, query) = match rest.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (rest, None),
    };
    if path.is_empty() || path == ":memory:" {
        return Ok(url.to_string());
    }
    if let Some(parent) = std::path::Path::new(path).parent()
        && !parent.as_os_str().is_empty()
    {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("database.url: cannot create directory {}", parent.display()))?;
    }
    let query = match query {
        Some(q) if q.contains("mode=") => q.to_string(),
        Some(q) => format!("{q}&mode=rwc"),
        None => "mode=rwc".to_string(),
    };
    Ok(format!("sqlite://{path}?{query}"))
}

/// True when a database error is a unique-constraint violation (both dialects).
pub fn is_unique_violation(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Database(db) => {
            db.is_unique_violation() || db.code().as_deref() == Some("2067") || db.code().as_deref() == Some("1555")
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_urls_get_create_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/n.db");
        let url = format!("sqlite://{}", path.display());
        let prepared = prepare_sqlite_url(&url).unwrap();
        assert!(prepared.ends_with("?mode=rwc"), "{prepared}");
        assert!(path.parent().unwrap().exists());
        assert_eq!(prepare_sqlite_url("sqlite::memory:").unwrap(), "sqlite::memory:");
        let prepared = prepare_sqlite_url(&format!("{url}?mode=ro")).unwrap();
        assert!(prepared.ends_with("?mode=ro"));
    }

    #[test]
    fn a_read_that_began_before_a_change_is_told_so_and_one_after_it_is_not() {
        let changes = Changes::default();
        let before = changes.seen();
        assert!(changes.none_since(before));
        changes.count();
        assert!(!changes.none_since(before));
        assert!(changes.none_since(changes.seen()));
    }
}
