//! The `verifyd` binary as operators run it: its command line, systemd supervision, where its
//! secrets come from and the files it writes, and the configuration it ships with.

#[macro_use]
#[path = "../common/mod.rs"]
mod common;

mod cli;
mod docs;
mod secret_sources;
mod service;
mod shipped_config;
