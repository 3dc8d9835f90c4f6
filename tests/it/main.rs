//! jetpost's integration tests: one binary, a module per area, shared helpers in `support`.

mod aggregates;
mod api;
mod store;
mod support;

mod harness;
mod receiver;
mod source;
mod webhook;
