//! Who is asking: the client address that per-address limits (sign-ins, unknown tokens) are
//! keyed by.
//!
//! The client is the connection's peer (the server puts it into every request as
//! [`ConnectInfo`]), unless that peer is one of `RUNBOOKS_TRUSTED_PROXIES`: then it is the
//! right-most address of `X-Forwarded-For` that is not a trusted proxy. Entries left of it are
//! whatever the client wrote and are never believed, and without trusted proxies the header
//! is ignored altogether, so a client cannot pick the address it is counted under.
//!
//! Limits count IPv6 clients by their /64 network (one host usually has a whole /64 to pick
//! addresses from) and IPv4-mapped IPv6 addresses as the IPv4 address they are.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::HeaderMap;
use axum::http::request::Parts;
use ipnet::IpNet;

use super::AppState;

/// The client of a request, as limits count it; `None` when the request did not come through
/// the server's listener (e.g. a router called directly in a benchmark).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr(pub Option<IpAddr>);

impl ClientAddr {
    pub fn of(parts: &Parts, trusted: &[IpNet]) -> Self {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|info| info.0.ip());
        ClientAddr(peer.map(|peer| client(peer, &parts.headers, trusted)))
    }

    /// The key a per-address limit counts this client under.
    pub fn limit_key(self) -> Option<IpAddr> {
        self.0.map(network)
    }
}

impl FromRequestParts<AppState> for ClientAddr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        Ok(Self::of(parts, &state.trusted_proxies))
    }
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The client behind `peer`, through trusted proxies.
fn client(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    let mut client = canonical(peer);
    if !is_trusted(&client) {
        return client;
    }
    // Every proxy appends the address it was connected from: read from the right, past our
    // own proxies, up to the first address that is not one of them.
    let hops: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .collect();
    for hop in hops.into_iter().rev() {
        let Ok(ip) = hop.trim().parse::<IpAddr>() else {
            break;
        };
        client = canonical(ip);
        if !is_trusted(&client) {
            break;
        }
    }
    client
}

/// The network a limit counts an address under: itself for IPv4, its /64 for IPv6.
fn network(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(Ipv6Addr::from(bits))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(forwarded: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in forwarded {
            headers.append("x-forwarded-for", value.parse().unwrap());
        }
        headers
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn the_peer_is_the_client_unless_it_is_a_trusted_proxy() {
        let trusted: Vec<IpNet> = vec![
            "10.0.0.0/8".parse().unwrap(),
            "192.0.2.7/32".parse().unwrap(),
        ];
        let forged = headers(&["203.0.113.9"]);
        // No trusted proxies: the header is ignored.
        assert_eq!(client(ip("198.51.100.1"), &forged, &[]), ip("198.51.100.1"));
        // An untrusted peer cannot pick its address.
        assert_eq!(
            client(ip("198.51.100.1"), &forged, &trusted),
            ip("198.51.100.1")
        );
        // Behind trusted proxies: the right-most address that is not one of them.
        let chain = headers(&["1.1.1.1, 203.0.113.9", "10.1.2.3"]);
        assert_eq!(client(ip("192.0.2.7"), &chain, &trusted), ip("203.0.113.9"));
        // A proxy without a header: the proxy is the client.
        assert_eq!(
            client(ip("10.0.0.1"), &headers(&[]), &trusted),
            ip("10.0.0.1")
        );
        // Garbage stops the walk at the last address a trusted proxy vouched for.
        let garbage = headers(&["nonsense", "10.9.9.9"]);
        assert_eq!(client(ip("10.0.0.1"), &garbage, &trusted), ip("10.9.9.9"));
        // IPv4-mapped IPv6 peers are their IPv4 address.
        assert_eq!(
            client(ip("::ffff:10.0.0.1"), &chain, &trusted),
            ip("203.0.113.9")
        );
    }

    #[test]
    fn ipv6_clients_are_counted_by_their_64() {
        assert_eq!(network(ip("2001:db8:1:2:aaaa::1")), ip("2001:db8:1:2::"));
        assert_eq!(network(ip("2001:db8:1:2:ffff::9")), ip("2001:db8:1:2::"));
        assert_ne!(network(ip("2001:db8:1:3::1")), ip("2001:db8:1:2::"));
        assert_eq!(network(ip("192.0.2.1")), ip("192.0.2.1"));
    }
}
