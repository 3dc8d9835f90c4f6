//! A local nats-server for `jetpost dev`, tests and benchmarks: hand-made operator/account/user
//! JWTs and `.creds` files (`jwt`), finding the executable (`binary`), and the child process in
//! plain JetStream or operator/JWT mode with tenant accounts (`server`).

pub mod binary;
pub mod error;
pub mod jwt;
pub mod server;

pub use binary::{BinaryLookup, NatsServerBinary};
pub use error::LocalNatsError;
pub use jwt::{
    Account, AccountSpec, Export, ExportKind, Import, JetStreamLimits, JwtError, Operator,
    SYSTEM_ACCOUNT, ServiceResponse, User,
};
pub use server::{DEFAULT_USER, LocalNatsServer, ServerOptions, UserCreds};
