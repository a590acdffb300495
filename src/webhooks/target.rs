//! Where webhook and hook requests may go.
//!
//! Unless an app sets `allow_private_targets`, a URL that resolves to loopback, private,
//! link-local (cloud metadata), shared, multicast or otherwise special addresses is refused. The
//! check runs after DNS resolution, in the resolver the HTTP client connects through, so the
//! client only ever connects to an address that was checked (no time-of-check/time-of-use gap).
//! Literal IP hosts (decimal, IPv4-mapped IPv6, …) are checked before any request, and
//! redirects are never followed.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::Arc,
    time::Duration,
};

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// True for addresses a multi-tenant server must not call on a tenant's behalf.
pub fn is_refused(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4_refused(v4),
        IpAddr::V6(v6) => v6_refused(v6),
    }
}

fn v4_refused(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_documentation()
        || a == 0
        || (a == 100 && (64..128).contains(&b)) // shared address space (carrier NAT)
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 198 && (b == 18 || b == 19)) // benchmarking
        || a >= 224 // multicast and reserved
}

fn v6_refused(ip: Ipv6Addr) -> bool {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return v4_refused(v4);
    }
    let s = ip.segments();
    ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        || (s[0] & 0xfe00) == 0xfc00 // unique local (fc00::/7)
        || (s[0] & 0xffc0) == 0xfe80 // link local (fe80::/10)
        || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation
        // NAT64 (64:ff9b::/96) and IPv4-compatible (::/96) embed an IPv4 address.
        || (s[0] == 0x64 && s[1] == 0xff9b && s[2..6] == [0, 0, 0, 0] && v4_refused(embedded_v4(s)))
        || (s[0..6] == [0, 0, 0, 0, 0, 0] && v4_refused(embedded_v4(s)))
}

fn embedded_v4(s: [u16; 8]) -> Ipv4Addr {
    Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8)
}

/// Why a URL may not be called.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    #[error("URL is not valid: {0}")]
    Invalid(String),
    #[error("only http and https URLs are allowed")]
    Scheme,
    #[error("target address {0} is private or special and not allowed for this app")]
    Refused(IpAddr),
}

/// Checks a URL's form and, for literal IP hosts, its address.
pub fn check_url(url: &str, allow_private: bool) -> Result<reqwest::Url, TargetError> {
    let parsed = reqwest::Url::parse(url).map_err(|e| TargetError::Invalid(e.to_string()))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(TargetError::Scheme);
    }
    let ip = match parsed.host() {
        Some(url::Host::Ipv4(v4)) => Some(IpAddr::V4(v4)),
        Some(url::Host::Ipv6(v6)) => Some(IpAddr::V6(v6)),
        Some(url::Host::Domain(_)) => None,
        None => return Err(TargetError::Invalid("no host".into())),
    };
    if let Some(ip) = ip
        && !allow_private
        && is_refused(ip)
    {
        return Err(TargetError::Refused(ip));
    }
    Ok(parsed)
}

/// Marks a resolver refusal in error messages.
pub const REFUSED: &str = "resolves only to refused addresses";

/// Resolves names and drops refused addresses; a name with only refused addresses fails.
struct CheckedResolver;

impl Resolve for CheckedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        Box::pin(async move {
            let host = name.as_str().to_string();
            let found: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let allowed: Vec<SocketAddr> = found.iter().copied().filter(|a| !is_refused(a.ip())).collect();
            if allowed.is_empty() {
                let first = found.first().map(|a| a.ip().to_string()).unwrap_or_default();
                return Err(format!("{host} {REFUSED} ({first}): private or special, not allowed for this app").into());
            }
            let addrs: Addrs = Box::new(allowed.into_iter());
            Ok(addrs)
        })
    }
}

/// HTTP clients for outgoing calls: one that refuses private targets and one that allows them,
/// and the same pair speaking HTTP/2 without negotiating it, for services that speak nothing else
/// (APNs) at a plain `http://` address (a test receiver, a proxy of the operator's); at `https://`
/// the first pair negotiates HTTP/2 by ALPN.
#[derive(Clone)]
pub struct Clients {
    strict: reqwest::Client,
    open: reqwest::Client,
    strict_h2c: reqwest::Client,
    open_h2c: reqwest::Client,
}

impl Clients {
    pub fn new(timeout: Duration) -> anyhow::Result<Self> {
        let base = || {
            reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .timeout(timeout)
                .connect_timeout(timeout)
                .user_agent(concat!("natter/", env!("CARGO_PKG_VERSION")))
                .no_proxy()
        };
        Ok(Self {
            strict: base().dns_resolver(Arc::new(CheckedResolver)).build()?,
            open: base().build()?,
            strict_h2c: base().dns_resolver(Arc::new(CheckedResolver)).http2_prior_knowledge().build()?,
            open_h2c: base().http2_prior_knowledge().build()?,
        })
    }

    /// The client for an HTTP/2-only service: ALPN over TLS, prior knowledge over plain HTTP.
    pub fn for_url_http2(
        &self,
        url: &str,
        allow_private: bool,
    ) -> Result<(&reqwest::Client, reqwest::Url), TargetError> {
        let (client, parsed) = self.for_url(url, allow_private)?;
        if parsed.scheme() == "https" {
            return Ok((client, parsed));
        }
        Ok((if allow_private { &self.open_h2c } else { &self.strict_h2c }, parsed))
    }

    /// The client for an app, after checking the URL itself.
    pub fn for_url(&self, url: &str, allow_private: bool) -> Result<(&reqwest::Client, reqwest::Url), TargetError> {
        let parsed = check_url(url, allow_private)?;
        Ok((if allow_private { &self.open } else { &self.strict }, parsed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_private_link_local_and_metadata_addresses_are_refused() {
        for ip in [
            "127.0.0.1",
            "127.1.2.3",
            "10.0.0.1",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "fe80::1",
            "fd00:ec2::254",
            "fc00::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "64:ff9b::a00:1",
            "::127.0.0.1",
            "ff02::1",
        ] {
            assert!(is_refused(ip.parse().unwrap()), "{ip} should be refused");
        }
        for ip in ["93.184.216.34", "1.1.1.1", "2606:4700:4700::1111", "8.8.8.8"] {
            assert!(!is_refused(ip.parse().unwrap()), "{ip} should be allowed");
        }
    }

    #[test]
    fn literal_hosts_are_checked_in_every_spelling() {
        for url in [
            "http://127.0.0.1/x",
            "http://[::1]:8080/",
            "http://169.254.169.254/latest/meta-data/",
            "http://10.0.0.1/",
            "http://[::ffff:127.0.0.1]/",
            "http://2130706433/",
            "http://0x7f000001/",
            "http://127.1/",
            "http://0177.0.0.1/",
        ] {
            assert!(matches!(check_url(url, false), Err(TargetError::Refused(_))), "{url} must be refused");
            assert!(check_url(url, true).is_ok(), "{url} is fine when private targets are allowed");
        }
        assert_eq!(check_url("ftp://example.com/", true), Err(TargetError::Scheme));
        assert!(check_url("https://hooks.example.com/natter", false).is_ok());
        assert!(matches!(check_url("not a url", false), Err(TargetError::Invalid(_))));
    }
}
