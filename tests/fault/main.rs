//! Faults and hostile input: kill -9 and a PostgreSQL restart under load, a stalled SMS
//! provider, slow and surplus clients, and proptest fuzzing of every parser that sees input.

#[macro_use]
#[path = "../common/mod.rs"]
mod common;

mod fuzz;
mod kill;
mod pg_restart;
mod provider;
mod slow_clients;
