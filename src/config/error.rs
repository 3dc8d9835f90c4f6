//! Configuration errors: one `ConfigError` per problem, collected into `ConfigErrors` so start-up
//! can print every problem at once instead of making the operator fix them one by one.

use std::fmt;
use std::path::PathBuf;

/// One configuration problem. Every variant names where the value came from (file, YAML key,
/// env var) so the operator knows what to edit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read (missing, unreadable).
    #[error("config file {}: {message}", path.display())]
    File { path: PathBuf, message: String },
    /// The YAML could not be read as jetpost's config: syntax error, unknown key, wrong type.
    /// `message` carries the key path and line/column from the parser.
    #[error("{origin}: {message}")]
    Yaml { origin: String, message: String },
    /// An environment variable holds a value that does not parse as its key's type.
    #[error("{key} ({env}): {value:?} is not {expected}")]
    Env {
        key: &'static str,
        env: &'static str,
        value: String,
        expected: String,
    },
    /// The merged configuration breaks a rule. `key` is the YAML key (with `[i]` for list
    /// entries), `env` the variable that sets it, if there is one.
    #[error("{key}{}: {message}", env.map(|e| format!(" ({e})")).unwrap_or_default())]
    Invalid {
        key: String,
        env: Option<&'static str>,
        message: String,
    },
}

impl ConfigError {
    pub(crate) fn invalid(
        key: impl Into<String>,
        env: Option<&'static str>,
        message: impl Into<String>,
    ) -> Self {
        ConfigError::Invalid {
            key: key.into(),
            env,
            message: message.into(),
        }
    }
}

/// Every problem found while loading and validating, in the order found. Display prints one
/// per line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl ConfigErrors {
    pub fn errors(&self) -> &[ConfigError] {
        &self.0
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl From<ConfigError> for ConfigErrors {
    fn from(error: ConfigError) -> Self {
        ConfigErrors(vec![error])
    }
}
