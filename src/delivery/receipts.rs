//! The receipt pushes verifyd accepts, parsed into [`ReceiptUpdate`]s, and how a push proves
//! where it comes from (which configured instance may push with which secret is the provider
//! settings' to say: `ProviderSet::receipt_source`). Aliyun's `SmsReport` and Tencent's status
//! callback carry no signature of their own, so each instance has a secret path token instead.

use serde::Deserialize;

use super::{DeliveryState, ReceiptUpdate};
use crate::secret::Secret;

/// At most this many receipts in one push; both gateways batch far fewer.
pub const MAX_BATCH: usize = 1000;

/// The push formats, one per gateway kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Aliyun's `SmsReport` HTTP batch push: a JSON array of reports.
    Aliyun,
    /// Tencent Cloud SMS's status callback: a JSON array of reports.
    Tencent,
    /// Twilio's `StatusCallback` (through the HTTP provider): one signed form POST per status.
    Twilio,
}

/// How a push proves it comes from the gateway.
#[derive(Debug, Clone, Copy)]
pub enum Auth<'a> {
    /// The last path segment must be this secret.
    Token(&'a Secret),
    /// `X-Twilio-Signature` over this public URL, keyed with the Auth Token.
    Twilio {
        url: &'a str,
        auth_token: &'a Secret,
    },
}

impl Format {
    /// The body the gateway expects back for an accepted push (anything else makes it retry).
    pub fn ack(self) -> serde_json::Value {
        match self {
            Format::Aliyun => serde_json::json!({ "code": 0, "msg": "成功" }),
            Format::Tencent => serde_json::json!({ "result": 0, "errmsg": "OK" }),
            Format::Twilio => serde_json::json!({}),
        }
    }
}

#[derive(Deserialize)]
struct AliyunReport {
    biz_id: Option<String>,
    success: Option<bool>,
    err_code: Option<String>,
}

#[derive(Deserialize)]
struct TencentReport {
    sid: Option<String>,
    report_status: Option<String>,
    errmsg: Option<String>,
}

/// Why a push body was refused as a whole.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("the body is not a JSON array of reports: {0}")]
    Shape(String),
    #[error("more than {MAX_BATCH} reports in one push")]
    TooMany,
}

/// A report we could not use (no id, or no outcome), counted as unknown.
pub type Parsed = Vec<Option<ReceiptUpdate>>;

/// Parses one push from instance `provider`.
pub fn parse(format: Format, provider: &str, body: &[u8]) -> Result<Parsed, ParseError> {
    let shape = |e: serde_json::Error| ParseError::Shape(e.to_string());
    let update = |id: Option<String>, state: Option<DeliveryState>, code: Option<String>| {
        let id = id.filter(|i| !i.is_empty() && i.len() <= 128)?;
        Some(ReceiptUpdate {
            provider: provider.to_owned(),
            message_id: id,
            state: state?,
            error_code: code.map(|c| clean(&c)).filter(|c| !c.is_empty()),
        })
    };
    let out: Parsed = match format {
        Format::Twilio => {
            let params: Vec<(String, String)> = form_urlencoded::parse(body).into_owned().collect();
            vec![super::twilio::receipt(provider, &params)]
        }
        Format::Aliyun => {
            let reports: Vec<AliyunReport> = serde_json::from_slice(body).map_err(shape)?;
            check_len(reports.len())?;
            reports
                .into_iter()
                .map(|r| {
                    let state = r.success.map(|ok| {
                        if ok {
                            DeliveryState::Delivered
                        } else {
                            DeliveryState::Failed
                        }
                    });
                    update(r.biz_id, state, r.err_code)
                })
                .collect()
        }
        Format::Tencent => {
            let reports: Vec<TencentReport> = serde_json::from_slice(body).map_err(shape)?;
            check_len(reports.len())?;
            reports
                .into_iter()
                .map(|r| {
                    let state = match r.report_status.as_deref() {
                        Some("SUCCESS") => Some(DeliveryState::Delivered),
                        Some("FAIL") => Some(DeliveryState::Failed),
                        _ => None,
                    };
                    update(r.sid, state, r.errmsg)
                })
                .collect()
        }
    };
    Ok(out)
}

fn check_len(n: usize) -> Result<(), ParseError> {
    if n > MAX_BATCH {
        Err(ParseError::TooMany)
    } else {
        Ok(())
    }
}

/// A gateway's status code made safe to store and show: `[A-Za-z0-9._:-]`, at most 64.
fn clean(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | ':'))
        .take(64)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aliyun_sms_report() {
        let body = r#"[
          {"phone_number":"13800138000","send_time":"2026-11-30 10:00:00","report_time":"2026-11-30 10:00:05","success":true,"err_code":"DELIVERED","err_msg":"用户接收成功","sms_size":"1","biz_id":"900619746936498440^0","out_id":""},
          {"phone_number":"13800138001","send_time":"2026-11-30 10:00:00","report_time":"2026-11-30 10:00:09","success":false,"err_code":"MK:0012","err_msg":"失败","sms_size":"1","biz_id":"900619746936498441^0","out_id":""},
          {"phone_number":"13800138002","success":true}
        ]"#;
        let p = parse(Format::Aliyun, "cn", body.as_bytes()).unwrap();
        assert_eq!(
            p[0],
            Some(ReceiptUpdate {
                provider: "cn".into(),
                message_id: "900619746936498440^0".into(),
                state: DeliveryState::Delivered,
                error_code: Some("DELIVERED".into()),
            })
        );
        assert_eq!(p[1].as_ref().unwrap().state, DeliveryState::Failed);
        assert_eq!(
            p[1].as_ref().unwrap().error_code.as_deref(),
            Some("MK:0012")
        );
        assert_eq!(p[2], None, "no biz_id");
    }

    #[test]
    fn tencent_status_callback() {
        let body = r#"[
          {"user_receive_time":"2026-11-30 10:00:04","nationcode":"86","mobile":"13800138000","report_status":"SUCCESS","errmsg":"DELIVRD","description":"用户短信送达成功","sid":"2433:00000000000000000001"},
          {"user_receive_time":"2026-11-30 10:00:04","nationcode":"86","mobile":"13800138000","report_status":"FAIL","errmsg":"MK:0001","description":"x","sid":"2433:2"},
          {"report_status":"WHATEVER","sid":"2433:3"}
        ]"#;
        let p = parse(Format::Tencent, "tc", body.as_bytes()).unwrap();
        assert_eq!(p[0].as_ref().unwrap().state, DeliveryState::Delivered);
        assert_eq!(
            p[0].as_ref().unwrap().message_id,
            "2433:00000000000000000001"
        );
        assert_eq!(p[1].as_ref().unwrap().state, DeliveryState::Failed);
        assert_eq!(p[2], None, "unknown status");
    }

    #[test]
    fn bad_bodies_are_refused_whole() {
        for body in ["", "{}", "[1]", r#"{"sid":"x"}"#, "[{\"success\":\"yes\"}]"] {
            assert!(
                parse(Format::Aliyun, "a", body.as_bytes()).is_err(),
                "{body}"
            );
        }
        let many = format!("[{}]", vec!["{}"; MAX_BATCH + 1].join(","));
        assert_eq!(
            parse(Format::Tencent, "t", many.as_bytes()),
            Err(ParseError::TooMany)
        );
        let odd = r#"[{"sid":"x","report_status":"FAIL","errmsg":"<script>\u001b"}]"#;
        let p = parse(Format::Tencent, "t", odd.as_bytes()).unwrap();
        assert_eq!(p[0].as_ref().unwrap().error_code.as_deref(), Some("script"));
    }
}
