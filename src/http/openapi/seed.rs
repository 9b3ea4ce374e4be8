//! The seed's routes as the router declares them: one handler per operation (an OpenAPI
//! operation belongs to one function), each passing the request to `compat`, which answers `GET`
//! and `POST` alike. They are the slashed paths; `super::complete` copies their descriptions to
//! the paths without the slash, which the router serves with `compat` directly.

use axum::extract::State;
use http::request::Parts;
use std::sync::Arc;

use super::shared as doc;
use crate::app::App;
use crate::http::compat;
use crate::http::error::ApiError;
use crate::http::request::Body;
use crate::http::response::Resp;

/// What both methods of `/sms_send/` do (an operation per method, one text).
const SEED_SEND: &str = "The seed application's `sms_send` view on top of `POST /v1/verifications`: sends a code to `phone` for the cookie session, creating a session (and `Set-Cookie`) when the browser has none. Errors use the seed's `{\"Code\": <error code>, \"Message\": …}` shape with the HTTP status of the corresponding `/v1` error, except refusals made before the route runs (413 `body_too_large`, 403 `origin_not_allowed`), request timeouts and a crashed handler, which use the usual error body.\n\nServed only when `compat.seed_routes` is on (off by default; on in the shipped development `config.toml`), with or without the trailing slash; 404 `not_found` otherwise. Parameters come from the query string and, for a non-empty body, from an `application/x-www-form-urlencoded` body (the query string wins when both name a parameter). The route is bound to the browser's `sessionid` cookie like the seed application; an `Authorization` header, valid or not, is ignored (no API-key answers: a backend cannot name a session here).";

/// What both methods of `/sms_check/` do.
const SEED_CHECK: &str = "The seed application's `sms_check` view on top of `POST /v1/verifications/check`. Answers exactly `{\"result\": \"OK\"}` (Django's separators, with a space) when the code approves — the session key is cycled and a new `Set-Cookie` sent — and `{\"result\": \"False\"}` for anything else: missing or invalid parameters, no session, wrong, expired or dead code.\n\nServed only when `compat.seed_routes` is on (off by default; on in the shipped development `config.toml`), with or without the trailing slash; 404 `not_found` otherwise. Parameters come from the query string and, for a non-empty body, from an `application/x-www-form-urlencoded` body (the query string wins when both name a parameter). The route is bound to the browser's `sessionid` cookie like the seed application; an `Authorization` header, valid or not, is ignored (no API-key answers: a backend cannot name a session here).";

/// The solved-challenge parameters `/sms_send/` takes, as `POST /v1/verifications` does.
const ALTCHA: &str = "A solved challenge (ALTCHA payload), as in `POST /v1/verifications`; also accepted in a form body.";
const TURNSTILE: &str = "A solved challenge (Turnstile token), as in `POST /v1/verifications`; also accepted in a form body.";
const HCAPTCHA: &str = "A solved challenge (hCaptcha token), as in `POST /v1/verifications`; also accepted in a form body.";

#[utoipa::path(
    get,
    path = "/sms_send/",
    operation_id = "seedSendGetSlash",
    tag = "seed compatibility",
    summary = "Send a code (seed application's route)",
    description = SEED_SEND,
    security(("sessionCookie" = []), ()),
    params(
        ("phone" = doc::Phone, Query, description = "The phone number, as for `POST /v1/verifications`. Missing or invalid: 422 `invalid_phone`; of a type not in `verification.number_types`: 422 `unsupported_number_type`.", example = json!("+8613800138000")),
        ("altcha" = Option<String>, Query, nullable = false, description = ALTCHA),
        ("cf-turnstile-response" = Option<String>, Query, nullable = false, description = TURNSTILE),
        ("h-captcha-response" = Option<String>, Query, nullable = false, description = HCAPTCHA),
        ("Accept-Language" = Option<String>, Header),
    ),
    responses(
        (status = 200, response = doc::SeedSend200),
        (status = 404, response = doc::SeedRoutesOff),
        (status = 415, response = doc::SeedSend415),
        (status = 422, response = doc::SeedSend422),
        (status = 429, response = doc::SeedSend429),
        (status = 500, response = doc::SeedSend500),
        (status = 502, response = doc::SeedSend502),
        (status = 503, response = doc::SeedSend503),
        (status = 403, response = doc::ForeignOriginSeed),
        (status = 428, response = doc::SeedSend428),
    )
)]
pub(in crate::http) async fn seed_send_get_slash(
    app: State<Arc<App>>,
    parts: Parts,
    body: Body,
) -> Resp {
    compat::send(app, parts, body).await
}

#[utoipa::path(
    post,
    path = "/sms_send/",
    operation_id = "seedSendPostSlash",
    tag = "seed compatibility",
    summary = "Send a code (seed application's route)",
    description = SEED_SEND,
    security(("sessionCookie" = []), ()),
    params(
        ("phone" = Option<doc::Phone>, Query, nullable = false, description = "The phone number, as for `POST /v1/verifications`. Missing or invalid: 422 `invalid_phone`; of a type not in `verification.number_types`: 422 `unsupported_number_type`. For `POST` it may come from the form body instead.", example = json!("+8613800138000")),
        ("altcha" = Option<String>, Query, nullable = false, description = ALTCHA),
        ("cf-turnstile-response" = Option<String>, Query, nullable = false, description = TURNSTILE),
        ("h-captcha-response" = Option<String>, Query, nullable = false, description = HCAPTCHA),
        ("Accept-Language" = Option<String>, Header),
    ),
    request_body(
        content = Option<doc::SeedSendForm>,
        content_type = "application/x-www-form-urlencoded",
        examples(
            ("form" = (value = json!({"phone": "+8613800138000"}))),
        ),
    ),
    responses(
        (status = 200, response = doc::SeedSend200),
        (status = 404, response = doc::SeedRoutesOff),
        (status = 415, response = doc::SeedSend415),
        (status = 422, response = doc::SeedSend422),
        (status = 429, response = doc::SeedSend429),
        (status = 500, response = doc::SeedSend500),
        (status = 502, response = doc::SeedSend502),
        (status = 503, response = doc::SeedSend503),
        (status = 403, response = doc::ForeignOriginSeed),
        (status = 428, response = doc::SeedSend428),
    )
)]
pub(in crate::http) async fn seed_send_post_slash(
    app: State<Arc<App>>,
    parts: Parts,
    body: Body,
) -> Resp {
    compat::send(app, parts, body).await
}

#[utoipa::path(
    get,
    path = "/sms_check/",
    operation_id = "seedCheckGetSlash",
    tag = "seed compatibility",
    summary = "Check a code (seed application's route)",
    description = SEED_CHECK,
    security(("sessionCookie" = []), ()),
    params(
        ("phone" = Option<String>, Query, nullable = false, description = "The phone number. Missing or invalid: `{\"result\": \"False\"}`.", example = json!("+8613800138000")),
        ("code" = Option<String>, Query, nullable = false, description = "The code the person typed (digits, or with `verification.alphabet = \"alphanumeric\"` letters and digits in either case). Missing or not 4 to 10 symbols of the alphabet: `{\"result\": \"False\"}`.", example = json!("492816")),
    ),
    responses(
        (status = 200, response = doc::SeedCheck200),
        (status = 404, response = doc::SeedRoutesOff),
        (status = 415, response = doc::SeedCheck415),
        (status = 500, response = doc::Internal),
        (status = 503, response = doc::StoreOrTimeout),
        (status = 403, response = doc::ForeignOriginSeed),
    )
)]
pub(in crate::http) async fn seed_check_get_slash(
    app: State<Arc<App>>,
    parts: Parts,
    body: Body,
) -> Result<Resp, ApiError> {
    compat::check(app, parts, body).await
}

#[utoipa::path(
    post,
    path = "/sms_check/",
    operation_id = "seedCheckPostSlash",
    tag = "seed compatibility",
    summary = "Check a code (seed application's route)",
    description = SEED_CHECK,
    security(("sessionCookie" = []), ()),
    params(
        ("phone" = Option<String>, Query, nullable = false, description = "The phone number. Missing or invalid: `{\"result\": \"False\"}`.", example = json!("+8613800138000")),
        ("code" = Option<String>, Query, nullable = false, description = "The code the person typed (digits, or with `verification.alphabet = \"alphanumeric\"` letters and digits in either case). Missing or not 4 to 10 symbols of the alphabet: `{\"result\": \"False\"}`.", example = json!("492816")),
    ),
    request_body(
        content = Option<doc::SeedCheckForm>,
        content_type = "application/x-www-form-urlencoded",
        examples(
            ("form" = (value = json!({"phone": "+8613800138000", "code": "492816"}))),
        ),
    ),
    responses(
        (status = 200, response = doc::SeedCheck200),
        (status = 404, response = doc::SeedRoutesOff),
        (status = 415, response = doc::SeedCheck415),
        (status = 500, response = doc::Internal),
        (status = 503, response = doc::StoreOrTimeout),
        (status = 403, response = doc::ForeignOriginSeed),
    )
)]
pub(in crate::http) async fn seed_check_post_slash(
    app: State<Arc<App>>,
    parts: Parts,
    body: Body,
) -> Result<Resp, ApiError> {
    compat::check(app, parts, body).await
}
