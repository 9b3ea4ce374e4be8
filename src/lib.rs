//! verifyd: proves that a person holds a phone number, on top of a Django-style session store.
//!
//! The binary in `main.rs` is a thin shell over [`cli::run`]; everything else lives here so that
//! integration tests can start real servers in-process.

pub mod app;
pub mod challenge;
pub mod cli;
pub mod code;
pub mod config;
pub mod country;
pub mod credentials;
pub mod daemon;
pub mod delivery;
pub mod events;
pub mod http;
pub mod logging;
pub mod metrics;
pub mod net;
pub mod phone;
pub mod private_file;
pub mod provider;
pub mod quota;
pub mod resend;
pub mod seconds;
pub mod secret;
pub mod secret_file;
pub mod session;
pub mod session_data;
pub mod standard_webhooks;
pub mod store;
pub mod sweeper;
pub mod systemd;
pub mod time;
pub mod verify;

#[cfg(test)]
mod layer_check;
