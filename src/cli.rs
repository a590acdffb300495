//! The `natter` command line.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

use crate::{
    config::{AppSettings, Config, HttpOverrides, Overrides, UrlOverride},
    domain::AppId,
    store::apps::AppRecord,
};

#[derive(Debug, Parser)]
#[command(name = "natter", version, about = "Self-hosted, horizontally scalable chat backend")]
pub struct Cli {
    /// Directory holding {NATTER_ENV}.toml (config/default.toml is built in).
    #[arg(long, global = true, default_value = "config")]
    config_dir: PathBuf,
    /// Overrides database.url.
    #[arg(long, global = true)]
    database_url: Option<String>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a node (the default).
    Serve {
        /// Overrides http.bind, e.g. 0.0.0.0:8080.
        #[arg(long)]
        bind: Option<String>,
        /// Overrides nats.url (cluster mode).
        #[arg(long)]
        nats_url: Option<String>,
    },
    /// Apply database migrations and exit.
    Migrate,
    /// Exit 0 if the node configured here answers /healthz on its http.bind port (for a
    /// container's HEALTHCHECK; needs no shell or curl in the image).
    Healthcheck {
        /// Seconds to wait for the answer.
        #[arg(long, default_value_t = 3)]
        timeout: u64,
    },
    /// Manage apps (tenants).
    App {
        #[command(subcommand)]
        command: AppCommand,
    },
    /// Token signing keys kept in the store.
    Keys {
        #[command(subcommand)]
        command: KeyCommand,
    },
    /// Inspect and repair webhook deliveries.
    Webhooks {
        #[command(subcommand)]
        command: WebhookCommand,
    },
    /// Push notifications: keys, and jobs that could not be delivered.
    Push {
        #[command(subcommand)]
        command: PushCommand,
    },
    /// An app's moderation trail (bans, unbans, …), newest first, one JSON object a line.
    Audit {
        #[arg(long)]
        app: String,
        /// Only acts on this user (public id).
        #[arg(long)]
        user: Option<String>,
        /// Only acts on this group.
        #[arg(long)]
        group: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: i64,
    },
}

#[derive(Debug, Subcommand)]
enum KeyCommand {
    /// Add a new signing key; nodes sign with it within a minute, old keys keep verifying.
    Rotate,
    /// Key ids and when they were created (never the secrets).
    List,
}

#[derive(Debug, Subcommand)]
enum PushCommand {
    /// Print a new VAPID key pair for Web Push (set the private one with
    /// `natter app set ID vapid_private_key=…`; clients read the public one at /v1/push/vapid).
    VapidKeys,
    /// Push jobs by status (pending, sending, dead), newest first.
    List {
        #[arg(long)]
        app: Option<String>,
        #[arg(long, default_value = "dead")]
        status: String,
        #[arg(long, default_value_t = 50)]
        limit: i64,
        #[arg(long)]
        json: bool,
    },
    /// Queue dead jobs again (one with --id, else all of the app's).
    Retry {
        #[arg(long)]
        app: String,
        #[arg(long)]
        id: Option<i64>,
    },
    /// Delete dead jobs older than the given age.
    Purge {
        #[arg(long, default_value_t = 7 * 24 * 3600)]
        older_than_secs: i64,
    },
}

#[derive(Debug, Subcommand)]
enum WebhookCommand {
    /// Events by status (pending, delivered, dead), newest first.
    List {
        #[arg(long)]
        app: Option<String>,
        #[arg(long, default_value = "dead")]
        status: String,
        #[arg(long, default_value_t = 50)]
        limit: i64,
        #[arg(long)]
        json: bool,
    },
    /// Queue dead events again (one with --id, else all of the app's) and re-enable the endpoint.
    Retry {
        #[arg(long)]
        app: String,
        #[arg(long)]
        id: Option<String>,
    },
    /// Delete finished events (delivered or dead) older than the given age.
    Purge {
        #[arg(long, default_value = "delivered")]
        status: String,
        #[arg(long, default_value_t = 7 * 24 * 3600)]
        older_than_secs: i64,
    },
}

#[derive(Debug, Subcommand)]
enum AppCommand {
    /// Create an app; prints its api_key and api_secret once.
    Create {
        #[arg(long)]
        id: String,
        #[arg(long)]
        name: String,
        #[arg(long)]
        json: bool,
    },
    /// List apps.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Show one app's settings (never its secret).
    Show {
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// Change settings: natter app set ID key=value… (values are JSON or plain text).
    Set { id: String, settings: Vec<String> },
    /// Replace the server-API secret; prints the new one once.
    RotateSecret { id: String },
    /// Register (or with --remove, drop) a public key for user tokens the app signs itself.
    Key {
        id: String,
        #[arg(long)]
        kid: String,
        /// PEM file with the public key (RSA, EC P-256 or Ed25519).
        #[arg(long, required_unless_present = "remove")]
        public_key: Option<PathBuf>,
        #[arg(long)]
        remove: bool,
    },
}

/// Parses arguments and runs the command.
pub fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let (bind, nats_url) = match &cli.command {
        Some(Command::Serve { bind, nats_url }) => (bind.clone(), nats_url.clone()),
        _ => (None, None),
    };
    let overrides = Overrides {
        http: bind.map(|bind| HttpOverrides { bind }),
        database: cli.database_url.clone().map(|url| UrlOverride { url }),
        nats: nats_url.map(|url| UrlOverride { url }),
    };
    let config = Config::load(&cli.config_dir, &overrides)?;
    if let Some(Command::Healthcheck { timeout }) = cli.command {
        return healthcheck(&config.http.bind, std::time::Duration::from_secs(timeout));
    }
    crate::telemetry::init_logging(&config.log);
    let system = actix_rt::System::new();
    system.block_on(async move {
        match cli.command {
            None | Some(Command::Serve { .. }) => crate::server::serve(config).await,
            Some(Command::Healthcheck { .. }) => Ok(()),
            Some(Command::Migrate) => {
                crate::server::prepare_store(&config).await?;
                println!("migrations applied");
                Ok(())
            }
            Some(Command::App { command }) => app_command(&config, command).await,
            Some(Command::Webhooks { command }) => webhook_command(&config, command).await,
            Some(Command::Push { command }) => push_command(&config, command).await,
            Some(Command::Audit { app, user, group, limit }) => {
                let app = AppId::parse(app).map_err(|e| anyhow::anyhow!(e.0))?;
                if !(1..=100_000).contains(&limit) {
                    anyhow::bail!("--limit must be 1-100000");
                }
                let store = crate::server::prepare_store(&config).await?;
                let query = crate::store::audit::AuditQuery {
                    user: user.as_deref(),
                    group: group.as_deref(),
                    before: None,
                    limit,
                };
                for entry in store.audit_log(&app, &query).await? {
                    println!("{}", serde_json::to_string(&entry)?);
                }
                store.close().await;
                Ok(())
            }
            Some(Command::Keys { command }) => {
                if config.configured_signing_key()?.is_some() {
                    anyhow::bail!("auth.signing_key(_file) is set: rotate by changing the configured key instead");
                }
                let store = crate::server::prepare_store(&config).await?;
                match command {
                    KeyCommand::Rotate => println!("new signing key {}", store.rotate_signing_key().await?),
                    KeyCommand::List => {
                        store.signing_keys().await?;
                        for (kid, created) in store.signing_key_ids().await? {
                            println!("{kid}\tcreated_at={created}");
                        }
                    }
                }
                store.close().await;
                Ok(())
            }
        }
    })
}

/// `GET /healthz` over a plain socket to the bound port (an unspecified bind address means this
/// machine): success only for a 200 whose body says ok.
fn healthcheck(bind: &str, timeout: std::time::Duration) -> anyhow::Result<()> {
    use std::io::{Read as _, Write as _};
    let mut addr: std::net::SocketAddr = bind.parse().with_context(|| format!("http.bind {bind:?}"))?;
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr {
            std::net::SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            std::net::SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    let mut stream =
        std::net::TcpStream::connect_timeout(&addr, timeout).with_context(|| format!("connecting to {addr}"))?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    stream.write_all(format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes())?;
    let mut response = Vec::new();
    stream.take(64 * 1024).read_to_end(&mut response).context("reading the answer")?;
    let text = String::from_utf8_lossy(&response);
    let healthy = text.starts_with("HTTP/1.1 200") && text.contains(r#""status":"ok""#);
    if !healthy {
        anyhow::bail!("{addr} answered: {}", text.lines().next().unwrap_or("nothing"));
    }
    println!("healthy");
    Ok(())
}

#[derive(serde::Serialize)]
struct AppOut<'a> {
    id: &'a str,
    api_key: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    api_secret: Option<&'a str>,
    settings: &'a AppSettings,
    created_at: i64,
}

/// Settings as printed: secrets masked.
fn redacted(settings: &AppSettings) -> AppSettings {
    let mut settings = settings.clone();
    for secret in [
        &mut settings.user_sig_secret,
        &mut settings.webhook_secret,
        &mut settings.tencent_key,
        &mut settings.vapid_private_key,
        &mut settings.fcm_service_account,
        &mut settings.apns_key,
    ] {
        if !secret.is_empty() {
            *secret = crate::config::Secret::new("***");
        }
    }
    settings
}

fn print_app(app: &AppRecord, with_secret: bool, json: bool) -> anyhow::Result<()> {
    let settings = redacted(&app.settings);
    let out = AppOut {
        id: app.id.as_str(),
        api_key: &app.api_key,
        api_secret: with_secret.then(|| app.api_secret.expose()),
        settings: &settings,
        created_at: app.created_at,
    };
    if json {
        println!("{}", serde_json::to_string(&out)?);
    } else {
        println!("id:         {}", out.id);
        println!("api_key:    {}", out.api_key);
        if let Some(secret) = out.api_secret {
            println!("api_secret: {secret}   (shown once: store it now)");
        }
        println!("settings:   {}", serde_json::to_string(out.settings)?);
    }
    Ok(())
}

/// Applies `key=value` pairs to settings; unknown keys and ill-typed values are refused.
/// Settings whose value may be read from a file (`key=@path`).
const FILE_SETTINGS: &[&str] = &["fcm_service_account", "apns_key", "vapid_private_key"];

pub fn apply_settings(settings: &AppSettings, pairs: &[String]) -> anyhow::Result<AppSettings> {
    let mut value = serde_json::to_value(settings)?;
    let map = value.as_object_mut().context("settings are not an object")?;
    for pair in pairs {
        let (key, raw) = pair.split_once('=').with_context(|| format!("{pair:?}: expected key=value"))?;
        if !map.contains_key(key) {
            let known: Vec<&String> = map.keys().collect();
            anyhow::bail!("unknown setting {key:?}; known: {known:?}");
        }
        // Credentials kept in files (a service-account JSON, a .p8 key) are read with `key=@path`.
        let text = match raw.strip_prefix('@') {
            Some(path) if FILE_SETTINGS.contains(&key) => {
                std::fs::read_to_string(path).with_context(|| format!("{key}: reading {path}"))?
            }
            _ => raw.to_string(),
        };
        // A text setting takes the text as given (a JSON document stays text); others parse as
        // JSON (numbers, booleans, lists), falling back to text.
        let parsed = match (map.get(key), serde_json::from_str(&text)) {
            (Some(serde_json::Value::String(_)), Ok(serde_json::Value::String(s))) => serde_json::Value::String(s),
            (Some(serde_json::Value::String(_)), _) => serde_json::Value::String(text),
            (_, Ok(v)) => v,
            (_, Err(_)) => serde_json::Value::String(text),
        };
        map.insert(key.to_string(), parsed);
    }
    serde_json::from_value(value).context("invalid setting value")
}

async fn app_command(config: &Config, command: AppCommand) -> anyhow::Result<()> {
    let store = crate::server::prepare_store(config).await?;
    let parse_id = |id: String| AppId::parse(id).map_err(|e| anyhow::anyhow!(e.0));
    match command {
        AppCommand::Create { id, name, json } => {
            let id = parse_id(id)?;
            let settings = AppSettings { name, ..AppSettings::default() };
            let app = store.create_app(&id, &settings).await?;
            print_app(&app, true, json)?;
        }
        AppCommand::List { json } => {
            for app in store.apps().await? {
                if json {
                    print_app(&app, false, true)?;
                } else {
                    println!("{}\t{}\t{}", app.id, app.api_key, app.settings.name);
                }
            }
        }
        AppCommand::Show { id, json } => {
            let id = parse_id(id)?;
            let app = store.app(&id).await?.with_context(|| format!("no app {id}"))?;
            print_app(&app, false, json)?;
        }
        AppCommand::Set { id, settings } => {
            let id = parse_id(id)?;
            let app = store.app(&id).await?.with_context(|| format!("no app {id}"))?;
            let updated = apply_settings(&app.settings, &settings)?;
            crate::push::devices::check_settings(&updated).context("push credentials")?;
            store.set_app_settings(&id, &updated).await?;
            println!("{}", serde_json::to_string(&redacted(&updated))?);
        }
        AppCommand::Key { id, kid, public_key, remove } => {
            let id = parse_id(id)?;
            let app = store.app(&id).await?.with_context(|| format!("no app {id}"))?;
            let mut settings = app.settings.clone();
            if remove {
                settings.user_sig_keys.remove(&kid).with_context(|| format!("app {id} has no key {kid}"))?;
            } else {
                let path = public_key.context("--public-key is required")?;
                let pem = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
                check_public_key(&pem).with_context(|| format!("{} is not a usable public key", path.display()))?;
                settings.user_sig_keys.insert(kid.clone(), pem);
            }
            store.set_app_settings(&id, &settings).await?;
            println!("app {id}: keys {:?}", settings.user_sig_keys.keys().collect::<Vec<_>>());
        }
        AppCommand::RotateSecret { id } => {
            let id = parse_id(id)?;
            let secret = store.rotate_app_secret(&id).await?;
            println!("api_secret: {}   (shown once: store it now)", secret.expose());
        }
    }
    store.close().await;
    Ok(())
}

async fn webhook_command(config: &Config, command: WebhookCommand) -> anyhow::Result<()> {
    let store = crate::server::prepare_store(config).await?;
    let parse_id = |id: String| AppId::parse(id).map_err(|e| anyhow::anyhow!(e.0));
    match command {
        WebhookCommand::List { app, status, limit, json } => {
            if !["pending", "delivered", "dead"].contains(&status.as_str()) {
                anyhow::bail!("--status must be pending, delivered or dead");
            }
            let app = app.map(parse_id).transpose()?;
            for row in store.webhooks(app.as_ref(), &status, limit).await? {
                if json {
                    let out = serde_json::json!({
                        "id": row.id, "app": row.app_id, "event": row.event, "status": row.status,
                        "attempts": row.attempts, "next_attempt_at": row.next_attempt_at, "last_error": row.last_error,
                    });
                    println!("{out}");
                } else {
                    let error = row.last_error.unwrap_or_default();
                    println!(
                        "{}\t{}\t{}\t{}\tattempts={}\t{error}",
                        row.id, row.app_id, row.event, row.status, row.attempts
                    );
                }
            }
        }
        WebhookCommand::Retry { app, id } => {
            let app = parse_id(app)?;
            let n = store.retry_dead_webhooks(&app, id.as_deref()).await?;
            println!("{n} events queued again");
        }
        WebhookCommand::Purge { status, older_than_secs } => {
            if !["delivered", "dead"].contains(&status.as_str()) {
                anyhow::bail!("--status must be delivered or dead");
            }
            let before = crate::domain::now_millis() - older_than_secs * 1000;
            println!("{} events purged", store.purge_webhooks(&status, before).await?);
        }
    }
    store.close().await;
    Ok(())
}

async fn push_command(config: &Config, command: PushCommand) -> anyhow::Result<()> {
    if let PushCommand::VapidKeys = command {
        let (private, public) = crate::push::webpush::Vapid::generate();
        println!("public_key: {public}\nprivate_key: {private}   (a secret: set it as the app's vapid_private_key)");
        return Ok(());
    }
    let store = crate::server::prepare_store(config).await?;
    let parse_id = |id: String| AppId::parse(id).map_err(|e| anyhow::anyhow!(e.0));
    match command {
        PushCommand::VapidKeys => {}
        PushCommand::List { app, status, limit, json } => {
            if !["pending", "sending", "dead"].contains(&status.as_str()) {
                anyhow::bail!("--status must be pending, sending or dead");
            }
            let app = app.map(parse_id).transpose()?;
            for job in store.pushes(app.as_ref(), &status, limit).await? {
                if json {
                    println!("{}", serde_json::to_string(&job)?);
                } else {
                    let error = job.last_error.as_deref().unwrap_or("");
                    println!(
                        "{}\t{}\t{}\t{}#{}\t{}\tattempts={}\t{error}",
                        job.id, job.app_id, job.device_id, job.conversation_id, job.seq, job.status, job.attempts
                    );
                }
            }
        }
        PushCommand::Retry { app, id } => {
            let n = store.retry_dead_pushes(&parse_id(app)?, id).await?;
            println!("{n} push jobs queued again");
        }
        PushCommand::Purge { older_than_secs } => {
            let before = crate::domain::now_millis() - older_than_secs * 1000;
            println!("{} dead push jobs purged", store.purge_dead_pushes(before).await?);
        }
    }
    store.close().await;
    Ok(())
}

/// A PEM public key that one of the accepted algorithms can verify with.
fn check_public_key(pem: &str) -> anyhow::Result<()> {
    use jsonwebtoken::DecodingKey;
    let bytes = pem.as_bytes();
    if DecodingKey::from_rsa_pem(bytes).is_ok()
        || DecodingKey::from_ec_pem(bytes).is_ok()
        || DecodingKey::from_ed_pem(bytes).is_ok()
    {
        Ok(())
    } else {
        anyhow::bail!("expected an RSA, EC P-256 or Ed25519 public key in PEM")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_accept_known_keys_with_typed_values() {
        let s = apply_settings(&AppSettings::default(), &["guest_signup=false".into(), "name=My App".into()]).unwrap();
        assert!(!s.guest_signup);
        assert_eq!(s.name, "My App");
        let s = apply_settings(&s, &[r#"allowed_origins=["https://a.test"]"#.into()]).unwrap();
        assert_eq!(s.allowed_origins, vec!["https://a.test".to_string()]);
    }

    #[test]
    fn credentials_stay_text_and_may_come_from_files() {
        let dir = tempfile::tempdir().unwrap();
        let account = dir.path().join("sa.json");
        std::fs::write(&account, r#"{"type": "service_account", "project_id": "p"}"#).unwrap();
        let pairs = [format!("fcm_service_account=@{}", account.display()), "name=12".into()];
        let s = apply_settings(&AppSettings::default(), &pairs).unwrap();
        assert_eq!(s.fcm_service_account.expose(), r#"{"type": "service_account", "project_id": "p"}"#);
        assert_eq!(s.name, "12", "a text setting keeps digits as text");
        let s = apply_settings(&s, &[r#"apns_key_id={"not": "parsed"}"#.into()]).unwrap();
        assert_eq!(s.apns_key_id, r#"{"not": "parsed"}"#);
        assert!(apply_settings(&s, &["apns_key=@/nonexistent/key.p8".into()]).is_err());
    }

    #[test]
    fn settings_refuse_unknown_keys_and_bad_values() {
        assert!(apply_settings(&AppSettings::default(), &["nope=1".into()]).is_err());
        assert!(apply_settings(&AppSettings::default(), &["guest_signup=maybe".into()]).is_err());
        assert!(apply_settings(&AppSettings::default(), &["missing_equals".into()]).is_err());
    }
}
