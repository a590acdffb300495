//! Who a request says it is and where it comes from: the bearer token and the client's address,
//! read the same way by REST handlers and the WebSocket handshake.

use actix_web::{HttpRequest, http::header};

use crate::node::Node;

/// The bearer token of a request, if any.
pub fn bearer_token(headers: &header::HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim().to_string())
}

/// The client's IP (see [`super::client_ip`]).
pub fn client_ip(req: &HttpRequest, node: &Node) -> String {
    peer_ip(req.peer_addr(), req.headers(), node)
}

/// The client's address: the peer's, or, behind trusted proxies, the right-most forwarded hop
/// that is not one of them.
pub fn peer_ip(peer: Option<std::net::SocketAddr>, headers: &header::HeaderMap, node: &Node) -> String {
    let http = &node.config.http;
    super::client_ip::resolve(peer.map(|a| a.ip()), headers, &http.trusted_proxies, http.client_ip_header)
}
