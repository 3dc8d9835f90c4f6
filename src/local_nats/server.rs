//! `LocalNatsServer`: a nats-server child process on free loopback ports with a directory of its
//! own (config, log, JetStream store, account resolver, `.creds`), in plain JetStream mode or in
//! operator/JWT mode with generated tenant accounts. Dropping it kills and reaps the child.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Mutex as SyncMutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_nats::connection::State;
use async_nats::{Client, ConnectOptions};
use bytes::Bytes;
use futures::TryStreamExt as _;
use tempfile::TempDir;
use tokio::sync::Mutex;
use tokio::time::{Instant, sleep, timeout};

use super::LocalNatsError;
use super::binary::NatsServerBinary;
use super::jwt::{Account, AccountSpec, Operator, SYSTEM_ACCOUNT, User, unix_now};

type Result<T, E = LocalNatsError> = std::result::Result<T, E>;

/// How often start-up and readiness conditions are polled.
const POLL_INTERVAL: Duration = Duration::from_millis(50);
/// Bound on one request to the server ($JS.API.INFO, $SYS.REQ.CLAIMS.UPDATE).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Log lines quoted in errors.
const LOG_TAIL_LINES: usize = 40;
/// How many accounts are checked for JetStream at once after a start.
const READINESS_CONCURRENCY: usize = 8;
const CLAIMS_UPDATE_SUBJECT: &str = "$SYS.REQ.CLAIMS.UPDATE";
const OPERATOR_NAME: &str = "jetpost-local";
/// Name of the first user of every account, whose creds [`LocalNatsServer::creds_path`] returns.
pub const DEFAULT_USER: &str = "user";

/// How to run the server. Build with [`ServerOptions::new`] and adjust fields.
#[derive(Clone, Debug)]
pub struct ServerOptions {
    pub binary: NatsServerBinary,
    /// Where config, log, store and creds live: `None` = a temporary directory removed on drop;
    /// `Some` = this directory (missing or empty), kept afterwards.
    pub dir: Option<PathBuf>,
    /// Also open the HTTP monitoring port (`/varz`, `/jsz`, …).
    pub monitoring: bool,
    /// The server's JetStream memory budget. Every account's `mem_storage` is reserved against
    /// it, so it is large by default (1 TiB: 32 768 accounts at the default 32 MiB); it is a
    /// reservation ceiling, not an allocation.
    pub max_memory_store: u64,
    /// The server's JetStream file budget; accounts' `disk_storage` is reserved against it
    /// (default 100 TiB: 102 400 accounts at the default 1 GiB).
    pub max_file_store: u64,
    /// `jetstream.limits.default_max_consumers`: nats-server 2.15 caps consumers per stream at
    /// 1000 unless this is set.
    pub default_max_consumers: Option<u32>,
    /// How long lame-duck mode spreads client disconnects over (nats-server's minimum is 30 s).
    pub lame_duck_duration: Duration,
    /// How long lame-duck mode waits before it starts closing clients.
    pub lame_duck_grace_period: Duration,
    /// Deadline for the server, and JetStream in every account, to answer after a start.
    pub ready_timeout: Duration,
    /// How long [`LocalNatsServer::stop`] waits after SIGTERM before it kills.
    pub stop_timeout: Duration,
}

impl ServerOptions {
    pub fn new(binary: NatsServerBinary) -> Self {
        Self {
            binary,
            dir: None,
            monitoring: false,
            max_memory_store: 1 << 40,
            max_file_store: 100 << 40,
            default_max_consumers: None,
            lame_duck_duration: Duration::from_secs(30),
            lame_duck_grace_period: Duration::from_secs(2),
            ready_timeout: Duration::from_secs(60),
            stop_timeout: Duration::from_secs(30),
        }
    }
}

/// One user's `.creds` file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserCreds {
    pub account: String,
    pub user: String,
    /// The user's public nkey, for [`LocalNatsServer::revoke_user`].
    pub public_key: String,
    pub path: PathBuf,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Ports {
    client: u16,
    monitoring: Option<u16>,
}

struct AccountEntry {
    account: Account,
    users: Vec<UserCreds>,
}

/// A running (or stopped) local nats-server. Methods take `&self`, so it can be shared.
pub struct LocalNatsServer {
    // Field order is drop order: the child dies before its directory is removed.
    process: Mutex<Option<ServerProcess>>,
    system_client: Mutex<Option<Client>>,
    /// Serializes account changes, so read-modify-push-store of one account cannot interleave.
    account_changes: Mutex<()>,
    accounts: SyncMutex<BTreeMap<String, AccountEntry>>,
    operator: Option<Operator>,
    ports: Ports,
    options: ServerOptions,
    layout: Layout,
    _temp_dir: Option<TempDir>,
}

impl std::fmt::Debug for LocalNatsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalNatsServer")
            .field("url", &self.url())
            .field("dir", &self.layout.root)
            .field("operator_mode", &self.operator.is_some())
            .finish_non_exhaustive()
    }
}

impl LocalNatsServer {
    /// Starts a server with JetStream and no authentication (everything in the global account).
    pub async fn start_plain(options: ServerOptions) -> Result<Self> {
        Self::launch(options, None, Vec::new()).await
    }

    /// Starts a server in operator/JWT mode: a generated operator, system account `SYS` and one
    /// account per spec (each with a first user whose creds [`creds_path`](Self::creds_path)
    /// gives), a full account resolver, and JetStream. Returns once JetStream answers in every
    /// account that has it.
    pub async fn start_operator(
        options: ServerOptions,
        accounts: impl IntoIterator<Item = AccountSpec>,
    ) -> Result<Self> {
        let specs = accounts.into_iter().collect();
        Self::launch(options, Some(Operator::new(OPERATOR_NAME)), specs).await
    }

    async fn launch(
        options: ServerOptions,
        operator: Option<Operator>,
        specs: Vec<AccountSpec>,
    ) -> Result<Self> {
        let (temp_dir, root) = prepare_dir(options.dir.as_deref())?;
        let layout = Layout { root };
        let mut accounts = BTreeMap::new();
        if let Some(operator) = &operator {
            write_file(&layout.operator_jwt(), operator.jwt()?.as_bytes()).await?;
            let system = operator.system_account().clone();
            accounts.insert(
                SYSTEM_ACCOUNT.to_owned(),
                AccountEntry::create(system, &layout).await?,
            );
            for spec in specs {
                validate_account_name(&spec.name)?;
                if accounts.contains_key(&spec.name) {
                    return Err(LocalNatsError::DuplicateAccount(spec.name));
                }
                let name = spec.name.clone();
                let entry = AccountEntry::create(Account::new(spec), &layout).await?;
                accounts.insert(name, entry);
            }
        }
        let config = render_config(&options, &layout, operator.as_ref(), &accounts, None)?;
        let (process, ports) = spawn_server(&options, &layout, &config).await?;
        let server = Self {
            process: Mutex::new(Some(process)),
            system_client: Mutex::new(None),
            account_changes: Mutex::new(()),
            accounts: SyncMutex::new(accounts),
            operator,
            ports,
            options,
            layout,
            _temp_dir: temp_dir,
        };
        server.wait_ready().await?;
        tracing::debug!(url = %server.url(), dir = %server.layout.root.display(), "local nats-server ready");
        Ok(server)
    }

    /// `nats://127.0.0.1:<port>`; the same across restarts.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.ports.client)
    }

    pub fn client_port(&self) -> u16 {
        self.ports.client
    }

    /// `http://127.0.0.1:<port>` when [`ServerOptions::monitoring`] is on.
    pub fn monitoring_url(&self) -> Option<String> {
        self.ports
            .monitoring
            .map(|port| format!("http://127.0.0.1:{port}"))
    }

    /// The server's directory (config, log, store, creds).
    pub fn dir(&self) -> &Path {
        &self.layout.root
    }

    pub fn binary(&self) -> &NatsServerBinary {
        &self.options.binary
    }

    /// `None` in plain mode.
    pub fn operator(&self) -> Option<&Operator> {
        self.operator.as_ref()
    }

    /// The server's combined stdout/stderr, appended to across restarts.
    pub fn log_path(&self) -> PathBuf {
        self.layout.log()
    }

    /// The last `lines` lines of the log, for error messages and debugging.
    pub fn log_tail(&self, lines: usize) -> String {
        log_tail(&self.layout.log(), lines)
    }

    // ----- accounts and users (operator mode) -----

    /// A copy of the named account (its public key is what imports refer to).
    pub fn account(&self, name: &str) -> Result<Account> {
        self.with_entry(name, |entry| entry.account.clone())
    }

    /// Names of the tenant accounts (without `SYS`), sorted.
    pub fn account_names(&self) -> Vec<String> {
        self.lock_accounts()
            .keys()
            .filter(|name| *name != SYSTEM_ACCOUNT)
            .cloned()
            .collect()
    }

    /// The first user's creds of `account` (`SYS` included).
    pub fn creds(&self, account: &str) -> Result<UserCreds> {
        self.with_entry(account, |entry| entry.users.first().cloned())?
            .ok_or_else(|| LocalNatsError::UnknownAccount(account.to_owned()))
    }

    /// Path of the first user's `.creds` file of `account`.
    pub fn creds_path(&self, account: &str) -> Result<PathBuf> {
        Ok(self.creds(account)?.path)
    }

    /// Every user issued for `account`, first user first.
    pub fn users(&self, account: &str) -> Result<Vec<UserCreds>> {
        self.with_entry(account, |entry| entry.users.clone())
    }

    /// Issues another user of `account` (e.g. to rotate credentials) and writes its `.creds`.
    /// Users need no server round trip: the account key vouches for them.
    pub async fn new_user(&self, account: &str) -> Result<UserCreds> {
        let _changes = self.account_changes.lock().await;
        let (issuer, count) = self.with_entry(account, |e| (e.account.clone(), e.users.len()))?;
        let user = issuer.issue_user(format!("{DEFAULT_USER}-{}", count + 1))?;
        let creds = write_creds(&self.layout, account, &user).await?;
        self.with_entry_mut(account, |entry| entry.users.push(creds.clone()))?;
        Ok(creds)
    }

    /// Adds an account at runtime: pushes its JWT to the full resolver, writes its first user's
    /// creds, and returns once JetStream answers in it (if it has JetStream).
    pub async fn add_account(&self, spec: AccountSpec) -> Result<Account> {
        self.require_operator()?;
        validate_account_name(&spec.name)?;
        let name = spec.name.clone();
        let changes = self.account_changes.lock().await;
        if self.lock_accounts().contains_key(&name) {
            return Err(LocalNatsError::DuplicateAccount(name));
        }
        let entry = AccountEntry::create(Account::new(spec), &self.layout).await?;
        self.push_account(&entry.account).await?;
        let account = entry.account.clone();
        self.lock_accounts().insert(name.clone(), entry);
        drop(changes);
        if account.spec().jetstream.is_some() {
            self.wait_jetstream(Some(&name)).await?;
        }
        Ok(account)
    }

    /// Replaces the limits, exports and imports of the account named `spec.name` (keeping its
    /// keys, users and revocations), pushes the re-signed JWT, and waits for its JetStream.
    pub async fn update_account(&self, spec: AccountSpec) -> Result<Account> {
        let name = spec.name.clone();
        let account = self
            .change_account(&name, |account| account.set_spec(spec))
            .await?;
        if account.spec().jetstream.is_some() {
            self.wait_jetstream(Some(&name)).await?;
        }
        Ok(account)
    }

    /// Revokes `user_public_key` in `account` (every JWT of that key issued until now) and
    /// pushes the re-signed account JWT; the server closes the user's connections.
    pub async fn revoke_user(&self, account: &str, user_public_key: &str) -> Result<()> {
        let now = unix_now();
        self.change_account(account, |account| {
            account.revoke_user(user_public_key, now);
        })
        .await?;
        Ok(())
    }

    async fn change_account(
        &self,
        name: &str,
        change: impl FnOnce(&mut Account),
    ) -> Result<Account> {
        let _changes = self.account_changes.lock().await;
        let mut account = self.account(name)?;
        change(&mut account);
        self.push_account(&account).await?;
        self.with_entry_mut(name, |entry| entry.account = account.clone())?;
        Ok(account)
    }

    /// Sends the account's JWT, signed now, to `$SYS.REQ.CLAIMS.UPDATE` as the system user and
    /// checks the reply (the full resolver stores it and applies it at once).
    async fn push_account(&self, account: &Account) -> Result<()> {
        let operator = self.require_operator()?;
        let fail = |reason: String| LocalNatsError::ClaimsUpdate {
            account: account.name().to_owned(),
            reason,
        };
        let jwt = account.jwt(operator)?;
        let client = self.system_client().await?;
        let reply = timeout(
            REQUEST_TIMEOUT,
            client.request(CLAIMS_UPDATE_SUBJECT, Bytes::from(jwt)),
        )
        .await
        .map_err(|_| fail(format!("no reply within {REQUEST_TIMEOUT:?}")))?
        .map_err(|error| fail(error.to_string()))?;
        let body: serde_json::Value = serde_json::from_slice(&reply.payload).map_err(|error| {
            fail(format!(
                "reply {:?} is not JSON: {error}",
                String::from_utf8_lossy(&reply.payload)
            ))
        })?;
        if let Some(error) = body.get("error") {
            let reason = error
                .get("description")
                .and_then(serde_json::Value::as_str)
                .map_or_else(|| error.to_string(), str::to_owned);
            return Err(fail(reason));
        }
        tracing::debug!(account = account.name(), reply = %body, "account JWT pushed");
        Ok(())
    }

    // ----- connections -----

    /// Connect options carrying the first user's creds of `account`; add callbacks and connect
    /// to [`url`](Self::url).
    pub async fn connect_options_as(&self, account: &str) -> Result<ConnectOptions> {
        self.connect_options_with(&self.creds(account)?).await
    }

    /// Connect options carrying `creds`.
    pub async fn connect_options_with(&self, creds: &UserCreds) -> Result<ConnectOptions> {
        ConnectOptions::with_credentials_file(&creds.path)
            .await
            .map_err(|source| LocalNatsError::Io {
                action: "reading creds file",
                path: creds.path.clone(),
                source,
            })
    }

    /// A client of `account`'s first user.
    pub async fn connect_as(&self, account: &str) -> Result<Client> {
        let options = self.connect_options_as(account).await?;
        self.connect_with(account, options).await
    }

    /// A client without credentials (plain mode).
    pub async fn connect(&self) -> Result<Client> {
        self.connect_with("$G", ConnectOptions::new()).await
    }

    async fn connect_with(&self, account: &str, options: ConnectOptions) -> Result<Client> {
        let url = self.url();
        options
            .name("jetpost-local-nats")
            .connect(&url)
            .await
            .map_err(|source| LocalNatsError::Connect {
                url,
                account: account.to_owned(),
                source,
            })
    }

    async fn system_client(&self) -> Result<Client> {
        let mut cached = self.system_client.lock().await;
        if let Some(client) = cached.as_ref()
            && client.connection_state() == State::Connected
        {
            return Ok(client.clone());
        }
        let client = self.connect_as(SYSTEM_ACCOUNT).await?;
        *cached = Some(client.clone());
        Ok(client)
    }

    // ----- lifecycle -----

    /// The child's pid while it runs.
    pub async fn pid(&self) -> Option<u32> {
        let mut process = self.process.lock().await;
        let running = process.as_mut()?;
        running.has_exited().is_none().then(|| running.pid())
    }

    pub async fn is_running(&self) -> bool {
        self.pid().await.is_some()
    }

    /// Starts the server again after [`stop`](Self::stop), [`kill`](Self::kill) or lame-duck
    /// exit: same ports, same JetStream store, current account JWTs. Returns when ready.
    pub async fn start(&self) -> Result<()> {
        {
            let mut process = self.process.lock().await;
            if let Some(running) = process.as_mut()
                && running.has_exited().is_none()
            {
                return Err(LocalNatsError::AlreadyRunning { pid: running.pid() });
            }
            let config = {
                let accounts = self.lock_accounts();
                render_config(
                    &self.options,
                    &self.layout,
                    self.operator.as_ref(),
                    &accounts,
                    Some(self.ports),
                )?
            };
            let (started, _) = spawn_server(&self.options, &self.layout, &config).await?;
            *process = Some(started);
        }
        self.wait_ready().await
    }

    /// Stops gracefully (SIGTERM: JetStream flushes its store), killing after
    /// [`ServerOptions::stop_timeout`]. Does nothing if it is not running.
    pub async fn stop(&self) -> Result<()> {
        let mut process = self.process.lock().await;
        let Some(running) = process.as_mut() else {
            return Ok(());
        };
        if running.has_exited().is_none() {
            signal(&self.options.binary, running.pid(), "term").await?;
            if running.wait_exit(self.options.stop_timeout).await.is_none() {
                tracing::warn!(
                    pid = running.pid(),
                    "nats-server ignored SIGTERM; killing it"
                );
                running.kill().await;
            }
        }
        *process = None;
        Ok(())
    }

    /// Kills the server at once (SIGKILL), as a crash would.
    pub async fn kill(&self) -> Result<()> {
        if let Some(mut running) = self.process.lock().await.take() {
            running.kill().await;
        }
        Ok(())
    }

    /// [`stop`](Self::stop) then [`start`](Self::start) on the same port with the same store.
    pub async fn restart(&self) -> Result<()> {
        self.stop().await?;
        self.start().await
    }

    /// Puts the server into lame-duck mode (SIGUSR2, sent through `nats-server --signal ldm`):
    /// it stops accepting connections at once, tells clients (async-nats emits
    /// `Event::LameDuckMode`), closes them over [`ServerOptions::lame_duck_duration`], then exits.
    pub async fn lame_duck(&self) -> Result<()> {
        let mut process = self.process.lock().await;
        let Some(running) = process.as_mut() else {
            return Err(LocalNatsError::NotRunning);
        };
        if running.has_exited().is_some() {
            return Err(LocalNatsError::NotRunning);
        }
        signal(&self.options.binary, running.pid(), "ldm").await
    }

    /// Waits up to `within` for the server to exit on its own (e.g. after lame duck); `None` if
    /// it still runs.
    pub async fn wait_exit(&self, within: Duration) -> Option<ExitStatus> {
        let mut process = self.process.lock().await;
        match process.as_mut() {
            Some(running) => running.wait_exit(within).await,
            None => None,
        }
    }

    // ----- readiness -----

    /// Waits until clients can connect and JetStream answers in every account that has it.
    async fn wait_ready(&self) -> Result<()> {
        if self.operator.is_none() {
            return self.wait_jetstream(None).await;
        }
        self.wait_connectable(SYSTEM_ACCOUNT).await?;
        let with_jetstream: Vec<String> = self
            .lock_accounts()
            .values()
            .filter(|entry| entry.account.spec().jetstream.is_some())
            .map(|entry| entry.account.name().to_owned())
            .collect();
        futures::stream::iter(with_jetstream.into_iter().map(Ok))
            .try_for_each_concurrent(READINESS_CONCURRENCY, |name| async move {
                self.wait_jetstream(Some(&name)).await
            })
            .await
    }

    async fn wait_connectable(&self, account: &str) -> Result<()> {
        let deadline = Instant::now() + self.options.ready_timeout;
        loop {
            let reason = match self.system_client().await {
                Ok(_) => return Ok(()),
                Err(error) => error.to_string(),
            };
            if Instant::now() >= deadline {
                return Err(LocalNatsError::NotReady {
                    timeout: self.options.ready_timeout,
                    reason: format!("account {account:?} cannot connect: {reason}"),
                    log_tail: self.log_tail(LOG_TAIL_LINES),
                });
            }
            sleep(POLL_INTERVAL).await;
        }
    }

    /// Polls `$JS.API.INFO` in `account` (`None`: plain mode) until it answers without error:
    /// right after an account is pushed or the server starts, JetStream may not serve it yet.
    async fn wait_jetstream(&self, account: Option<&str>) -> Result<()> {
        let deadline = Instant::now() + self.options.ready_timeout;
        loop {
            let reason = match self.jetstream_info(account).await {
                Ok(()) => return Ok(()),
                Err(reason) => reason,
            };
            if Instant::now() >= deadline {
                return Err(LocalNatsError::JetStreamNotReady {
                    account: account.unwrap_or("$G").to_owned(),
                    timeout: self.options.ready_timeout,
                    reason,
                    log_tail: self.log_tail(LOG_TAIL_LINES),
                });
            }
            sleep(POLL_INTERVAL).await;
        }
    }

    async fn jetstream_info(&self, account: Option<&str>) -> Result<(), String> {
        let client = match account {
            Some(account) => self.connect_as(account).await,
            None => self.connect().await,
        }
        .map_err(|error| error.to_string())?;
        let reply = timeout(
            REQUEST_TIMEOUT,
            client.request("$JS.API.INFO", Bytes::new()),
        )
        .await
        .map_err(|_| format!("$JS.API.INFO had no reply within {REQUEST_TIMEOUT:?}"))?
        .map_err(|error| format!("$JS.API.INFO: {error}"))?;
        let body: serde_json::Value = serde_json::from_slice(&reply.payload)
            .map_err(|error| format!("$JS.API.INFO reply is not JSON: {error}"))?;
        match body.get("error") {
            Some(error) => Err(format!("$JS.API.INFO: {error}")),
            None => Ok(()),
        }
    }

    // ----- account map -----

    fn require_operator(&self) -> Result<&Operator> {
        self.operator.as_ref().ok_or(LocalNatsError::PlainMode)
    }

    fn lock_accounts(&self) -> MutexGuard<'_, BTreeMap<String, AccountEntry>> {
        // A panic while holding the lock cannot leave an entry half-written (entries are replaced
        // whole), so a poisoned map is still consistent.
        self.accounts.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn with_entry<T>(&self, name: &str, read: impl FnOnce(&AccountEntry) -> T) -> Result<T> {
        self.require_operator()?;
        self.lock_accounts()
            .get(name)
            .map(read)
            .ok_or_else(|| LocalNatsError::UnknownAccount(name.to_owned()))
    }

    fn with_entry_mut<T>(
        &self,
        name: &str,
        write: impl FnOnce(&mut AccountEntry) -> T,
    ) -> Result<T> {
        self.require_operator()?;
        self.lock_accounts()
            .get_mut(name)
            .map(write)
            .ok_or_else(|| LocalNatsError::UnknownAccount(name.to_owned()))
    }
}

impl AccountEntry {
    /// Issues the account's first user and writes its creds.
    async fn create(account: Account, layout: &Layout) -> Result<Self> {
        let user = account.issue_user(DEFAULT_USER)?;
        let creds = write_creds(layout, account.name(), &user).await?;
        Ok(Self {
            account,
            users: vec![creds],
        })
    }
}

/// Account names become directory names and config keys: keep them plain.
fn validate_account_name(name: &str) -> Result<()> {
    let plain = (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if plain && name != SYSTEM_ACCOUNT {
        Ok(())
    } else {
        Err(LocalNatsError::InvalidAccountName(name.to_owned()))
    }
}

/// Paths inside the server's directory.
struct Layout {
    root: PathBuf,
}

impl Layout {
    fn config(&self) -> PathBuf {
        self.root.join("nats-server.conf")
    }
    fn log(&self) -> PathBuf {
        self.root.join("nats-server.log")
    }
    fn ports_dir(&self) -> PathBuf {
        self.root.join("ports")
    }
    fn store_dir(&self) -> PathBuf {
        self.root.join("jetstream")
    }
    fn resolver_dir(&self) -> PathBuf {
        self.root.join("jwt")
    }
    fn operator_jwt(&self) -> PathBuf {
        self.root.join("operator.jwt")
    }
    fn creds(&self, account: &str, user: &str) -> PathBuf {
        self.root
            .join("creds")
            .join(account)
            .join(format!("{user}.creds"))
    }
}

fn prepare_dir(dir: Option<&Path>) -> Result<(Option<TempDir>, PathBuf)> {
    let Some(dir) = dir else {
        let temp = tempfile::Builder::new()
            .prefix("jetpost-nats-")
            .tempdir()
            .map_err(|source| LocalNatsError::Io {
                action: "creating a temporary directory in",
                path: std::env::temp_dir(),
                source,
            })?;
        let root = temp.path().to_path_buf();
        return Ok((Some(temp), root));
    };
    let io = |action, source| LocalNatsError::Io {
        action,
        path: dir.to_path_buf(),
        source,
    };
    // nats-server resolves relative paths against its own working directory: pass absolute ones.
    let root = std::path::absolute(dir).map_err(|source| io("resolving", source))?;
    match std::fs::read_dir(&root) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(LocalNatsError::DirNotEmpty { path: root });
            }
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(&root).map_err(|source| io("creating", source))?;
        }
        Err(source) => return Err(io("reading", source)),
    }
    Ok((None, root))
}

async fn write_file(path: &Path, contents: &[u8]) -> Result<()> {
    if let Some(parent) = path.parent() {
        tokio::fs::create_dir_all(parent)
            .await
            .map_err(|source| LocalNatsError::Io {
                action: "creating",
                path: parent.to_path_buf(),
                source,
            })?;
    }
    tokio::fs::write(path, contents)
        .await
        .map_err(|source| LocalNatsError::Io {
            action: "writing",
            path: path.to_path_buf(),
            source,
        })
}

/// Writes `user`'s `.creds` readable by the owner only (it holds the seed).
async fn write_creds(layout: &Layout, account: &str, user: &User) -> Result<UserCreds> {
    let path = layout.creds(account, user.name());
    let io = |action, source| LocalNatsError::Io {
        action,
        path: path.clone(),
        source,
    };
    if let Some(parent) = path.parent() {
        tokio::fs::create_dir_all(parent)
            .await
            .map_err(|source| io("creating the directory of", source))?;
    }
    let mut open = tokio::fs::OpenOptions::new();
    open.write(true).create(true).truncate(true);
    #[cfg(unix)]
    open.mode(0o600);
    let mut file = open
        .open(&path)
        .await
        .map_err(|source| io("creating", source))?;
    tokio::io::AsyncWriteExt::write_all(&mut file, user.creds()?.as_bytes())
        .await
        .map_err(|source| io("writing", source))?;
    // tokio writes in the background: without a flush the file may still be empty on return.
    tokio::io::AsyncWriteExt::flush(&mut file)
        .await
        .map_err(|source| io("writing", source))?;
    Ok(UserCreds {
        account: account.to_owned(),
        user: user.name().to_owned(),
        public_key: user.public_key(),
        path,
    })
}

/// The server config. `ports: None` lets the server pick free ports (reported in the ports
/// file); later starts pass the ports it picked so clients reconnect to the same address.
fn render_config(
    options: &ServerOptions,
    layout: &Layout,
    operator: Option<&Operator>,
    accounts: &BTreeMap<String, AccountEntry>,
    ports: Option<Ports>,
) -> Result<String> {
    use std::fmt::Write as _;

    let quote = |path: &Path| quote_str(&path.to_string_lossy());
    let any_port = |port: Option<u16>| port.map_or_else(|| "-1".to_owned(), |p| p.to_string());
    let mut config = String::from(
        "# Written by jetpost's local_nats before every start; edits are overwritten.\n\
         server_name: \"jetpost-local\"\n",
    );
    // Writing into a String cannot fail; the results are ignored for that reason.
    let _ = writeln!(
        config,
        "listen: \"127.0.0.1:{}\"",
        any_port(ports.map(|p| p.client))
    );
    if options.monitoring {
        let _ = writeln!(
            config,
            "http: \"127.0.0.1:{}\"",
            any_port(ports.and_then(|p| p.monitoring))
        );
    }
    let _ = writeln!(config, "ports_file_dir: {}", quote(&layout.ports_dir()));
    let _ = writeln!(
        config,
        "lame_duck_duration: \"{}ms\"\nlame_duck_grace_period: \"{}ms\"",
        options.lame_duck_duration.as_millis(),
        options.lame_duck_grace_period.as_millis()
    );
    let _ = writeln!(
        config,
        "jetstream {{\n  store_dir: {}\n  max_memory_store: {}\n  max_file_store: {}",
        quote(&layout.store_dir()),
        options.max_memory_store,
        options.max_file_store
    );
    if let Some(max) = options.default_max_consumers {
        let _ = writeln!(config, "  limits {{ default_max_consumers: {max} }}");
    }
    config.push_str("}\n");

    if let Some(operator) = operator {
        let _ = writeln!(
            config,
            "operator: {}\nsystem_account: {}",
            quote(&layout.operator_jwt()),
            quote_str(&operator.system_account().public_key())
        );
        let _ = writeln!(
            config,
            "resolver: {{ type: full, dir: {}, allow_delete: false, interval: \"2m\", \
             timeout: \"1.9s\" }}",
            quote(&layout.resolver_dir())
        );
        // Preload the current JWTs (runtime changes included): the resolver directory keeps the
        // newest anyway, and a fresh directory needs the system account before anyone connects.
        config.push_str("resolver_preload: {\n");
        for entry in accounts.values() {
            let _ = writeln!(
                config,
                "  {}: {}",
                quote_str(&entry.account.public_key()),
                quote_str(&entry.account.jwt(operator)?)
            );
        }
        config.push_str("}\n");
    }
    Ok(config)
}

/// A double-quoted config string; JSON escaping is valid in nats-server's config syntax.
fn quote_str(value: &str) -> String {
    serde_json::Value::from(value).to_string()
}

/// Writes the config, starts the child with output appended to the log, and waits for the
/// ports file that nats-server writes once it listens.
async fn spawn_server(
    options: &ServerOptions,
    layout: &Layout,
    config: &str,
) -> Result<(ServerProcess, Ports)> {
    write_file(&layout.config(), config.as_bytes()).await?;
    let ports_dir = layout.ports_dir();
    match tokio::fs::remove_dir_all(&ports_dir).await {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
            return Err(LocalNatsError::Io {
                action: "clearing",
                path: ports_dir,
                source: error,
            });
        }
        _ => {}
    }
    tokio::fs::create_dir_all(&ports_dir)
        .await
        .map_err(|source| LocalNatsError::Io {
            action: "creating",
            path: ports_dir.clone(),
            source,
        })?;

    let log_path = layout.log();
    let log_io = |source| LocalNatsError::Io {
        action: "opening the server log",
        path: log_path.clone(),
        source,
    };
    let mut log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(log_io)?;
    std::io::Write::write_all(
        &mut log,
        format!(
            "--- jetpost local_nats: starting {} ---\n",
            options.binary.path.display()
        )
        .as_bytes(),
    )
    .map_err(log_io)?;
    let stderr = log.try_clone().map_err(log_io)?;
    let child = Command::new(&options.binary.path)
        .arg("-c")
        .arg(layout.config())
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(stderr)
        .spawn()
        .map_err(|error| LocalNatsError::BinaryUnusable {
            path: options.binary.path.clone(),
            reason: error.to_string(),
        })?;
    // From here on the guard kills the child on every early return.
    let mut process = ServerProcess { child };

    let deadline = Instant::now() + options.ready_timeout;
    loop {
        if let Some(status) = process.has_exited() {
            return Err(LocalNatsError::Exited {
                status: status.to_string(),
                log_tail: log_tail(&log_path, LOG_TAIL_LINES),
            });
        }
        if let Some(ports) = read_ports(&ports_dir, options.monitoring).await {
            return Ok((process, ports));
        }
        if Instant::now() >= deadline {
            return Err(LocalNatsError::NotReady {
                timeout: options.ready_timeout,
                reason: format!("no ports file appeared in {}", ports_dir.display()),
                log_tail: log_tail(&log_path, LOG_TAIL_LINES),
            });
        }
        sleep(POLL_INTERVAL).await;
    }
}

/// Reads `{"nats":["nats://127.0.0.1:4222"],"monitoring":["http://127.0.0.1:8222"]}` from the
/// ports file; `None` while it is missing or half-written.
async fn read_ports(dir: &Path, monitoring: bool) -> Option<Ports> {
    #[derive(serde::Deserialize)]
    struct PortsFile {
        #[serde(default)]
        nats: Vec<String>,
        #[serde(default)]
        monitoring: Vec<String>,
    }
    fn port(urls: &[String]) -> Option<u16> {
        urls.first()?.rsplit(':').next()?.parse().ok()
    }

    let mut entries = tokio::fs::read_dir(dir).await.ok()?;
    while let Ok(Some(entry)) = entries.next_entry().await {
        if entry.path().extension().is_none_or(|ext| ext != "ports") {
            continue;
        }
        let text = tokio::fs::read(entry.path()).await.ok()?;
        let file: PortsFile = serde_json::from_slice(&text).ok()?;
        let client = port(&file.nats)?;
        let monitoring = if monitoring {
            Some(port(&file.monitoring)?)
        } else {
            None
        };
        return Some(Ports { client, monitoring });
    }
    None
}

fn log_tail(path: &Path, lines: usize) -> String {
    match std::fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(error) => format!("(cannot read {}: {error})", path.display()),
    }
}

/// Sends a signal through `nats-server --signal <name>=<pid>` (this crate forbids the `unsafe`
/// a direct kill(2) would need). Names: term, quit, stop, ldm, reload, reopen.
async fn signal(binary: &NatsServerBinary, pid: u32, name: &'static str) -> Result<()> {
    let failed = |reason: String| LocalNatsError::Signal {
        signal: name,
        pid,
        reason,
    };
    let output = tokio::process::Command::new(&binary.path)
        .arg("--signal")
        .arg(format!("{name}={pid}"))
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|error| failed(error.to_string()))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(failed(format!(
            "{}: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )))
    }
}

/// The child process; dropping it kills and reaps it, so no server outlives its owner.
struct ServerProcess {
    child: Child,
}

impl ServerProcess {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The exit status once the child has exited (a failed check counts as still running).
    fn has_exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    async fn wait_exit(&mut self, within: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.has_exited() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            sleep(POLL_INTERVAL).await;
        }
    }

    async fn kill(&mut self) {
        // An error here means the child already exited; reaping below still applies.
        let _ = self.child.kill();
        if self.wait_exit(Duration::from_secs(10)).await.is_none() {
            let _ = self.child.wait();
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if self.has_exited().is_none() {
            let _ = self.child.kill();
            // Blocks only while the kernel tears down a SIGKILLed process.
            let _ = self.child.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_names_must_be_plain() {
        for good in ["acme", "tenant-1", "T_2"] {
            assert!(validate_account_name(good).is_ok(), "{good}");
        }
        for bad in ["", "SYS", "a/b", "..", "a b", &"x".repeat(65)] {
            assert!(
                matches!(
                    validate_account_name(bad),
                    Err(LocalNatsError::InvalidAccountName(_))
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn config_strings_are_quoted_and_escaped() {
        assert_eq!(quote_str("/tmp/a b"), "\"/tmp/a b\"");
        assert_eq!(quote_str("a\"b"), "\"a\\\"b\"");
    }

    #[test]
    fn a_named_directory_must_be_empty() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("leftover"), "x").unwrap();
        assert!(matches!(
            prepare_dir(Some(dir.path())),
            Err(LocalNatsError::DirNotEmpty { .. })
        ));
        let fresh = dir.path().join("fresh");
        let (temp, root) = prepare_dir(Some(&fresh)).unwrap();
        assert!(temp.is_none());
        assert!(root.is_dir());
    }
}
