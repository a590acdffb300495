//! Layered configuration.
//!
//! Layers, later wins: `config/default.toml` (compiled in, so the binary runs from anywhere) →
//! `config/{NATTER_ENV}.toml` if present → `NATTER_SECTION__KEY` environment variables (plus
//! `DATABASE_URL` and `NATS_URL`) → command-line flags. Unknown keys are an error naming the key.

use std::{fmt, path::Path};

use anyhow::Context as _;
use figment::{
    Figment,
    providers::{Env, Format, Serialized, Toml},
};
use serde::{Deserialize, Serialize};

/// The documented defaults; every key lives here.
pub const DEFAULT_TOML: &str = include_str!("../config/default.toml");

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub http: HttpConfig,
    pub database: DatabaseConfig,
    pub nats: NatsConfig,
    pub node: NodeConfig,
    pub auth: AuthConfig,
    pub ws: WsConfig,
    pub chat: ChatConfig,
    pub log: LogConfig,
    pub webhooks: WebhooksConfig,
    pub push: PushConfig,
    pub default_app: AppSettings,
}

/// Push notifications: the outbox's timing; each app's credentials are app settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PushConfig {
    /// Whether this node writes push jobs with messages and delivers them.
    pub enabled: bool,
    /// How long a job gathers a conversation's messages before it is sent (one push per window).
    pub coalesce_ms: u64,
    /// Delay before each retry, in milliseconds; its length is the number of retries.
    pub retry_schedule_ms: Vec<u64>,
    pub timeout_ms: u64,
    /// How long a node's claim on a job lasts; a dead node's jobs are sent by another after it.
    pub claim_ms: u64,
    pub poll_ms: u64,
    /// Jobs in flight per node at most.
    pub batch: usize,
    /// How long a provider keeps an undelivered push (Web Push TTL, APNs expiration, FCM ttl).
    pub ttl_secs: u64,
    /// Devices a user keeps; registering another removes their oldest.
    pub max_devices_per_user: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhooksConfig {
    /// Delay before each retry, in milliseconds; its length is the number of retries.
    pub retry_schedule_ms: Vec<u64>,
    pub timeout_ms: u64,
    pub max_response_bytes: usize,
    /// How long a node's claim on an event lasts; a dead node's events are retried after it.
    pub claim_ms: u64,
    pub poll_ms: u64,
    pub batch: usize,
}

/// The header trusted proxies write the client's address to. Only the one the proxies set is
/// read: a header they pass through untouched would be the client's word.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ForwardedHeader {
    /// `X-Forwarded-For: client, proxy1, proxy2` (nginx, ALB, Envoy, Traefik).
    #[default]
    XForwardedFor,
    /// RFC 7239 `Forwarded: for=192.0.2.60;proto=https, for="[2001:db8::1]:4711"`.
    Forwarded,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    pub bind: String,
    /// The admin listener (`/metrics`, `/healthz`, `/readyz`).
    pub admin_bind: String,
    pub workers: usize,
    pub max_body_bytes: usize,
    pub trusted_proxies: Vec<crate::domain::IpNet>,
    pub client_ip_header: ForwardedHeader,
    pub cors_origins: Vec<String>,
    pub console: bool,
    pub head_timeout_ms: u64,
    pub max_pending_connections: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    pub url: Secret,
    pub max_connections: u32,
    pub sqlite_synchronous: SqliteSync,
}

/// How SQLite makes a commit durable (`PRAGMA synchronous`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SqliteSync {
    /// fsync the WAL at every commit: an ack survives a power loss or a kernel crash.
    Full,
    /// fsync the WAL only at checkpoints: an ack survives a crash of the process, not of the
    /// machine.
    Normal,
}

impl SqliteSync {
    pub fn pragma(self) -> &'static str {
        match self {
            SqliteSync::Full => "PRAGMA synchronous = FULL",
            SqliteSync::Normal => "PRAGMA synchronous = NORMAL",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatsConfig {
    pub url: Secret,
    pub prefix: String,
    /// PEM CA bundle the NATS servers' certificates are checked against (TLS); empty: the
    /// system's roots.
    pub tls_ca_file: String,
    /// PEM client certificate and key, for servers that verify clients (mutual TLS).
    pub tls_cert_file: String,
    pub tls_key_file: String,
    /// A `.creds` file (user JWT and NKey seed), for servers with decentralized auth.
    pub credentials_file: String,
    /// A file holding an NKey seed (`SU…`), for servers that authenticate NKeys.
    pub nkey_seed_file: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    pub id: String,
    pub lease_secs: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    pub issuer: String,
    pub signing_key: Secret,
    pub signing_key_file: String,
    pub access_ttl_secs: u64,
    pub refresh_ttl_secs: u64,
    pub password_hash_concurrency: usize,
    pub password_hash_queue: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WsConfig {
    pub max_frame_bytes: usize,
    pub auth_timeout_secs: u64,
    pub heartbeat_interval_secs: u64,
    pub client_timeout_secs: u64,
    pub outbound_queue: usize,
    pub max_connections_per_user: usize,
    pub outbound_queue_bytes: usize,
    pub messages_per_second: u32,
    pub message_burst: u32,
    pub max_connections: usize,
    pub max_starting: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChatConfig {
    pub max_content_bytes: usize,
    pub max_group_size: usize,
    pub sync_page_size: usize,
    pub typing_per_second: u32,
    pub preview_chars: usize,
    pub conversation_page_max: usize,
    pub unread_push_ms: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    pub format: LogFormat,
    pub level: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Pretty,
    Json,
}

/// Per-app settings (design §2). Stored as JSON with the app; `[default_app]` is applied to the
/// `default` app at every start.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AppSettings {
    pub name: String,
    /// Access-token lifetime in seconds; 0 uses `auth.access_ttl_secs`.
    pub access_ttl: u64,
    /// Refresh-token lifetime in seconds; 0 uses `auth.refresh_ttl_secs`.
    pub refresh_ttl: u64,
    pub guest_signup: bool,
    /// Guest sign-ups allowed per client IP per hour (cluster-wide).
    pub guest_signups_per_hour: u32,
    /// Registrations (`register`, and `login_or_register` sign-ups) per client IP per hour
    /// (cluster-wide).
    pub registrations_per_hour: u32,
    /// Login attempts per client IP per 15 minutes (cluster-wide).
    pub login_attempts_per_ip: u32,
    /// Login attempts per account per 15 minutes (cluster-wide).
    pub login_attempts_per_account: u32,
    /// Origins allowed to open WebSockets; empty allows any.
    pub allowed_origins: Vec<String>,
    /// HS256 secret for user tokens the app signs itself; empty disables HS256 app tokens.
    pub user_sig_secret: Secret,
    /// Public keys (PEM) by `kid` for user tokens the app signs with RS256, ES256 or EdDSA.
    pub user_sig_keys: std::collections::BTreeMap<String, String>,
    /// Longest lifetime (exp − iat, seconds) accepted for app-signed tokens and issued tokens.
    pub max_user_token_ttl: u64,
    /// Tencent IM SDKAppID whose UserSigs (v2) this app accepts; 0 = none.
    pub tencent_sdkappid: u64,
    /// The Tencent IM key those UserSigs are signed with.
    pub tencent_key: Secret,
    /// The administrator account Tencent REST calls (`/compat/tencent/v4/…`) must name and sign as.
    pub tencent_admin: String,
    /// RongCloud's server API is served at `/compat/rongcloud` for this app.
    pub rongcloud_compat: bool,
    /// `POST /v1/auth/login` registers an unknown email instead of refusing it.
    pub login_or_register: bool,
    /// User ids added to every new group of the app (e.g. a customer-service account).
    pub auto_join: Vec<String>,
    /// Where events are POSTed; empty disables webhooks.
    pub webhook_url: String,
    /// Standard Webhooks signing secret (`whsec_<base64>`, or any string used as raw bytes).
    pub webhook_secret: Secret,
    /// Events to deliver; empty means all.
    pub webhook_events: Vec<String>,
    /// The shape of webhooks and before-send calls: Natter's own, or Tencent IM's callbacks.
    pub webhook_format: WebhookFormat,
    /// Allow webhook and hook URLs that resolve to loopback, private, link-local or metadata
    /// addresses (off by default: a hostile app could otherwise probe the operator's network).
    pub allow_private_targets: bool,
    /// Called before each message is stored; may allow, reject or modify it. Empty disables it.
    pub before_send_url: String,
    pub before_send_timeout_ms: u64,
    /// What a hook timeout or failure means: `open` delivers the message, `closed` rejects it.
    pub before_send_policy: HookPolicy,
    /// Sent by the app into every new group as a system message; empty sends nothing.
    pub welcome_message: String,
    /// Seconds after sending within which a sender may edit a message; 0 means no limit.
    pub edit_window_secs: u64,
    /// Seconds after sending within which a sender may recall a message (group owners and
    /// admins may at any time); 0 means no limit.
    pub recall_window_secs: u64,
    /// What a push shows of a message: its text, only who sent it, or nothing but "new message".
    pub push_preview: PushPreview,
    /// Web Push: the app's VAPID private key (base64url of the 32-byte P-256 scalar, as
    /// `natter push vapid-keys` or `web-push generate-vapid-keys` print it); empty = no Web Push
    /// sender (subscriptions are still kept, and `push.needed` still fires).
    pub vapid_private_key: Secret,
    /// The VAPID `sub` claim: a `mailto:` or `https:` contact for push services.
    pub vapid_subject: String,
    /// FCM HTTP v1: the service-account JSON (its `token_uri` is where OAuth tokens come from);
    /// empty = no FCM sender.
    pub fcm_service_account: Secret,
    /// FCM's base URL (`{fcm_endpoint}/v1/projects/{project_id}/messages:send`).
    pub fcm_endpoint: String,
    /// APNs: the token-signing key (the `.p8` PEM); empty = no APNs sender.
    pub apns_key: Secret,
    pub apns_key_id: String,
    pub apns_team_id: String,
    /// The app's bundle id (`apns-topic`).
    pub apns_topic: String,
    /// APNs' base URL (`https://api.sandbox.push.apple.com` for development builds).
    pub apns_endpoint: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PushPreview {
    Full,
    Sender,
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WebhookFormat {
    Natter,
    Tencent,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HookPolicy {
    Open,
    Closed,
}

impl Default for AppSettings {
    fn default() -> Self {
        Self {
            name: "Default app".into(),
            access_ttl: 0,
            refresh_ttl: 0,
            guest_signup: true,
            guest_signups_per_hour: 10,
            registrations_per_hour: 30,
            login_attempts_per_ip: 50,
            login_attempts_per_account: 10,
            allowed_origins: Vec::new(),
            user_sig_secret: Secret::default(),
            user_sig_keys: std::collections::BTreeMap::new(),
            max_user_token_ttl: 180 * 24 * 3600,
            tencent_sdkappid: 0,
            tencent_key: Secret::default(),
            tencent_admin: "administrator".into(),
            rongcloud_compat: true,
            login_or_register: false,
            auto_join: Vec::new(),
            webhook_url: String::new(),
            webhook_secret: Secret::default(),
            webhook_events: Vec::new(),
            webhook_format: WebhookFormat::Natter,
            allow_private_targets: false,
            before_send_url: String::new(),
            before_send_timeout_ms: 2000,
            before_send_policy: HookPolicy::Open,
            welcome_message: String::new(),
            edit_window_secs: 0,
            recall_window_secs: 120,
            push_preview: PushPreview::Full,
            vapid_private_key: Secret::default(),
            vapid_subject: String::new(),
            fcm_service_account: Secret::default(),
            fcm_endpoint: "https://fcm.googleapis.com".into(),
            apns_key: Secret::default(),
            apns_key_id: String::new(),
            apns_team_id: String::new(),
            apns_topic: String::new(),
            apns_endpoint: "https://api.push.apple.com".into(),
        }
    }
}

/// A string that must never reach a log line.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_empty() { "\"\"" } else { "\"***\"" })
    }
}

/// `DATABASE_URL_FILE` and `NATS_URL_FILE`: the secret read from a file (e.g. a mounted
/// Kubernetes Secret), so it never sits in the environment.
fn secret_files() -> anyhow::Result<serde_json::Value> {
    let mut layer = serde_json::Map::new();
    for (var, section) in [("DATABASE_URL_FILE", "database"), ("NATS_URL_FILE", "nats")] {
        if let Ok(path) = std::env::var(var) {
            let url = std::fs::read_to_string(&path).with_context(|| format!("{var}: cannot read {path}"))?;
            layer.insert(section.into(), serde_json::json!({ "url": url.trim() }));
        }
    }
    Ok(serde_json::Value::Object(layer))
}

/// Command-line overrides, the last layer.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Overrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpOverrides>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database: Option<UrlOverride>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nats: Option<UrlOverride>,
}

#[derive(Debug, Default, Clone, Serialize)]
pub struct HttpOverrides {
    pub bind: String,
}

#[derive(Debug, Default, Clone, Serialize)]
pub struct UrlOverride {
    pub url: String,
}

impl Config {
    /// Loads every layer, with `dir` holding the optional `{NATTER_ENV}.toml`.
    pub fn load(dir: &Path, overrides: &Overrides) -> anyhow::Result<Self> {
        let mut figment = Figment::from(Toml::string(DEFAULT_TOML));
        if let Ok(env) = std::env::var("NATTER_ENV") {
            let path = dir.join(format!("{env}.toml"));
            if path.exists() {
                figment = figment.merge(Toml::file(&path));
            }
        }
        figment = figment
            .merge(Env::raw().only(&["DATABASE_URL"]).map(|_| "database.url".into()))
            .merge(Env::raw().only(&["NATS_URL"]).map(|_| "nats.url".into()))
            .merge(Serialized::defaults(secret_files()?))
            .merge(Env::prefixed("NATTER_").filter(|k| !k.as_str().eq_ignore_ascii_case("env")).split("__"))
            .merge(Serialized::defaults(overrides));
        Self::from_figment(figment)
    }

    /// Defaults plus explicit TOML, for tests and tools.
    pub fn from_toml(extra: &str) -> anyhow::Result<Self> {
        Self::from_toml_layers(&[extra])
    }

    /// Defaults plus several TOML layers, later wins.
    pub fn from_toml_layers(layers: &[&str]) -> anyhow::Result<Self> {
        let figment =
            layers.iter().fold(Figment::from(Toml::string(DEFAULT_TOML)), |f, layer| f.merge(Toml::string(layer)));
        Self::from_figment(figment)
    }

    fn from_figment(figment: Figment) -> anyhow::Result<Self> {
        let config: Config = figment.extract().map_err(|e| {
            let all: Vec<String> = e.into_iter().map(|e| e.to_string()).collect();
            anyhow::anyhow!("invalid configuration: {}", all.join("; "))
        })?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> anyhow::Result<()> {
        self.http
            .bind
            .parse::<std::net::SocketAddr>()
            .with_context(|| format!("http.bind: {:?} is not an address:port", self.http.bind))?;
        self.http
            .admin_bind
            .parse::<std::net::SocketAddr>()
            .with_context(|| format!("http.admin_bind: {:?} is not an address:port", self.http.admin_bind))?;
        let url = self.database.url.expose();
        if !(url.starts_with("sqlite:") || url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            anyhow::bail!("database.url: must start with sqlite:, postgres:// or postgresql://");
        }
        if !self.nats.url.is_empty() && url.starts_with("sqlite:") {
            anyhow::bail!(
                "nats.url is set but database.url is SQLite: a cluster needs PostgreSQL shared by every node"
            );
        }
        if self.nats.prefix.is_empty() || self.nats.prefix.contains(['.', '*', '>', ' ']) {
            anyhow::bail!("nats.prefix: must be non-empty without '.', '*', '>' or spaces");
        }
        if self.ws.client_timeout_secs <= self.ws.heartbeat_interval_secs {
            anyhow::bail!(
                "ws.client_timeout_secs: must be longer than ws.heartbeat_interval_secs, or idle clients are closed before their ping"
            );
        }
        let nonzero = [
            ("ws.max_frame_bytes", self.ws.max_frame_bytes as u64),
            ("ws.heartbeat_interval_secs", self.ws.heartbeat_interval_secs),
            ("ws.client_timeout_secs", self.ws.client_timeout_secs),
            ("ws.auth_timeout_secs", self.ws.auth_timeout_secs),
            ("ws.outbound_queue", self.ws.outbound_queue as u64),
            ("ws.max_connections_per_user", self.ws.max_connections_per_user as u64),
            ("ws.outbound_queue_bytes", self.ws.outbound_queue_bytes as u64),
            ("node.lease_secs", self.node.lease_secs),
            ("webhooks.timeout_ms", self.webhooks.timeout_ms),
            ("webhooks.claim_ms", self.webhooks.claim_ms),
            ("webhooks.poll_ms", self.webhooks.poll_ms),
            ("webhooks.batch", self.webhooks.batch as u64),
            ("ws.messages_per_second", self.ws.messages_per_second as u64),
            ("auth.access_ttl_secs", self.auth.access_ttl_secs),
            ("auth.refresh_ttl_secs", self.auth.refresh_ttl_secs),
            ("auth.password_hash_concurrency", self.auth.password_hash_concurrency as u64),
            ("auth.password_hash_queue", self.auth.password_hash_queue as u64),
            ("chat.max_content_bytes", self.chat.max_content_bytes as u64),
            ("chat.max_group_size", self.chat.max_group_size as u64),
            ("chat.sync_page_size", self.chat.sync_page_size as u64),
            ("chat.preview_chars", self.chat.preview_chars as u64),
            ("chat.conversation_page_max", self.chat.conversation_page_max as u64),
            ("chat.unread_push_ms", self.chat.unread_push_ms),
            ("database.max_connections", self.database.max_connections as u64),
        ];
        for (key, value) in nonzero {
            if value == 0 {
                anyhow::bail!("{key}: must be greater than 0");
            }
        }
        if self.chat.sync_page_size > 1000 {
            anyhow::bail!("chat.sync_page_size: must be at most 1000");
        }
        Ok(())
    }

    /// The signing key configured by value or file, if any.
    pub fn configured_signing_key(&self) -> anyhow::Result<Option<Vec<u8>>> {
        if !self.auth.signing_key.is_empty() {
            return Ok(Some(self.auth.signing_key.expose().as_bytes().to_vec()));
        }
        if !self.auth.signing_key_file.is_empty() {
            let bytes = std::fs::read(&self.auth.signing_key_file)
                .with_context(|| format!("auth.signing_key_file: cannot read {}", self.auth.signing_key_file))?;
            let trimmed = String::from_utf8_lossy(&bytes).trim().as_bytes().to_vec();
            if trimmed.len() < 32 {
                anyhow::bail!("auth.signing_key_file: key must be at least 32 bytes");
            }
            return Ok(Some(trimmed));
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_parse_and_serve_on_loopback_with_sqlite() {
        let c = Config::from_toml("").unwrap();
        assert_eq!(c.http.bind, "127.0.0.1:8080");
        assert_eq!(c.database.url.expose(), "sqlite://data/natter.db");
        assert!(c.nats.url.is_empty());
        assert_eq!(c.ws.max_frame_bytes, 65536);
    }

    #[test]
    fn unknown_keys_are_an_error_naming_the_key() {
        let err = Config::from_toml("[http]\nbindd = \"1.2.3.4:5\"").unwrap_err();
        assert!(format!("{err:#}").contains("bindd"), "{err:#}");
        let err = Config::from_toml("[nope]\nx = 1").unwrap_err();
        assert!(format!("{err:#}").contains("nope"), "{err:#}");
    }

    #[test]
    fn nats_with_sqlite_is_refused() {
        let err = Config::from_toml("[nats]\nurl = \"nats://127.0.0.1:4222\"").unwrap_err();
        assert!(format!("{err:#}").contains("PostgreSQL"), "{err:#}");
    }

    #[test]
    fn bad_values_name_their_key() {
        let err = Config::from_toml("[http]\nbind = \"nowhere\"").unwrap_err();
        assert!(format!("{err:#}").contains("http.bind"));
        let err = Config::from_toml("[ws]\nmax_frame_bytes = 0").unwrap_err();
        assert!(format!("{err:#}").contains("ws.max_frame_bytes"));
        let err = Config::from_toml("[ws]\nheartbeat_interval_secs = 30\nclient_timeout_secs = 30").unwrap_err();
        assert!(format!("{err:#}").contains("ws.client_timeout_secs"), "{err:#}");
    }

    #[test]
    fn secrets_never_print() {
        let c = Config::from_toml("[auth]\nsigning_key = \"super-secret-signing-key-material!!\"").unwrap();
        let printed = format!("{c:?}");
        assert!(!printed.contains("super-secret"), "{printed}");
    }
}
