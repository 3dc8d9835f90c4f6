//! rabbitmq destinations against the real service: filled by the rabbitmq type's work.
