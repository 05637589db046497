//! Who the client of a request is: the TCP peer, or — when the peer is one of the
//! `TRUSTED_PROXIES` — the address `X-Forwarded-For` names, read from the right and skipping
//! trusted proxies (`docs/protocol.md` §7). [`client_address`] is the one place that decides it;
//! the login limiter, the access log and the `/metrics` loopback rule all ask it.
//!
//! Reason to change: how forwarded requests are believed. Must never depend on the services
//! or hold state beyond the configured list.

use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use actix_web::{HttpMessage, HttpRequest};
use ipnet::IpNet;

/// Most `X-Forwarded-For` entries looked at (from the right): the chain of proxies Pulse can
/// sit behind is short, and a client may send a header of any length.
pub const MAX_FORWARDED_HOPS: usize = 32;

/// The proxies whose `X-Forwarded-For` is believed: addresses and CIDR ranges.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<IpNet>);

/// A `TRUSTED_PROXIES` entry that is neither an address nor a CIDR range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("TRUSTED_PROXIES: {0:?} is not an IP address or a CIDR range (e.g. 10.0.0.7, 10.0.0.0/8, ::1)")]
pub struct BadProxy(pub String);

impl TrustedProxies {
    /// No proxy is trusted: the client is always the TCP peer.
    pub fn none() -> Self {
        Self(Vec::new())
    }

    /// Trusts these ranges.
    pub fn new(ranges: Vec<IpNet>) -> Self {
        Self(ranges.into_iter().map(|r| r.trunc()).collect())
    }

    /// Whether `address` is a trusted proxy.
    pub fn contains(&self, address: IpAddr) -> bool {
        let address = address.to_canonical();
        self.0.iter().any(|range| range.contains(&address))
    }

    /// Whether no proxy is trusted.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl FromStr for TrustedProxies {
    type Err = BadProxy;

    /// `10.0.0.7, 10.1.0.0/16,::1` (commas, optional spaces; empty: none).
    fn from_str(list: &str) -> Result<Self, BadProxy> {
        let mut ranges = Vec::new();
        for entry in list.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let range = match entry.parse::<IpNet>() {
                Ok(range) => range,
                Err(_) => entry
                    .parse::<IpAddr>()
                    .map(|a| IpNet::from(a.to_canonical()))
                    .map_err(|_| BadProxy(entry.chars().take(100).collect()))?,
            };
            ranges.push(range);
        }
        Ok(Self::new(ranges))
    }
}

impl std::fmt::Display for TrustedProxies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let list: Vec<String> = self.0.iter().map(ToString::to_string).collect();
        f.write_str(&list.join(","))
    }
}

/// The client of a request: `peer` unless it is a trusted proxy; then the first untrusted
/// address of `forwarded` (the `X-Forwarded-For` entries, in header order) walking from the
/// right. When every entry is trusted, the leftmost one; when an entry is not an address (a
/// trusted proxy wrote garbage), the last trusted hop before it.
///
/// ```
/// use gateway::client_ip::{TrustedProxies, client_from};
/// let trusted: TrustedProxies = "10.0.0.0/8".parse().unwrap();
/// let peer = "10.0.0.2".parse().unwrap();
/// // A client spoofing the header only adds entries on the left.
/// let client = client_from(peer, ["1.1.1.1, 203.0.113.9, 10.0.0.3"], &trusted);
/// assert_eq!(client, "203.0.113.9".parse::<std::net::IpAddr>().unwrap());
/// ```
pub fn client_from<'a>(
    peer: IpAddr,
    forwarded: impl IntoIterator<Item = &'a str>,
    trusted: &TrustedProxies,
) -> IpAddr {
    let peer = peer.to_canonical();
    if !trusted.contains(peer) {
        return peer;
    }
    let entries: Vec<&str> = forwarded.into_iter().flat_map(|h| h.split(',')).collect();
    let mut client = peer;
    for entry in entries.iter().rev().take(MAX_FORWARDED_HOPS) {
        let Some(address) = parse_forwarded(entry) else { return client };
        client = address;
        if !trusted.contains(address) {
            return address;
        }
    }
    client
}

/// One `X-Forwarded-For` entry: `1.2.3.4`, `2001:db8::1`, and the `1.2.3.4:5678` /
/// `[2001:db8::1]:80` forms some proxies write.
fn parse_forwarded(entry: &str) -> Option<IpAddr> {
    let entry = entry.trim();
    entry
        .parse::<IpAddr>()
        .or_else(|_| entry.parse::<SocketAddr>().map(|s| s.ip()))
        .ok()
        .map(|a| a.to_canonical())
}

/// The client address decided for a request, kept in its extensions by [`client_address`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr(pub IpAddr);

/// The client of `req` (see [`client_from`]), with the trusted proxies of the app's state;
/// `None` when the request has no peer (a test request). Computed once per request.
pub fn client_address(req: &HttpRequest) -> Option<IpAddr> {
    if let Some(ClientAddr(address)) = req.extensions().get::<ClientAddr>() {
        return Some(*address);
    }
    let peer = req.peer_addr()?.ip();
    let address = match req.app_data::<actix_web::web::Data<crate::AppState>>() {
        Some(state) => client_from(peer, forwarded_for(req), &state.limits.trusted_proxies),
        None => peer.to_canonical(),
    };
    req.extensions_mut().insert(ClientAddr(address));
    Some(address)
}

/// Whether `req` says it was forwarded (`X-Forwarded-For` or `Forwarded`) by a peer that is
/// not a trusted proxy: then it came through a proxy Pulse was not told about, and its peer
/// address says nothing about the client (the `/metrics` loopback rule refuses it).
pub fn forwarded_by_untrusted_peer(req: &HttpRequest) -> bool {
    let forwarded = req.headers().contains_key("x-forwarded-for") || req.headers().contains_key("forwarded");
    let trusted = match (req.peer_addr(), req.app_data::<actix_web::web::Data<crate::AppState>>()) {
        (Some(peer), Some(state)) => state.limits.trusted_proxies.contains(peer.ip()),
        _ => false,
    };
    forwarded && !trusted
}

fn forwarded_for(req: &HttpRequest) -> impl Iterator<Item = &str> {
    req.headers().get_all("x-forwarded-for").filter_map(|v| v.to_str().ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn trusted_proxies_parse_addresses_and_ranges_and_refuse_garbage() {
        let t: TrustedProxies = " 10.0.0.7, 192.168.0.0/16,::1 ,fd00::/8".parse().expect("parses");
        assert!(t.contains(ip("10.0.0.7")));
        assert!(!t.contains(ip("10.0.0.8")));
        assert!(t.contains(ip("192.168.44.1")));
        assert!(!t.contains(ip("192.169.0.1")));
        assert!(t.contains(ip("::1")));
        assert!(t.contains(ip("fd12::1")));
        assert!(t.contains(ip("::ffff:10.0.0.7")), "an IPv4-mapped peer is its IPv4 address");
        assert!("".parse::<TrustedProxies>().expect("empty").is_empty());
        for bad in ["10.0.0.300", "10.0.0.0/33", "proxy.local", "10.0.0.1/8/2", "10.0.0.1 10.0.0.2"] {
            let err = bad.parse::<TrustedProxies>().expect_err(bad);
            assert!(err.to_string().contains("TRUSTED_PROXIES"), "{err}");
        }
        // Host bits in a range do not narrow it.
        let t: TrustedProxies = "10.1.2.3/8".parse().expect("parses");
        assert!(t.contains(ip("10.200.0.1")));
        assert_eq!(t.to_string(), "10.0.0.0/8");
    }

    #[test]
    fn the_client_is_the_first_untrusted_address_from_the_right() {
        let t: TrustedProxies = "10.0.0.0/8, 127.0.0.1".parse().expect("parses");
        // Untrusted peer: its header is ignored.
        assert_eq!(client_from(ip("203.0.113.5"), ["1.2.3.4"], &t), ip("203.0.113.5"));
        // Trusted peer, one proxy.
        assert_eq!(client_from(ip("127.0.0.1"), ["198.51.100.7"], &t), ip("198.51.100.7"));
        // Two proxies, and a spoofed entry on the left.
        assert_eq!(client_from(ip("10.0.0.1"), ["6.6.6.6, 198.51.100.7, 10.0.0.9"], &t), ip("198.51.100.7"));
        // Several headers count as one list, in order.
        assert_eq!(client_from(ip("10.0.0.1"), ["6.6.6.6", "198.51.100.7"], &t), ip("198.51.100.7"));
        // No header: the peer itself.
        assert_eq!(client_from(ip("10.0.0.1"), [], &t), ip("10.0.0.1"));
        // Every entry trusted: the leftmost.
        assert_eq!(client_from(ip("10.0.0.1"), ["10.0.0.3, 10.0.0.2"], &t), ip("10.0.0.3"));
        // Garbage right of any untrusted entry: the last trusted hop.
        assert_eq!(client_from(ip("10.0.0.1"), ["1.1.1.1, junk, 10.0.0.2"], &t), ip("10.0.0.2"));
        // Ports and brackets.
        assert_eq!(client_from(ip("10.0.0.1"), ["[2001:db8::7]:443"], &t), ip("2001:db8::7"));
        assert_eq!(client_from(ip("10.0.0.1"), ["198.51.100.7:5000"], &t), ip("198.51.100.7"));
        // Nothing trusted: always the peer.
        assert_eq!(client_from(ip("127.0.0.1"), ["198.51.100.7"], &TrustedProxies::none()), ip("127.0.0.1"));
    }

    fn address() -> impl Strategy<Value = IpAddr> {
        prop_oneof![
            any::<[u8; 4]>().prop_map(IpAddr::from),
            any::<[u16; 8]>().prop_map(|s| IpAddr::from(s).to_canonical()),
        ]
    }

    proptest! {
        /// Whatever a client puts in the header, it can only add entries on the left of what
        /// the trusted proxies append: the answer is the real client.
        #[test]
        fn spoofed_entries_never_change_the_answer(
            client in address(),
            spoofed in proptest::collection::vec(".{0,40}", 0..6),
            hops in 1usize..4,
        ) {
            let trusted: TrustedProxies = "10.0.0.0/8".parse().expect("parses");
            prop_assume!(!trusted.contains(client));
            // client → proxy 10.0.0.1 → … → proxy 10.0.0.<hops> → Pulse
            let mut entries: Vec<String> = spoofed.iter().map(|s| s.replace(',', "")).collect();
            entries.push(client.to_string());
            for hop in 1..hops {
                entries.push(format!("10.0.0.{hop}"));
            }
            let header = entries.join(", ");
            let peer = ip(&format!("10.0.0.{hops}"));
            prop_assert_eq!(client_from(peer, [header.as_str()], &trusted), client);
        }

        /// An untrusted peer is the client, whatever the header says.
        #[test]
        fn an_untrusted_peer_is_believed_over_any_header(peer in address(), header in ".{0,200}") {
            let trusted: TrustedProxies = "10.0.0.0/8".parse().expect("parses");
            prop_assume!(!trusted.contains(peer));
            prop_assert_eq!(client_from(peer, [header.as_str()], &trusted), peer.to_canonical());
        }

        /// CIDR matching agrees with the prefix arithmetic.
        #[test]
        fn cidr_matching_is_prefix_matching(net in any::<[u8; 4]>(), len in 0u8..=32, probe in any::<[u8; 4]>()) {
            let list = format!("{}/{len}", std::net::Ipv4Addr::from(net));
            let trusted: TrustedProxies = list.parse().expect("parses");
            let mask = if len == 0 { 0 } else { u32::MAX << (32 - u32::from(len)) };
            let expected = u32::from_be_bytes(net) & mask == u32::from_be_bytes(probe) & mask;
            prop_assert_eq!(trusted.contains(IpAddr::from(probe)), expected);
        }
    }
}
