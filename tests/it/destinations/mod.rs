//! Destination types other than webhook, each against its real service.

mod aws;
mod hookdeck;
mod nats;
mod rabbitmq;
