//! Helpers shared by the integration-test binaries; each binary uses only some of them.
#![allow(dead_code)]

// Daemons, databases, fakes of the SMS gateways, subprocesses, log capture, browsers.
pub mod altcha_py;
pub mod browser;
pub mod certs;
pub mod cluster;
pub mod daemon;
pub mod fake_aliyun;
pub mod fake_gateway;
pub mod fake_siteverify;
pub mod fake_sms_apis;
pub mod fake_sns;
pub mod fake_tencent;
pub mod hook_receiver;
pub mod logs;
pub mod moto;
pub mod pg;
pub mod process;
