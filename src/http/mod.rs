//! The HTTP layer: the route table (`router`), the layers every request shares (`stack`), the
//! listener loop (`serve`), and one file per route group. Every outcome is a JSON answer;
//! `error` is the one place where failures get their status.

mod accept_language;
mod caller;
mod challenge;
pub mod client_ip;
mod compat;
mod cookies;
pub mod cors;
mod demo;
mod echo;
pub mod error;
mod idempotency;
pub mod metrics;
pub mod openapi;
mod own_session;
mod receipts;
mod request;
pub mod response;
mod router;
mod serve;
mod sessions;
mod stack;
mod status;
mod verifications;

pub use serve::{HttpService, Limits, serve};
pub use stack::api;
