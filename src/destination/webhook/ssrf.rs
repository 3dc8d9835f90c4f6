//! SSRF guard for webhook delivery (`block_private_ips`): which IP addresses are not public, and
//! the DNS resolver that every webhook connection goes through, so a name that resolves (or
//! re-resolves, DNS rebinding) to a private address is refused at connect time.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// Why `ip` must not be a webhook target when private addresses are blocked, or `None` for a
/// public address.
pub fn blocked_reason(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => blocked_v4(v4),
        IpAddr::V6(v6) => blocked_v6(v6),
    }
}

fn blocked_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    Some(match (a, b, c) {
        _ if ip.is_unspecified() || a == 0 => "an unspecified (0.0.0.0/8) address",
        (127, _, _) => "a loopback address",
        (10, _, _) | (172, 16..=31, _) | (192, 168, _) => "a private address",
        (169, 254, _) => "a link-local address",
        (100, 64..=127, _) => "a carrier-grade NAT (100.64.0.0/10) address",
        (192, 0, 0) => "an IETF protocol assignment (192.0.0.0/24) address",
        (192, 0, 2) | (198, 51, 100) | (203, 0, 113) => "a documentation address",
        (198, 18..=19, _) => "a benchmarking (198.18.0.0/15) address",
        (192, 88, 99) => "a 6to4 relay anycast address",
        (224..=239, _, _) => "a multicast address",
        (240..=255, _, _) => "a reserved or broadcast address",
        _ => return None,
    })
}

fn blocked_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let segments = ip.segments();
    // Addresses that embed an IPv4 address reach that address: judge the embedded one.
    if let Some(v4) = ip.to_ipv4_mapped() {
        return blocked_v4(v4);
    }
    if segments[0] == 0x0064 && segments[1] == 0xff9b && segments[2..6] == [0, 0, 0, 0] {
        // NAT64 well-known prefix 64:ff9b::/96.
        return blocked_v4(embedded_v4(&segments));
    }
    if segments[0] == 0x2002 {
        // 6to4 2002::/16 carries the IPv4 address in bits 16..48.
        let v4 = Ipv4Addr::new(
            (segments[1] >> 8) as u8,
            segments[1] as u8,
            (segments[2] >> 8) as u8,
            segments[2] as u8,
        );
        return blocked_v4(v4);
    }
    Some(match segments {
        _ if ip.is_unspecified() => "an unspecified address",
        _ if ip.is_loopback() => "a loopback address",
        [0, 0, 0, 0, 0, 0, _, _] => "an IPv4-compatible (::/96) address",
        [0x0064, 0xff9b, 0x0001, ..] => "a local-use NAT64 (64:ff9b:1::/48) address",
        [0x0100, 0, 0, 0, ..] => "a discard-only (100::/64) address",
        [0x2001, 0x0000, ..] => "a Teredo (2001::/32) address",
        [0x2001, 0x0db8, ..] => "a documentation address",
        [0x2001, 0x0010..=0x001f, ..] => "an ORCHID address",
        [s, ..] if s & 0xfe00 == 0xfc00 => "a unique local (fc00::/7) address",
        [s, ..] if s & 0xffc0 == 0xfe80 => "a link-local address",
        [s, ..] if s & 0xffc0 == 0xfec0 => "a site-local address",
        [s, ..] if s & 0xff00 == 0xff00 => "a multicast address",
        _ => return None,
    })
}

fn embedded_v4(segments: &[u16; 8]) -> Ipv4Addr {
    Ipv4Addr::new(
        (segments[6] >> 8) as u8,
        segments[6] as u8,
        (segments[7] >> 8) as u8,
        segments[7] as u8,
    )
}

/// A webhook target refused by the SSRF guard. Found in a failed request's error chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockedAddress {
    /// The host as written in the URL.
    pub host: String,
    /// The first refused address and why.
    pub ip: IpAddr,
    pub reason: &'static str,
}

impl fmt::Display for BlockedAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.trim_matches(['[', ']']) == self.ip.to_string() {
            write!(f, "{} is {}", self.ip, self.reason)?;
        } else {
            write!(f, "{} resolves to {}, {}", self.host, self.ip, self.reason)?;
        }
        f.write_str(
            "; webhooks to non-public addresses are blocked \
             (destinations.webhook.block_private_ips)",
        )
    }
}

impl std::error::Error for BlockedAddress {}

/// A host name that did not resolve. Found in a failed request's error chain.
#[derive(Debug)]
pub struct DnsFailure {
    pub host: String,
    pub source: std::io::Error,
}

impl fmt::Display for DnsFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "could not resolve {}: {}", self.host, self.source)
    }
}

impl std::error::Error for DnsFailure {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

/// The resolver of the webhook client: the system resolver (getaddrinfo), with non-public
/// addresses dropped when `block_private_ips` is on. Checking here, on the addresses the
/// connection will actually use, is what makes DNS rebinding useless: there is no second
/// lookup between the check and the connect.
#[derive(Debug, Clone, Copy)]
pub struct GuardedResolver {
    pub block_private_ips: bool,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let block = self.block_private_ips;
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let resolved: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await
                .map_err(|source| DnsFailure {
                    host: host.clone(),
                    source,
                })?
                .collect();
            if !block {
                return Ok(Box::new(resolved.into_iter()) as Addrs);
            }
            let mut refused = None;
            let allowed: Vec<SocketAddr> = resolved
                .into_iter()
                .filter(|addr| match blocked_reason(addr.ip()) {
                    Some(reason) => {
                        refused.get_or_insert((addr.ip(), reason));
                        false
                    }
                    None => true,
                })
                .collect();
            match (allowed.is_empty(), refused) {
                (true, Some((ip, reason))) => {
                    Err(Box::new(BlockedAddress { host, ip, reason }) as _)
                }
                _ => Ok(Box::new(allowed.into_iter()) as Addrs),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blocked(ip: &str) -> bool {
        blocked_reason(ip.parse().unwrap()).is_some()
    }

    #[test]
    fn non_public_ipv4_is_blocked() {
        for ip in [
            "0.0.0.0",
            "0.1.2.3",
            "127.0.0.1",
            "127.255.0.9",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "100.127.255.255",
            "192.0.0.8",
            "192.0.2.1",
            "198.51.100.7",
            "203.0.113.9",
            "198.18.0.1",
            "224.0.0.1",
            "239.255.255.250",
            "240.0.0.1",
            "255.255.255.255",
        ] {
            assert!(blocked(ip), "{ip} should be blocked");
        }
    }

    #[test]
    fn public_ipv4_passes() {
        for ip in [
            "1.1.1.1",
            "8.8.8.8",
            "172.15.255.255",
            "172.32.0.1",
            "100.63.255.255",
            "100.128.0.1",
            "192.169.0.1",
            "93.184.216.34",
        ] {
            assert!(!blocked(ip), "{ip} should pass");
        }
    }

    #[test]
    fn non_public_ipv6_is_blocked_including_embedded_ipv4() {
        for ip in [
            "::",
            "::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::127.0.0.1",
            "64:ff9b::a00:1",
            "64:ff9b:1::1",
            "2002:7f00:1::",
            "2002:c0a8:101::1",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "fec0::1",
            "ff02::1",
            "2001:db8::1",
            "2001::1",
            "100::1",
        ] {
            assert!(blocked(ip), "{ip} should be blocked");
        }
    }

    #[test]
    fn public_ipv6_passes() {
        for ip in [
            "2606:4700:4700::1111",
            "2001:4860:4860::8888",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2002:808:808::1",
        ] {
            assert!(!blocked(ip), "{ip} should pass");
        }
    }

    #[test]
    fn blocked_address_message_names_host_address_and_setting() {
        let literal = BlockedAddress {
            host: "127.0.0.1".into(),
            ip: "127.0.0.1".parse().unwrap(),
            reason: "a loopback address",
        };
        assert_eq!(
            literal.to_string(),
            "127.0.0.1 is a loopback address; webhooks to non-public addresses are blocked \
             (destinations.webhook.block_private_ips)"
        );
        let named = BlockedAddress {
            host: "internal.example".into(),
            ..literal
        };
        assert!(
            named
                .to_string()
                .starts_with("internal.example resolves to 127.0.0.1, a loopback address;")
        );
    }
}
