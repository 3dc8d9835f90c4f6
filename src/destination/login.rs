//! Credentials that are a username and a password (the rabbitmq and kafka types): both
//! required, nothing else kept, the username shown in clear and the password masked, as
//! Outpost's fields say (`username` not sensitive, `password` sensitive).

use super::{Fields, obfuscate};

pub const USERNAME: &str = "username";
pub const PASSWORD: &str = "password";

fn get<'a>(map: &'a Fields, key: &str) -> &'a str {
    map.get(key).map(String::as_str).unwrap_or("")
}

/// Problems with the credentials to store, each naming its field.
pub fn validate(credentials: &Fields) -> Vec<String> {
    [USERNAME, PASSWORD]
        .into_iter()
        .filter(|key| get(credentials, key).is_empty())
        .map(|key| format!("credentials.{key} is required"))
        .collect()
}

/// The credentials to store: the username and password, nothing else.
pub fn kept(merged: &Fields) -> Fields {
    [USERNAME, PASSWORD]
        .into_iter()
        .filter(|key| !get(merged, key).is_empty())
        .map(|key| (key.to_owned(), get(merged, key).to_owned()))
        .collect()
}

/// The username in clear, anything else masked.
pub fn displayed(credentials: &Fields) -> Fields {
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
    fn both_are_required_and_only_both_are_kept() {
        assert_eq!(
            validate(&map(&[("password", "p")])),
            vec!["credentials.username is required"]
        );
        let kept = kept(&map(&[
            ("username", "u"),
            ("password", "secret-pass"),
            ("x", "y"),
        ]));
        assert_eq!(kept, map(&[("username", "u"), ("password", "secret-pass")]));
        assert_eq!(
            displayed(&kept),
            map(&[("username", "u"), ("password", "secr*******")])
        );
    }
}
