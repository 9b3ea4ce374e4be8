//! `POST /v1/verifications` and `POST /v1/verifications/check`: the verification API for
//! browsers (session cookie) and backends (API key plus an explicit session).

use axum::extract::State;
use axum::response::IntoResponse;
use http::request::Parts;
use http::{StatusCode, header};
use serde::Deserialize;
use serde_json::json;
use std::sync::Arc;

use crate::app::App;
use crate::challenge::Submitted;
use crate::code::Code;
use crate::session::{Session, SessionKey};
use crate::verify::{self, CallerKey, Checked, Sending};

use super::caller::{from_cookie, presented, session_by_key};
use super::challenge;
use super::client_ip;
use super::cookies;
use super::error::ApiError;
use super::idempotency;
use super::openapi::shared as doc;
use super::request::require_json;
use super::request::{Body, bearer};
use super::response::{Resp, json};

// A solved challenge comes under the name its widget gives it (see `crate::challenge`).
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = SendCode)]
struct SendBody {
    #[schema(value_type = doc::Phone)]
    phone: String,
    /// Backends only (required with an API key; 401 without one): the session key to verify.
    /// Unknown, expired or malformed keys are 404 `session_not_found`.
    #[schema(examples("q3f0x8k2m1z9w7v5t4r6p2n8l0j1h3g5"))]
    session: Option<String>,
    /// The recipient's language (e.g. `zh-CN`): chooses the message template (see
    /// `verification.templates`) and is passed to the provider; ignored when longer than 35
    /// bytes. Without it, the request's `Accept-Language` chooses among the configured locale
    /// templates.
    #[schema(examples("zh-CN"))]
    locale: Option<String>,
    /// With `challenge.kind = "altcha"`: the ALTCHA widget's base64 payload for a challenge from
    /// `GET /v1/challenge`. Checked (signature, number, expiry, first use) before anything is
    /// sent; a bad one is 422 `challenge_invalid`.
    #[schema(max_length = 2048)]
    altcha: Option<String>,
    /// With `challenge.kind = "turnstile"`: the Turnstile widget's token, checked with
    /// Cloudflare's `siteverify`.
    #[serde(rename = "cf-turnstile-response")]
    turnstile: Option<String>,
    /// With `challenge.kind = "hcaptcha"`: the hCaptcha widget's token, checked with hCaptcha's
    /// `siteverify`.
    #[serde(rename = "h-captcha-response")]
    hcaptcha: Option<String>,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = CheckCode)]
struct CheckBody {
    #[schema(value_type = doc::Phone)]
    phone: String,
    /// The code the person typed: 4 to 10 symbols of `verification.alphabet` — ASCII digits by
    /// default, or with `"alphanumeric"` the 31 symbols 2-9 and A-Z without I, L and O, in either
    /// case (`k7m2p9` is `K7M2P9`) — surrounding whitespace ignored. Anything else is 422
    /// `invalid_code` and costs no attempt.
    // The shape `parse_code` accepts in either alphabet, around Unicode whitespace.
    #[schema(
        pattern = r"^[\t\n\u000b\f\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*([0-9]{4,10}|[2-9A-HJKMNP-Za-hjkmnp-z]{4,10})[\t\n\u000b\f\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*$",
        examples("492816", "K7M2P9")
    )]
    code: String,
    /// Backends only (required with an API key; 401 without one): the session key. Unknown,
    /// expired or malformed keys are 404 `session_not_found`.
    #[schema(examples("q3f0x8k2m1z9w7v5t4r6p2n8l0j1h3g5"))]
    session: Option<String>,
}

/// Parses the code a person typed; text that cannot be a code is refused without costing an
/// attempt.
pub fn parse_code(app: &App, raw: &str) -> Result<Code, ApiError> {
    let alphabet = app.config.verification.alphabet;
    Code::parse_in(raw, alphabet)
        .ok_or_else(|| ApiError::unprocessable("invalid_code", alphabet.describe()))
}

/// `POST /v1/verifications`
#[utoipa::path(
    post,
    path = "/v1/verifications",
    operation_id = "sendCode",
    tag = "verifications",
    summary = "Send a code",
    description = "Sends a one-time code by SMS to `phone`, bound to the caller's session and that number.\n\n* **Browsers** carry the `sessionid` cookie; a browser without a live session gets a new one and a `Set-Cookie` (on every answer from this point on, success or not).\n* **Backends** send `Authorization: Bearer <api key>` and must name the session in `session`.\n\nWith `verification.resend = \"same_code\"` (the default) a resend while the code lives sends the same code again and extends its lifetime, never past `verification.max_code_lifetime`; with `\"new_code\"` a new code replaces the previous one. Wrong attempts carry over either way. The message text follows `locale`, else `Accept-Language`, else the number's prefix; with `verification.otp_domain` it ends with the line `@<domain> #<code>`. The session's own expiry is untouched.",
    security(("sessionCookie" = []), ("bearerAuth" = []), ()),
    params(
        ("Idempotency-Key" = Option<String>, Header, nullable = false, min_length = 1, max_length = 255, pattern = "^[!-~]+$", description = "Makes a retried send safe: a repeat with the same key and body returns the first answer (status, body and `Retry-After`, marked `Idempotent-Replayed: true`) and sends nothing. Keys are scoped per session for browsers (a browser without a session cookie gets a new session, so its cookieless retry is a new request) and per API key for backends, and kept 24 h; 5xx answers are not kept. The same key with a different body is 422 `idempotency_key_reused`."),
        ("Accept-Language" = Option<String>, Header),
    ),
    request_body(
        content = SendBody,
        content_type = "application/json",
        examples(
            ("browser" = (value = json!({"phone": "+8613800138000"}))),
            ("backend" = (value = json!({"phone": "+8613800138000", "session": "q3f0x8k2m1z9w7v5t4r6p2n8l0j1h3g5", "locale": "zh-CN"}))),
        ),
    ),
    responses(
        (
            status = 202,
            description = "A code is on its way (or, for a test number, was recorded without sending).",
            body = doc::SendAccepted,
            content_type = "application/json",
            headers(("Set-Cookie"), ("Idempotent-Replayed")),
            examples(
                ("pending" = (value = json!({"status": "pending", "expires_in": 300, "resend_in": 60}))),
            )
        ),
        (
            status = 400,
            description = "Malformed JSON (`malformed_json`) or a malformed `Idempotency-Key` (`invalid_idempotency_key`).",
            body = doc::Error,
            extensions(("x-error-codes" = json!(["malformed_json", "bad_body", "invalid_idempotency_key"]))),
            content_type = "application/json"
        ),
        (
            status = 401,
            description = "The `Authorization` header names no valid API key, or a browser (no API key) sent a `session` field — naming a session is the backends' privilege.",
            body = doc::Error,
            extensions(("x-error-codes" = json!(["unauthorized"]))),
            content_type = "application/json",
            headers(("WWW-Authenticate")),
            examples(
                ("unauthorized" = (value = json!({"error": "unauthorized", "message": "a valid API key is required: Authorization: Bearer <key>"}))),
            )
        ),
        (
            status = 404,
            description = "A backend named a session that is unknown, expired or malformed.",
            body = doc::Error,
            extensions(("x-error-codes" = json!(["session_not_found"]))),
            content_type = "application/json",
            examples(
                ("session_not_found" = (value = json!({"error": "session_not_found", "message": "no such session (or it expired)"}))),
            )
        ),
        (status = 415, response = doc::JsonBodyErrors415),
        (
            status = 422,
            description = "The body has the wrong shape (`invalid_field`; also a backend call without `session`), the phone number is not a valid number by libphonenumber's metadata or not valid for `verification.default_region`, or the SMS provider cannot deliver to it (`invalid_phone`), or it is a valid number of a type not in `verification.number_types`, such as premium rate or VoIP (`unsupported_number_type`). A challenge solution that is forged, wrong, expired, already used or for another kind of challenge is `challenge_invalid`; nothing is sent.",
            body = doc::Error,
            extensions(("x-error-codes" = json!(["invalid_field", "invalid_phone", "unsupported_number_type", "idempotency_key_reused", "challenge_invalid"]))),
            content_type = "application/json",
            headers(("Set-Cookie"), ("Idempotent-Replayed")),
            examples(
                ("invalid_field" = (value = json!({"error": "invalid_field", "message": "unknown field `foo`, expected `data` or `expiry` at line 1 column 6"}))),
                ("invalid_phone" = (value = json!({"error": "invalid_phone", "message": "phone number is not a valid number"}))),
                ("unsupported_number_type" = (value = json!({"error": "unsupported_number_type", "message": "premium_rate numbers are not accepted"}))),
                ("challenge_invalid" = (value = json!({"error": "challenge_invalid", "message": "this altcha challenge was already used; fetch a new one"}))),
            )
        ),
        (
            status = 429,
            description = "A code was sent to this number in this session less than `verification.resend_interval` seconds ago (`resend_too_soon`), the verification used up its attempts and stays dead until its code would have expired (`too_many_attempts`), or the SMS provider refuses more messages to this number for now (`provider_rate_limited`). `Retry-After` says how many seconds to wait. Abuse limits answer here too: `too_many_sends` (per number, per client address or network), `budget_exhausted` (deployment or country budget), `destination_blocked` (country not allowed, or its SMS-pumping breaker tripped with `pumping.on_trip = \"block\"`). No SMS is sent on any 429.",
            body = doc::Error,
            extensions(("x-error-codes" = json!(["resend_too_soon", "too_many_attempts", "provider_rate_limited", "too_many_sends", "budget_exhausted", "destination_blocked"]))),
            content_type = "application/json",
            headers(("Retry-After"), ("Set-Cookie"), ("Idempotent-Replayed")),
            examples(
                ("resend_too_soon" = (value = json!({"error": "resend_too_soon", "message": "a code was sent recently; retry in 42 s"}))),
                ("too_many_attempts" = (value = json!({"error": "too_many_attempts", "message": "too many wrong codes for this number; retry later"}))),
                ("provider_rate_limited" = (value = json!({"error": "provider_rate_limited", "message": "the SMS provider refused more messages to this number for now"}))),
            )
        ),
        (
            status = 500,
            description = "An unexpected internal error (a bug or a store fault).",
            body = doc::Error,
            extensions(("x-error-codes" = json!(["internal"]))),
            content_type = "application/json",
            headers(("Set-Cookie")),
            examples(
                ("internal" = (value = json!({"error": "internal", "message": "internal error"}))),
            )
        ),
        (
            status = 502,
            description = "The SMS provider refused the request because it is misconfigured; nothing was sent, the operator has been alerted. Or the CAPTCHA provider refused the server's secret (`challenge_unavailable`).",
            body = doc::Error,
            extensions(("x-error-codes" = json!(["provider_unavailable", "challenge_unavailable"]))),
            content_type = "application/json",
            headers(("Set-Cookie")),
            examples(
                ("provider_unavailable" = (value = json!({"error": "provider_unavailable", "message": "the SMS provider is unavailable; retry shortly"}))),
            )
        ),
        (
            status = 503,
            description = "The SMS provider is unavailable (`provider_unavailable`; nothing was sent and the resend cooldown is lifted), the store is unreachable (`store_unavailable`), or the request took too long (`timeout`). The client may retry. A Turnstile/hCaptcha token could not be checked because the provider did not answer in time (`challenge_unavailable`).",
            body = doc::Error,
            extensions(("x-error-codes" = json!(["provider_unavailable", "store_unavailable", "timeout", "challenge_unavailable"]))),
            content_type = "application/json",
            headers(("Set-Cookie")),
            examples(
                ("provider_unavailable" = (value = json!({"error": "provider_unavailable", "message": "the SMS provider is unavailable; retry shortly"}))),
                ("store_unavailable" = (value = json!({"error": "store_unavailable", "message": "the session store is unavailable; retry shortly"}))),
                ("timeout" = (value = json!({"error": "timeout", "message": "the request took too long"}))),
            )
        ),
        (
            status = 409,
            description = "A request with the same `Idempotency-Key` is still in progress (`idempotency_in_progress`). A request that ended without an answer (the client disconnected, or `http.request_timeout` cut it) releases its key, so its retry runs.",
            body = doc::Error,
            extensions(("x-error-codes" = json!(["idempotency_in_progress"]))),
            content_type = "application/json"
        ),
        (status = 403, response = doc::ForeignOriginBrowser),
        (
            status = 428,
            description = "Browsers only (backends are never challenged): the send needs a solved challenge — always (`challenge.mode = \"always\"`), when the client looks suspicious (`\"when_suspicious\"`: the destination's pumping breaker is tripped, the client's address or network has used three quarters of its send limit, or over half the global hourly budget is used), when the breaker is tripped with `pumping.on_trip = \"challenge\"`, or when the number's send budget (`per_phone.max_sends`, `per_phone.daily_max`) is spent. `challenge` names where to get one. Nothing was sent or stored: a browser without a session gets none (no `Set-Cookie`).",
            body = doc::ChallengeRequired,
            content_type = "application/json",
            headers(("Set-Cookie"), ("Idempotent-Replayed")),
            examples(
                ("challenge_required" = (value = json!({"error": "challenge_required", "message": "solve a challenge from /v1/challenge and send the request again with its solution", "challenge": "/v1/challenge"}))),
            )
        ),
    )
)]
pub async fn send(
    State(app): State<Arc<App>>,
    parts: Parts,
    Body(body): Body,
) -> Result<Resp, ApiError> {
    let req: SendBody = require_json(&parts, &body)?;
    let phone = app.phones.parse(&req.phone)?;
    let locale = super::accept_language::locale(
        &app.templates,
        &parts,
        req.locale.filter(|l| l.len() <= 35),
    );
    let idempotency_key = idempotency::key(&parts)?;
    let who = presented(&app, &parts, req.session.as_deref())?;
    let backend = who.backend;
    // An Idempotency-Key is recorded under its owner, a browser's session id: only such
    // requests learn their session before the send (one more statement, BENCHMARKS.md).
    // Every other send resolves (or, for a browser, creates) its session in the send's own
    // statement; a refused send creates none.
    let caller = match (&idempotency_key, &who.key) {
        (Some(_), _) if !backend => from_cookie(&app, &parts).await?,
        // A backend's unknown session is answered before anything is recorded under its key.
        (Some(_), Some(key)) => {
            session_by_key(&app, key.as_str()).await?;
            None
        }
        _ => None,
    };
    let client = client_ip::browser(&app, &parts, backend);
    let submitted = Submitted {
        altcha: req.altcha.as_deref(),
        turnstile: req.turnstile.as_deref(),
        hcaptcha: req.hcaptcha.as_deref(),
    };
    // The caller's session as the send's statement left it, and the key of one it created.
    let mut after: Option<(Option<Session>, Option<SessionKey>)> = None;
    let work = async {
        // Backends are never challenged; a browser passes with a valid solution (checked, and
        // spent, before anything is sent), and a bad one ends the request here.
        let challenge_passed = backend
            || match challenge::passed(&app, &parts, submitted, backend).await {
                Ok(passed) => passed,
                Err(e) => return e.into_response(),
            };
        let caller_key = CallerKey {
            key: who.key.as_ref().map(SessionKey::hash),
            browser: !backend,
        };
        let Sending {
            result,
            session,
            born,
        } = verify::send(
            &app.flow(),
            caller_key,
            &phone,
            locale,
            client,
            challenge_passed,
        )
        .await;
        after = Some((session, born));
        match result {
            Ok(sent) => {
                let mut body = json!({ "status": "pending", "expires_in": sent.expires_in, "resend_in": sent.resend_in });
                // Backends may follow the delivery (GET /v1/verifications/{id}); browsers have
                // no use for it.
                if let (true, Some(id)) = (backend, sent.delivery_id) {
                    body["id"] = json!(id);
                }
                json(StatusCode::ACCEPTED, &body)
            }
            Err(e) => ApiError::from(e).into_response(),
        }
    };
    let owner = match (bearer(&parts).and_then(|t| app.api_key_name(t)), &caller) {
        (Some(name), _) => Some(format!("k:{name}")),
        (None, Some(c)) => Some(format!("s:{}", c.session.id)),
        (None, None) => None,
    };
    let mut resp = match (idempotency_key, owner) {
        (Some(key), Some(owner)) => {
            idempotency::once(&app, &owner, &key, &parts, &body, work).await?
        }
        (None, _) => work.await,
        // A browser without a session: the key is recorded only under the session its
        // accepted send created (so that a retry with the new cookie is a replay); a refused
        // send leaves nothing behind, and no other request can hold that key yet.
        (Some(key), None) => {
            let resp = work.await;
            match &after {
                Some((Some(s), Some(_))) => {
                    let owner = format!("s:{}", s.id);
                    idempotency::once(&app, &owner, &key, &parts, &body, async { resp }).await?
                }
                _ => resp,
            }
        }
    };
    let cookie = match after {
        Some((Some(session), Some(key))) => {
            Some(cookies::set_cookie(&app.config.session, &key, &session))
        }
        // The send's statement slid the cookie's session: its cookie goes out again.
        Some((Some(session), None)) if !backend && session.refreshed => who
            .key
            .as_ref()
            .map(|k| cookies::set_cookie(&app.config.session, k, &session)),
        _ => caller.and_then(|c| c.set_cookie),
    };
    if let Some(c) = cookie {
        resp.headers_mut().append(header::SET_COOKIE, c);
    }
    Ok(resp)
}

/// `POST /v1/verifications/check`
#[utoipa::path(
    post,
    path = "/v1/verifications/check",
    operation_id = "checkCode",
    tag = "verifications",
    summary = "Check a code",
    description = "Checks the code a person typed for the caller's session and `phone`. A code approves at most once and dies after `verification.max_attempts` wrong tries. Callers are identified as for sending; a browser without a session is answered 404 and gets no new session.",
    security(("sessionCookie" = []), ("bearerAuth" = []), ()),
    request_body(
        content = CheckBody,
        content_type = "application/json",
        examples(
            ("browser" = (value = json!({"phone": "+8613800138000", "code": "492816"}))),
            ("backend" = (value = json!({"phone": "+8613800138000", "code": "492816", "session": "q3f0x8k2m1z9w7v5t4r6p2n8l0j1h3g5"}))),
        ),
    ),
    responses(
        (
            status = 200,
            description = "The code was checked. `status` says how: `approved` (right code: the session now holds `verified_phone` and `verified_at` and its key was cycled — browsers get a new `Set-Cookie`, backends get the new key in `session`), `pending` (wrong code, `attempts_left` more tries), `expired` (the code's lifetime is over; send a new one) or `max_attempts_reached` (this code is dead).",
            body = doc::CheckResult,
            content_type = "application/json",
            headers(("Set-Cookie")),
            examples(
                ("approved" = (value = json!({"status": "approved", "verified_phone": "+8613800138000"}))),
                ("approved_backend" = (value = json!({"status": "approved", "verified_phone": "+8613800138000", "session": "a9c2e4g6i8k0m2o4q6s8u0w2y4z6b8d0"}))),
                ("pending" = (value = json!({"status": "pending", "attempts_left": 4}))),
                ("expired" = (value = json!({"status": "expired"}))),
                ("max_attempts_reached" = (value = json!({"status": "max_attempts_reached"}))),
            )
        ),
        (status = 400, response = doc::MalformedJson),
        (
            status = 401,
            description = "The `Authorization` header names no valid API key, or a browser (no API key) sent a `session` field.",
            body = doc::Error,
            extensions(("x-error-codes" = json!(["unauthorized"]))),
            content_type = "application/json",
            headers(("WWW-Authenticate")),
            examples(
                ("unauthorized" = (value = json!({"error": "unauthorized", "message": "a valid API key is required: Authorization: Bearer <key>"}))),
            )
        ),
        (
            status = 404,
            description = "No pending code for this session and number (never sent, already used, or sent in another session) — also a browser without a live session (`not_found`, with `status`); or a backend named a session that is unknown, expired or malformed (`session_not_found`, plain error body).",
            body = doc::CheckMissing,
            content_type = "application/json",
            headers(("Set-Cookie")),
            examples(
                ("not_found" = (value = json!({"status": "not_found", "error": "not_found", "message": "no pending verification for this number in this session"}))),
                ("session_not_found" = (value = json!({"error": "session_not_found", "message": "no such session (or it expired)"}))),
            )
        ),
        (status = 415, response = doc::JsonBodyErrors415),
        (
            status = 422,
            description = "The body has the wrong shape (`invalid_field`; also a backend call without `session`), the phone number is invalid (`invalid_phone`) or of a type not in `verification.number_types` (`unsupported_number_type`), or the code is not 4 to 10 symbols of `verification.alphabet` (`invalid_code`, costs no attempt).",
            body = doc::Error,
            extensions(("x-error-codes" = json!(["invalid_field", "invalid_phone", "unsupported_number_type", "invalid_code"]))),
            content_type = "application/json",
            examples(
                ("invalid_field" = (value = json!({"error": "invalid_field", "message": "unknown field `foo`, expected `data` or `expiry` at line 1 column 6"}))),
                ("invalid_phone" = (value = json!({"error": "invalid_phone", "message": "phone number is not a valid number"}))),
                ("unsupported_number_type" = (value = json!({"error": "unsupported_number_type", "message": "premium_rate numbers are not accepted"}))),
                ("invalid_code" = (value = json!({"error": "invalid_code", "message": "codes are 4 to 10 digits"}))),
            )
        ),
        (status = 500, response = doc::Internal),
        (status = 503, response = doc::StoreOrTimeout),
        (status = 403, response = doc::ForeignOriginBrowser),
        (
            status = 429,
            description = "A check quota is used up (`too_many_checks`): failed checks for this number across sessions (then a lock-out), or checks from this client address.",
            body = doc::Error,
            extensions(("x-error-codes" = json!(["too_many_checks"]))),
            content_type = "application/json",
            headers(("Retry-After"), ("Set-Cookie"))
        ),
    )
)]
pub async fn check(
    State(app): State<Arc<App>>,
    parts: Parts,
    Body(body): Body,
) -> Result<Resp, ApiError> {
    let req: CheckBody = require_json(&parts, &body)?;
    let phone = app.phones.parse(&req.phone)?;
    let code = parse_code(&app, &req.code)?;
    let who = presented(&app, &parts, req.session.as_deref())?;
    let code_mac = app.code_key.mac(&phone, &code);
    let Some(key) = who.key else {
        // No session, so no code to compare with; the MAC is computed all the same, so that
        // the only thing this answer's timing can tell is what the caller knows: it has no
        // session.
        std::hint::black_box(code_mac);
        return Ok(not_found());
    };
    let client = client_ip::browser(&app, &parts, who.backend);
    let (checked, session) = verify::check(&app.flow(), &key.hash(), &phone, &code, client).await?;
    // The check's statement slid the session: its cookie goes out again.
    let mut cookie = session
        .filter(|s| !who.backend && s.refreshed)
        .map(|s| cookies::set_cookie(&app.config.session, &key, &s));
    let mut resp = match checked {
        Checked::Approved { session, new_key } => {
            let mut body = json!({ "status": "approved", "verified_phone": phone.as_str() });
            if who.backend {
                body["session"] = json!(new_key.as_str());
            } else {
                cookie = Some(cookies::set_cookie(&app.config.session, &new_key, &session));
            }
            json(StatusCode::OK, &body)
        }
        Checked::Pending { attempts_left } => json(
            StatusCode::OK,
            &json!({ "status": "pending", "attempts_left": attempts_left }),
        ),
        Checked::Expired => json(StatusCode::OK, &json!({ "status": "expired" })),
        Checked::Exhausted => json(StatusCode::OK, &json!({ "status": "max_attempts_reached" })),
        Checked::NotFound => not_found(),
        // A browser's stale cookie is a browser without a session; a backend named a session
        // that does not exist.
        Checked::NoSession if who.backend => {
            return Err(ApiError::not_found(
                "session_not_found",
                "no such session (or it expired)",
            ));
        }
        Checked::NoSession => not_found(),
        Checked::Refused { by, retry_after } => ApiError::refused(by, retry_after).into_response(),
    };
    if let Some(c) = cookie {
        resp.headers_mut().append(header::SET_COOKIE, c);
    }
    Ok(resp)
}

fn not_found() -> Resp {
    json(
        StatusCode::NOT_FOUND,
        &json!({
            "status": "not_found",
            "error": "not_found",
            "message": "no pending verification for this number in this session",
        }),
    )
}
