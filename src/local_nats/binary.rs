//! Finding the nats-server executable: `$NATS_SERVER_BIN`, then the project's `.tools/bin/`
//! (installed by scripts/install-tools.sh), then `$PATH`. Environment values come in as data
//! ([`BinaryLookup::from_env`] is called once at start-up), so the search itself is testable.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use super::LocalNatsError;

/// Where [`BinaryLookup::find`] looks for nats-server, in this order.
#[derive(Clone, Debug, Default)]
pub struct BinaryLookup {
    /// An explicit executable (`$NATS_SERVER_BIN`); when set, nothing else is tried.
    pub explicit: Option<PathBuf>,
    /// Directories from which `.tools/bin/nats-server` is searched upwards, e.g. the current
    /// directory and `CARGO_MANIFEST_DIR`.
    pub project_roots: Vec<PathBuf>,
    /// The value of `$PATH`.
    pub path_var: Option<OsString>,
}

/// A nats-server executable that answered `--version`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NatsServerBinary {
    pub path: PathBuf,
    /// E.g. `2.15.1`.
    pub version: String,
}

const TOOLS_BINARY: &str = ".tools/bin/nats-server";

impl BinaryLookup {
    /// Reads `$NATS_SERVER_BIN`, the current directory and `$PATH`; `manifest_dir` (a caller's
    /// `env!("CARGO_MANIFEST_DIR")`) is searched after the current directory. Call at start-up.
    pub fn from_env(manifest_dir: Option<&Path>) -> Self {
        let mut project_roots = Vec::new();
        if let Ok(current) = std::env::current_dir() {
            project_roots.push(current);
        }
        project_roots.extend(manifest_dir.map(Path::to_path_buf));
        Self {
            explicit: std::env::var_os("NATS_SERVER_BIN")
                .filter(|value| !value.is_empty())
                .map(PathBuf::from),
            project_roots,
            path_var: std::env::var_os("PATH"),
        }
    }

    /// The first candidate that exists, checked by running `nats-server --version`.
    pub async fn find(&self) -> Result<NatsServerBinary, LocalNatsError> {
        let path = self.candidate().ok_or(LocalNatsError::BinaryNotFound)?;
        NatsServerBinary::probe(&path).await
    }

    fn candidate(&self) -> Option<PathBuf> {
        if let Some(explicit) = &self.explicit {
            // An explicit choice that is wrong must be reported, not silently replaced.
            return Some(explicit.clone());
        }
        let in_tools = self
            .project_roots
            .iter()
            .flat_map(|root| root.ancestors())
            .map(|dir| dir.join(TOOLS_BINARY))
            .find(|candidate| is_executable(candidate));
        in_tools.or_else(|| {
            let path_var = self.path_var.as_ref()?;
            std::env::split_paths(path_var)
                .map(|dir| dir.join("nats-server"))
                .find(|candidate| is_executable(candidate))
        })
    }
}

impl NatsServerBinary {
    /// Runs `<path> --version` and keeps the version it prints (`nats-server: v2.15.1`).
    pub async fn probe(path: &Path) -> Result<Self, LocalNatsError> {
        let unusable = |reason: String| LocalNatsError::BinaryUnusable {
            path: path.to_path_buf(),
            reason,
        };
        let output = tokio::process::Command::new(path)
            .arg("--version")
            .stdin(std::process::Stdio::null())
            .output()
            .await
            .map_err(|error| unusable(error.to_string()))?;
        let stdout = String::from_utf8_lossy(&output.stdout);
        let line = stdout.trim();
        match line.strip_prefix("nats-server: v") {
            Some(version) if output.status.success() => Ok(Self {
                path: path.to_path_buf(),
                version: version.to_owned(),
            }),
            _ => Err(unusable(format!(
                "`--version` printed {line:?} ({}), not `nats-server: v<version>`",
                output.status
            ))),
        }
    }
}

fn is_executable(path: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        path.metadata()
            .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
    }
    #[cfg(not(unix))]
    {
        path.is_file()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn nothing_found_names_the_install_script() {
        let empty = tempfile::tempdir().unwrap();
        let lookup = BinaryLookup {
            explicit: None,
            project_roots: vec![empty.path().to_path_buf()],
            path_var: Some(empty.path().as_os_str().to_owned()),
        };
        let error = lookup.find().await.unwrap_err();
        assert_eq!(
            error.to_string(),
            "nats-server not found: run scripts/install-tools.sh (installs nats-server 2.15.1 \
             into .tools/) or set NATS_SERVER_BIN"
        );
    }

    #[tokio::test]
    async fn a_wrong_explicit_binary_is_reported_not_replaced() {
        let empty = tempfile::tempdir().unwrap();
        let missing = empty.path().join("no-such-nats-server");
        let lookup = BinaryLookup {
            explicit: Some(missing.clone()),
            project_roots: Vec::new(),
            path_var: None,
        };
        let error = lookup.find().await.unwrap_err();
        assert!(
            matches!(&error, LocalNatsError::BinaryUnusable { path, .. } if *path == missing),
            "{error}"
        );
        assert!(error.to_string().contains("NATS_SERVER_BIN"), "{error}");
    }

    #[test]
    fn tools_dir_is_found_from_a_subdirectory_before_path() {
        let project = tempfile::tempdir().unwrap();
        let tools = project.path().join(".tools/bin");
        std::fs::create_dir_all(&tools).unwrap();
        let binary = tools.join("nats-server");
        std::fs::write(&binary, "#!/bin/sh\n").unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(&binary, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let nested = project.path().join("crates/deep");
        std::fs::create_dir_all(&nested).unwrap();
        let on_path = tempfile::tempdir().unwrap();
        let lookup = BinaryLookup {
            explicit: None,
            project_roots: vec![nested],
            path_var: Some(on_path.path().as_os_str().to_owned()),
        };
        assert_eq!(lookup.candidate(), Some(binary));
    }
}
