//! The plan of a run: who connects where, who is in which conversation, who sends at what rate.
//! The coordinator provisions it (through Natter's signed server API, guest sign-up, or nothing
//! for the floor) and hands it to every worker process as a file.

use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use futures_util::{StreamExt, TryStreamExt, stream};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Scenario {
    /// Hold N idle connections.
    Connect,
    /// Pairs of users, one direction each, at a total rate.
    Dm,
    /// G groups of S members, K senders, at a total rate.
    Group,
    /// DMs and groups at once, the rate split by weight.
    Mixed,
    /// Connect N, then all reconnect at once and `sync`.
    Reconnect,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Auth {
    /// `POST /v1/server/users/token` (needs --app-key and --app-secret).
    ServerApi,
    /// `POST /v1/auth/guest` (limited per IP by the app's guest_signups_per_hour).
    Guest,
    /// No authentication: the target is `natter-loadtest floor`.
    Floor,
}

#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct PlanUser {
    pub id: String,
    pub token: String,
    /// Conversations (indexes into `Plan::convs`) this user's connection belongs to.
    pub convs: Vec<usize>,
}

#[derive(Serialize, Deserialize, Clone, Debug)]
pub enum ConvKind {
    Group { id: String },
    Dm,
}

#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct PlanConv {
    pub kind: ConvKind,
    /// User indexes.
    pub members: Vec<usize>,
}

#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct PlanSender {
    pub user: usize,
    pub conv: usize,
    /// Messages per second.
    pub rate: f64,
    /// Offset of the first send, as a fraction of the interval (spreads senders evenly).
    pub phase: f64,
}

#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct Plan {
    pub scenario: Scenario,
    pub floor: bool,
    /// WebSocket URLs (`ws://host:port/ws`).
    pub targets: Vec<String>,
    pub source_ips: Vec<IpAddr>,
    pub users: Vec<PlanUser>,
    pub convs: Vec<PlanConv>,
    pub senders: Vec<PlanSender>,
    pub duration_secs: f64,
    pub message_bytes: usize,
    /// Total new connections per second over all workers; 0 = as fast as they complete.
    pub connect_rate: f64,
    /// Connection attempts in flight per worker.
    pub connect_concurrency: usize,
    /// A PEM CA trusted for `wss://` targets besides the system's roots.
    #[serde(default)]
    pub tls_ca: Option<String>,
    /// Built from `tls_ca` by each worker when a target is `wss://`.
    #[serde(skip)]
    pub tls: Option<crate::tls::TlsConfig>,
}

impl Plan {
    /// Recipients of one message in a conversation: every member's connection but the sender's.
    pub fn recipients(&self, conv: usize) -> u64 {
        self.convs.get(conv).map_or(0, |c| c.members.len().saturating_sub(1) as u64)
    }

    pub fn target_of(&self, user: usize) -> &str {
        self.targets.get(user % self.targets.len().max(1)).map_or("", String::as_str)
    }

    pub fn source_of(&self, user: usize) -> Option<IpAddr> {
        // Divided by the target count so that each target sees every source address.
        let n = self.source_ips.len();
        if n == 0 { None } else { self.source_ips.get((user / self.targets.len().max(1)) % n).copied() }
    }

    /// The URL a user connects to (the floor takes the user and its groups from the query).
    pub fn url_of(&self, user: usize) -> String {
        let base = self.target_of(user);
        let Some(u) = self.users.get(user) else { return base.to_string() };
        if self.floor {
            let groups: Vec<String> = u
                .convs
                .iter()
                .filter_map(|c| match &self.convs.get(*c)?.kind {
                    ConvKind::Group { id } => Some(id.clone()),
                    ConvKind::Dm => None,
                })
                .collect();
            format!("{base}?user={}&groups={}", u.id, groups.join(","))
        } else {
            format!("{base}?token={}", u.token)
        }
    }
}

/// What to build before provisioning.
pub struct Shape {
    pub scenario: Scenario,
    pub users: usize,
    pub pairs: usize,
    pub groups: usize,
    pub group_size: usize,
    pub senders: usize,
    pub rate: f64,
    pub dm_weight: f64,
    pub group_weight: f64,
}

/// Builds users, conversations and senders (tokens and group ids are filled in by `provision`).
pub fn shape(s: &Shape, run: &str) -> anyhow::Result<(Vec<PlanUser>, Vec<PlanConv>, Vec<PlanSender>)> {
    let mut users = Vec::new();
    let mut convs = Vec::new();
    let mut senders = Vec::new();
    let new_user = |users: &mut Vec<PlanUser>| {
        let i = users.len();
        users.push(PlanUser { id: format!("{run}-u{i}"), token: String::new(), convs: Vec::new() });
        i
    };
    let (dm_rate, group_rate) = match s.scenario {
        Scenario::Dm => (s.rate, 0.0),
        Scenario::Group => (0.0, s.rate),
        Scenario::Mixed => {
            let total = s.dm_weight + s.group_weight;
            if total <= 0.0 {
                bail!("--mix weights must not both be 0");
            }
            (s.rate * s.dm_weight / total, s.rate * s.group_weight / total)
        }
        Scenario::Connect | Scenario::Reconnect => {
            for _ in 0..s.users {
                new_user(&mut users);
            }
            return Ok((users, convs, senders));
        }
    };
    if matches!(s.scenario, Scenario::Dm | Scenario::Mixed) {
        if s.pairs == 0 {
            bail!("--pairs must be at least 1");
        }
        for p in 0..s.pairs {
            let (a, b) = (new_user(&mut users), new_user(&mut users));
            let conv = convs.len();
            convs.push(PlanConv { kind: ConvKind::Dm, members: vec![a, b] });
            users[a].convs.push(conv);
            users[b].convs.push(conv);
            let rate = dm_rate / s.pairs as f64;
            senders.push(PlanSender { user: a, conv, rate, phase: p as f64 / s.pairs as f64 });
        }
    }
    if matches!(s.scenario, Scenario::Group | Scenario::Mixed) {
        if s.groups == 0 || s.group_size < 2 {
            bail!("--groups must be at least 1 and --group-size at least 2");
        }
        let k = s.senders.clamp(1, s.groups * s.group_size);
        let first_conv = convs.len();
        for g in 0..s.groups {
            let members: Vec<usize> = (0..s.group_size).map(|_| new_user(&mut users)).collect();
            for m in &members {
                users[*m].convs.push(first_conv + g);
            }
            convs.push(PlanConv { kind: ConvKind::Group { id: format!("{run}-g{g}") }, members });
        }
        for i in 0..k {
            let conv = first_conv + i % s.groups;
            let user = convs[conv].members[(i / s.groups) % s.group_size];
            senders.push(PlanSender { user, conv, rate: group_rate / k as f64, phase: i as f64 / k as f64 });
        }
    }
    Ok((users, convs, senders))
}

/// Credentials for the server API.
#[derive(Clone)]
pub struct AppCredentials {
    pub key: String,
    pub secret: String,
}

/// The HTTP base (`http://host:port`) of a `ws://host:port/ws` target.
pub fn http_base(ws_url: &str) -> anyhow::Result<String> {
    let rest = ws_url
        .strip_prefix("ws://")
        .map(|r| ("http://", r))
        .or_else(|| ws_url.strip_prefix("wss://").map(|r| ("https://", r)))
        .with_context(|| format!("target {ws_url:?} is not a ws:// or wss:// URL"))?;
    let host = rest.1.split('/').next().unwrap_or_default();
    Ok(format!("{}{host}", rest.0))
}

/// A signed server-API client (v2, HMAC-SHA256, see docs/app-server.md).
pub struct ServerApi {
    http: reqwest::Client,
    base: String,
    creds: AppCredentials,
}

impl ServerApi {
    pub fn new(base: String, creds: AppCredentials, tls_ca: Option<&str>) -> anyhow::Result<ServerApi> {
        let http = crate::tls::http_client(tls_ca, Duration::from_secs(30))?;
        Ok(ServerApi { http, base, creds })
    }

    pub async fn call(&self, method: &str, path: &str, body: &Value) -> anyhow::Result<Value> {
        let body = body.to_string();
        let ts = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs().to_string();
        let nonce = hex::encode(rand::random::<[u8; 16]>());
        let canonical = format!("{method}\n{path}\n{ts}\n{nonce}\n{}", hex::encode(Sha256::digest(body.as_bytes())));
        let mut mac = Hmac::<Sha256>::new_from_slice(self.creds.secret.as_bytes())?;
        mac.update(canonical.as_bytes());
        let signature = hex::encode(mac.finalize().into_bytes());
        let res = self
            .http
            .request(method.parse()?, format!("{}{path}", self.base))
            .header("App-Key", &self.creds.key)
            .header("Nonce", nonce)
            .header("Timestamp", ts)
            .header("Signature", signature)
            .header("Signature-Method", "hmac-sha256")
            .header("Content-Type", "application/json")
            .body(body)
            .send()
            .await
            .with_context(|| format!("{method} {path}"))?;
        let status = res.status();
        let reply: Value = res.json().await.with_context(|| format!("{method} {path}: reply is not JSON"))?;
        if !status.is_success() {
            bail!("{method} {path}: {status} {}", reply["error"]);
        }
        Ok(reply["data"].clone())
    }
}

/// How provisioning reaches Natter.
pub enum Provisioner {
    ServerApi(ServerApi),
    Guest { http: reqwest::Client, base: String },
    Floor,
}

const PROVISION_CONCURRENCY: usize = 32;
/// Members named per group call: 2,000 ids of ~20 bytes stay well under a node's 64 KiB body.
const GROUP_MEMBERS_PER_CALL: usize = 2_000;

impl Provisioner {
    pub fn new(
        auth: Auth,
        base: String,
        creds: Option<AppCredentials>,
        tls_ca: Option<&str>,
    ) -> anyhow::Result<Provisioner> {
        Ok(match auth {
            Auth::ServerApi => {
                let creds = creds.context("--auth server-api needs --app-key and --app-secret")?;
                Provisioner::ServerApi(ServerApi::new(base, creds, tls_ca)?)
            }
            Auth::Guest => Provisioner::Guest { http: crate::tls::http_client(tls_ca, Duration::from_secs(30))?, base },
            Auth::Floor => Provisioner::Floor,
        })
    }

    /// Gives every user a token (and, for guests, its server-assigned id), then creates the
    /// groups. `progress` is told how many users are done.
    pub async fn provision(
        &self,
        users: &mut [PlanUser],
        convs: &[PlanConv],
        progress: &(dyn Fn(usize) + Sync),
    ) -> anyhow::Result<()> {
        let done = std::sync::atomic::AtomicUsize::new(0);
        let tokens: Vec<(String, String)> = stream::iter(users.iter().map(|u| u.id.clone()))
            .map(|id| {
                let done = &done;
                async move {
                    let r = self.token_for(&id).await;
                    progress(done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1);
                    r
                }
            })
            .buffered(PROVISION_CONCURRENCY)
            .try_collect()
            .await?;
        for (u, (id, token)) in users.iter_mut().zip(tokens) {
            u.id = id;
            u.token = token;
        }
        if let Provisioner::ServerApi(api) = self {
            for c in convs {
                if let ConvKind::Group { id } = &c.kind {
                    let ids: Vec<&str> =
                        c.members.iter().filter_map(|m| users.get(*m)).map(|u| u.id.as_str()).collect();
                    let Some((owner, rest)) = ids.split_first() else { continue };
                    // A body is at most http.max_body_bytes (64 KiB): a large group is created
                    // with its first members and then grown a chunk at a time.
                    let mut chunks = rest.chunks(GROUP_MEMBERS_PER_CALL);
                    let first = chunks.next().unwrap_or(&[]);
                    api.call(
                        "POST",
                        "/v1/server/groups",
                        &json!({"id": id, "name": id, "owner": owner, "members": first}),
                    )
                    .await
                    .with_context(|| format!("creating group {id}"))?;
                    for chunk in chunks {
                        api.call("POST", &format!("/v1/server/groups/{id}/members"), &json!({"members": chunk}))
                            .await
                            .with_context(|| format!("adding {} members to group {id}", chunk.len()))?;
                    }
                }
            }
        } else if let Provisioner::Guest { .. } = self
            && convs.iter().any(|c| matches!(c.kind, ConvKind::Group { .. }))
        {
            bail!("--auth guest cannot create groups (no server API); use --auth server-api");
        }
        Ok(())
    }

    async fn token_for(&self, id: &str) -> anyhow::Result<(String, String)> {
        match self {
            Provisioner::ServerApi(api) => {
                // Issuing a token twice is harmless: a kept-alive connection the node closed as
                // it was reused (a reset) is tried again on another, as an app server's client would.
                let body = json!({"user_id": id});
                let mut tries = 0;
                let data = loop {
                    match api.call("POST", "/v1/server/users/token", &body).await {
                        Ok(data) => break data,
                        Err(e) if tries < 3 && e.chain().any(|c| c.is::<reqwest::Error>()) => tries += 1,
                        Err(e) => return Err(e),
                    }
                };
                let token = data["token"].as_str().context("users/token reply has no token")?;
                Ok((id.to_string(), token.to_string()))
            }
            Provisioner::Guest { http, base } => {
                let res = http.post(format!("{base}/v1/auth/guest")).json(&json!({"first_name": id})).send().await?;
                let status = res.status();
                let reply: Value = res.json().await?;
                if !status.is_success() {
                    bail!("guest sign-up: {status} {}", reply["error"]);
                }
                let token = reply["data"]["access_token"].as_str().context("guest reply has no access_token")?;
                let uid = reply["data"]["user"]["id"].as_str().context("guest reply has no user id")?;
                Ok((uid.to_string(), token.to_string()))
            }
            Provisioner::Floor => Ok((id.to_string(), String::new())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape_of(scenario: Scenario) -> Shape {
        Shape {
            scenario,
            users: 10,
            pairs: 4,
            groups: 3,
            group_size: 5,
            senders: 6,
            rate: 120.0,
            dm_weight: 1.0,
            group_weight: 3.0,
        }
    }

    #[test]
    fn a_group_plan_spreads_senders_over_groups_and_splits_the_rate() {
        let (users, convs, senders) = shape(&shape_of(Scenario::Group), "r").unwrap();
        assert_eq!((users.len(), convs.len(), senders.len()), (15, 3, 6));
        assert!(senders.iter().all(|s| (s.rate - 20.0).abs() < 1e-9));
        for s in &senders {
            assert!(convs[s.conv].members.contains(&s.user));
        }
        let distinct: std::collections::HashSet<usize> = senders.iter().map(|s| s.user).collect();
        assert_eq!(distinct.len(), 6);
    }

    #[test]
    fn a_mixed_plan_splits_the_rate_by_weight() {
        let (users, convs, senders) = shape(&shape_of(Scenario::Mixed), "r").unwrap();
        assert_eq!((users.len(), convs.len()), (8 + 15, 4 + 3));
        let dm: f64 = senders.iter().filter(|s| matches!(convs[s.conv].kind, ConvKind::Dm)).map(|s| s.rate).sum();
        let all: f64 = senders.iter().map(|s| s.rate).sum();
        assert!((dm - 30.0).abs() < 1e-9 && (all - 120.0).abs() < 1e-9, "{dm} {all}");
    }

    #[test]
    fn targets_and_sources_are_spread_independently() {
        let (users, convs, senders) = shape(&shape_of(Scenario::Connect), "r").unwrap();
        let plan = Plan {
            scenario: Scenario::Connect,
            floor: false,
            targets: vec!["ws://a/ws".into(), "ws://b/ws".into()],
            source_ips: vec!["127.0.0.1".parse().unwrap(), "127.0.0.2".parse().unwrap()],
            users,
            convs,
            senders,
            duration_secs: 1.0,
            message_bytes: 32,
            connect_rate: 0.0,
            connect_concurrency: 1,
            tls_ca: None,
            tls: None,
        };
        let pairs: std::collections::HashSet<(String, Option<IpAddr>)> =
            (0..4).map(|u| (plan.target_of(u).to_string(), plan.source_of(u))).collect();
        assert_eq!(pairs.len(), 4);
        assert_eq!(http_base("ws://127.0.0.1:9/ws").unwrap(), "http://127.0.0.1:9");
        assert!(http_base("http://x").is_err());
    }
}
