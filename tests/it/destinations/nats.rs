//! nats destinations against the real service: filled by the nats type's work.
