//! `SendSms` answers → what happens next. Tencent answers HTTP 200 for nearly everything: a
//! request-level `Response.Error` (signature, credentials, throttling) or, per number, a
//! `SendStatusSet` entry whose `Code` is `Ok` or an error code. `Message` texts are never read:
//! they are free text from the gateway and may quote the request.

use reqwest::StatusCode;
use serde::Deserialize;

use crate::provider::ProviderError;
use crate::provider::retry::Attempt;

#[derive(Deserialize)]
struct Envelope {
    #[serde(rename = "Response")]
    response: Option<Answer>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Answer {
    error: Option<ErrorPart>,
    request_id: Option<String>,
    send_status_set: Option<Vec<Status>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ErrorPart {
    code: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Status {
    code: Option<String>,
    serial_no: Option<String>,
}

/// What a code means for us.
enum Class {
    Recipient { rate_limited: bool },
    Retry,
    Configuration,
}

/// The failure class of an error code, request-level or per number.
fn class(code: &str) -> Class {
    match code {
        "InvalidParameterValue.IncorrectPhoneNumber"
        | "FailedOperation.PhoneNumberInBlacklist"
        | "FailedOperation.PhoneNumberParseFail"
        | "UnsupportedOperation.UnsupportedRegion"
        | "UnsupportedOperation.ChineseMainlandTemplateToGlobalPhone"
        | "UnsupportedOperation.GlobalTemplateToChineseMainlandPhone" => Class::Recipient {
            rate_limited: false,
        },
        // Tencent's own per-number flow control (30 s, 1 h, 1 day, same content per day).
        c if c.starts_with("LimitExceeded.PhoneNumber") => Class::Recipient { rate_limited: true },
        "LimitExceeded.DeliveryFrequencyLimit" => Class::Recipient { rate_limited: true },
        c if c.starts_with("InternalError") => Class::Retry,
        c if c.starts_with("RequestLimitExceeded") => Class::Retry,
        "ResourceUnavailable" | "FailedOperation.FailResolvePacket" => Class::Retry,
        // AuthFailure.* (signature, unknown or disabled SecretId, clock skew), the app id, sign
        // name and template (FailedOperation.*, UnauthorizedOperation.*, InvalidParameter*),
        // balance and app-wide limits, and every code we do not know: the operator has to
        // look, and a non-idempotent call we do not understand is not repeated.
        _ => Class::Configuration,
    }
}

pub(super) fn classify(status: StatusCode, body: &[u8]) -> Attempt {
    let answer = serde_json::from_slice::<Envelope>(body)
        .ok()
        .and_then(|e| e.response);
    let rid = answer
        .as_ref()
        .and_then(|a| a.request_id.as_deref())
        .map(token)
        .unwrap_or_else(|| "-".into());
    let Some(answer) = answer else {
        if status.is_server_error() {
            return Attempt::Retry(format!("HTTP {}", status.as_u16()));
        }
        return Attempt::Failed(ProviderError::Configuration(format!(
            "tencent: unexpected answer, HTTP {} without a JSON Response (is the endpoint right?)",
            status.as_u16()
        )));
    };
    let failure = |code: &str| {
        let what = format!("tencent {} (RequestId {rid})", token(code));
        match class(code) {
            Class::Recipient { rate_limited } => Attempt::Failed(ProviderError::Recipient {
                message: what,
                rate_limited,
            }),
            Class::Retry => Attempt::Retry(what),
            Class::Configuration if status.is_server_error() => Attempt::Retry(what),
            Class::Configuration => Attempt::Failed(ProviderError::Configuration(what)),
        }
    };
    if let Some(err) = &answer.error {
        return failure(err.code.as_deref().unwrap_or("-"));
    }
    if status.is_server_error() {
        return Attempt::Retry(format!("HTTP {} (RequestId {rid})", status.as_u16()));
    }
    // One number per request, so the set has exactly one entry.
    let Some(entry) = answer.send_status_set.as_ref().and_then(|s| s.first()) else {
        return Attempt::Failed(ProviderError::Configuration(format!(
            "tencent: answer without SendStatusSet (RequestId {rid})"
        )));
    };
    match entry.code.as_deref() {
        Some("Ok") if status.is_success() => Attempt::Sent(
            entry
                .serial_no
                .as_deref()
                .map(token)
                .filter(|s| !s.is_empty())
                .or(Some(rid.clone()).filter(|r| r != "-")),
        ),
        Some(code) => failure(code),
        None => failure("-"),
    }
}

/// A server-given identifier made safe for a log line: `[A-Za-z0-9._:-]` (SerialNos look like
/// `2028:f825e6b16e23f73f4123`), at most 64 characters.
fn token(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | ':'))
        .take(64)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn per_number(code: &str) -> Attempt {
        let body = format!(
            r#"{{"Response":{{"SendStatusSet":[{{"SerialNo":"","PhoneNumber":"+8613800138000","Fee":0,"SessionContext":"","Code":"{code}","Message":"m","IsoCode":"CN"}}],"RequestId":"R-1"}}}}"#
        );
        classify(StatusCode::OK, body.as_bytes())
    }

    fn request_error(status: u16, code: &str) -> Attempt {
        let body = format!(
            r#"{{"Response":{{"Error":{{"Code":"{code}","Message":"m"}},"RequestId":"R-2"}}}}"#
        );
        classify(StatusCode::from_u16(status).unwrap(), body.as_bytes())
    }

    #[test]
    fn ok_gives_a_receipt_with_the_serial_no() {
        let body = br#"{"Response":{"SendStatusSet":[{"SerialNo":"2028:f825e6b16e23f73f4123","PhoneNumber":"+8613800138000","Fee":1,"SessionContext":"","Code":"Ok","Message":"send success","IsoCode":"CN"}],"RequestId":"R-1"}}"#;
        assert_eq!(
            classify(StatusCode::OK, body),
            Attempt::Sent(Some("2028:f825e6b16e23f73f4123".into()))
        );
    }

    #[test]
    fn recipient_errors() {
        for (code, limited) in [
            ("InvalidParameterValue.IncorrectPhoneNumber", false),
            ("FailedOperation.PhoneNumberInBlacklist", false),
            ("UnsupportedOperation.UnsupportedRegion", false),
            ("LimitExceeded.PhoneNumberDailyLimit", true),
            ("LimitExceeded.PhoneNumberOneHourLimit", true),
            ("LimitExceeded.PhoneNumberThirtySecondLimit", true),
            ("LimitExceeded.PhoneNumberSameContentDailyLimit", true),
            ("LimitExceeded.DeliveryFrequencyLimit", true),
        ] {
            assert!(
                matches!(per_number(code), Attempt::Failed(ProviderError::Recipient { rate_limited, .. }) if rate_limited == limited),
                "{code}"
            );
        }
    }

    #[test]
    fn configuration_errors() {
        for code in [
            "AuthFailure.SignatureFailure",
            "AuthFailure.SecretIdNotFound",
            "AuthFailure.SignatureExpire",
            "AuthFailure.UnauthorizedOperation",
            "UnauthorizedOperation.SmsSdkAppIdVerifyFail",
            "FailedOperation.SignatureIncorrectOrUnapproved",
            "FailedOperation.TemplateIncorrectOrUnapproved",
            "FailedOperation.InsufficientBalanceInSmsPackage",
            "InvalidParameterValue.TemplateParameterFormatError",
            "LimitExceeded.AppDailyLimit",
            "SomethingNew.NeverSeen",
        ] {
            assert!(
                matches!(
                    request_error(200, code),
                    Attempt::Failed(ProviderError::Configuration(_))
                ),
                "{code}"
            );
            assert!(
                matches!(
                    per_number(code),
                    Attempt::Failed(ProviderError::Configuration(_))
                ),
                "{code}"
            );
        }
        assert!(matches!(
            classify(StatusCode::NOT_FOUND, b"<html>not here</html>"),
            Attempt::Failed(ProviderError::Configuration(_))
        ));
        assert!(matches!(
            classify(StatusCode::OK, br#"{"Response":{"RequestId":"x"}}"#),
            Attempt::Failed(ProviderError::Configuration(_))
        ));
    }

    #[test]
    fn transient_errors_are_retried() {
        for code in [
            "InternalError",
            "InternalError.Timeout",
            "InternalError.SendAndRecvFail",
            "RequestLimitExceeded",
            "ResourceUnavailable",
        ] {
            assert!(
                matches!(request_error(200, code), Attempt::Retry(_)),
                "{code}"
            );
            assert!(matches!(per_number(code), Attempt::Retry(_)), "{code}");
        }
        assert!(matches!(
            classify(StatusCode::BAD_GATEWAY, b"<html>bad gateway</html>"),
            Attempt::Retry(_)
        ));
        assert!(matches!(request_error(503, "Whatever"), Attempt::Retry(_)));
    }

    #[test]
    fn messages_never_leak_and_strings_are_sanitized() {
        let body = br#"{"Response":{"Error":{"Code":"AuthFailure.SignatureFailure\u001b[31m","Message":"string to sign was +8613800138000 482913"},"RequestId":"a b\n<c>"}}"#;
        let Attempt::Failed(ProviderError::Configuration(t)) = classify(StatusCode::OK, body)
        else {
            panic!()
        };
        assert_eq!(t, "tencent AuthFailure.SignatureFailure31m (RequestId abc)");
    }
}
