//! What every account is doing, for `/api/v1/nats/accounts`, `/healthz` and metrics: state, last
//! error and counters, kept per account name across reconnects and connection replacements.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use async_nats::jetstream;
use futures::StreamExt;

use serde::Serialize;

use super::account::{AccountSpec, Origin};

/// The lifecycle state of an account's consumer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AccountState {
    Connecting,
    Consuming,
    Failed,
    Draining,
    /// Owned by another replica (exclusive ownership): this one does not connect.
    Standby,
}

impl AccountState {
    pub const ALL: [AccountState; 5] = [
        AccountState::Connecting,
        AccountState::Consuming,
        AccountState::Failed,
        AccountState::Draining,
        AccountState::Standby,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AccountState::Connecting => "connecting",
            AccountState::Consuming => "consuming",
            AccountState::Failed => "failed",
            AccountState::Draining => "draining",
            AccountState::Standby => "standby",
        }
    }
}

/// One row of `GET /api/v1/nats/accounts`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AccountStatusView {
    pub name: String,
    pub tenant_id: String,
    pub source: Origin,
    pub stream: String,
    pub consumer: String,
    pub state: AccountState,
    pub last_error: Option<String>,
    pub messages_received: u64,
    pub messages_rejected: u64,
    pub pending: u64,
    /// The replica that holds the account's lease (exclusive ownership), else `None`.
    pub owner: Option<String>,
}

#[derive(Debug)]
struct Labels {
    tenant_id: String,
    source: Origin,
    stream: String,
    consumer: String,
}

/// The live status of one account. Shared by every connection generation of that account so
/// counters survive a credential rotation; only the current generation may change the state.
#[derive(Debug)]
pub struct AccountStatus {
    name: String,
    labels: Mutex<Labels>,
    state: Mutex<(AccountState, Option<String>)>,
    generation: AtomicU64,
    received: AtomicU64,
    rejected: AtomicU64,
    pending: AtomicU64,
    /// The consuming generation's JetStream context, to ask the server for `pending` on demand.
    probe: Mutex<Option<Probe>>,
}

/// How the pending count of a consuming account is refreshed.
#[derive(Debug)]
struct Probe {
    generation: u64,
    js: jetstream::Context,
    asked: Option<tokio::time::Instant>,
}

/// A pending count at most this old is not asked for again.
const PROBE_AGAIN_AFTER: Duration = Duration::from_secs(1);
/// Consumer info requests in flight at once while refreshing pending counts.
const PROBES_IN_FLIGHT: usize = 64;

impl AccountStatus {
    fn new(
        name: &str,
        labels: Labels,
        state: AccountState,
        error: Option<String>,
    ) -> AccountStatus {
        let status = AccountStatus {
            name: name.to_owned(),
            labels: Mutex::new(labels),
            state: Mutex::new((state, error)),
            generation: AtomicU64::new(0),
            received: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            pending: AtomicU64::new(0),
            probe: Mutex::new(None),
        };
        status.export_state(None, state);
        status
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Starts a new connection generation; earlier generations can no longer set the state.
    pub fn next_generation(&self) -> u64 {
        *self.probe.lock().expect("status lock") = None;
        self.generation.fetch_add(1, Ordering::SeqCst) + 1
    }

    pub fn state(&self) -> AccountState {
        self.state.lock().expect("status lock").0
    }

    /// Sets the state (and the error, for `Failed`) if `generation` is still the current one.
    pub fn set(&self, generation: u64, state: AccountState, error: Option<String>) {
        if self.generation.load(Ordering::SeqCst) != generation {
            return;
        }
        let mut current = self.state.lock().expect("status lock");
        // A recovered account keeps its last error visible until it consumes again.
        let error = match state {
            AccountState::Consuming | AccountState::Standby => None,
            _ => error.or_else(|| current.1.clone()),
        };
        let previous = current.0;
        *current = (state, error);
        drop(current);
        self.export_state(Some(previous), state);
    }

    pub fn count_received(&self) {
        self.received.fetch_add(1, Ordering::Relaxed);
    }

    pub fn count_rejected(&self) {
        self.rejected.fetch_add(1, Ordering::Relaxed);
    }

    pub fn set_pending(&self, pending: u64) {
        self.pending.store(pending, Ordering::Relaxed);
    }

    /// The connection `generation` consumes on (`None` once it stops), so that
    /// `StatusBoard::refresh_pending` can ask the server. Pending is not polled: with thousands
    /// of idle accounts that polling was most of their CPU.
    pub fn set_probe(&self, generation: u64, js: Option<jetstream::Context>) {
        let mut probe = self.probe.lock().expect("status lock");
        if self.generation.load(Ordering::SeqCst) != generation {
            return;
        }
        *probe = js.map(|js| Probe {
            generation,
            js,
            asked: None,
        });
    }

    /// Where to ask for pending, unless it was asked less than `PROBE_AGAIN_AFTER` ago.
    fn take_probe(&self, now: tokio::time::Instant) -> Option<jetstream::Context> {
        let mut probe = self.probe.lock().expect("status lock");
        let probe = probe.as_mut()?;
        if probe.generation != self.generation.load(Ordering::SeqCst)
            || probe.asked.is_some_and(|at| now < at + PROBE_AGAIN_AFTER)
        {
            return None;
        }
        probe.asked = Some(now);
        Some(probe.js.clone())
    }

    /// Moves the account's 1 from `previous` to `state`. A state the account never was in has no
    /// series (absent reads as 0): four series for each of 10,000 accounts cost about a
    /// kilobyte of memory per account.
    fn export_state(&self, previous: Option<AccountState>, state: AccountState) {
        let gauge = |s: AccountState| metrics::gauge!("jetpost_nats_account_state", "account" => self.name.clone(), "state" => s.as_str());
        if let Some(previous) = previous.filter(|p| *p != state) {
            gauge(previous).set(0.0);
        }
        gauge(state).set(1.0);
    }

    fn view(&self) -> AccountStatusView {
        let labels = self.labels.lock().expect("status lock");
        let (state, last_error) = self.state.lock().expect("status lock").clone();
        AccountStatusView {
            name: self.name.clone(),
            tenant_id: labels.tenant_id.clone(),
            source: labels.source,
            stream: labels.stream.clone(),
            consumer: labels.consumer.clone(),
            state,
            last_error,
            messages_received: self.received.load(Ordering::Relaxed),
            messages_rejected: self.rejected.load(Ordering::Relaxed),
            pending: self.pending.load(Ordering::Relaxed),
            owner: None,
        }
    }
}

/// Every account's status by name.
#[derive(Debug, Default, Clone)]
pub struct StatusBoard {
    accounts: Arc<RwLock<BTreeMap<String, Arc<AccountStatus>>>>,
}

impl StatusBoard {
    /// The status of the account `spec` names, created as `Connecting` if new; its labels are
    /// refreshed from `spec` (a changed tenant or stream shows at once).
    pub fn account(&self, spec: &AccountSpec) -> Arc<AccountStatus> {
        let labels = Labels {
            tenant_id: spec.tenant_label(),
            source: spec.origin,
            stream: spec.stream.clone(),
            consumer: spec.consumer.clone(),
        };
        let mut accounts = self.accounts.write().expect("status lock");
        match accounts.get(&spec.name) {
            Some(status) => {
                *status.labels.lock().expect("status lock") = labels;
                status.clone()
            }
            None => {
                let status = Arc::new(AccountStatus::new(
                    &spec.name,
                    labels,
                    AccountState::Connecting,
                    None,
                ));
                accounts.insert(spec.name.clone(), status.clone());
                status
            }
        }
    }

    /// Shows the account `spec` names as owned by another replica, unless it already is.
    pub fn standby(&self, spec: &AccountSpec) {
        let status = self.account(spec);
        if status.state() != AccountState::Standby {
            let generation = status.next_generation();
            status.set(generation, AccountState::Standby, None);
        }
    }

    /// Records an account directory that could not be loaded: `failed` with the reason.
    pub fn broken(&self, name: &str, source: Origin, error: String) {
        let labels = Labels {
            tenant_id: String::new(),
            source,
            stream: String::new(),
            consumer: String::new(),
        };
        let mut accounts = self.accounts.write().expect("status lock");
        match accounts.get(name) {
            Some(status) => {
                let generation = status.next_generation();
                status.set(generation, AccountState::Failed, Some(error));
            }
            None => {
                let status = AccountStatus::new(name, labels, AccountState::Failed, Some(error));
                accounts.insert(name.to_owned(), Arc::new(status));
            }
        }
    }

    /// Forgets an account drained after its directory was removed, unless a newer connection
    /// generation (the directory came back meanwhile) owns the name now.
    pub fn retire(&self, name: &str, generation: u64) {
        let accounts = self.accounts.write().expect("status lock");
        if accounts
            .get(name)
            .is_some_and(|s| s.generation.load(Ordering::SeqCst) == generation)
        {
            drop(accounts);
            self.remove(name);
        }
    }

    /// Forgets an account.
    pub fn remove(&self, name: &str) {
        if let Some(status) = self.accounts.write().expect("status lock").remove(name) {
            metrics::gauge!("jetpost_nats_account_state", "account" => status.name.clone(), "state" => status.state().as_str())
                .set(0.0);
        }
    }

    /// Asks the server for the pending count of every consuming account (one consumer info
    /// request each, several at once), waiting at most `within`; the counts not refreshed by
    /// then keep their last value (from the last refresh or the last message delivered).
    pub async fn refresh_pending(&self, within: Duration) {
        let now = tokio::time::Instant::now();
        let probes: Vec<(Arc<AccountStatus>, jetstream::Context)> = self
            .accounts
            .read()
            .expect("status lock")
            .values()
            .filter_map(|s| s.take_probe(now).map(|c| (s.clone(), c)))
            .collect();
        let refresh = futures::stream::iter(probes).for_each_concurrent(
            PROBES_IN_FLIGHT,
            |(status, js)| async move {
                let (stream, consumer) = {
                    let labels = status.labels.lock().expect("status lock");
                    (labels.stream.clone(), labels.consumer.clone())
                };
                let info = js
                    .get_consumer_from_stream::<jetstream::consumer::pull::Config, _, _>(
                        consumer, stream,
                    )
                    .await;
                if let Ok(consumer) = info {
                    status.set_pending(consumer.cached_info().num_pending);
                }
            },
        );
        let _ = tokio::time::timeout(within, refresh).await;
    }

    pub fn get(&self, name: &str) -> Option<AccountStatusView> {
        self.accounts
            .read()
            .expect("status lock")
            .get(name)
            .map(|s| s.view())
    }

    /// Every account, sorted by name.
    pub fn snapshot(&self) -> Vec<AccountStatusView> {
        self.accounts
            .read()
            .expect("status lock")
            .values()
            .map(|s| s.view())
            .collect()
    }

    pub fn names(&self) -> Vec<String> {
        self.accounts
            .read()
            .expect("status lock")
            .keys()
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_state_metric_has_series_only_for_states_the_account_has_been_in() {
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            let labels = Labels {
                tenant_id: "acme".into(),
                source: Origin::Static,
                stream: "EVENTS".into(),
                consumer: "jetpost".into(),
            };
            let status = AccountStatus::new("acme", labels, AccountState::Connecting, None);
            let generation = status.next_generation();
            status.set(generation, AccountState::Consuming, None);
        });
        let text = handle.render();
        let series = |state: &str| {
            text.lines()
                .find(|l| l.contains(&format!(r#"account="acme",state="{state}""#)))
                .map(|l| l.rsplit(' ').next().unwrap().to_owned())
        };
        assert_eq!(series("consuming").as_deref(), Some("1"), "{text}");
        assert_eq!(series("connecting").as_deref(), Some("0"), "{text}");
        assert_eq!(series("failed"), None, "{text}");
        assert_eq!(series("draining"), None, "{text}");
    }
}
