//! The HTTP API over real HTTP: each test starts its own daemon on port 0 with its own store
//! (most of them on both stores) and talks to it as a browser, a backend or an attacker would.

#[macro_use]
#[path = "../common/mod.rs"]
mod common;

mod abuse;
mod browser_facing;
mod challenge;
mod easy_codes;
mod edge;
mod events;
mod http_behaviour;
mod metrics;
mod openapi;
mod phone;
mod round_trips;
mod seed_compat;
mod session_data;
mod session_replace;
mod sessions;
mod targeted_abuse;
mod verification;
