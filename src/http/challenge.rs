//! `GET /v1/challenge` and the challenge check of the send routes: what a page fetches when a
//! send answers `challenge_required`, and what the send then carries back.

use axum::extract::State;
use http::StatusCode;
use http::request::Parts;
use std::sync::Arc;
use std::time::SystemTime;

use crate::app::App;
use crate::challenge::{ChallengeError, Submitted};

use super::error::ApiError;
use super::openapi::shared as doc;
use super::response::{Resp, json};

/// `GET /v1/challenge`: a fresh ALTCHA challenge (the widget's JSON, plus `kind` and `field`),
/// or the kind and site key of the configured CAPTCHA. Issuing writes nothing anywhere, so
/// fetching many costs the server only a hash and an HMAC each.
#[utoipa::path(
    get,
    path = "/v1/challenge",
    operation_id = "getChallenge",
    tag = "verifications",
    summary = "A challenge to solve before sending",
    description = "Browsers fetch this when a send answers 428 `challenge_required` (whose `challenge` field names this path), solve it, and send again with the solution in the body field named by `field`. Each call issues a new ALTCHA challenge; nothing is stored until a solution is used, and each solution is accepted once, by any daemon of the deployment, until the challenge expires (`challenge.altcha.expires`). No session or API key is needed; CORS is answered for `http.cors.allowed_origins`.",
    security(()),
    responses(
        (
            status = 200,
            description = "A challenge (ALTCHA) or the CAPTCHA's site key.",
            body = doc::Challenge,
            content_type = "application/json",
            examples(
                ("altcha" = (value = json!({"kind": "altcha", "field": "altcha", "algorithm": "SHA-256", "challenge": "5d4e6a7c0a3f1b2e9c8d7f6a5b4c3d2e1f0a9b8c7d6e5f4a3b2c1d0e9f8a7b6c", "maxnumber": 100000, "salt": "8f2d4c6b1a3e5f7092b4d6c8?expires=1796035200&", "signature": "0c1b2a3948576675849302a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5"}))),
                ("turnstile" = (value = json!({"kind": "turnstile", "field": "cf-turnstile-response", "site_key": "0x4AAAAAAAexample"}))),
            )
        ),
        (status = 500, response = doc::Internal),
    )
)]
pub async fn get(State(app): State<Arc<App>>) -> Resp {
    json(StatusCode::OK, &app.challenges.describe(SystemTime::now()))
}

/// Whether the send carries a valid solution: `Ok(false)` without one, `Ok(true)` with a good
/// one (an ALTCHA challenge is then spent for every daemon), a 4xx/5xx for a bad one or a
/// CAPTCHA provider that cannot be asked. Checked before anything is sent or stored for the
/// send, so a bad solution costs nothing else.
pub async fn passed(
    app: &App,
    parts: &Parts,
    submitted: Submitted<'_>,
    backend: bool,
) -> Result<bool, ApiError> {
    let client = super::client_ip::browser(app, parts, backend);
    let result = app
        .challenges
        .check(app.store.as_ref(), submitted, client, SystemTime::now())
        .await;
    let outcome = match &result {
        Ok(false) => None,
        Ok(true) => Some("passed"),
        Err(ChallengeError::Invalid(why)) => {
            tracing::info!(reason = %why, "challenge solution refused");
            Some("invalid")
        }
        Err(ChallengeError::Unavailable(_) | ChallengeError::Misconfigured(_)) => {
            Some("unavailable")
        }
        Err(ChallengeError::Store(_)) => None,
    };
    if let Some(outcome) = outcome {
        app.metrics.challenge_solution(outcome);
    }
    Ok(result?)
}
