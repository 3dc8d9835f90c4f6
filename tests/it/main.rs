//! jetpost's integration tests: one binary, a module per area, shared helpers in `support`.

mod aggregates;
mod api;
mod delivery;
mod destinations;
mod store;
mod support;

mod bench;
mod cli;
mod harness;
mod hostile;
mod hostile_api;
mod ingest;
mod ownership;
mod portal;
mod receiver;
mod replicas;
mod retention;
mod routing;
mod security;
mod source;
mod webhook;
