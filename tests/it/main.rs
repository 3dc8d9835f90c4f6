//! jetpost's integration tests: one binary, a module per area, shared helpers in `support`.

mod support;

mod receiver;
mod webhook;
