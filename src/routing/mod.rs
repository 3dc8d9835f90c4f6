//! Routing: which of a tenant's enabled destinations an event goes to, kept in memory
//! (`RoutingCache`) and kept current by the store's change feed: this process's own writes
//! before the next lookup, other replicas' through `follow_replicas` (Postgres LISTEN/NOTIFY).
//! Nobody invalidates by hand: writing through the store is enough.

mod cache;
mod feed;

pub use cache::{Route, RoutingCache};
pub use feed::follow_replicas;
