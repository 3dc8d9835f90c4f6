//! A local nats-server in operator/JWT mode: JWTs, creds files, child process. Used by `jetpost dev`, tests and benchmarks.
