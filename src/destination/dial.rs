//! The SSRF guard (`block_private_ips`) for destination types that open their own connections
//! to a host the tenant chose (brokers): the API-time check of a literal address, and the
//! resolution checked before each new connection.

use std::net::{IpAddr, SocketAddr};

use super::AttemptCode;
use super::webhook::blocked_reason;

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
