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
    /// Manage apps (tenants).
    App {
        #[command(subcommand)]
        command: AppCommand,
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
    crate::telemetry::init_logging(&config.log);
    let system = actix_rt::System::new();
    system.block_on(async move {
        match cli.command {
            None | Some(Command::Serve { .. }) => crate::server::serve(config).await,
            Some(Command::Migrate) => {
                crate::server::prepare_store(&config).await?;
                println!("migrations applied");
                Ok(())
            }
            Some(Command::App { command }) => app_command(&config, command).await,
        }
    })
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

fn print_app(app: &AppRecord, with_secret: bool, json: bool) -> anyhow::Result<()> {
    let mut settings = app.settings.clone();
    if !settings.user_sig_secret.is_empty() {
        settings.user_sig_secret = crate::config::Secret::new("***");
    }
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
pub fn apply_settings(settings: &AppSettings, pairs: &[String]) -> anyhow::Result<AppSettings> {
    let mut value = serde_json::to_value(settings)?;
    let map = value.as_object_mut().context("settings are not an object")?;
    for pair in pairs {
        let (key, raw) = pair.split_once('=').with_context(|| format!("{pair:?}: expected key=value"))?;
        if !map.contains_key(key) {
            let known: Vec<&String> = map.keys().collect();
            anyhow::bail!("unknown setting {key:?}; known: {known:?}");
        }
        let parsed = serde_json::from_str(raw).unwrap_or_else(|_| serde_json::Value::String(raw.to_string()));
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
            store.set_app_settings(&id, &updated).await?;
            println!("{}", serde_json::to_string(&updated)?);
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
    fn settings_refuse_unknown_keys_and_bad_values() {
        assert!(apply_settings(&AppSettings::default(), &["nope=1".into()]).is_err());
        assert!(apply_settings(&AppSettings::default(), &["guest_signup=maybe".into()]).is_err());
        assert!(apply_settings(&AppSettings::default(), &["missing_equals".into()]).is_err());
    }
}
