//! The dispatcher's health as `/healthz` reports it: running, attempts in flight, whether
//! claims reach the store, attempts recorded, and the last store error.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use chrono::{DateTime, Utc};

use crate::store::StoreError;

/// A snapshot of the dispatcher for `/healthz`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DispatcherStatus {
    /// Started and not stopped.
    pub running: bool,
    /// Attempts in flight now.
    pub in_flight: usize,
    /// Whether the last claim reached the store (false while the store is unavailable).
    pub claiming: bool,
    /// Attempts this dispatcher recorded since it started.
    pub attempts_recorded: u64,
    /// The last store error, and when it happened.
    pub last_error: Option<String>,
    pub last_error_at: Option<DateTime<Utc>>,
}

/// A cheap, cloneable view of the dispatcher's health, for the API.
#[derive(Clone, Debug)]
pub struct DispatcherHealth(pub(super) Arc<Health>);

impl DispatcherHealth {
    pub fn snapshot(&self) -> DispatcherStatus {
        let last = self.0.last_error.lock().unwrap_or_else(|e| e.into_inner());
        DispatcherStatus {
            running: self.0.running.load(Ordering::Relaxed),
            in_flight: self.0.in_flight.load(Ordering::Relaxed),
            claiming: self.0.claiming.load(Ordering::Relaxed),
            attempts_recorded: self.0.attempts_recorded.load(Ordering::Relaxed),
            last_error: last.as_ref().map(|(_, e)| e.clone()),
            last_error_at: last.as_ref().map(|(at, _)| *at),
        }
    }
}

/// What the dispatcher's parts report into.
#[derive(Debug, Default)]
pub(super) struct Health {
    pub running: AtomicBool,
    pub in_flight: AtomicUsize,
    pub claiming: AtomicBool,
    pub attempts_recorded: AtomicU64,
    last_error: std::sync::Mutex<Option<(DateTime<Utc>, String)>>,
}

impl Health {
    pub fn note_error(&self, error: &StoreError) {
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) =
            Some((Utc::now(), error.to_string()));
    }
}
