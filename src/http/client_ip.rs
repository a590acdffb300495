//! Which address a request comes from, for per-IP limits (guest sign-up, registration, login).
//!
//! A proxy appends the address it saw to the forwarding header, after whatever the client sent.
//! So the list is read from the right: hops added by trusted proxies are skipped, and the first
//! address that is not a trusted proxy is the client. Everything left of it is the client's own
//! word and is never used (taking the first hop let a client pick its own rate-limit bucket).

use std::net::IpAddr;

use crate::{config::ForwardedHeader, domain::IpNet};
use actix_web::http::header::HeaderMap;

/// The client's address: the peer's, or, when the peer is a trusted proxy, the right-most
/// forwarded hop that is not one.
pub fn resolve(peer: Option<IpAddr>, headers: &HeaderMap, trusted: &[IpNet], header: ForwardedHeader) -> String {
    let Some(peer) = peer else { return String::new() };
    let is_trusted = |ip: IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(peer) {
        return peer.to_string();
    }
    let hops = match header {
        ForwardedHeader::XForwardedFor => x_forwarded_for(headers),
        ForwardedHeader::Forwarded => forwarded(headers),
    };
    let mut client = peer;
    for hop in hops.iter().rev() {
        // A hop that is not an address ("unknown", an obfuscated name, garbage): nothing to its
        // left can be checked, so the last trusted proxy stands for the client.
        let Some(ip) = hop else { break };
        client = *ip;
        if !is_trusted(*ip) {
            break;
        }
    }
    client.to_string()
}

/// Every `X-Forwarded-For` hop in order, across repeated headers.
fn x_forwarded_for(headers: &HeaderMap) -> Vec<Option<IpAddr>> {
    headers
        .get_all("x-forwarded-for")
        .flat_map(|v| v.to_str().unwrap_or("").split(','))
        .map(|hop| parse_node(hop.trim()))
        .collect()
}

/// The `for=` of every RFC 7239 `Forwarded` element in order, across repeated headers.
fn forwarded(headers: &HeaderMap) -> Vec<Option<IpAddr>> {
    headers
        .get_all("forwarded")
        .flat_map(|v| v.to_str().unwrap_or("").split(','))
        .map(|element| {
            element
                .split(';')
                .filter_map(|pair| pair.split_once('='))
                .find(|(k, _)| k.trim().eq_ignore_ascii_case("for"))
                .and_then(|(_, v)| parse_node(v.trim().trim_matches('"')))
        })
        .collect()
}

/// An address as proxies write it: `192.0.2.60`, `192.0.2.60:4711`, `2001:db8::1`,
/// `[2001:db8::1]` or `[2001:db8::1]:4711`.
fn parse_node(s: &str) -> Option<IpAddr> {
    if let Ok(ip) = s.parse() {
        return Some(ip);
    }
    if let Some(rest) = s.strip_prefix('[') {
        return rest.split_once(']').and_then(|(ip, _)| ip.parse().ok());
    }
    s.rsplit_once(':').and_then(|(ip, port)| port.parse::<u16>().ok().and_then(|_| ip.parse().ok()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::header::{HeaderName, HeaderValue};

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(HeaderName::from_static(k), HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|n| IpNet::parse(n).unwrap()).collect()
    }

    fn peer(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_claims() {
        let h = headers(&[("x-forwarded-for", "1.2.3.4")]);
        assert_eq!(
            resolve(peer("203.0.113.9"), &h, &nets(&["10.0.0.0/8"]), ForwardedHeader::XForwardedFor),
            "203.0.113.9"
        );
    }

    #[test]
    fn behind_a_trusted_proxy_the_hop_it_appended_counts_not_the_clients_own() {
        // The client sent "X-Forwarded-For: 6.6.6.6"; nginx appended the address it saw.
        let h = headers(&[("x-forwarded-for", "6.6.6.6, 198.51.100.23")]);
        let trusted = nets(&["10.0.0.0/8"]);
        assert_eq!(resolve(peer("10.1.2.3"), &h, &trusted, ForwardedHeader::XForwardedFor), "198.51.100.23");
    }

    #[test]
    fn chains_of_trusted_proxies_are_skipped_from_the_right() {
        let h = headers(&[("x-forwarded-for", "6.6.6.6, 198.51.100.23, 10.0.0.5"), ("x-forwarded-for", "10.0.0.6")]);
        let trusted = nets(&["10.0.0.0/8"]);
        assert_eq!(resolve(peer("10.1.2.3"), &h, &trusted, ForwardedHeader::XForwardedFor), "198.51.100.23");
    }

    #[test]
    fn all_hops_trusted_or_none_given_falls_back_to_the_left_most_proxy() {
        let trusted = nets(&["10.0.0.0/8"]);
        let h = headers(&[("x-forwarded-for", "10.0.0.5, 10.0.0.6")]);
        assert_eq!(resolve(peer("10.1.2.3"), &h, &trusted, ForwardedHeader::XForwardedFor), "10.0.0.5");
        assert_eq!(resolve(peer("10.1.2.3"), &HeaderMap::new(), &trusted, ForwardedHeader::XForwardedFor), "10.1.2.3");
    }

    #[test]
    fn garbage_to_the_right_stops_at_the_last_trusted_proxy() {
        let h = headers(&[("x-forwarded-for", "198.51.100.23, unknown")]);
        let trusted = nets(&["10.0.0.0/8"]);
        assert_eq!(resolve(peer("10.1.2.3"), &h, &trusted, ForwardedHeader::XForwardedFor), "10.1.2.3");
    }

    #[test]
    fn rfc_7239_forwarded_is_read_when_configured() {
        let h = headers(&[
            ("forwarded", r#"for=6.6.6.6, for="[2001:db8:cafe::17]:4711";proto=https"#),
            ("forwarded", "for=10.0.0.5;by=10.0.0.6"),
            ("x-forwarded-for", "7.7.7.7"),
        ]);
        let trusted = nets(&["10.0.0.0/8"]);
        assert_eq!(resolve(peer("10.1.2.3"), &h, &trusted, ForwardedHeader::Forwarded), "2001:db8:cafe::17");
        assert_eq!(resolve(peer("10.1.2.3"), &h, &trusted, ForwardedHeader::XForwardedFor), "7.7.7.7");
    }

    #[test]
    fn addresses_with_ports_and_brackets_parse() {
        assert_eq!(parse_node("192.0.2.60:4711"), "192.0.2.60".parse().ok());
        assert_eq!(parse_node("[2001:db8::1]"), "2001:db8::1".parse().ok());
        assert_eq!(parse_node("2001:db8::1"), "2001:db8::1".parse().ok());
        assert_eq!(parse_node("_hidden"), None);
    }
}
