//! jetpost's integration tests: one binary, a module per area, shared helpers in `support`.

mod store;
mod support;

mod bench;
mod cli;
mod harness;
mod ingest;
mod receiver;
mod source;
mod webhook;
