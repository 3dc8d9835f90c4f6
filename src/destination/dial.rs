//! Broker addresses for destination types that open their own connections to a host the
//! tenant chose: `host:port` parsing, and the SSRF guard (`block_private_ips`): the API-time
//! check of a literal address, and the resolution checked before each new connection.

use std::net::{IpAddr, SocketAddr};

use super::AttemptCode;
use super::webhook::blocked_reason;

/// Why a broker address could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AddressProblem {
    /// Not `host`, `host:port` or `[v6]:port`: a URL, user info, a path, spaces, an IPv6
    /// address without brackets.
    NotAnAddress,
    /// The port as written, outside 1-65535.
    BadPort(String),
}

/// `host`, `host:port` or `[v6]:port` split into host and port, `default_port` when it names
/// none.
pub fn split_host_port(text: &str, default_port: u16) -> Result<(String, u16), AddressProblem> {
    use AddressProblem::NotAnAddress;
    if text.is_empty()
        || text
            .chars()
            .any(|c| c.is_whitespace() || matches!(c, '/' | '@' | '?' | '#'))
    {
        return Err(NotAnAddress);
    }
    let (host, port) = if let Some(rest) = text.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or(NotAnAddress)?;
        match after {
            "" => (host, None),
            _ => (host, Some(after.strip_prefix(':').ok_or(NotAnAddress)?)),
        }
    } else {
        match text.rsplit_once(':') {
            Some((host, _)) if host.contains(':') => return Err(NotAnAddress),
            Some((host, port)) => (host, Some(port)),
            None => (text, None),
        }
    };
    if host.is_empty() {
        return Err(NotAnAddress);
    }
    let port = match port {
        None => default_port,
        Some(port) => match port.parse::<u16>() {
            Ok(port) if port > 0 => port,
            _ => return Err(AddressProblem::BadPort(port.to_owned())),
        },
    };
    Ok((host.to_owned(), port))
}

/// Why `host` may not be written into `field` when private addresses are blocked: a literal
/// non-public IP or `localhost`. Other names are checked when a connection is opened, because
/// what they resolve to can change.
pub fn literal_host_problem(field: &str, host: &str, block_private_ips: bool) -> Option<String> {
    if !block_private_ips {
        return None;
    }
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let lower = bare.trim_end_matches('.').to_ascii_lowercase();
    let reason = match bare.parse::<IpAddr>() {
        Ok(ip) => blocked_reason(ip)?,
        Err(_) if lower == "localhost" || lower.ends_with(".localhost") => "a loopback address",
        Err(_) => return None,
    };
    Some(format!(
        "{field}: {host} is {reason}; destinations on non-public addresses are blocked \
         (destinations.webhook.block_private_ips)"
    ))
}

/// Resolves `host:port` before a connection is opened and, with the guard on, refuses a host
/// with any non-public address. The connection itself resolves the name again; the window
/// between the two lookups is the one place DNS rebinding could still slip through.
pub async fn check_host(
    host: &str,
    port: u16,
    block_private_ips: bool,
) -> Result<Vec<SocketAddr>, (AttemptCode, String)> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let addrs: Vec<SocketAddr> = match tokio::net::lookup_host((bare, port)).await {
        Ok(addrs) => addrs.collect(),
        Err(error) => {
            return Err((
                AttemptCode::DnsError,
                format!("could not resolve {host}: {error}"),
            ));
        }
    };
    if block_private_ips {
        for addr in &addrs {
            if let Some(reason) = blocked_reason(addr.ip()) {
                let what = if bare == addr.ip().to_string() {
                    format!("{} is {reason}", addr.ip())
                } else {
                    format!("{host} resolves to {}, {reason}", addr.ip())
                };
                return Err((
                    AttemptCode::BlockedAddress,
                    format!(
                        "{what}; destinations on non-public addresses are blocked \
                         (destinations.webhook.block_private_ips)"
                    ),
                ));
            }
        }
    }
    Ok(addrs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_host_and_optional_port() {
        assert_eq!(
            split_host_port("mq.example.com:5673", 1),
            Ok(("mq.example.com".into(), 5673))
        );
        assert_eq!(
            split_host_port("mq.example.com", 1),
            Ok(("mq.example.com".into(), 1))
        );
        assert_eq!(split_host_port("[::1]:5672", 1), Ok(("::1".into(), 5672)));
        assert_eq!(split_host_port("[::1]", 1), Ok(("::1".into(), 1)));
        for bad in [
            "",
            "amqp://mq:5672",
            "user@mq:5672",
            ":5672",
            "::1:5672",
            "mq 1",
            "[::1",
            "[::1]x",
        ] {
            assert_eq!(
                split_host_port(bad, 1),
                Err(AddressProblem::NotAnAddress),
                "{bad}"
            );
        }
        for (bad, port) in [("mq:0", "0"), ("mq:x", "x"), ("mq:70000", "70000")] {
            assert_eq!(
                split_host_port(bad, 1),
                Err(AddressProblem::BadPort(port.into())),
                "{bad}"
            );
        }
    }

    #[test]
    fn literal_private_hosts_are_refused_only_when_blocking() {
        for host in [
            "127.0.0.1",
            "10.1.2.3",
            "[::1]",
            "localhost",
            "mq.localhost.",
        ] {
            let problem = literal_host_problem("config.server_url", host, true)
                .unwrap_or_else(|| panic!("{host} should be refused"));
            assert!(problem.starts_with("config.server_url: "), "{problem}");
            assert!(problem.contains("block_private_ips"), "{problem}");
            assert_eq!(literal_host_problem("config.server_url", host, false), None);
        }
        assert_eq!(
            literal_host_problem("config.server_url", "mq.example.com", true),
            None
        );
        assert_eq!(
            literal_host_problem("config.server_url", "8.8.8.8", true),
            None
        );
    }

    #[tokio::test]
    async fn loopback_is_blocked_at_connect_time() {
        let (code, message) = check_host("127.0.0.1", 5672, true).await.unwrap_err();
        assert_eq!(code, AttemptCode::BlockedAddress);
        assert!(message.contains("loopback"), "{message}");
        assert!(check_host("127.0.0.1", 5672, false).await.is_ok());
    }
}
