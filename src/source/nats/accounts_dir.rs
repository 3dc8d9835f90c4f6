//! Reading an accounts directory: one sub-directory per account with a `meta.yaml` and,
//! usually, a `user.creds`. Each directory loads on its own, so one broken account is reported
//! and the others still load. Blocking file I/O: call from `spawn_blocking` in async code.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;

use super::account::{AccountSpec, Origin, TenantRule};
use crate::event::check_id;

/// What `meta.yaml` may hold. Unknown keys are refused so that a typo is not silently ignored.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Meta {
    name: Option<String>,
    stream: Option<String>,
    consumer: Option<String>,
    tenant_id: Option<String>,
    credentials_file: Option<String>,
}

/// A directory that could not be loaded, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirProblem {
    /// The directory's name inside the accounts directory (the account name if it had loaded).
    pub dir: String,
    pub error: String,
}

/// The result of reading the whole accounts directory.
#[derive(Debug, Default)]
pub struct DirScan {
    /// Shared with the cache and the running account, so thousands of accounts are not copied
    /// on every rescan.
    pub accounts: Vec<Arc<AccountSpec>>,
    pub problems: Vec<DirProblem>,
}

/// Reads every account directory under `root`. Only a missing or unreadable `root` is an error;
/// each broken account directory becomes a `DirProblem`. Directories without `meta.yaml` are
/// still being provisioned and are skipped; names starting with `.` (e.g. Kubernetes' `..data`)
/// are not accounts.
pub fn scan(root: &Path) -> Result<DirScan, String> {
    DirCache::default().scan(root, Rescan::Changed)
}

/// Which directories `DirCache::scan` reads again.
#[derive(Debug, Clone, Copy)]
pub enum Rescan<'a> {
    /// Every directory whose `meta.yaml` or creds file changed since it was last read, judged by
    /// the files' metadata (size, times, inode): a few `stat`s per directory instead of reading,
    /// parsing and hashing it.
    Changed,
    /// These directories (named by file-system events); the others are taken as they were.
    Named(&'a HashSet<String>),
}

/// The accounts directory as last read, so that a rescan re-reads only what changed: with
/// thousands of accounts, reading every directory on each change or resync costs more than
/// everything else an idle account does.
#[derive(Debug, Default)]
pub struct DirCache {
    dirs: HashMap<String, Loaded>,
    /// Directories read by the last scan (for logs and tests).
    last_reads: usize,
}

/// One directory as last read, and the metadata of its files when they were read.
#[derive(Debug)]
struct Loaded {
    stamp: Stamp,
    result: Result<Option<Arc<AccountSpec>>, String>,
}

/// Which versions of a directory's files a load read. Taken *before* each file is read, so that
/// a write racing the read makes the stamp older than the content (read again next time), never
/// newer (missed).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp {
    meta: Option<FileStamp>,
    /// The creds file the account uses (or would use: `user.creds` while there is none).
    creds_path: PathBuf,
    creds: Option<FileStamp>,
}

impl Stamp {
    fn current(&self, dir: &Path) -> Stamp {
        Stamp {
            meta: FileStamp::of(&dir.join("meta.yaml")),
            creds_path: self.creds_path.clone(),
            creds: FileStamp::of(&self.creds_path),
        }
    }
}

/// What tells one version of a file from another without reading it (symlinks followed).
#[derive(Debug, Clone, PartialEq, Eq)]
struct FileStamp {
    len: u64,
    modified: Option<std::time::SystemTime>,
    #[cfg(unix)]
    changed: (i64, i64),
    #[cfg(unix)]
    inode: (u64, u64),
}

impl FileStamp {
    fn of(path: &Path) -> Option<FileStamp> {
        let meta = std::fs::metadata(path).ok()?;
        #[cfg(unix)]
        use std::os::unix::fs::MetadataExt;
        Some(FileStamp {
            len: meta.len(),
            modified: meta.modified().ok(),
            #[cfg(unix)]
            changed: (meta.ctime(), meta.ctime_nsec()),
            #[cfg(unix)]
            inode: (meta.dev(), meta.ino()),
        })
    }
}

impl DirCache {
    /// Reads the accounts directory like `scan`, re-reading only the directories `rescan` picks
    /// (and new ones); removed directories are forgotten.
    pub fn scan(&mut self, root: &Path, rescan: Rescan<'_>) -> Result<DirScan, String> {
        let entries = std::fs::read_dir(root)
            .map_err(|err| format!("accounts_dir {}: cannot be read: {err}", root.display()))?;
        let mut dirs: Vec<(String, PathBuf)> = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue;
            }
            let path = entry.path();
            // A symlinked account directory counts as a directory (fs::metadata follows it).
            let is_dir = match entry.file_type() {
                Ok(kind) if kind.is_symlink() => std::fs::metadata(&path).is_ok_and(|m| m.is_dir()),
                Ok(kind) => kind.is_dir(),
                Err(_) => false,
            };
            if is_dir {
                dirs.push((name, path));
            }
        }
        dirs.sort();
        let mut scan = DirScan::default();
        let mut seen = HashMap::with_capacity(dirs.len());
        self.last_reads = 0;
        for (dir, path) in dirs {
            let loaded = match (self.dirs.remove(&dir), rescan) {
                (Some(cached), Rescan::Named(names)) if !names.contains(&dir) => cached,
                (Some(cached), Rescan::Changed) if cached.stamp.current(&path) == cached.stamp => {
                    cached
                }
                _ => {
                    self.last_reads += 1;
                    load(&dir, &path)
                }
            };
            match &loaded.result {
                Ok(Some(account)) => scan.accounts.push(account.clone()),
                Ok(None) => {}
                Err(error) => scan.problems.push(DirProblem {
                    dir: dir.clone(),
                    error: error.clone(),
                }),
            }
            seen.insert(dir, loaded);
        }
        self.dirs = seen;
        reject_duplicate_names(&mut scan);
        Ok(scan)
    }
}

impl DirCache {
    /// How many account directories the last scan read (the others were taken from the cache).
    pub fn last_reads(&self) -> usize {
        self.last_reads
    }
}

/// Loads one account directory; `Ok(None)` when it has no `meta.yaml` yet.
pub fn load_account(dir: &str, path: &Path) -> Result<Option<Arc<AccountSpec>>, String> {
    load(dir, path).result
}

fn load(dir: &str, path: &Path) -> Loaded {
    let creds_path = path.join("user.creds");
    let mut stamp = Stamp {
        meta: FileStamp::of(&path.join("meta.yaml")),
        creds: FileStamp::of(&creds_path),
        creds_path,
    };
    let result = read_account(dir, path, &mut stamp).map(|spec| spec.map(Arc::new));
    Loaded { stamp, result }
}

/// Reads one account directory, recording in `stamp` which creds file it uses.
fn read_account(dir: &str, path: &Path, stamp: &mut Stamp) -> Result<Option<AccountSpec>, String> {
    let meta_path = path.join("meta.yaml");
    let text = match std::fs::read_to_string(&meta_path) {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(format!("{}: cannot be read: {err}", meta_path.display())),
    };
    let meta: Meta = if text.trim().is_empty() {
        Meta::default()
    } else {
        serde_yaml_ng::from_str(&text).map_err(|err| format!("{}: {err}", meta_path.display()))?
    };
    let required = |value: Option<String>, key: &str| {
        value
            .filter(|v| !v.trim().is_empty())
            .ok_or_else(|| format!("{}: `{key}` is required", meta_path.display()))
    };
    let stream = required(meta.stream, "stream");
    let consumer = required(meta.consumer, "consumer");
    let tenant_id = required(meta.tenant_id, "tenant_id");
    let missing: Vec<String> = [&stream, &consumer, &tenant_id]
        .into_iter()
        .filter_map(|r| r.as_ref().err().cloned())
        .collect();
    if !missing.is_empty() {
        return Err(missing.join("; "));
    }
    if let Ok(tenant_id) = &tenant_id {
        check_id(tenant_id).map_err(|err| {
            format!(
                "{}: `tenant_id` is not a valid tenant id: it {err}",
                meta_path.display()
            )
        })?;
    }
    let credentials_file = match meta.credentials_file.filter(|f| !f.trim().is_empty()) {
        Some(file) => {
            let file = path.join(file); // an absolute `file` replaces `path`
            stamp.creds = FileStamp::of(&file);
            stamp.creds_path = file.clone();
            Some(file)
        }
        None => Some(stamp.creds_path.clone()).filter(|_| stamp.creds.is_some()),
    };
    let credentials = match &credentials_file {
        Some(file) => Some(std::fs::read(file).map_err(|err| {
            format!(
                "{}: credentials_file {}: {err}",
                meta_path.display(),
                file.display()
            )
        })?),
        None => None,
    };
    let spec = AccountSpec {
        name: meta
            .name
            .filter(|n| !n.trim().is_empty())
            .unwrap_or_else(|| dir.to_owned()),
        origin: Origin::Dir,
        tenant: TenantRule::Account(tenant_id.unwrap_or_default()),
        stream: stream.unwrap_or_default(),
        consumer: consumer.unwrap_or_default(),
        credentials_file,
        defined_at: meta_path.display().to_string(),
        fingerprint: [0; 32],
    };
    Ok(Some(spec.fingerprinted(credentials.as_deref())))
}

/// Two directories naming the same account: both are refused, each naming the other, because
/// picking one would depend on directory order.
fn reject_duplicate_names(scan: &mut DirScan) {
    let mut seen: std::collections::HashMap<String, Vec<String>> = Default::default();
    for account in &scan.accounts {
        seen.entry(account.name.clone())
            .or_default()
            .push(account.defined_at.clone());
    }
    let accounts = std::mem::take(&mut scan.accounts);
    for account in accounts {
        let places = &seen[&account.name];
        if places.len() > 1 {
            scan.problems.push(DirProblem {
                dir: account.name.clone(),
                error: format!(
                    "account name \"{}\" is defined more than once: {}",
                    account.name,
                    places.join(" and ")
                ),
            });
        } else {
            scan.accounts.push(account);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(path: &Path, text: &str) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    #[test]
    fn an_invalid_tenant_id_is_reported_and_skipped() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        write(
            &r.join("good/meta.yaml"),
            "stream: S\nconsumer: c\ntenant_id: user@example.com\n",
        );
        write(
            &r.join("spaced/meta.yaml"),
            "stream: S\nconsumer: c\ntenant_id: acme corp\n",
        );
        write(
            &r.join("newline/meta.yaml"),
            "stream: S\nconsumer: c\ntenant_id: \"acme\\nINFO forged\"\n",
        );
        let scan = scan(r).unwrap();
        let tenants: Vec<String> = scan.accounts.iter().map(|a| a.tenant_label()).collect();
        assert_eq!(tenants, ["user@example.com"]);
        let problems: Vec<(&str, &str)> = scan
            .problems
            .iter()
            .map(|p| (p.dir.as_str(), p.error.as_str()))
            .collect();
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert_eq!(problems[0].0, "newline");
        assert!(
            problems[0]
                .1
                .contains("`tenant_id` is not a valid tenant id: it has '\\n'"),
            "{problems:?}"
        );
        assert_eq!(problems[1].0, "spaced");
        assert!(
            problems[1].1.contains("has ' ' at character 5"),
            "{problems:?}"
        );
    }

    #[test]
    fn loads_good_dirs_and_reports_broken_ones() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        write(
            &r.join("acme/meta.yaml"),
            "stream: EVENTS\nconsumer: jetpost\ntenant_id: acme\n",
        );
        write(&r.join("acme/user.creds"), "creds-acme");
        write(
            &r.join("globex/meta.yaml"),
            "name: globex-prod\nstream: EVENTS\nconsumer: jetpost\ntenant_id: globex\ncredentials_file: other.creds\n",
        );
        write(&r.join("globex/other.creds"), "creds-globex");
        write(&r.join("broken/meta.yaml"), "stream: EVENTS\n");
        write(
            &r.join("typo/meta.yaml"),
            "stream: EVENTS\nconsumer: c\ntenant: x\n",
        );
        write(
            &r.join("nocreds/meta.yaml"),
            "stream: S\nconsumer: c\ntenant_id: t\ncredentials_file: missing.creds\n",
        );
        std::fs::create_dir_all(r.join("provisioning")).unwrap();
        std::fs::create_dir_all(r.join("..data")).unwrap();

        let scan = scan(r).unwrap();
        let names: Vec<&str> = scan.accounts.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(names, ["acme", "globex-prod"]);
        assert_eq!(
            scan.accounts[0].credentials_file,
            Some(r.join("acme/user.creds"))
        );
        assert_eq!(
            scan.accounts[1].credentials_file,
            Some(r.join("globex/other.creds"))
        );
        assert_eq!(
            scan.accounts[1].tenant,
            TenantRule::Account("globex".into())
        );

        let problems: Vec<(&str, &str)> = scan
            .problems
            .iter()
            .map(|p| (p.dir.as_str(), p.error.as_str()))
            .collect();
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(
            problems[0].0 == "broken"
                && problems[0].1.contains("`consumer` is required")
                && problems[0].1.contains("`tenant_id` is required")
        );
        assert!(problems[1].0 == "nocreds" && problems[1].1.contains("missing.creds"));
        assert!(problems[2].0 == "typo" && problems[2].1.contains("unknown field `tenant`"));
    }

    #[test]
    fn duplicate_names_are_refused_naming_both_places() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        write(
            &r.join("a/meta.yaml"),
            "name: same\nstream: S\nconsumer: c\ntenant_id: t1\n",
        );
        write(
            &r.join("b/meta.yaml"),
            "name: same\nstream: S\nconsumer: c\ntenant_id: t2\n",
        );
        let scan = scan(r).unwrap();
        assert!(scan.accounts.is_empty());
        assert_eq!(scan.problems.len(), 2);
        assert!(
            scan.problems[0].error.contains("a/meta.yaml")
                && scan.problems[0].error.contains("b/meta.yaml")
        );
    }

    #[cfg(unix)]
    #[test]
    fn follows_symlinked_directories_and_fingerprints_creds() {
        let root = tempfile::tempdir().unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        write(
            &elsewhere.path().join("acme/meta.yaml"),
            "stream: S\nconsumer: c\ntenant_id: acme\n",
        );
        write(&elsewhere.path().join("acme/user.creds"), "v1");
        std::os::unix::fs::symlink(elsewhere.path().join("acme"), root.path().join("acme"))
            .unwrap();
        let first = scan(root.path()).unwrap().accounts[0].fingerprint;
        write(&elsewhere.path().join("acme/user.creds"), "v2");
        let second = scan(root.path()).unwrap().accounts[0].fingerprint;
        assert_ne!(first, second, "rotated creds must change the fingerprint");
    }

    #[test]
    fn a_rescan_reads_only_changed_and_new_directories() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        for name in ["a", "b", "c"] {
            write(
                &r.join(format!("{name}/meta.yaml")),
                &format!("stream: S\nconsumer: c\ntenant_id: {name}\n"),
            );
            write(&r.join(format!("{name}/user.creds")), "v1");
        }
        let mut cache = DirCache::default();
        let first = cache.scan(r, Rescan::Changed).unwrap();
        assert_eq!((first.accounts.len(), cache.last_reads()), (3, 3));

        let again = cache.scan(r, Rescan::Changed).unwrap();
        assert_eq!(cache.last_reads(), 0, "nothing changed, nothing read");
        assert_eq!(again.accounts, first.accounts);

        // A rotated creds file (written in place or renamed over) and a new directory are read;
        // without any file-system event, by their metadata alone.
        write(&r.join("b/user.creds"), "version 2");
        write(&r.join("c/user.creds.tmp"), "v3");
        std::fs::rename(r.join("c/user.creds.tmp"), r.join("c/user.creds")).unwrap();
        write(
            &r.join("d/meta.yaml"),
            "stream: S\nconsumer: c\ntenant_id: d\n",
        );
        std::fs::remove_dir_all(r.join("a")).unwrap();
        let changed = cache.scan(r, Rescan::Changed).unwrap();
        assert_eq!(cache.last_reads(), 3);
        let names: Vec<&str> = changed.accounts.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(names, ["b", "c", "d"]);
        assert_ne!(
            changed.accounts[0].fingerprint,
            first.accounts[1].fingerprint
        );
        assert_ne!(
            changed.accounts[1].fingerprint,
            first.accounts[2].fingerprint
        );

        // A meta.yaml that appears later (the directory was still being provisioned).
        std::fs::create_dir_all(r.join("e")).unwrap();
        assert_eq!(cache.scan(r, Rescan::Changed).unwrap().accounts.len(), 3);
        write(
            &r.join("e/meta.yaml"),
            "stream: S\nconsumer: c\ntenant_id: e\n",
        );
        assert_eq!(cache.scan(r, Rescan::Changed).unwrap().accounts.len(), 4);
    }

    #[test]
    fn a_named_rescan_reads_the_named_directories_and_trusts_the_rest() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        for name in ["a", "b"] {
            write(
                &r.join(format!("{name}/meta.yaml")),
                &format!("stream: S\nconsumer: c\ntenant_id: {name}\n"),
            );
        }
        let mut cache = DirCache::default();
        cache.scan(r, Rescan::Changed).unwrap();
        write(
            &r.join("a/meta.yaml"),
            "stream: S\nconsumer: c\ntenant_id: a2\n",
        );
        write(
            &r.join("b/meta.yaml"),
            "stream: S\nconsumer: c\ntenant_id: b2\n",
        );
        let named: HashSet<String> = ["b".to_owned()].into();
        let scan = cache.scan(r, Rescan::Named(&named)).unwrap();
        assert_eq!(cache.last_reads(), 1);
        let tenants: Vec<String> = scan.accounts.iter().map(|a| a.tenant_label()).collect();
        assert_eq!(tenants, ["a", "b2"]);
        // The periodic resync catches what no event named.
        let scan = cache.scan(r, Rescan::Changed).unwrap();
        let tenants: Vec<String> = scan.accounts.iter().map(|a| a.tenant_label()).collect();
        assert_eq!(tenants, ["a2", "b2"]);
    }

    #[test]
    fn missing_root_is_an_error() {
        assert!(
            scan(Path::new("/nonexistent/jetpost-accounts"))
                .unwrap_err()
                .contains("cannot be read")
        );
    }
}
