//! The fault suite: jetpost under conditions that break things — a locked SQLite database, a full
//! disk — asserting clear errors, naks instead of loss, and recovery. Its own test target so it
//! can be run alone (`cargo test --test fault`); `scripts/test.sh` runs it with everything else.

#[path = "../it/support/mod.rs"]
mod support;

mod process;
mod sqlite;
