//! Domain values, parsed once at the edge and trusted afterwards.
//!
//! Each newtype's `parse` is the only way to build it from outside input; serde goes through the
//! same `parse`, so a request body that deserializes holds only valid values.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;
use unicode_normalization::UnicodeNormalization as _;
use unicode_properties::{GeneralCategory, UnicodeGeneralCategory as _};

/// Why a value was rejected; the message names the field and the rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ParseError(pub String);

fn charset_ok(s: &str, extra: &[char]) -> bool {
    s.chars().all(|c| c.is_ascii_alphanumeric() || extra.contains(&c))
}

/// Characters that render as nothing (format characters such as zero-width spaces, joiners and
/// bidi controls, control characters, and the default-ignorable fillers and variation selectors):
/// in an identifier they make a second, look-alike account.
pub fn is_invisible(c: char) -> bool {
    matches!(c.general_category(), GeneralCategory::Format | GeneralCategory::Control)
        || matches!(
            c,
            '\u{034F}'
                | '\u{115F}'
                | '\u{1160}'
                | '\u{17B4}'
                | '\u{17B5}'
                | '\u{180B}'..='\u{180F}'
                | '\u{2800}'
                | '\u{3164}'
                | '\u{FE00}'..='\u{FE0F}'
                | '\u{FFA0}'
                | '\u{E0100}'..='\u{E01EF}'
        )
}

/// Bidi embedding, override and isolate controls: they reorder how the text around them is shown.
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// U+0000 is refused in every text a client or app gives: PostgreSQL cannot store it in text, and
/// both stores must accept exactly the same values.
/// Tells a field given as `null` (`Some(None)`) from a field left out (`None`); use with
/// `#[serde(default, deserialize_with = "crate::domain::present")]`.
pub fn present<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

pub fn check_no_nul(field: &str, s: &str) -> Result<(), ParseError> {
    if s.contains('\0') { Err(ParseError(format!("{field}: must not contain U+0000 (NUL)"))) } else { Ok(()) }
}

macro_rules! string_newtype {
    ($(#[$meta:meta])* $name:ident, $label:literal, |$s:ident| $check:expr) => {
        $(#[$meta])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            pub fn parse(input: impl Into<String>) -> Result<Self, ParseError> {
                let $s: String = input.into();
                let rule: Result<String, String> = $check;
                rule.map($name).map_err(|why| ParseError(format!(concat!($label, ": {}"), why)))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }

            pub fn into_inner(self) -> String {
                self.0
            }
        }

        impl $name {
            /// For values known valid at compile time; checked in debug builds.
            pub fn from_trusted(s: &'static str) -> Self {
                debug_assert!(Self::parse(s).is_ok(), "{s} is not valid");
                $name(s.to_string())
            }
        }

        impl TryFrom<String> for $name {
            type Error = ParseError;
            fn try_from(s: String) -> Result<Self, ParseError> {
                Self::parse(s)
            }
        }

        impl From<$name> for String {
            fn from(v: $name) -> String {
                v.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

string_newtype!(
    /// A tenant's id: 1–64 of `[A-Za-z0-9_-]` (it appears in NATS subjects, so no dots).
    AppId, "app id", |s| {
        if s.is_empty() || s.len() > 64 || !charset_ok(&s, &['_', '-']) {
            Err("must be 1-64 characters of A-Z a-z 0-9 _ -".into())
        } else { Ok(s) }
    }
);

string_newtype!(
    /// A user's public id, unique per app: 1–64 of `[A-Za-z0-9_.@-]` after NFKC normalisation
    /// (a fullwidth `ａｌｉｃｅ` is `alice`, not a second user).
    UserId, "user id", |s| {
        let s: String = if s.is_ascii() { s } else { s.nfkc().collect() };
        if s.is_empty() || s.len() > 64 || !charset_ok(&s, &['_', '.', '@', '-']) {
            Err("must be 1-64 characters of A-Z a-z 0-9 _ . @ -".into())
        } else { Ok(s) }
    }
);

string_newtype!(
    /// A group's id, which is also its conversation id: 1–64 of `[A-Za-z0-9_-]`, never starting
    /// with `dm_` (that prefix belongs to direct conversations).
    GroupId, "group id", |s| {
        if s.is_empty() || s.len() > 64 || !charset_ok(&s, &['_', '-']) {
            Err("must be 1-64 characters of A-Z a-z 0-9 _ -".into())
        } else if s.starts_with(DM_PREFIX) {
            Err(format!("must not start with {DM_PREFIX}"))
        } else { Ok(s) }
    }
);

string_newtype!(
    /// A conversation's id: a group id or an opaque direct-conversation id.
    ConversationId, "conversation", |s| {
        if s.is_empty() || s.len() > 128 || !charset_ok(&s, &['_', '-']) {
            Err("must be 1-128 characters of A-Z a-z 0-9 _ -".into())
        } else { Ok(s) }
    }
);

string_newtype!(
    /// A normalised email address: NFKC (fullwidth and compatibility forms folded), trimmed and
    /// lower-cased, with no invisible or format characters (so a look-alike address is refused
    /// or folded onto the real one, never registered beside it).
    Email, "email", |s| {
        let s: String = s.nfkc().collect::<String>().trim().to_lowercase();
        let valid = s.len() <= 254
            && !s.chars().any(|c| c.is_whitespace() || is_invisible(c))
            && match s.split_once('@') {
                Some((local, domain)) => {
                    !local.is_empty()
                        && local.len() <= 64
                        && !domain.contains('@')
                        && domain.contains('.')
                        && !domain.starts_with('.')
                        && !domain.ends_with('.')
                        && !domain.contains("..")
                }
                None => false,
            };
        if s.chars().any(is_invisible) {
            Err("must not contain invisible or format characters".into())
        } else if valid { Ok(s) } else { Err("must look like name@example.com".into()) }
    }
);

string_newtype!(
    /// The id a client gives a message so that a resend is recognised: 1–64 printable characters.
    ClientMsgId, "client_msg_id", |s| {
        if s.is_empty() || s.len() > 64 || s.chars().any(|c| c.is_control()) {
            Err("must be 1-64 printable characters".into())
        } else { Ok(s) }
    }
);

string_newtype!(
    /// A reaction: an emoji (joiners and variation selectors included) or an app-defined name
    /// like `+1`: 1–32 bytes, no whitespace, control or bidi characters, no `/` (it is a path
    /// segment of the REST API), and something visible.
    ReactionKey, "key", |s| {
        if s.is_empty() || s.len() > 32 {
            Err("must be 1-32 bytes".into())
        } else if s.chars().any(|c| c.is_whitespace() || c.is_control() || is_bidi_control(c) || c == '/') {
            Err("must not contain whitespace, control or bidi characters, or /".into())
        } else if s.chars().all(is_invisible) {
            Err("must contain a visible character".into())
        } else { Ok(s) }
    }
);

string_newtype!(
    /// A client's device id: 1–64 printable characters.
    DeviceId, "device_id", |s| {
        if s.is_empty() || s.len() > 64 || s.chars().any(|c| c.is_control()) {
            Err("must be 1-64 printable characters".into())
        } else { Ok(s) }
    }
);

string_newtype!(
    /// A person's or group's display name: trimmed, 1–100 characters, no control characters or
    /// bidi overrides, and something visible (joiners inside emoji and scripts stay allowed).
    Name, "name", |s| {
        let s = s.trim().to_string();
        if s.is_empty() || s.chars().count() > 100 || s.chars().any(|c| c.is_control()) {
            Err("must be 1-100 characters without control characters".into())
        } else if s.chars().any(is_bidi_control) {
            Err("must not contain bidi override or isolate characters".into())
        } else if s.chars().all(|c| c.is_whitespace() || is_invisible(c)) {
            Err("must contain a visible character".into())
        } else { Ok(s) }
    }
);

string_newtype!(
    /// An avatar URL: http(s), at most 2048 characters.
    AvatarUrl, "avatar_url", |s| {
        let lower = s.to_ascii_lowercase();
        if s.len() > 2048 || !(lower.starts_with("https://") || lower.starts_with("http://"))
            || s.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            Err("must be an http(s) URL of at most 2048 characters".into())
        } else { Ok(s) }
    }
);

string_newtype!(
    /// A group's announcement: at most 4096 bytes of text (lines and tabs allowed, no other
    /// control characters, no NUL, no bidi overrides).
    Announcement, "announcement", |s| {
        if s.len() > 4096 || s.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
            Err("must be at most 4096 bytes of text without control characters".into())
        } else if s.chars().any(is_bidi_control) {
            Err("must not contain bidi override or isolate characters".into())
        } else { Ok(s) }
    }
);

/// A user id is always a valid display name (1–64 printable characters), for users created
/// without one.
impl From<&UserId> for Name {
    fn from(id: &UserId) -> Name {
        Name(id.0.clone())
    }
}

/// An IP network (`10.0.0.0/8`, `fd00::/8`) or a single address (`192.0.2.7`, a /32 or /128).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNet {
    addr: std::net::IpAddr,
    prefix: u8,
}

impl IpNet {
    pub fn parse(s: &str) -> Result<Self, ParseError> {
        let bad = || ParseError(format!("{s:?} is not an IP address or CIDR network (10.0.0.0/8, fd00::/8)"));
        let (addr, prefix) = match s.trim().split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (s.trim(), None),
        };
        let addr: std::net::IpAddr = addr.parse().map_err(|_| bad())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p.parse::<u8>().ok().filter(|p| *p <= max).ok_or_else(bad)?,
            None => max,
        };
        Ok(IpNet { addr, prefix })
    }

    /// Whether `ip` is inside the network (an IPv4-mapped IPv6 address counts as its IPv4 one).
    pub fn contains(&self, ip: std::net::IpAddr) -> bool {
        use std::net::IpAddr;
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        let bits = |full: u128, width: u32| {
            let shift = width - u32::from(self.prefix);
            if shift >= 128 { 0 } else { full >> shift }
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                bits(u128::from(u32::from(net)), 32) == bits(u128::from(u32::from(ip)), 32)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => bits(u128::from(net), 128) == bits(u128::from(ip), 128),
            _ => false,
        }
    }
}

impl fmt::Display for IpNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl TryFrom<String> for IpNet {
    type Error = ParseError;
    fn try_from(s: String) -> Result<Self, ParseError> {
        Self::parse(&s)
    }
}

impl From<IpNet> for String {
    fn from(n: IpNet) -> String {
        n.to_string()
    }
}

impl Serialize for IpNet {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for IpNet {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        IpNet::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// Prefix of direct-conversation ids, reserved so group ids never collide with them.
pub const DM_PREFIX: &str = "dm_";

/// Deepest nesting `meta` may have (`{}` is 1). Every reader renders `meta` as it was sent, but
/// apps and their webhook receivers parse it with recursion limits of their own (serde_json's is
/// 128, and a few hundred levels crashed history before this bound).
pub const META_MAX_DEPTH: usize = 16;

/// A message's `meta`: a JSON object an app attaches, kept byte for byte as sent. It parses as
/// JSON everywhere (no lone surrogates, no number out of range), nests at most
/// [`META_MAX_DEPTH`] levels and holds no U+0000.
#[derive(Clone, PartialEq, Eq)]
pub struct Meta(String);

impl Meta {
    pub fn parse(text: &str) -> Result<Self, ParseError> {
        let bad = |why: &str| ParseError(format!("meta: {why}"));
        if !text.trim_start().starts_with('{') {
            return Err(bad("must be a JSON object"));
        }
        if json_depth(text) > META_MAX_DEPTH {
            return Err(bad(&format!("must not nest deeper than {META_MAX_DEPTH} levels")));
        }
        let value: serde_json::Value = serde_json::from_str(text).map_err(|e| bad(&e.to_string()))?;
        if contains_nul(&value) {
            return Err(bad("must not contain U+0000 (NUL)"));
        }
        Ok(Meta(text.trim().to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_inner(self) -> String {
        self.0
    }
}

impl fmt::Debug for Meta {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Meta({} bytes)", self.0.len())
    }
}

impl<'de> Deserialize<'de> for Meta {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = Box::<RawValue>::deserialize(d)?;
        Meta::parse(raw.get()).map_err(serde::de::Error::custom)
    }
}

impl Serialize for Meta {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match serde_json::from_str::<&RawValue>(&self.0) {
            Ok(raw) => raw.serialize(s),
            Err(e) => Err(serde::ser::Error::custom(e)),
        }
    }
}

/// How deeply arrays and objects nest in a JSON text, counted without recursion (brackets inside
/// strings do not count).
pub fn json_depth(text: &str) -> usize {
    let (mut depth, mut max, mut in_string, mut escaped) = (0usize, 0usize, false, false);
    for b in text.bytes() {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                max = max.max(depth);
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
}

fn contains_nul(value: &serde_json::Value) -> bool {
    match value {
        serde_json::Value::String(s) => s.contains('\0'),
        serde_json::Value::Array(items) => items.iter().any(contains_nul),
        serde_json::Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || contains_nul(v)),
        _ => false,
    }
}

/// The 3,000 most common passwords (assets/README.md says where they come from).
fn common_passwords() -> &'static std::collections::HashSet<&'static str> {
    static LIST: std::sync::OnceLock<std::collections::HashSet<&'static str>> = std::sync::OnceLock::new();
    LIST.get_or_init(|| include_str!("../assets/common-passwords.txt").lines().map(str::trim).collect())
}

/// A password as typed: 8–128 characters, not one of the 3,000 most common. Never printed.
#[derive(Clone, Deserialize)]
#[serde(try_from = "String")]
pub struct Password(String);

impl Password {
    pub fn parse(s: impl Into<String>) -> Result<Self, ParseError> {
        let s = s.into();
        let n = s.chars().count();
        if !(8..=128).contains(&n) {
            return Err(ParseError("password: must be 8-128 characters".into()));
        }
        if common_passwords().contains(s.to_lowercase().as_str()) {
            return Err(ParseError("password: too common; choose one that is harder to guess".into()));
        }
        Ok(Password(s))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Password {
    type Error = ParseError;
    fn try_from(s: String) -> Result<Self, ParseError> {
        Self::parse(s)
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(***)")
    }
}

/// The immutable internal key of a user; history and subjects follow it, not the public id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct UserKey(pub i64);

/// What kind of account a user is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UserKind {
    User,
    Guest,
    Service,
}

impl UserKind {
    pub fn as_str(self) -> &'static str {
        match self {
            UserKind::User => "user",
            UserKind::Guest => "guest",
            UserKind::Service => "service",
        }
    }

    pub fn parse(s: &str) -> Result<Self, ParseError> {
        match s {
            "user" => Ok(UserKind::User),
            "guest" => Ok(UserKind::Guest),
            "service" => Ok(UserKind::Service),
            other => Err(ParseError(format!("kind: unknown user kind {other:?}"))),
        }
    }
}

/// A member's role in a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Owner,
    Admin,
    Member,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Owner => "owner",
            Role::Admin => "admin",
            Role::Member => "member",
        }
    }

    pub fn parse(s: &str) -> Result<Self, ParseError> {
        match s {
            "owner" => Ok(Role::Owner),
            "admin" => Ok(Role::Admin),
            "member" => Ok(Role::Member),
            other => Err(ParseError(format!("role: unknown role {other:?}"))),
        }
    }

    /// Owners and admins manage other members.
    pub fn can_manage(self) -> bool {
        matches!(self, Role::Owner | Role::Admin)
    }
}

/// Direct conversations and groups share one model; this tells them apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConversationKind {
    Direct,
    Group,
}

impl ConversationKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ConversationKind::Direct => "direct",
            ConversationKind::Group => "group",
        }
    }

    pub fn parse(s: &str) -> Result<Self, ParseError> {
        match s {
            "direct" => Ok(ConversationKind::Direct),
            "group" => Ok(ConversationKind::Group),
            other => Err(ParseError(format!("conversation kind: unknown {other:?}"))),
        }
    }
}

/// The id of the direct conversation between two users, the same whoever asks.
pub fn direct_conversation_id(a: UserKey, b: UserKey) -> ConversationId {
    let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
    ConversationId(format!("{DM_PREFIX}{}_{}", lo.0, hi.0))
}

/// The two participants of a direct conversation, read back from its id.
pub fn direct_participants(conversation: &str) -> Option<(UserKey, UserKey)> {
    let rest = conversation.strip_prefix(DM_PREFIX)?;
    let (a, b) = rest.split_once('_')?;
    Some((UserKey(a.parse().ok()?), UserKey(b.parse().ok()?)))
}

/// Milliseconds since the Unix epoch: the one timestamp format on the wire and in the store.
pub fn now_millis() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// A random URL-safe identifier with a prefix, for public ids the server makes up.
pub fn random_id(prefix: &str, bytes: usize) -> String {
    use rand::RngCore;
    let mut buf = vec![0u8; bytes];
    rand::thread_rng().fill_bytes(&mut buf);
    format!("{prefix}{}", hex::encode(buf))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_ids_accept_the_documented_charset_and_length() {
        assert!(UserId::parse("alice.smith@example-1_x").is_ok());
        assert!(UserId::parse("a".repeat(64)).is_ok());
        assert!(UserId::parse("").is_err());
        assert!(UserId::parse("a".repeat(65)).is_err());
        assert!(UserId::parse("with space").is_err());
        assert!(UserId::parse("semi;colon").is_err());
        assert!(UserId::parse("ünïcode").is_err());
    }

    #[test]
    fn emails_are_normalised_and_checked() {
        assert_eq!(Email::parse("  Alice@Example.COM ").unwrap().as_str(), "alice@example.com");
        for bad in ["", "alice", "@example.com", "alice@", "alice@example", "a@b@c.d", "a b@c.d", "a@.com", "a@c..d"] {
            assert!(Email::parse(bad).is_err(), "{bad:?} accepted");
        }
        let err = Email::parse("nope").unwrap_err();
        assert!(err.0.starts_with("email:"), "{err}");
    }

    #[test]
    fn passwords_need_8_to_128_characters_and_never_print() {
        assert!(Password::parse("1234567").is_err());
        assert!(Password::parse("x7!kq2zp").is_ok());
        for common in ["12345678", "password1", "Password1", "iloveyou", "qwertyuiop"] {
            let err = Password::parse(common).unwrap_err();
            assert!(err.0.contains("too common"), "{common}: {err}");
        }
        assert!(Password::parse("x".repeat(128)).is_ok());
        assert!(Password::parse("x".repeat(129)).is_err());
        let p = Password::parse("correct horse").unwrap();
        assert_eq!(format!("{p:?}"), "Password(***)");
    }

    #[test]
    fn group_ids_cannot_impersonate_direct_conversations() {
        assert!(GroupId::parse("team-42_a").is_ok());
        assert!(GroupId::parse("dm_1_2").is_err());
        assert!(GroupId::parse("has.dot").is_err());
        assert!(GroupId::parse("").is_err());
    }

    #[test]
    fn app_ids_have_no_dots_so_they_fit_in_subjects() {
        assert!(AppId::parse("default").is_ok());
        assert!(AppId::parse("my-app_2").is_ok());
        assert!(AppId::parse("a.b").is_err());
        assert!(AppId::parse("a*").is_err());
    }

    #[test]
    fn client_msg_ids_are_1_to_64_printable_characters() {
        assert!(ClientMsgId::parse("c-1").is_ok());
        assert!(ClientMsgId::parse("").is_err());
        assert!(ClientMsgId::parse("x".repeat(65)).is_err());
        assert!(ClientMsgId::parse("a\nb").is_err());
    }

    #[test]
    fn names_are_trimmed_and_bounded() {
        assert_eq!(Name::parse("  Ada ").unwrap().as_str(), "Ada");
        assert!(Name::parse("   ").is_err());
        assert!(Name::parse("x".repeat(101)).is_err());
        assert!(Name::parse("a\u{0}b").is_err());
    }

    #[test]
    fn avatar_urls_must_be_http() {
        assert!(AvatarUrl::parse("https://x.test/a.png").is_ok());
        assert!(AvatarUrl::parse("javascript:alert(1)").is_err());
        assert!(AvatarUrl::parse("https://x.test/a b.png").is_err());
        assert!(Announcement::parse("Rules:\n1. be kind").is_ok());
        assert!(Announcement::parse("a\0b").is_err());
        assert!(Announcement::parse("a".repeat(4097)).is_err());
    }

    #[test]
    fn conversation_ids_and_device_ids_are_bounded() {
        assert!(ConversationId::parse("dm_1_2").is_ok());
        assert!(ConversationId::parse("x".repeat(129)).is_err());
        assert!(ConversationId::parse("a/b").is_err());
        assert!(DeviceId::parse("phone-1").is_ok());
        assert!(DeviceId::parse("").is_err());
    }

    #[test]
    fn direct_conversation_ids_do_not_depend_on_who_asks() {
        let a = direct_conversation_id(UserKey(7), UserKey(3));
        let b = direct_conversation_id(UserKey(3), UserKey(7));
        assert_eq!(a, b);
        assert_eq!(a.as_str(), "dm_3_7");
        assert_eq!(direct_participants(a.as_str()), Some((UserKey(3), UserKey(7))));
        assert_eq!(direct_participants("team"), None);
        assert_eq!(direct_participants("dm_x_1"), None);
    }

    #[test]
    fn enums_parse_their_wire_names_only() {
        assert_eq!(UserKind::parse("guest").unwrap(), UserKind::Guest);
        assert!(UserKind::parse("root").is_err());
        assert_eq!(Role::parse("admin").unwrap(), Role::Admin);
        assert!(Role::parse("god").is_err());
        assert!(Role::Owner.can_manage() && !Role::Member.can_manage());
        assert_eq!(ConversationKind::parse("group").unwrap(), ConversationKind::Group);
    }

    #[test]
    fn look_alike_emails_fold_onto_the_real_one_or_are_refused() {
        assert_eq!(Email::parse("ａｌｉｃｅ@example.com").unwrap().as_str(), "alice@example.com");
        assert_eq!(Email::parse("ÄLICE@Example.com").unwrap().as_str(), "älice@example.com");
        for hidden in [
            "ali\u{200B}ce@example.com",
            "alice\u{2060}@example.com",
            "\u{FEFF}alice@example.com",
            "al\u{00AD}ice@example.com",
        ] {
            let err = Email::parse(hidden).unwrap_err();
            assert!(err.0.contains("invisible"), "{hidden:?}: {err}");
        }
    }

    #[test]
    fn user_ids_fold_compatibility_forms_and_refuse_invisible_ones() {
        assert_eq!(UserId::parse("ａｌｉｃｅ").unwrap().as_str(), "alice");
        assert!(UserId::parse("ali\u{200B}ce").is_err());
    }

    #[test]
    fn names_need_something_visible_and_no_bidi_overrides() {
        assert!(Name::parse("\u{200B}\u{200B}").is_err());
        assert!(Name::parse("evil\u{202E}gnp.exe").is_err());
        assert_eq!(Name::parse("👨\u{200D}👩\u{200D}👧").unwrap().as_str(), "👨\u{200D}👩\u{200D}👧");
    }

    #[test]
    fn meta_is_an_object_of_bounded_depth_without_nul_kept_as_sent() {
        let deep = format!("{}{}", "{\"a\":".repeat(300), "1".to_string() + &"}".repeat(300));
        assert!(Meta::parse(&deep).unwrap_err().0.contains("deeper"));
        let ok = format!("{}1{}", "{\"a\":".repeat(META_MAX_DEPTH), "}".repeat(META_MAX_DEPTH));
        assert_eq!(Meta::parse(&ok).unwrap().as_str(), ok);
        assert!(Meta::parse("[1]").is_err());
        assert!(Meta::parse(r#"{"a":"\u0000"}"#).unwrap_err().0.contains("NUL"));
        assert!(Meta::parse(r#"{"a":"\ud800"}"#).is_err());
        assert!(Meta::parse(r#"{"a":1e400}"#).is_err());
        let big = r#"{"n": 123456789012345678901234567890, "s":"[{\"}"}"#;
        assert_eq!(Meta::parse(big).unwrap().as_str(), big);
        assert_eq!(json_depth(r#"{"s":"{{{{[[["}"#), 1);
    }

    #[test]
    fn networks_contain_their_addresses_and_single_addresses_only_themselves() {
        let net = IpNet::parse("10.0.0.0/8").unwrap();
        assert!(net.contains("10.200.3.4".parse().unwrap()));
        assert!(net.contains("::ffff:10.1.1.1".parse().unwrap()));
        assert!(!net.contains("11.0.0.1".parse().unwrap()));
        let one = IpNet::parse("192.0.2.7").unwrap();
        assert!(one.contains("192.0.2.7".parse().unwrap()) && !one.contains("192.0.2.8".parse().unwrap()));
        let v6 = IpNet::parse("fd00::/8").unwrap();
        assert!(v6.contains("fd12::1".parse().unwrap()) && !v6.contains("fe80::1".parse().unwrap()));
        assert!(IpNet::parse("0.0.0.0/0").unwrap().contains("203.0.113.9".parse().unwrap()));
        for bad in ["10.0.0.0/33", "nope", "10.0.0/8", "::/129", ""] {
            assert!(IpNet::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn nul_is_refused_by_name() {
        assert!(check_no_nul("content", "a\0b").unwrap_err().0.starts_with("content:"));
        assert!(check_no_nul("content", "ab").is_ok());
    }

    #[test]
    fn serde_goes_through_parse() {
        let ok: Result<UserId, _> = serde_json::from_str("\"bob\"");
        assert!(ok.is_ok());
        let bad: Result<UserId, _> = serde_json::from_str("\"bad id\"");
        assert!(bad.unwrap_err().to_string().contains("user id"));
    }
}
