//! The client's IP: the socket peer, unless the peer is a configured trusted proxy, in which case
//! the right-most `X-Forwarded-For` address that is not itself a trusted proxy.

use std::net::{IpAddr, SocketAddr};

use axum::extract::ConnectInfo;
use axum::http::request::Parts;
use ipnet::IpNet;

pub fn client_ip(parts: &Parts, trusted: &[IpNet]) -> Option<IpAddr> {
    let peer = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())?;
    if trusted.is_empty() {
        return Some(peer);
    }
    // Several X-Forwarded-For lines are one list (RFC 9110 §5.3): a proxy that appends its own
    // line after a client-supplied one must still be read from the right. A line that is not
    // text poisons the list: fall back to the peer.
    let mut lines = vec![];
    for v in parts.headers.get_all("x-forwarded-for") {
        match v.to_str() {
            Ok(s) => lines.push(s),
            Err(_) => return Some(peer),
        }
    }
    let joined = lines.join(",");
    resolve(
        peer,
        (!lines.is_empty()).then_some(joined.as_str()),
        trusted,
    )
}

/// The decision, apart from the request, for unit tests.
pub fn resolve(peer: IpAddr, forwarded_for: Option<&str>, trusted: &[IpNet]) -> Option<IpAddr> {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|n| n.contains(ip));
    if !is_trusted(&peer) {
        return Some(peer);
    }
    let Some(xff) = forwarded_for else {
        return Some(peer);
    };
    let mut last = peer;
    for hop in xff.split(',').rev() {
        let Ok(ip) = hop.trim().parse::<IpAddr>() else {
            // A garbled hop: stop at the last address we could trust.
            return Some(last);
        };
        if !is_trusted(&ip) {
            return Some(ip);
        }
        last = ip;
    }
    Some(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(v: &[&str]) -> Vec<IpNet> {
        v.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let peer: IpAddr = "10.0.0.5".parse().unwrap();
        let xff = Some("203.0.113.9, 10.0.0.7");
        assert_eq!(resolve(peer, xff, &[]), Some(peer));
        assert_eq!(
            resolve(peer, xff, &nets(&["10.0.0.0/8"])),
            Some("203.0.113.9".parse().unwrap())
        );
        let outsider: IpAddr = "198.51.100.1".parse().unwrap();
        assert_eq!(
            resolve(outsider, xff, &nets(&["10.0.0.0/8"])),
            Some(outsider)
        );
        // A client cannot spoof its address by prepending hops.
        let spoof = Some("1.2.3.4, 203.0.113.9");
        assert_eq!(
            resolve(peer, spoof, &nets(&["10.0.0.0/8"])),
            Some("203.0.113.9".parse().unwrap())
        );
    }

    #[test]
    fn every_forwarded_for_line_is_read_from_the_right() {
        use axum::http::Request;
        let mut req = Request::builder()
            .header("x-forwarded-for", "1.2.3.4")
            .header("x-forwarded-for", "203.0.113.9")
            .body(())
            .unwrap();
        req.extensions_mut()
            .insert(ConnectInfo(SocketAddr::from(([10, 0, 0, 5], 4000))));
        let (parts, _) = req.into_parts();
        assert_eq!(
            client_ip(&parts, &nets(&["10.0.0.0/8"])),
            Some("203.0.113.9".parse().unwrap()),
            "the proxy's appended line wins over the client's own"
        );
    }
}
