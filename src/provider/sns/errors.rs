//! SNS failures in our three classes. Only the error code, HTTP status and request id reach the
//! logs: SNS error messages can quote the phone number.

use aws_sdk_sns::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_sns::operation::RequestId;
use aws_sdk_sns::operation::publish::PublishError;

use crate::provider::ProviderError;

/// What one failed Publish means for the next step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Failure {
    /// AWS refused the request before sending anything: safe to repeat.
    Throttled(String),
    /// Everything else: handed to the router as is.
    Final(ProviderError),
}

/// Codes that mean "fix the account, the credentials or the settings".
const CONFIGURATION: &[&str] = &[
    "AuthorizationError",
    "InvalidClientTokenId",
    "SignatureDoesNotMatch",
    "IncompleteSignature",
    "MissingAuthenticationToken",
    "AccessDenied",
    "AccessDeniedException",
    "UnrecognizedClientException",
    "ExpiredToken",
    "RequestExpired",
    "InvalidSecurity",
    "OptInRequired",
    "ValidationError",
    "ValidationException",
];

const THROTTLING: &[&str] = &[
    "Throttling",
    "ThrottlingException",
    "Throttled",
    "ThrottledException",
    "TooManyRequestsException",
];

/// Codes that mean AWS failed on its side; the SMS may or may not have left.
const SERVER: &[&str] = &["InternalError", "InternalFailure", "ServiceUnavailable"];

pub(super) fn classify(err: &SdkError<PublishError>) -> Failure {
    let request_id = err.request_id().unwrap_or("-").to_owned();
    match err {
        SdkError::ServiceError(ctx) => {
            let e = ctx.err();
            let status = ctx.raw().status().as_u16();
            // An error document the SDK cannot read has no code: its HTTP status decides.
            let code = e.code().unwrap_or("unrecognised error").to_owned();
            let about_phone = e.message().is_some_and(|m| m.contains("PhoneNumber"));
            by_code(&code, status, about_phone, &request_id)
        }
        SdkError::TimeoutError(_) => {
            Failure::Final(ProviderError::Transient("sns: no answer in time".into()))
        }
        SdkError::DispatchFailure(d) if d.is_io() || d.is_timeout() => {
            Failure::Final(ProviderError::Transient(format!(
                "sns: network error: {}",
                super::super::error_chain(err)
            )))
        }
        // Identity resolution fails here too: no credentials in the standard chain.
        SdkError::DispatchFailure(_) | SdkError::ConstructionFailure(_) => {
            Failure::Final(ProviderError::Configuration(format!(
                "sns: request not sent: {}",
                super::super::error_chain(err)
            )))
        }
        // A garbled answer: AWS may have sent the SMS, so no retry here.
        _ => Failure::Final(ProviderError::Transient(format!(
            "sns: unreadable response (request id {request_id})"
        ))),
    }
}

/// The class of a service error. `about_phone`: the message names the `PhoneNumber` parameter
/// (an `InvalidParameter` about a sender ID or a price is the operator's to fix).
fn by_code(code: &str, status: u16, about_phone: bool, request_id: &str) -> Failure {
    let what = format!("sns: {code} (HTTP {status}, request id {request_id})");
    if matches!(code, "InvalidParameter" | "InvalidParameterValue") {
        return Failure::Final(if about_phone {
            ProviderError::Recipient {
                message: what,
                rate_limited: false,
            }
        } else {
            ProviderError::Configuration(what)
        });
    }
    if THROTTLING.contains(&code) {
        return Failure::Throttled(what);
    }
    if SERVER.contains(&code) {
        return Failure::Final(ProviderError::Transient(what));
    }
    if CONFIGURATION.contains(&code) || code.starts_with("KMS") || !(500..600).contains(&status) {
        return Failure::Final(ProviderError::Configuration(what));
    }
    Failure::Final(ProviderError::Transient(what))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(code: &str, status: u16, about_phone: bool) -> &'static str {
        match by_code(code, status, about_phone, "r-1") {
            Failure::Throttled(_) => "throttled",
            Failure::Final(ProviderError::Transient(_)) => "transient",
            Failure::Final(ProviderError::Recipient { .. }) => "recipient",
            Failure::Final(ProviderError::Configuration(_)) => "configuration",
        }
    }

    #[test]
    fn maps_codes_to_classes() {
        // (code, HTTP status, the message is about the phone number, class)
        for (code, status, about_phone, expected) in [
            ("InvalidParameter", 400, true, "recipient"),
            ("InvalidParameterValue", 400, true, "recipient"),
            ("InvalidParameter", 400, false, "configuration"),
            ("AuthorizationError", 403, false, "configuration"),
            ("SignatureDoesNotMatch", 403, false, "configuration"),
            ("InvalidClientTokenId", 403, false, "configuration"),
            ("KMSAccessDenied", 400, false, "configuration"),
            ("Throttling", 400, false, "throttled"),
            ("ThrottledException", 429, false, "throttled"),
            ("InternalError", 500, false, "transient"),
            ("SomethingNew", 503, false, "transient"),
            ("SomethingNew", 400, false, "configuration"),
        ] {
            assert_eq!(
                class(code, status, about_phone),
                expected,
                "{code} {status} about the phone: {about_phone}"
            );
        }
    }

    #[test]
    fn the_description_names_code_status_and_request_id_only() {
        let Failure::Final(e) = by_code("InvalidParameter", 400, true, "req-9") else {
            panic!("not final");
        };
        assert_eq!(
            e.to_string(),
            "recipient refused by provider: sns: InvalidParameter (HTTP 400, request id req-9)"
        );
    }
}
