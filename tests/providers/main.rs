//! SMS providers end to end: a real daemon sending through each kind of provider to a fake (or
//! emulator) that checks the real wire protocol, routing and failover between them, and the
//! delivery receipts they send back.

#[macro_use]
#[path = "../common/mod.rs"]
mod common;

mod aliyun;
mod hook;
mod http;
mod receipts;
mod receipts_twilio;
mod routing;
mod sns;
mod tencent;
