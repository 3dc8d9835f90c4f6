//! The store of truth: tenants, destinations, events, deliveries, attempts (SQLite or Postgres).
