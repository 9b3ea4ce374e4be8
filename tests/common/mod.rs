//! Helpers shared by the integration-test binaries; each binary uses only some of them.
#![allow(dead_code)]

// Daemons, databases, fakes of the SMS gateways, subprocesses, log capture, browsers.
pub mod altcha_py;
pub mod browser;
pub mod certs;
pub mod cluster;
#[macro_use]
pub mod daemon;
pub mod fake_aliyun;
pub mod fake_gateway;
pub mod fake_server;
pub mod fake_siteverify;
pub mod fake_sms_apis;
pub mod fake_sns;
pub mod fake_tencent;
pub mod hook_receiver;
pub mod logs;
pub mod moto;
pub mod openmetrics;
pub mod pg;
pub mod process;
pub mod reply;

/// Every abuse limit off (and a one-second resend interval), so that a test turns on only the
/// limit it is about.
pub fn no_limits(c: &mut verifyd::config::Config) {
    c.per_phone.max_sends = 0;
    c.per_phone.daily_max = 0;
    c.per_phone.max_failed_checks = 0;
    c.per_ip.max_sends = 0;
    c.per_ip.max_checks = 0;
    c.global.max_sends_per_hour = 0;
    c.per_phone.hard_max_sends = 0;
    c.per_phone.hard_daily_max = 0;
    c.per_phone.network_max_sends = 0;
    c.per_phone.network_daily_max = 0;
    c.per_phone.network_max_failed_checks = 0;
    c.per_ip.prefix_max_sends = 0;
    c.pumping.enabled = false;
    c.challenge.mode = verifyd::config::ChallengeMode::Off;
    c.verification.resend_interval = 1;
}
