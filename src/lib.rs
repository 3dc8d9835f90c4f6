//! jetpost: delivers events from multi-tenant NATS JetStream to webhooks.
