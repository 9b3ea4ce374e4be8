//! verifyd in a real browser: headless Chromium (Debian's) driven by playwright-core through the
//! scenarios next to this file, against daemons with the mock provider.

#[macro_use]
#[path = "../common/mod.rs"]
mod common;

mod cross_origin;
mod demo;

/// Chromium is heavy for a two-core machine: one scenario at a time, across every test here.
static ONE_BROWSER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
