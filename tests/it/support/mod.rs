//! Helpers shared by the integration tests: real servers started per test and stopped on drop.

pub mod db;
