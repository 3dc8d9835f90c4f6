//! The NATS JetStream source: one supervised connection and durable pull consumer per account
//! (static accounts, a watched accounts directory) or one aggregate stream whose subjects carry
//! the tenant. The account set is reconciled by content: added, replaced (new creds, new tenant)
//! and drained at runtime, one broken account never holding up the others.

pub mod account;
pub mod accounts_dir;
pub mod leases;
pub mod ownership;
mod pump;
pub mod status;
pub mod topology;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use notify::Watcher;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

pub use account::{AccountSpec, Origin, SubjectPattern, TenantRule};
pub use leases::{Exclusive, LeaseBook};
pub use pump::PumpShared;
pub use status::{AccountState, AccountStatusView, StatusBoard};

use crate::source::IngestSink;
use leases::Steward;
use pump::{ActivePumps, Pump};

/// Changes in the accounts directory are applied after this much quiet.
const DEBOUNCE: Duration = Duration::from_millis(250);
/// How often the accounts directory is checked without file-system events.
const RESYNC: Duration = Duration::from_secs(30);
/// How often the accounts directory is checked when it cannot be watched.
const NO_WATCHER_RESYNC: Duration = Duration::from_secs(5);
/// How long a replacement connection may take to consume before the old one is drained anyway.
const REPLACE_WAIT: Duration = Duration::from_secs(15);

/// What the NATS source runs.
#[derive(Debug, Clone)]
pub struct NatsSourceConfig {
    pub servers: Vec<String>,
    /// Static accounts and the aggregate account: started once, never removed.
    pub accounts: Vec<AccountSpec>,
    /// The watched accounts directory.
    pub accounts_dir: Option<PathBuf>,
    /// In-flight messages per account (`publish_max_concurrency`).
    pub max_in_flight: usize,
    /// How long draining waits for in-flight messages.
    pub drain_timeout: Duration,
    /// How often every account directory is checked for changes (by its files' metadata) even
    /// without file-system events: a backstop for lost events. Shortened when the directory
    /// cannot be watched.
    pub resync_interval: Duration,
}

/// The running NATS source.
pub struct NatsSource {
    board: StatusBoard,
    cancel: CancellationToken,
    task: JoinHandle<()>,
    /// Exclusive ownership's lease keeper, when replicas share the accounts.
    steward: Option<Steward>,
    drain_timeout: Duration,
}

impl NatsSource {
    /// Starts every account in the background; failures show in `status()`, never here.
    pub fn start(config: NatsSourceConfig, sink: Arc<dyn IngestSink>) -> NatsSource {
        NatsSource::start_with(config, sink, None)
    }

    /// Like `start`; with `exclusive`, this replica consumes only the accounts whose leases it
    /// holds (the aggregate account is consumed by every replica: its consumer is shared).
    pub fn start_with(
        config: NatsSourceConfig,
        sink: Arc<dyn IngestSink>,
        exclusive: Option<Exclusive>,
    ) -> NatsSource {
        let board = StatusBoard::default();
        let cancel = CancellationToken::new();
        let active = ActivePumps::default();
        let shared = Arc::new(PumpShared {
            servers: config.servers.clone(),
            sink,
            max_in_flight: config.max_in_flight,
            drain_timeout: config.drain_timeout,
            setup_slots: Arc::new(tokio::sync::Semaphore::new(pump::SETUPS_AT_ONCE)),
            active: active.clone(),
        });
        let (gate, steward) = match exclusive {
            Some(exclusive) => {
                let (known_tx, known) = watch::channel(BTreeSet::new());
                let (owned_tx, owned) = watch::channel(BTreeSet::new());
                let steward = Steward::start(exclusive, known, owned_tx, active);
                let gate = Gate {
                    owned,
                    known: known_tx,
                };
                (Some(gate), Some(steward))
            }
            None => (None, None),
        };
        let drain_timeout = config.drain_timeout;
        let reconciler = Reconciler {
            board: board.clone(),
            shared,
            cancel: cancel.clone(),
            specs: BTreeMap::new(),
            running: HashMap::new(),
            broken: HashSet::new(),
            retiring: tokio::task::JoinSet::new(),
            gate,
        };
        let task = tokio::spawn(reconciler.run(config));
        NatsSource {
            board,
            cancel,
            task,
            steward,
            drain_timeout,
        }
    }

    /// Every account's state, last error and counters.
    pub fn status(&self) -> &StatusBoard {
        &self.board
    }

    /// Stops pulling everywhere, lets in-flight messages settle (up to the drain timeout) and
    /// closes every connection. With exclusive ownership the accounts are handed over first:
    /// each one's lease is released once its pump has settled, for the other replicas to take.
    pub async fn stop(mut self) {
        if let Some(steward) = self.steward.as_mut() {
            steward
                .hand_over(self.drain_timeout + leases::RENEW_EVERY * 2)
                .await;
        }
        self.cancel.cancel();
        if let Err(err) = self.task.await {
            error!("NATS source ended abnormally: {err}");
        }
        if let Some(steward) = self.steward {
            steward.stop().await;
        }
    }
}

/// How the reconciler learns which accounts this replica owns (exclusive ownership), and tells
/// which accounts there are.
struct Gate {
    owned: watch::Receiver<BTreeSet<String>>,
    /// Every account subject to ownership (all but the aggregate one).
    known: watch::Sender<BTreeSet<String>>,
}

struct Reconciler {
    board: StatusBoard,
    shared: Arc<PumpShared>,
    cancel: CancellationToken,
    /// Every account configured now: static, aggregate and the directory's.
    specs: BTreeMap<String, Arc<AccountSpec>>,
    running: HashMap<String, Pump>,
    /// Names shown as `failed` because their directory could not be loaded.
    broken: HashSet<String>,
    /// Pumps being drained after removal or replacement.
    retiring: tokio::task::JoinSet<()>,
    gate: Option<Gate>,
}

impl Reconciler {
    async fn run(mut self, config: NatsSourceConfig) {
        let fixed: BTreeMap<String, AccountSpec> = config
            .accounts
            .iter()
            .map(|a| (a.name.clone(), a.clone()))
            .collect();
        self.specs = fixed
            .iter()
            .map(|(name, spec)| (name.clone(), Arc::new(spec.clone())))
            .collect();
        self.apply();
        if let Some(dir) = config.accounts_dir.clone() {
            self.watch_dir(dir, &fixed, config.resync_interval).await;
        } else {
            let mut owned = self.gate.as_ref().map(|g| g.owned.clone());
            loop {
                tokio::select! {
                    _ = self.cancel.cancelled() => break,
                    Ok(()) = owned_changed(&mut owned) => self.apply(),
                }
            }
        }
        let pumps: Vec<Pump> = self.running.drain().map(|(_, p)| p).collect();
        futures::future::join_all(pumps.into_iter().map(Pump::drain)).await;
        while self.retiring.join_next().await.is_some() {}
    }

    fn start(&mut self, spec: Arc<AccountSpec>) {
        let status = self.board.account(&spec);
        info!(account = %spec.name, origin = ?spec.origin, "starting account");
        let pump = Pump::start(spec, status, self.shared.clone(), &self.cancel);
        if let Some(old) = self.running.insert(pump.spec.name.clone(), pump) {
            self.retiring.spawn(old.drain());
        }
    }

    async fn watch_dir(
        &mut self,
        dir: PathBuf,
        fixed: &BTreeMap<String, AccountSpec>,
        resync: Duration,
    ) {
        let (changes_tx, mut changes) = mpsc::channel::<()>(1);
        let dirty = Arc::new(Mutex::new(Dirty::default()));
        let mut watcher: Option<notify::RecommendedWatcher> = None;
        let mut cache = accounts_dir::DirCache::default();
        // The first pass reads everything; later ones what changed.
        let mut pass = Pass::Changed;
        let mut resync_at = tokio::time::Instant::now();
        let mut owned = self.gate.as_ref().map(|g| g.owned.clone());
        loop {
            if watcher.is_none() {
                watcher = watch(&dir, changes_tx.clone(), dirty.clone());
            }
            let full = matches!(pass, Pass::Changed);
            cache = self
                .reconcile_dir(&dir, fixed, std::mem::take(&mut cache), pass)
                .await;
            if full {
                // Without a watcher the resync is the only way to see changes: keep it short.
                let period = if watcher.is_some() {
                    resync
                } else {
                    resync.min(NO_WATCHER_RESYNC)
                };
                resync_at = tokio::time::Instant::now() + period.max(Duration::from_millis(100));
            }
            // Ownership changes apply at once; the directory is read again on its own events.
            pass = loop {
                tokio::select! {
                    _ = self.cancel.cancelled() => return,
                    Ok(()) = owned_changed(&mut owned) => self.apply(),
                    _ = tokio::time::sleep_until(resync_at) => break Pass::Changed,
                    Some(()) = changes.recv() => {
                        // Debounce: a rotation writes several files; apply them together.
                        loop {
                            tokio::select! {
                                _ = self.cancel.cancelled() => return,
                                _ = tokio::time::sleep(DEBOUNCE) => break,
                                Some(()) = changes.recv() => {}
                            }
                        }
                        let taken = std::mem::take(&mut *dirty.lock().expect("dirty lock"));
                        break if taken.all { Pass::Changed } else { Pass::Named(taken.dirs) };
                    }
                }
            };
            while let Some(Ok(())) = self.retiring.try_join_next() {}
        }
    }

    /// Brings the running accounts in line with the directory's content; `pass` says which
    /// account directories are read again (see `accounts_dir::Rescan`).
    async fn reconcile_dir(
        &mut self,
        dir: &std::path::Path,
        fixed: &BTreeMap<String, AccountSpec>,
        mut cache: accounts_dir::DirCache,
        pass: Pass,
    ) -> accounts_dir::DirCache {
        let root = dir.to_owned();
        let started = std::time::Instant::now();
        let scanned = tokio::task::spawn_blocking(move || {
            let rescan = match &pass {
                Pass::Changed => accounts_dir::Rescan::Changed,
                Pass::Named(names) => accounts_dir::Rescan::Named(names),
            };
            let scan = cache.scan(&root, rescan);
            (scan, cache)
        })
        .await;
        let scan = match scanned {
            Ok((Ok(scan), cache)) => {
                debug!(elapsed = ?started.elapsed(), accounts = scan.accounts.len(), read = cache.last_reads(), "accounts directory read");
                (scan, cache)
            }
            Ok((Err(err), cache)) => {
                // Keep what runs: an unmounted volume must not drain every tenant.
                warn!("{err}; keeping the accounts already running");
                return cache;
            }
            Err(err) => {
                error!("reading the accounts directory failed: {err}");
                return accounts_dir::DirCache::default();
            }
        };
        let (scan, cache) = scan;
        let mut wanted: BTreeMap<String, Arc<AccountSpec>> = BTreeMap::new();
        let mut problems: BTreeMap<String, String> = scan
            .problems
            .into_iter()
            .map(|p| (p.dir, p.error))
            .collect();
        for spec in scan.accounts {
            if let Some(other) = fixed.get(&spec.name) {
                problems.insert(
                    format!("{} (duplicate)", spec.name),
                    format!(
                        "account name \"{}\" is defined twice: {} and {}",
                        spec.name, other.defined_at, spec.defined_at
                    ),
                );
            } else {
                wanted.insert(spec.name.clone(), spec);
            }
        }
        for name in wanted.keys() {
            self.broken.remove(name);
        }
        self.specs.retain(|_, spec| spec.origin != Origin::Dir);
        self.specs.extend(wanted);
        self.apply();
        // Broken directories: shown as failed, the others unaffected.
        let fixed_now: Vec<String> = self
            .broken
            .iter()
            .filter(|n| !problems.contains_key(*n))
            .cloned()
            .collect();
        for name in fixed_now {
            self.broken.remove(&name);
            if !self.running.contains_key(&name) {
                self.board.remove(&name);
            }
        }
        for (name, error) in problems {
            if self
                .running
                .get(&name)
                .is_some_and(|p| p.spec.origin == Origin::Dir)
            {
                // The directory broke while its account ran: stop it and show why.
                if let Some(pump) = self.running.remove(&name) {
                    self.retiring.spawn(pump.drain());
                }
            }
            if self.broken.insert(name.clone()) {
                warn!(account = %name, %error, "account directory skipped");
            }
            self.board.broken(&name, Origin::Dir, error);
        }
        cache
    }

    /// Brings the running pumps in line with `specs` and, with exclusive ownership, with the
    /// accounts this replica owns: starts, replaces (changed fingerprint) and drains.
    fn apply(&mut self) {
        while let Some(Ok(())) = self.retiring.try_join_next() {}
        // Removed directories: drain their accounts and forget them.
        let gone: Vec<String> = self
            .running
            .keys()
            .filter(|name| !self.specs.contains_key(*name))
            .cloned()
            .collect();
        for name in gone {
            if let Some(pump) = self.running.remove(&name) {
                info!(account = %name, "account directory removed; draining");
                let board = self.board.clone();
                let generation = pump.generation;
                self.retiring.spawn(async move {
                    pump.drain().await;
                    board.retire(&name, generation);
                });
            }
        }
        // Accounts removed while another replica owned them were never running here.
        for name in self.board.names() {
            if !self.specs.contains_key(&name)
                && !self.running.contains_key(&name)
                && self
                    .board
                    .get(&name)
                    .is_some_and(|a| a.state == AccountState::Standby)
            {
                self.board.remove(&name);
            }
        }
        let owned = self.gate.as_ref().map(|g| g.owned.borrow().clone());
        let specs: Vec<Arc<AccountSpec>> = self.specs.values().cloned().collect();
        for spec in specs {
            let mine = spec.origin == Origin::Aggregate
                || owned
                    .as_ref()
                    .is_none_or(|owned| owned.contains(&spec.name));
            if !mine {
                if let Some(pump) = self.running.remove(&spec.name) {
                    info!(account = %spec.name, "account owned by another replica now; draining");
                    self.retiring.spawn(pump.drain());
                }
                self.board.standby(&spec);
                continue;
            }
            match self.running.get(&spec.name) {
                Some(pump) if pump.spec.fingerprint == spec.fingerprint => {}
                Some(_) => {
                    info!(account = %spec.name, "account changed (meta.yaml or credentials); replacing its connection");
                    self.replace(spec);
                }
                None => self.start(spec),
            }
        }
        if let Some(gate) = &self.gate {
            let known: BTreeSet<String> = self
                .specs
                .values()
                .filter(|spec| spec.origin != Origin::Aggregate)
                .map(|spec| spec.name.clone())
                .collect();
            gate.known.send_if_modified(|current| {
                let changed = *current != known;
                *current = known;
                changed
            });
        }
    }

    /// Starts the new connection and drains the old one once the new one consumes, so a
    /// credential rotation has no gap.
    fn replace(&mut self, spec: Arc<AccountSpec>) {
        let status = self.board.account(&spec);
        let pump = Pump::start(spec, status, self.shared.clone(), &self.cancel);
        let name = pump.spec.name.clone();
        let old = self.running.remove(&name);
        let ready = pump.ready();
        self.running.insert(name, pump);
        if let Some(old) = old {
            self.retiring.spawn(async move {
                let _ = tokio::time::timeout(REPLACE_WAIT, ready.wait()).await;
                old.drain().await;
            });
        }
    }
}

/// Resolves when the owned accounts change; never without exclusive ownership. An `Err` means
/// the steward is gone (the source is stopping).
async fn owned_changed(
    owned: &mut Option<watch::Receiver<BTreeSet<String>>>,
) -> Result<(), watch::error::RecvError> {
    match owned {
        Some(owned) => owned.changed().await,
        None => std::future::pending().await,
    }
}

/// Which account directories a reconcile pass reads again.
enum Pass {
    /// Those whose files changed (by metadata), and new ones: the periodic resync, and events
    /// that cannot be pinned on one account directory.
    Changed,
    /// These, named by file-system events.
    Named(HashSet<String>),
}

/// What file-system events touched since the last pass.
#[derive(Debug, Default)]
struct Dirty {
    dirs: HashSet<String>,
    /// Something that is not one account directory changed (the root, a `..data` symlink of a
    /// Kubernetes mount) or events were lost: check every directory.
    all: bool,
}

impl Dirty {
    fn mark(&mut self, root: &std::path::Path, event: notify::Result<notify::Event>) {
        let event = match event {
            Ok(event) if !event.need_rescan() => event,
            _ => {
                self.all = true;
                return;
            }
        };
        if !is_change(&event.kind) {
            return;
        }
        for path in &event.paths {
            match path
                .strip_prefix(root)
                .ok()
                .and_then(|p| p.components().next())
            {
                Some(std::path::Component::Normal(name))
                    if !name.to_string_lossy().starts_with('.') =>
                {
                    self.dirs.insert(name.to_string_lossy().into_owned());
                }
                _ => self.all = true,
            }
        }
    }

    fn is_empty(&self) -> bool {
        !self.all && self.dirs.is_empty()
    }
}

/// Watches the accounts directory, recording what changed in `dirty`; `None` (retried on the next
/// resync) if it cannot be watched.
fn watch(
    dir: &std::path::Path,
    changes: mpsc::Sender<()>,
    dirty: Arc<Mutex<Dirty>>,
) -> Option<notify::RecommendedWatcher> {
    let root = dir.to_owned();
    let handler = move |event: notify::Result<notify::Event>| {
        let mut dirty = dirty.lock().expect("dirty lock");
        dirty.mark(&root, event);
        if !dirty.is_empty() {
            // Full channel = a change is already signalled.
            let _ = changes.try_send(());
        }
    };
    let mut watcher = match notify::recommended_watcher(handler) {
        Ok(w) => w,
        Err(err) => {
            warn!("cannot watch the accounts directory: {err}; relying on periodic resync");
            return None;
        }
    };
    match watcher.watch(dir, notify::RecursiveMode::Recursive) {
        Ok(()) => Some(watcher),
        Err(err) => {
            warn!(dir = %dir.display(), "cannot watch the accounts directory: {err}; relying on periodic resync");
            None
        }
    }
}

/// Whether a file-system event may change an account. Opening or reading a file (inotify
/// IN_OPEN) is not a change, and our own rescans read every file: reacting to those made each
/// rescan trigger the next, a busy loop over the whole directory. A file closed after writing
/// is a change.
fn is_change(kind: &notify::EventKind) -> bool {
    use notify::event::{AccessKind, AccessMode, EventKind};
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        _ => true,
    }
}

impl NatsSourceConfig {
    /// The NATS source the config asks for; `None` when no NATS servers are configured.
    /// Validation (`Config::validate`) already refused servers without accounts and the reverse.
    pub fn from_config(config: &crate::config::Config) -> Result<Option<NatsSourceConfig>, String> {
        let nats = &config.publishmq.nats;
        if nats.servers.is_empty() {
            return Ok(None);
        }
        let mut accounts: Vec<AccountSpec> = nats
            .accounts
            .iter()
            .enumerate()
            .map(|(i, a)| {
                crate::event::check_id(&a.tenant_id).map_err(|err| {
                    format!(
                        "publishmq.nats.accounts[{i}].tenant_id is not a valid tenant id: it {err}"
                    )
                })?;
                Ok(AccountSpec {
                    name: a.name.clone(),
                    origin: Origin::Static,
                    tenant: TenantRule::Account(a.tenant_id.clone()),
                    stream: a.stream.clone(),
                    consumer: a.consumer.clone(),
                    credentials_file: a.credentials_file.clone(),
                    defined_at: format!("publishmq.nats.accounts[{i}]"),
                    fingerprint: [0; 32],
                }
                .fingerprinted(None))
            })
            .collect::<Result<_, String>>()?;
        if let Some(aggregate) = &nats.aggregate {
            let pattern = SubjectPattern::parse(&aggregate.tenant_subject)?;
            accounts.push(
                AccountSpec {
                    name: "aggregate".into(),
                    origin: Origin::Aggregate,
                    tenant: TenantRule::Subject(pattern),
                    stream: aggregate.stream.clone(),
                    consumer: aggregate.consumer.clone(),
                    credentials_file: aggregate.credentials_file.clone(),
                    defined_at: "publishmq.nats.aggregate".into(),
                    fingerprint: [0; 32],
                }
                .fingerprinted(None),
            );
        }
        Ok(Some(NatsSourceConfig {
            servers: nats.servers.clone(),
            accounts,
            accounts_dir: nats.accounts_dir.clone(),
            max_in_flight: config.publish_max_concurrency,
            drain_timeout: config.shutdown_timeout(),
            resync_interval: RESYNC,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use notify::event::{AccessKind, AccessMode, CreateKind, EventKind, ModifyKind, RemoveKind};

    #[test]
    fn reading_the_directory_is_not_a_change() {
        assert!(!is_change(&EventKind::Access(AccessKind::Open(
            AccessMode::Any
        ))));
        assert!(!is_change(&EventKind::Access(AccessKind::Close(
            AccessMode::Read
        ))));
        assert!(is_change(&EventKind::Access(AccessKind::Close(
            AccessMode::Write
        ))));
        assert!(is_change(&EventKind::Create(CreateKind::Folder)));
        assert!(is_change(&EventKind::Modify(ModifyKind::Any)));
        assert!(is_change(&EventKind::Remove(RemoveKind::Any)));
    }
}
