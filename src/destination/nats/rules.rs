//! The nats type's rules for API writes: `config` (`servers`, `subject`, `jetstream`),
//! `credentials` (one of `creds`, `token`, or `username` with `password`) and its
//! `/destination-types` description.

use serde_json::{Value, json};

use crate::destination::dial::{literal_host_problem, split_host_port};
use crate::destination::{Fields, obfuscate};

/// The type name.
pub const TYPE: &str = "nats";

/// In `config.subject`, replaced by the event's topic.
pub const TOPIC_PLACEHOLDER: &str = "{topic}";

pub const CREDS: &str = "creds";
pub const TOKEN: &str = "token";
pub const USERNAME: &str = "username";
pub const PASSWORD: &str = "password";
const KEYS: [&str; 4] = [CREDS, TOKEN, USERNAME, PASSWORD];

/// NATS's client port when a server URL names none.
const NATS_PORT: u16 = 4222;

fn get<'a>(map: &'a Fields, key: &str) -> &'a str {
    map.get(key).map(String::as_str).unwrap_or("")
}

/// One server of `config.servers`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerAddr {
    /// As written, for the client.
    pub url: String,
    pub host: String,
    pub port: u16,
}

/// `config.servers`: comma-separated `nats://` or `tls://` URLs (`host:port` alone means
/// `nats://`), without user info (credentials go in `credentials`).
pub fn servers(config: &Fields) -> Result<Vec<ServerAddr>, String> {
    let text = get(config, "servers");
    if text.trim().is_empty() {
        return Err("config.servers is required".to_owned());
    }
    text.split(',')
        .map(str::trim)
        .map(|server| {
            let usage = || {
                format!(
                    "config.servers: {server:?} is not a NATS server URL; use nats://host:port \
                     or tls://host:port, comma-separated"
                )
            };
            let rest = match server.split_once("://") {
                Some(("nats" | "tls", rest)) => rest,
                Some(_) => return Err(usage()),
                None => server,
            };
            let (host, port) = split_host_port(rest, NATS_PORT).map_err(|_| usage())?;
            let url = if server.contains("://") {
                server.to_owned()
            } else {
                format!("nats://{server}")
            };
            Ok(ServerAddr { url, host, port })
        })
        .collect()
}

/// Problems with `config.subject`: a NATS subject without wildcards, in which `{topic}` stands
/// for the event's topic.
fn subject_problem(subject: &str) -> Option<String> {
    if subject.is_empty() {
        return Some("config.subject is required".to_owned());
    }
    let example = subject.replace(TOPIC_PLACEHOLDER, "topic");
    let bad_token = example
        .split('.')
        .any(|token| token.is_empty() || token == "*" || token == ">");
    if bad_token || example.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Some(
            "config.subject must be a NATS subject without wildcards or spaces (tokens \
             separated by '.', e.g. events.{topic})"
                .to_owned(),
        );
    }
    None
}

/// `config.jetstream` as a flag.
pub fn jetstream(config: &Fields) -> Result<bool, String> {
    match get(config, "jetstream") {
        "true" | "on" => Ok(true),
        "" | "false" => Ok(false),
        _ => Err("config.jetstream must be \"true\" or \"false\"".to_owned()),
    }
}

/// Problems with `config`, each naming its field.
pub fn validate_config(config: &Fields, block_private_ips: bool) -> Vec<String> {
    let mut problems = Vec::new();
    match servers(config) {
        Ok(servers) => {
            for server in servers {
                problems.extend(literal_host_problem(
                    "config.servers",
                    &server.host,
                    block_private_ips,
                ));
            }
        }
        Err(problem) => problems.push(problem),
    }
    problems.extend(subject_problem(get(config, "subject")));
    if let Err(problem) = jetstream(config) {
        problems.push(problem);
    }
    problems
}

/// Problems with the credentials to store: at most one way to log in, complete.
pub fn validate_credentials(credentials: &Fields) -> Vec<String> {
    let set = |key| !get(credentials, key).is_empty();
    let methods = [set(CREDS), set(TOKEN), set(USERNAME) || set(PASSWORD)]
        .into_iter()
        .filter(|m| *m)
        .count();
    let mut problems = Vec::new();
    if methods > 1 {
        problems.push(
            "credentials: set only one of credentials.creds, credentials.token, or \
             credentials.username with credentials.password"
                .to_owned(),
        );
    }
    if set(USERNAME) != set(PASSWORD) {
        let missing = if set(USERNAME) { PASSWORD } else { USERNAME };
        problems.push(format!(
            "credentials.{missing} is required with credentials.{}",
            if missing == PASSWORD {
                USERNAME
            } else {
                PASSWORD
            }
        ));
    }
    if set(CREDS) && async_nats::ConnectOptions::with_credentials(get(credentials, CREDS)).is_err()
    {
        problems.push(
            "credentials.creds is not a NATS .creds file (a user JWT and an nkey seed between \
             BEGIN/END lines)"
                .to_owned(),
        );
    }
    problems
}

/// The credentials to store: the known keys, nothing else.
pub fn prepare_credentials(merged: &Fields) -> Fields {
    KEYS.into_iter()
        .filter(|key| !get(merged, key).is_empty())
        .map(|key| (key.to_owned(), get(merged, key).to_owned()))
        .collect()
}

/// The username in clear, the secrets masked.
pub fn displayed_credentials(credentials: &Fields) -> Fields {
    credentials
        .iter()
        .map(|(k, v)| {
            let shown = if k == USERNAME {
                v.clone()
            } else {
                obfuscate(v)
            };
            (k.clone(), shown)
        })
        .collect()
}

/// `<subject> -> <servers>`, for people.
pub fn target(config: &Fields) -> String {
    format!("{} -> {}", get(config, "subject"), get(config, "servers"))
}

/// The `/destination-types` entry.
pub fn schema() -> Value {
    json!({
        "type": TYPE,
        "label": "NATS",
        "description": "Send events to a subject on your NATS server, optionally into a JetStream stream.",
        "icon": ICON,
        "instructions": INSTRUCTIONS,
        "config_fields": [
            {
                "key": "servers",
                "type": "text",
                "label": "Servers",
                "description": "NATS server URLs, comma-separated (e.g., nats://nats.example.com:4222)",
                "required": true,
                "pattern": "^[^\\s]+$"
            },
            {
                "key": "subject",
                "type": "text",
                "label": "Subject",
                "description": "The subject to publish to; {topic} is replaced by the event's topic (e.g., events.{topic})",
                "required": true
            },
            {
                "key": "jetstream",
                "type": "checkbox",
                "label": "JetStream",
                "description": "Publish with a JetStream acknowledgement: a stream must capture the subject",
                "required": false,
                "default": "false"
            }
        ],
        "credential_fields": [
            {
                "key": CREDS,
                "type": "text",
                "label": "Credentials file",
                "description": "The content of a .creds file (user JWT and nkey seed)",
                "required": false,
                "sensitive": true
            },
            {
                "key": TOKEN,
                "type": "text",
                "label": "Token",
                "description": "An authentication token",
                "required": false,
                "sensitive": true
            },
            {
                "key": USERNAME,
                "type": "text",
                "label": "Username",
                "description": "A user name, with its password",
                "required": false,
                "sensitive": false
            },
            {
                "key": PASSWORD,
                "type": "text",
                "label": "Password",
                "description": "The user's password",
                "required": false,
                "sensitive": true
            }
        ]
    })
}

const INSTRUCTIONS: &str = "# NATS\n\n\
Events are published to a subject on your NATS server, one message per event: the body is \
the event's data (JSON); the event id, topic, timestamp and metadata travel as headers, and \
`Nats-Msg-Id` carries the event id so that JetStream drops a retried duplicate.\n\n\
## How to configure NATS as an event destination\n\n\
- **Servers**: one or more `nats://host:port` (or `tls://`) URLs, comma-separated\n\
- **Subject**: e.g. `events.{topic}`; `{topic}` becomes the event's topic\n\
- **JetStream**: on to have a stream acknowledge each message; without it, delivery means the \
server accepted the message, whether or not anyone subscribes\n\
- **Credentials**: a `.creds` file's content, a token, or a username and password (or none)";

/// A plain broker glyph.
const ICON: &str = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"20\" height=\"20\" \
    viewBox=\"0 0 20 20\" fill=\"none\"><rect width=\"20\" height=\"20\" rx=\"4\" \
    fill=\"#27AAE1\"/><path d=\"M5 15V5l10 10V5\" stroke=\"white\" stroke-width=\"2\"/></svg>";

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> Fields {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn servers_are_nats_urls() {
        let parsed = servers(&map(&[(
            "servers",
            "nats://a.example.com:4223, tls://b.example.com,c.example.com:4000",
        )]))
        .unwrap();
        let hosts: Vec<(&str, u16)> = parsed.iter().map(|s| (s.host.as_str(), s.port)).collect();
        assert_eq!(
            hosts,
            [
                ("a.example.com", 4223),
                ("b.example.com", 4222),
                ("c.example.com", 4000)
            ]
        );
        assert_eq!(parsed[2].url, "nats://c.example.com:4000");
        for bad in [
            "http://x:1",
            "nats://u:p@x:1",
            "nats://x:port",
            "nats://",
            "a b",
        ] {
            let problem = servers(&map(&[("servers", bad)])).unwrap_err();
            assert!(problem.starts_with("config.servers"), "{bad}: {problem}");
        }
    }

    #[test]
    fn config_needs_servers_and_a_subject_without_wildcards() {
        assert_eq!(
            validate_config(&Fields::new(), false),
            vec!["config.servers is required", "config.subject is required"]
        );
        let good = map(&[
            ("servers", "nats://n.example.com"),
            ("subject", "ev.{topic}"),
        ]);
        assert!(validate_config(&good, true).is_empty());
        for subject in ["ev.*", "ev.>", "ev..x", "ev x", ".ev"] {
            let mut bad = good.clone();
            bad.insert("subject".into(), subject.into());
            let problems = validate_config(&bad, true);
            assert_eq!(problems.len(), 1, "{subject}");
            assert!(problems[0].starts_with("config.subject"), "{problems:?}");
        }
        let local = map(&[("servers", "nats://127.0.0.1:4222"), ("subject", "ev")]);
        assert!(validate_config(&local, true)[0].contains("block_private_ips"));
        assert!(validate_config(&local, false).is_empty());
    }

    #[test]
    fn one_way_to_log_in() {
        assert!(validate_credentials(&Fields::new()).is_empty());
        assert!(validate_credentials(&map(&[("token", "t")])).is_empty());
        assert_eq!(
            validate_credentials(&map(&[("username", "u")])),
            vec!["credentials.password is required with credentials.username"]
        );
        assert_eq!(
            validate_credentials(&map(&[
                ("token", "t"),
                ("username", "u"),
                ("password", "p")
            ]))
            .len(),
            1
        );
        assert_eq!(
            validate_credentials(&map(&[("creds", "not a creds file")])).len(),
            1
        );
    }
}
