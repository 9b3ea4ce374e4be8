//! The storage layer through the `Store` trait: one conformance suite run on SQLite and on
//! PostgreSQL, the two stores run side by side on random sequences, what only PostgreSQL does,
//! and PostgreSQL as production runs it (TLS, failover, PgBouncer) on private clusters.

#[macro_use]
#[path = "../common/mod.rs"]
mod common;

mod conformance;
mod differential;
mod harness;
mod leases;
mod number_counters;
mod postgres;
mod production;
