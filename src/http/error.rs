//! The one place where errors become HTTP responses: every failure the client can see has a
//! status, a stable snake_case `error` code and a message, as `{"error": …, "message": …}`.

use axum::response::IntoResponse;
use http::{HeaderValue, StatusCode, header};
use std::time::Duration;

use crate::challenge::ChallengeError;
use crate::phone::PhoneError;
use crate::provider::ProviderError;
use crate::quota::Refusal;
use crate::session_data::InvalidData;
use crate::store::StoreError;
use crate::verify::SendError;

use super::response::{Resp, json};

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    retry_after: Option<Duration>,
    allow: Option<String>,
    /// Where to get a challenge, for `challenge_required`.
    challenge: Option<&'static str>,
}

/// The route that hands out challenges, named in every `challenge_required` answer.
pub const CHALLENGE_PATH: &str = "/v1/challenge";

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after: None,
            allow: None,
            challenge: None,
        }
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn unprocessable(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
    }

    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, code, message)
    }

    pub fn precondition_failed(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::PRECONDITION_FAILED, code, message)
    }

    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a valid API key is required: Authorization: Bearer <key>",
        )
    }

    /// 405 naming the methods the route does accept (`allow`, as in the `Allow` header).
    pub fn method_not_allowed(allow: String) -> Self {
        let mut e = Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!("this route accepts {allow}"),
        );
        e.allow = Some(allow);
        e
    }

    pub fn too_many(code: &'static str, message: impl Into<String>, retry_after: Duration) -> Self {
        let mut e = Self::new(StatusCode::TOO_MANY_REQUESTS, code, message);
        e.retry_after = Some(retry_after);
        e
    }

    /// An abuse-limit refusal: 429 with `Retry-After` and the code naming the limit; or 428
    /// `challenge_required`, naming where to get a challenge.
    pub fn refused(by: Refusal, retry_after: Duration) -> Self {
        if by == Refusal::Challenge {
            return Self::challenge_required();
        }
        let code = by.code();
        let message = match code {
            "too_many_sends" => "too many codes requested; retry later",
            "budget_exhausted" => "the SMS budget for this destination is used up; retry later",
            "too_many_checks" => "too many codes checked; retry later",
            _ => "codes to this destination are paused; retry later",
        };
        Self::too_many(code, message, retry_after)
    }

    /// 428: the send needs a solved challenge (`GET /v1/challenge`), sent again with it.
    pub fn challenge_required() -> Self {
        let mut e = Self::new(
            StatusCode::PRECONDITION_REQUIRED,
            Refusal::Challenge.code(),
            "solve a challenge from /v1/challenge and send the request again with its solution",
        );
        e.challenge = Some(CHALLENGE_PATH);
        e
    }

    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error",
        )
    }

    pub fn timeout() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "timeout",
            "the request took too long",
        )
    }

    /// Seconds for `Retry-After`, when the client should wait.
    pub fn retry_after(&self) -> Option<u64> {
        self.retry_after.map(|d| d.as_secs().max(1))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Resp {
        let mut body = serde_json::json!({ "error": self.code, "message": self.message });
        if let Some(path) = self.challenge {
            body["challenge"] = path.into();
        }
        let mut resp = json(self.status, &body);
        let h = resp.headers_mut();
        if self.status == StatusCode::UNAUTHORIZED {
            h.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let Some(secs) = self.retry_after() {
            h.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if let Some(allow) = self.allow.and_then(|a| HeaderValue::try_from(a).ok()) {
            h.insert(header::ALLOW, allow);
        }
        resp
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(detail) => {
                tracing::warn!(%detail, "store unavailable");
                Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "store_unavailable",
                    "the session store is unavailable; retry shortly",
                )
            }
            StoreError::Internal(detail) => {
                tracing::error!(%detail, "store error");
                Self::internal()
            }
            StoreError::SessionGone => {
                Self::not_found("session_not_found", "no such session (or it expired)")
            }
            StoreError::DataTooLarge(limit) => Self::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "session_data_too_large",
                format!(
                    "a session's data is limited to {limit} bytes of JSON; nothing was written"
                ),
            ),
        }
    }
}

impl From<InvalidData> for ApiError {
    fn from(e: InvalidData) -> Self {
        Self::unprocessable("invalid_field", e.0)
    }
}

impl From<PhoneError> for ApiError {
    fn from(e: PhoneError) -> Self {
        match e {
            PhoneError::UnsupportedType(_) => {
                Self::unprocessable("unsupported_number_type", e.to_string())
            }
            _ => Self::unprocessable("invalid_phone", e.to_string()),
        }
    }
}

impl From<ProviderError> for ApiError {
    fn from(e: ProviderError) -> Self {
        match e {
            ProviderError::Recipient {
                rate_limited: true, ..
            } => Self::too_many(
                "provider_rate_limited",
                "the SMS provider refused more messages to this number for now",
                Duration::from_secs(60),
            ),
            ProviderError::Recipient { .. } => Self::unprocessable(
                "invalid_phone",
                "the SMS provider cannot deliver to this number",
            ),
            ProviderError::Transient(_) => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "provider_unavailable",
                "the SMS provider is unavailable; retry shortly",
            ),
            ProviderError::Configuration(detail) => {
                tracing::error!(%detail, "SMS provider misconfigured");
                Self::new(
                    StatusCode::BAD_GATEWAY,
                    "provider_unavailable",
                    "the SMS provider refused the request; the operator has been alerted",
                )
            }
        }
    }
}

impl From<SendError> for ApiError {
    fn from(e: SendError) -> Self {
        match e {
            SendError::TooSoon(d) => Self::too_many(
                "resend_too_soon",
                format!(
                    "a code was sent recently; retry in {} s",
                    d.as_secs().max(1)
                ),
                d,
            ),
            SendError::Exhausted(d) => Self::too_many(
                "too_many_attempts",
                "too many wrong codes for this number; retry later",
                d,
            ),
            SendError::Refused(by, d) => Self::refused(by, d),
            SendError::Denied => Self::too_many(
                "destination_blocked",
                "codes are not sent to this destination",
                Duration::from_secs(86_400),
            ),
            SendError::Provider(p) => p.into(),
            SendError::Store(s) => s.into(),
        }
    }
}

impl From<ChallengeError> for ApiError {
    fn from(e: ChallengeError) -> Self {
        match e {
            ChallengeError::Invalid(message) => Self::unprocessable("challenge_invalid", message),
            ChallengeError::Unavailable(message) => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "challenge_unavailable",
                format!("{message}; retry shortly"),
            ),
            ChallengeError::Misconfigured(detail) => {
                tracing::error!(%detail, "challenge provider misconfigured");
                Self::new(
                    StatusCode::BAD_GATEWAY,
                    "challenge_unavailable",
                    "the challenge provider refused the server; the operator has been alerted",
                )
            }
            ChallengeError::Store(e) => e.into(),
        }
    }
}
