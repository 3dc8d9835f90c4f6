//! jetpost: delivers events from multi-tenant NATS JetStream to webhooks, compatible with
//! Hookdeck Outpost's API, event format and webhook format.

pub mod api;
pub mod app;
pub mod bench;
pub mod cli;
pub mod config;
pub mod delivery;
pub mod destination;
pub mod event;
pub mod ingest;
pub mod local_nats;
pub mod portal;
pub mod retention;
pub mod routing;
pub mod source;
pub mod store;
pub mod telemetry;
