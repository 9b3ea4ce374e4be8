//! dysmsapi answers → what happens next. Only `Code`, `RequestId` and `BizId` are ever read:
//! `Message` is deliberately not even deserialized, because for `SignatureDoesNotMatch` it
//! echoes the server's string-to-sign, which holds the phone number and the code.

use reqwest::StatusCode;
use serde::Deserialize;

use crate::provider::ProviderError;
use crate::provider::retry::Attempt;

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Answer {
    code: Option<String>,
    request_id: Option<String>,
    biz_id: Option<String>,
}

pub(super) fn classify(status: StatusCode, body: &[u8]) -> Attempt {
    let answer: Option<Answer> = serde_json::from_slice(body).ok();
    let code = answer.as_ref().and_then(|a| a.code.as_deref()).map(token);
    let request_id = answer
        .as_ref()
        .and_then(|a| a.request_id.as_deref())
        .map(token);
    let rid = request_id.as_deref().unwrap_or("-");
    if status.is_server_error() {
        let code = code.as_deref().unwrap_or("-");
        return Attempt::Retry(format!("HTTP {} {code} (RequestId {rid})", status.as_u16()));
    }
    let Some(code) = code else {
        return Attempt::Failed(ProviderError::Configuration(format!(
            "aliyun: unexpected answer, HTTP {} without a JSON Code (is provider.aliyun.endpoint right?)",
            status.as_u16()
        )));
    };
    let what = format!("aliyun {code} (RequestId {rid})");
    let recipient = |rate_limited| {
        Attempt::Failed(ProviderError::Recipient {
            message: what.clone(),
            rate_limited,
        })
    };
    match code.as_str() {
        "OK" if status.is_success() => Attempt::Sent(
            answer
                .and_then(|a| a.biz_id)
                .map(|b| token(&b))
                .or(request_id),
        ),
        "isv.MOBILE_NUMBER_ILLEGAL" => recipient(false),
        // Aliyun's own per-number flow control (by default about 1/minute, 5/hour, 10/day).
        "isv.BUSINESS_LIMIT_CONTROL" | "isv.DAY_LIMIT_CONTROL" | "isv.MONTH_LIMIT_CONTROL" => {
            recipient(true)
        }
        "isp.SYSTEM_ERROR" | "isp.GATEWAY_ERROR" | "SignatureNonceUsed" => Attempt::Retry(what),
        c if c.starts_with("Throttling") => Attempt::Retry(what),
        // SignatureDoesNotMatch, InvalidAccessKeyId.NotFound, InvalidTimeStamp.Expired (clock),
        // isv.SMS_SIGNATURE_ILLEGAL, isv.SMS_TEMPLATE_ILLEGAL, isv.TEMPLATE_MISSING_PARAMETERS,
        // isv.INVALID_JSON_PARAM, isv.AMOUNT_NOT_ENOUGH, isv.OUT_OF_SERVICE,
        // isp.RAM_PERMISSION_DENY, and every code we do not know: the operator has to look,
        // and a non-idempotent call we do not understand is not repeated.
        _ => Attempt::Failed(ProviderError::Configuration(what)),
    }
}

/// A server-given identifier made safe for a log line: `[A-Za-z0-9._^-]` (BizIds look like
/// `900619746936498440^0`), at most 64 characters.
fn token(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '^'))
        .take(64)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16, code: &str) -> Attempt {
        let body = format!(r#"{{"RequestId":"R-1","Code":"{code}","Message":"m"}}"#);
        classify(StatusCode::from_u16(status).unwrap(), body.as_bytes())
    }

    #[test]
    fn ok_gives_a_receipt_with_the_biz_id() {
        let body =
            br#"{"RequestId":"R-1","Code":"OK","Message":"OK","BizId":"900619746936498440^0"}"#;
        assert_eq!(
            classify(StatusCode::OK, body),
            Attempt::Sent(Some("900619746936498440^0".into()))
        );
        let Attempt::Sent(r) = answer(200, "OK") else {
            panic!()
        };
        assert_eq!(r.as_deref(), Some("R-1"));
    }

    #[test]
    fn recipient_errors() {
        for (code, limited) in [
            ("isv.MOBILE_NUMBER_ILLEGAL", false),
            ("isv.BUSINESS_LIMIT_CONTROL", true),
            ("isv.DAY_LIMIT_CONTROL", true),
            ("isv.MONTH_LIMIT_CONTROL", true),
        ] {
            assert!(
                matches!(answer(200, code), Attempt::Failed(ProviderError::Recipient { rate_limited, .. }) if rate_limited == limited),
                "{code}"
            );
        }
    }

    #[test]
    fn configuration_errors() {
        for (status, code) in [
            (400, "SignatureDoesNotMatch"),
            (404, "InvalidAccessKeyId.NotFound"),
            (400, "InvalidTimeStamp.Expired"),
            (200, "isv.SMS_SIGNATURE_ILLEGAL"),
            (200, "isv.SMS_TEMPLATE_ILLEGAL"),
            (200, "isv.TEMPLATE_MISSING_PARAMETERS"),
            (200, "isv.INVALID_JSON_PARAM"),
            (200, "isv.AMOUNT_NOT_ENOUGH"),
            (200, "isv.OUT_OF_SERVICE"),
            (200, "isp.RAM_PERMISSION_DENY"),
            (200, "isv.SOMETHING_NEW"),
            (403, "Forbidden.Something"),
            (400, "OK"),
        ] {
            assert!(
                matches!(
                    answer(status, code),
                    Attempt::Failed(ProviderError::Configuration(_))
                ),
                "{code}"
            );
        }
        assert!(matches!(
            classify(StatusCode::NOT_FOUND, b"<html>not here</html>"),
            Attempt::Failed(ProviderError::Configuration(_))
        ));
    }

    #[test]
    fn transient_errors_are_retried() {
        for (status, code) in [
            (200, "isp.SYSTEM_ERROR"),
            (200, "isp.GATEWAY_ERROR"),
            (400, "Throttling.User"),
            (503, "Throttling"),
            (400, "SignatureNonceUsed"),
            (500, "InternalError"),
        ] {
            assert!(matches!(answer(status, code), Attempt::Retry(_)), "{code}");
        }
        assert!(matches!(
            classify(StatusCode::BAD_GATEWAY, b"<html>bad gateway</html>"),
            Attempt::Retry(_)
        ));
    }

    /// The signature error's `Message` holds the phone and the code; none of it may leak.
    #[test]
    fn signature_error_message_never_leaks() {
        let body = br#"{"RequestId":"R-9","HostId":"dysmsapi.aliyuncs.com","Code":"SignatureDoesNotMatch","Message":"Specified signature is not matched with our calculation. server string to sign is:POST&%2F&PhoneNumbers%3D13800138000%26TemplateParam%3D%257B%2522code%2522%253A%2522482913%2522%257D","Recommend":"https://next.api.aliyun.com/troubleshoot"}"#;
        let Attempt::Failed(e) = classify(StatusCode::BAD_REQUEST, body) else {
            panic!("not a final failure")
        };
        let text = format!("{e} {e:?}");
        assert!(
            text.contains("SignatureDoesNotMatch") && text.contains("R-9"),
            "{text}"
        );
        for secret in ["13800138000", "482913", "string to sign"] {
            assert!(!text.contains(secret), "{text}");
        }
    }

    #[test]
    fn server_strings_are_sanitized() {
        let body = br#"{"RequestId":"a b\n<c>","Code":"isv.X\u001b[31m"}"#;
        let Attempt::Failed(ProviderError::Configuration(t)) = classify(StatusCode::OK, body)
        else {
            panic!()
        };
        assert_eq!(t, "aliyun isv.X31m (RequestId abc)");
    }
}
