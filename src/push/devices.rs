//! Registering devices for push: what a client may register, checked once, and the devices as
//! the API shows them.

use serde::{Deserialize, Serialize};

use crate::{
    auth::Identity,
    config::AppSettings,
    domain::{AppId, UserKey},
    error::{ApiError, ApiResult, ErrorCode},
    node::Node,
    store::devices::{Device, NewDevice, Platform, WebPushKeys},
    webhooks::target::{TargetError, check_url},
};

/// The longest token or endpoint accepted (FCM tokens are ~160 characters, APNs 64 hex digits,
/// push service endpoints a few hundred).
const MAX_TOKEN: usize = 2048;

/// `POST /v1/me/devices`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    pub platform: String,
    /// FCM or APNs token.
    #[serde(default)]
    pub token: Option<String>,
    /// A Web Push subscription, as the browser's `PushSubscription.toJSON()` gives it.
    #[serde(default)]
    pub subscription: Option<Subscription>,
    #[serde(default)]
    pub app_version: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Subscription {
    pub endpoint: String,
    /// Ignored (browsers send it, mostly null).
    #[serde(default, rename = "expirationTime")]
    pub expiration_time: Option<serde_json::Value>,
    pub keys: SubscriptionKeys,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubscriptionKeys {
    pub p256dh: String,
    pub auth: String,
}

/// A device as its owner (and the app's server) sees it. A Web Push endpoint is shown; its keys
/// are not.
#[derive(Debug, Serialize)]
pub struct DeviceView {
    pub id: String,
    pub platform: Platform,
    /// The FCM / APNs token, or the Web Push endpoint.
    pub token: String,
    pub app_version: Option<String>,
    pub created_at: i64,
}

impl From<Device> for DeviceView {
    fn from(d: Device) -> Self {
        DeviceView {
            id: d.id,
            platform: d.platform,
            token: d.token,
            app_version: d.app_version,
            created_at: d.created_at,
        }
    }
}

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::InvalidDevice, message.into())
}

/// A registration, checked: the platform's own shape, and for Web Push an endpoint this app may
/// call and keys that encrypt.
struct Checked {
    platform: Platform,
    token: String,
    keys: Option<WebPushKeys>,
    app_version: Option<String>,
}

fn check(settings: &AppSettings, req: RegisterRequest) -> ApiResult<Checked> {
    let platform = Platform::parse(&req.platform)
        .ok_or_else(|| invalid(format!("platform: must be webpush, fcm or apns, not {:?}", req.platform)))?;
    let app_version = match req.app_version {
        Some(v) if v.chars().count() > 64 || v.chars().any(char::is_control) => {
            return Err(invalid("app_version: at most 64 characters, no control characters"));
        }
        v => v.filter(|v| !v.is_empty()),
    };
    let (token, keys) = match platform {
        Platform::Webpush => {
            if req.token.is_some() {
                return Err(invalid("a webpush device is a subscription, not a token"));
            }
            let sub = req.subscription.ok_or_else(|| invalid("subscription: required for webpush"))?;
            if sub.endpoint.len() > MAX_TOKEN {
                return Err(invalid("subscription.endpoint: too long"));
            }
            let url = check_url(&sub.endpoint, settings.allow_private_targets).map_err(|e| match e {
                TargetError::Refused(_) => {
                    ApiError::new(ErrorCode::TargetRefused, format!("subscription.endpoint: {e}"))
                }
                other => invalid(format!("subscription.endpoint: {other}")),
            })?;
            // Push services are HTTPS; plain HTTP only where the app allows private targets
            // (a push service of its own on its network, or a test receiver).
            if url.scheme() != "https" && !settings.allow_private_targets {
                return Err(invalid("subscription.endpoint: must be https"));
            }
            let keys = WebPushKeys { p256dh: sub.keys.p256dh, auth: sub.keys.auth };
            super::webpush::Subscriber::parse(&keys).map_err(|e| invalid(format!("subscription.{e}")))?;
            (url.to_string(), Some(keys))
        }
        Platform::Fcm | Platform::Apns => {
            if req.subscription.is_some() {
                return Err(invalid(format!("an {} device is a token, not a subscription", platform.as_str())));
            }
            let token = req.token.ok_or_else(|| invalid(format!("token: required for {}", platform.as_str())))?;
            let well_formed = match platform {
                // 32 bytes, hex (64 digits) today; Apple says the length may grow.
                Platform::Apns => (64..=200).contains(&token.len()) && token.chars().all(|c| c.is_ascii_hexdigit()),
                _ => {
                    (1..=MAX_TOKEN).contains(&token.len())
                        && token.chars().all(|c| c.is_ascii_alphanumeric() || "-_:.".contains(c))
                }
            };
            if !well_formed {
                return Err(invalid(match platform {
                    Platform::Apns => "token: an APNs device token is 64 or more hex digits",
                    _ => "token: an FCM registration token is 1-2048 of A-Z a-z 0-9 - _ : .",
                }));
            }
            (token, None)
        }
    };
    Ok(Checked { platform, token, keys, app_version })
}

/// A Web Push endpoint whose name is `localhost` (RFC 6761) or resolves only to addresses the app
/// may not call is refused now, not at its first push. A name that does not resolve at all is
/// kept (a resolver's hiccup is not the client's fault); every push re-checks the addresses it
/// connects to anyway.
async fn refuse_private_names(endpoint: &str) -> ApiResult<()> {
    let Ok(url) = reqwest::Url::parse(endpoint) else { return Err(invalid("subscription.endpoint: not a URL")) };
    let Some(url::Host::Domain(name)) = url.host() else { return Ok(()) };
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    let refused =
        || ApiError::new(ErrorCode::TargetRefused, format!("subscription.endpoint: {name} is private or special"));
    if name == "localhost" || name.ends_with(".localhost") {
        return Err(refused());
    }
    let port = url.port_or_known_default().unwrap_or(443);
    let lookup = tokio::net::lookup_host((name.as_str(), port));
    if let Ok(Ok(addrs)) = tokio::time::timeout(std::time::Duration::from_secs(2), lookup).await {
        let addrs: Vec<std::net::SocketAddr> = addrs.collect();
        if !addrs.is_empty() && addrs.iter().all(|a| crate::webhooks::target::is_refused(a.ip())) {
            return Err(refused());
        }
    }
    Ok(())
}

/// Registers a device for the caller (under their session, so signing out removes it).
pub async fn register(node: &Node, who: &Identity, req: RegisterRequest) -> ApiResult<DeviceView> {
    let app = node.app(&who.app).await?;
    let checked = check(&app.settings, req)?;
    if checked.platform == Platform::Webpush && !app.settings.allow_private_targets {
        refuse_private_names(&checked.token).await?;
    }
    let device = node
        .store
        .register_device(
            &who.app,
            who.user,
            &NewDevice {
                platform: checked.platform,
                token: &checked.token,
                keys: checked.keys.as_ref(),
                app_version: checked.app_version.as_deref(),
                session_id: who.session_id.as_deref(),
            },
            node.config.push.max_devices_per_user,
        )
        .await?;
    metrics::counter!("natter_push_devices_registered_total", "platform" => checked.platform.as_str()).increment(1);
    Ok(device.into())
}

pub async fn list(node: &Node, app: &AppId, user: UserKey) -> ApiResult<Vec<DeviceView>> {
    Ok(node.store.devices(app, user).await?.into_iter().map(DeviceView::from).collect())
}

pub async fn remove(node: &Node, app: &AppId, user: UserKey, id: &str) -> ApiResult<()> {
    // Only ids this server issues reach the store (`dev_` and 32 hex digits): a NUL or any other
    // byte PostgreSQL cannot hold is simply no device.
    let issued = id.strip_prefix("dev_").is_some_and(|h| h.len() == 32 && h.bytes().all(|b| b.is_ascii_hexdigit()));
    if !issued || !node.store.remove_device(app, user, id).await? {
        return Err(ApiError::new(ErrorCode::DeviceNotFound, format!("no device {id}")));
    }
    Ok(())
}

/// `GET /v1/push/vapid`: the key browsers subscribe with (`applicationServerKey`).
pub async fn vapid_key(node: &Node, app: &AppId) -> ApiResult<serde_json::Value> {
    let app = node.app(app).await?;
    if app.settings.vapid_private_key.is_empty() {
        return Err(ApiError::new(ErrorCode::NotFound, "this app has no VAPID key: Web Push is not set up"));
    }
    let vapid = super::webpush::Vapid::from_private(app.settings.vapid_private_key.expose())
        .map_err(|e| ApiError::internal(format!("the app's VAPID key is unusable: {e}")))?;
    Ok(serde_json::json!({ "public_key": vapid.public_key }))
}

/// Checks an app's push credentials (run when they are set, so a bad key is found then, not at
/// the first push).
pub fn check_settings(settings: &AppSettings) -> Result<(), super::PushError> {
    if !settings.vapid_private_key.is_empty() {
        super::webpush::Vapid::from_private(settings.vapid_private_key.expose())?;
    }
    if !settings.fcm_service_account.is_empty() {
        super::fcm::ServiceAccount::parse(settings.fcm_service_account.expose())?;
    }
    if !settings.apns_key.is_empty() {
        super::apns::Credentials::parse(
            settings.apns_key.expose(),
            &settings.apns_key_id,
            &settings.apns_team_id,
            &settings.apns_topic,
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(json: serde_json::Value) -> RegisterRequest {
        serde_json::from_value(json).unwrap()
    }

    fn subscription(endpoint: &str) -> serde_json::Value {
        let (_, p256dh) = super::super::webpush::Vapid::generate();
        serde_json::json!({"platform": "webpush", "subscription": {
            "endpoint": endpoint, "expirationTime": null, "keys": {"p256dh": p256dh, "auth": "BTBZMqHH6r4Tts7J_aSIgg"}}})
    }

    #[test]
    fn registrations_are_checked_per_platform() {
        let settings = AppSettings::default();
        let code = |r: serde_json::Value| check(&settings, req(r)).err().map(|e| e.code.as_str());
        assert_eq!(code(serde_json::json!({"platform": "blackberry", "token": "x"})), Some("invalid_device"));
        assert_eq!(code(serde_json::json!({"platform": "fcm"})), Some("invalid_device"));
        assert_eq!(code(serde_json::json!({"platform": "fcm", "token": "has spaces"})), Some("invalid_device"));
        assert_eq!(code(serde_json::json!({"platform": "fcm", "token": "dXx:APA91b-abc_DEF"})), None);
        assert_eq!(code(serde_json::json!({"platform": "apns", "token": "abc"})), Some("invalid_device"));
        assert_eq!(code(serde_json::json!({"platform": "apns", "token": "ab".repeat(32)})), None);
        assert_eq!(code(subscription("https://fcm.googleapis.com/fcm/send/abc")), None);
        assert_eq!(code(subscription("http://push.example.com/x")), Some("invalid_device"));
        assert_eq!(code(subscription("https://169.254.169.254/latest")), Some("target_refused"));
        assert_eq!(code(subscription("https://[::1]/x")), Some("target_refused"));
        let mut bad_keys = subscription("https://push.example.com/x");
        bad_keys["subscription"]["keys"]["p256dh"] = "AAAA".into();
        assert_eq!(code(bad_keys), Some("invalid_device"));
    }

    #[test]
    fn apps_allowing_private_targets_may_use_a_loopback_receiver() {
        let settings = AppSettings { allow_private_targets: true, ..AppSettings::default() };
        assert!(check(&settings, req(subscription("http://127.0.0.1:9/push"))).is_ok());
    }
}
